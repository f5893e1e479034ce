"""Group commit: concurrent requests share a transaction, yet each gets its own outcome."""

from __future__ import annotations

import threading
import time

import pytest

from recsight.data.store import Store
from recsight.errors import InputError
from recsight.serving.writes import GroupCommit


class SlowAppend:
    """Stands in for `Store.append_events`: echoes each record, 50 ms per transaction."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, records: list[dict]) -> list[dict]:
        if any(r.get("bad") for r in records):
            raise InputError("a bad record")
        self.calls.append(len(records))
        time.sleep(0.05)
        return [{"echo": r["n"]} for r in records]


def run_concurrently(gc: GroupCommit, batches: list[list[dict]]) -> list:
    out: list = [None] * len(batches)

    def post(i: int) -> None:
        try:
            out[i] = gc.submit(batches[i])
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return out


def test_concurrent_requests_share_transactions_and_get_their_own_results():
    append = SlowAppend()
    gc = GroupCommit(append, threading.Lock())
    batches = [[{"n": 10 * i + j} for j in range(i % 3 + 1)] for i in range(16)]
    out = run_concurrently(gc, batches)
    gc.stop()
    assert out == [[{"echo": r["n"]} for r in b] for b in batches]
    assert sum(append.calls) == sum(len(b) for b in batches)
    assert len(append.calls) < len(batches)  # while one commits, the others queue up


def test_a_bad_request_fails_alone():
    append = SlowAppend()
    gc = GroupCommit(append, threading.Lock())
    batches = [[{"n": i}] for i in range(6)]
    batches[3] = [{"n": 3, "bad": True}]
    out = run_concurrently(gc, batches)
    gc.stop()
    assert isinstance(out[3], InputError)
    assert [o for i, o in enumerate(out) if i != 3] == [[{"echo": i}] for i in range(6) if i != 3]


def test_duplicates_across_concurrent_requests_are_stored_once(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        gc = GroupCommit(store.append_events, threading.Lock())
        same = {"user_id": "u", "item_id": "i", "event_type": "view", "event_id": "e1"}
        out = run_concurrently(gc, [[dict(same)] for _ in range(8)])
        gc.stop()
        assert sorted(o[0]["status"] for o in out) == ["duplicate"] * 7 + ["stored"]
        assert store.count("events") == 1


def test_submit_after_stop_is_refused():
    gc = GroupCommit(SlowAppend(), threading.Lock())
    gc.stop()
    with pytest.raises(RuntimeError, match="shutting down"):
        gc.submit([{"n": 1}])
