"""The OpenAPI schema declares the responses the service gives (found by the Schemathesis
suite, tests/fuzz/test_api_schema.py)."""

from __future__ import annotations

from recsight.serving.app import create_app
from recsight.serving.schemas import ErrorOut
from recsight.serving.service import ServiceConfig
from tests.serving.conftest import AUTH

KEYED = {("post", "/events"), ("delete", "/users/{user_id}")}


def test_error_responses_are_declared_as_the_service_sends_them(client):
    """Regression: 400 and 401 were undeclared, and 422 was declared as FastAPI's list of
    error objects while the service sends one message (`ErrorOut`)."""
    schema = create_app(ServiceConfig(model=".", db=".")).openapi()
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            for code in ("400", "413", "422"):
                assert responses[code]["content"].get("application/json", {}).get("schema") in (
                    ref,
                    None,  # the HTML dashboard page documents its own type
                ), (method, path, code)
            keyed = (method, path) in KEYED or path.startswith("/admin/")
            assert ("401" in responses) == keyed, (method, path)
    # what the service sends validates against the declared model
    for r in (
        client.post("/events", json={"user_id": "u"}, headers=AUTH),
        client.get("/items/nope/similar"),
        client.post("/events", json={"user_id": "u", "item_id": "i", "event_type": "view"}),
    ):
        assert r.status_code in (400, 401, 422)
        ErrorOut.model_validate(r.json())


def test_metrics_are_declared_as_plain_text(client):
    """Regression: /metrics was documented as JSON and answers Prometheus text."""
    schema = create_app(ServiceConfig(model=".", db=".")).openapi()
    assert list(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
