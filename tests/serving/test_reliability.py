"""A server killed with SIGKILL mid-stream loses no acknowledged event."""

from __future__ import annotations

import signal
import threading
import time

import duckdb
import httpx
import pytest

from tests.serving.conftest import API_KEY
from tests.serving.live import free_port, live_server, start_raw, wait_healthy


@pytest.mark.slow
def test_sigkill_keeps_every_acknowledged_event(shop_model, store_copy):
    _, model = shop_model
    port = free_port()
    proc = start_raw(model, store_copy, API_KEY, port)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, 60)

    acked: list[str] = []
    stop = threading.Event()

    def stream() -> None:
        headers = {"X-API-Key": API_KEY}
        with httpx.Client(base_url=url, timeout=5) as c:
            for n in range(100_000):
                if stop.is_set():
                    return
                batch = [
                    {
                        "user_id": f"k{n % 7}",
                        "item_id": f"i{(n * 3 + j) % 80}",
                        "event_type": "view",
                        "event_id": f"kill-{n}-{j}",
                    }
                    for j in range(5)
                ]
                try:
                    r = c.post("/events", json={"events": batch}, headers=headers)
                except httpx.HTTPError:
                    return  # the server died mid-request: that batch was never acknowledged
                if r.status_code == 200:
                    acked.extend(e["event_id"] for e in batch)

    t = threading.Thread(target=stream)
    t.start()
    while len(acked) < 200:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stop.set()
    t.join()

    # restart on the same store: the WAL is replayed, and every ack is there
    with live_server(model, store_copy, API_KEY) as url2:
        assert httpx.get(url2 + "/health").json()["status"] == "ok"
    con = duckdb.connect(str(store_copy), read_only=True)
    stored = {
        r[0]
        for r in con.execute("SELECT event_id FROM events WHERE event_id LIKE 'kill-%'").fetchall()
    }
    assert len(acked) >= 200
    assert set(acked) <= stored
