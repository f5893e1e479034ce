"""Schemathesis: requests generated from the service's own OpenAPI schema, sent to a live
`recsight serve` on loopback over a temporary copy of a store. For every operation: no 5xx,
every response conforms to its declared schema, status code and content type, and every
write and admin route refuses a request without the API key (401).

Bounded for `make test` (20 examples per operation and generation mode, derandomized, no
example database); `make fuzz` runs it deeper and randomized (`tests/fuzz/bounds.py`)."""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from recsight.serving.app import create_app
from recsight.serving.service import ServiceConfig
from tests.fuzz.bounds import bounded
from tests.serving.conftest import API_KEY, shop_model  # noqa: F401 (a fixture)
from tests.serving.live import live_server

EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {API_KEY}"}

# the schema as the app serves it at /openapi.json (building it opens no store)
SCHEMA = schemathesis.openapi.from_dict(create_app(ServiceConfig(model=".", db=".")).openapi())
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}
#: (operation, generation mode) pairs; negative cases where there is input to break (a string
#: path parameter has no invalid value)
CASES = [
    (label, mode)
    for label, op in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or any(len(part) for part in (op.query, op.headers, op.body))
]
#: Operations that rewrite the store file or write a snapshot on every call: fewer examples
#: (each costs seconds), still every path through their validation and auth
COSTLY = {"DELETE /users/{user_id}", "POST /admin/snapshot", "POST /admin/reload"}


def needs_key(label: str) -> bool:
    """The write and admin routes: every method but GET, except the one read that takes a
    body (an anonymous history)."""
    return not label.startswith("GET ") and label != "POST /recommendations"


@pytest.fixture(scope="module")
def live(shop_model, tmp_path_factory):  # noqa: F811 (the imported fixture)
    base, model = shop_model
    db = tmp_path_factory.mktemp("fuzz-api") / "live.duckdb"
    db.write_bytes(base.read_bytes())
    with live_server(model, db, API_KEY) as url, requests.Session() as session:
        yield url, session


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{m.value}-{lb}" for lb, m in CASES])
def test_operation_conforms_to_its_schema(live, label, mode):
    url, session = live
    op = OPERATIONS[label]

    @bounded(max(EXAMPLES // 4, 3) if label in COSTLY else EXAMPLES)
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case):
        if needs_key(label):
            # without the key first: refused before the request does anything
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
                sent = case.as_transport_kwargs(base_url=url, headers=headers)
                response = session.request(**sent)
                # FastAPI decodes the body before it runs a route's dependencies: a body it
                # cannot parse at all is refused (400/422) before the key is looked at
                undecodable = response.status_code in (400, 422) and any(
                    m in response.text for m in ("JSON decode error", "error parsing the body")
                )
                assert response.status_code == 401 or undecodable, (label, headers, response.text)
        case.call_and_validate(base_url=url, session=session, headers=AUTH, checks=CHECKS)

    check()
