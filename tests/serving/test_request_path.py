"""What one recommendation request costs the service beyond the model: no thread hop for a
cached user, the HTTP layer on C parsers (httptools, uvloop) rather than pure Python, and no
generic FastAPI parameter solving or response-model validation on the recommendation routes."""

from __future__ import annotations

import json
import sys
from contextlib import AsyncExitStack
from unittest.mock import ANY

import anyio.to_thread
import pytest
import uvicorn
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.histories import HistorySnapshot, write_history_snapshot
from recsight.data.store import Store
from recsight.serving.app import ServiceConfig, create_app
from recsight.serving.schemas import RecommendationsOut
from tests.serving.conftest import API_KEY


def _count_thread_hops(monkeypatch) -> list[str]:
    """The names of the functions sent to anyio's thread pool from now on."""
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


def test_cached_user_request_takes_no_thread_pool_hop(client, monkeypatch):
    # a plain `def` dependency runs in FastAPI's thread pool: a hop (and its wake-ups) on
    # every request; a cached user's request needs none (the model runs on the batcher)
    user = str(client.app.state.service.pipeline.main.users_.ids[0])
    first = client.get(f"/recommendations/{user}")  # loads the history: a hop allowed
    assert first.status_code == 200 and first.json()["source"] == "main"
    hops = _count_thread_hops(monkeypatch)
    again = client.get(f"/recommendations/{user}")
    assert again.status_code == 200
    assert again.json()["recommendations"] == first.json()["recommendations"]
    assert hops == []


def test_serve_picks_the_c_http_parser_and_uvloop():
    # `recsight serve` leaves uvicorn's choice on "auto": with the `serve` extra installed
    # that is httptools and uvloop, not the pure-Python h11 parser and asyncio's own loop
    import uvloop

    config = uvicorn.Config(app=None, http="auto", loop="auto")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"
    loop = config.get_loop_factory()()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_serve_shortens_the_thread_switch_interval(shop_model, store_copy, monkeypatch):
    # the event loop and the micro-batch thread hand the GIL back and forth on every request:
    # `recsight serve` runs with a 1 ms switch interval instead of CPython's 5 ms
    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: seen.append(sys.getswitchinterval()))
    before = sys.getswitchinterval()
    try:
        args = ["serve", "--model", str(shop_model[1]), "--db", str(store_copy)]
        res = CliRunner().invoke(app, args)
    finally:
        sys.setswitchinterval(before)  # the setting is process-wide: leave pytest's as it was
    assert res.exit_code == 0, res.output
    assert seen == [0.001]


def test_recommendations_skip_fastapis_generic_parameters_and_response_model(client, monkeypatch):
    # `LeanRoute` reads the GET route's parameters itself and the routes answer plain JSON:
    # neither FastAPI's dependency solving nor its response-model validation runs (each a
    # share of the event loop's CPU per request); the body is the documented schema's
    import fastapi.routing

    def refused(*args, **kwargs):
        raise AssertionError("FastAPI's generic path ran")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", refused)
    monkeypatch.setattr(fastapi.routing, "serialize_response", refused)
    r = client.get("/recommendations/u1", params={"k": 5, "explain": True})
    assert r.status_code == 200
    body = r.json()
    assert RecommendationsOut.model_validate(body).model_dump(mode="json") == body
    assert len(body["recommendations"]) == 5 and body["user_id"] == "u1"
    assert any(rec["evidence"] for rec in body["recommendations"])
    schema = client.app.openapi()["paths"]["/recommendations/{user_id}"]["get"]
    assert [p["name"] for p in schema["parameters"]] == [
        "user_id", "k", "exclude_seen", "category", "explain"
    ]  # fmt: skip
    ok = schema["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RecommendationsOut"}


def test_lean_route_parses_as_fastapi_does(client):
    # the same answers and the same 422 errors as FastAPI's own handler of the route, for
    # good, bad, repeated, empty and unknown parameters
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute
    from starlette.requests import Request

    from recsight.serving.routes.recommendations import router

    route = next(r for r in router.routes if r.path == "/recommendations/{user_id}")
    lean, generic = route.get_route_handler(), APIRoute.get_route_handler(route)
    assert lean.__name__ == "lean"
    category = client.app.state.service.pipeline.category(
        client.get("/recommendations/u2?k=1").json()["recommendations"][0]["item_id"]
    )
    queries = ["", "k=5", "k=0", "k=1001", "k=abc", "k=2.5", "k=", "k=3&k=4", "k=07",
               "explain=true&k=2", "explain=maybe", "explain=", "exclude_seen=0&k=3",
               "exclude_seen=no&explain=1", f"category={category}", "category=", "other=1",
               "k=abc&explain=maybe"]  # fmt: skip

    async def answer(handler, user: str, query: str):
        async with AsyncExitStack() as stack:  # what FastAPI's own handler expects in the scope
            scope = {"type": "http", "method": "GET", "path": f"/recommendations/{user}",
                     "query_string": query.encode(), "headers": [], "app": client.app,
                     "path_params": {"user_id": user}, "fastapi_middleware_astack": stack,
                     "fastapi_inner_astack": stack, "fastapi_function_astack": stack}  # fmt: skip
            try:
                response = await handler(Request(scope))
            except RequestValidationError as exc:
                return 422, [(e["type"], e["loc"], e["msg"]) for e in exc.errors()]
        body = json.loads(response.body)
        body.pop("request_id")
        return response.status_code, body

    for user in ("u1", "someone-new"):
        for query in queries:
            got = client.portal.call(answer, lean, user, query)
            assert got == client.portal.call(answer, generic, user, query), (user, query)
            bad = "abc" in query or "maybe" in query or query in ("k=0", "k=1001", "k=2.5", "k=")
            assert got[0] == (422 if bad or query == "explain=" else 200), query


def test_a_miss_read_from_the_snapshot_takes_no_thread_pool_hop(
    shop_model, store_copy, monkeypatch
):
    # with a history snapshot a miss is a memory read, done on the micro-batch thread: a hop
    # to the thread pool and back cost more than the read; store queries still hop, and a
    # read that fails fails its own request only
    with Store(store_copy) as store:
        write_history_snapshot(store)
    app = create_app(ServiceConfig(model=shop_model[1], db=store_copy, api_key=API_KEY))
    hops = _count_thread_hops(monkeypatch)
    with TestClient(app) as c:
        svc = c.app.state.service
        assert svc.stored_histories.snapshot is not None
        users = [str(u) for u in svc.pipeline.main.users_.ids[:3]]
        answers = [c.get(f"/recommendations/{u}?k=4").json() for u in users]
        assert hops == [] and svc.histories.misses == 3
        assert all(a["source"] == "main" and len(a["recommendations"]) == 4 for a in answers)
        # the same lists as a history read through the store and the thread pool
        svc.stored_histories.drop()
        for u in users:
            svc.histories.evict(u)
        again = [c.get(f"/recommendations/{u}?k=4").json() for u in users]
        assert len(hops) == 3  # one store query each, in the thread pool
        assert [a["recommendations"] for a in again] == [a["recommendations"] for a in answers]

        def failing(user_id):
            raise OSError("snapshot unreadable")

        svc.stored_histories.install(HistorySnapshot.current(svc.store), [])
        svc.histories.evict(users[0])
        monkeypatch.setattr(svc.histories, "get", failing)
        with pytest.raises(OSError):
            c.get(f"/recommendations/{users[0]}")
        assert c.get(f"/recommendations/{users[1]}?k=4").json() == {
            **again[1], "request_id": ANY
        }  # fmt: skip
