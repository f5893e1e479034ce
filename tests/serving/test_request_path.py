"""What one recommendation request costs the service beyond the model: no thread hop for a
cached user, and the HTTP layer on C parsers (httptools, uvloop) rather than pure Python."""

from __future__ import annotations

import sys

import anyio.to_thread
import uvicorn
from typer.testing import CliRunner

from recsight.cli.main import app


def test_cached_user_request_takes_no_thread_pool_hop(client, monkeypatch):
    # a plain `def` dependency runs in FastAPI's thread pool: a hop (and its wake-ups) on
    # every request; a cached user's request needs none (the model runs on the batcher)
    user = str(client.app.state.service.pipeline.main.users_.ids[0])
    first = client.get(f"/recommendations/{user}")  # loads the history: a hop allowed
    assert first.status_code == 200 and first.json()["source"] == "main"
    hops = []
    real = anyio.to_thread.run_sync

    async def counted(func, *args, **kwargs):
        hops.append(getattr(func, "__name__", repr(func)))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
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
