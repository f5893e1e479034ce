"""History misses read from the memory-mapped snapshot (+ the events past it): the same
events as the store query (`Store.recent_events`), fresh or stale, and nothing of an erased
user."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timedelta

import numpy as np
from fastapi.testclient import TestClient

from recsight.data.histories import (
    META_KEY,
    HistorySnapshot,
    events_after,
    snapshot_root,
    write_history_snapshot,
)
from recsight.data.store import Store
from recsight.privacy.erasure import erase_users
from recsight.serving.app import ServiceConfig, create_app
from recsight.serving.history import StoredHistories
from tests.privacy.helpers import files_holding
from tests.serving.conftest import API_KEY, AUTH

LIMITS = (1, 7, 40, 500)


def no_query(user: str, n: int) -> list:
    raise AssertionError("read the store although a snapshot is installed")


def installed(store: Store) -> StoredHistories:
    """A loader on the store's current snapshot and the events stored after it."""
    source = StoredHistories(no_query)
    snapshot = HistorySnapshot.current(store)
    assert snapshot is not None
    source.install(snapshot, events_after(store, snapshot.upto))
    return source


def reads(load, users: list[str]) -> dict:
    return {(u, n): load(u, n) for u in users for n in LIMITS}


def sample_users(store: Store, k: int, seed: int) -> list[str]:
    ids = [r[0] for r in store.con.execute("SELECT user_id FROM user_map").fetchall()]
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ids, size=min(k, len(ids)), replace=False).tolist())


def insert_untimed(store: Store, user: str, items: list[str]) -> None:
    """Events without a timestamp (a file ingested without times): first in the order."""
    for item in items:
        store.con.execute(
            """INSERT INTO event_log (seq, user_idx, item_idx, "timestamp", event_type, value)
               SELECT (SELECT max(seq) + 1 FROM event_log), u.user_idx, i.item_idx, NULL,
                      'rating', 4.5
               FROM user_map u, item_map i WHERE u.user_id = ? AND i.item_id = ?""",
            [user, item],
        )


def test_snapshot_reads_equal_the_store_query(store_copy):
    with Store(store_copy) as store:
        insert_untimed(store, "u7", ["i1", "i2"])  # inside the snapshot
        write_history_snapshot(store)
        users = [*sample_users(store, 80, seed=1), "u7", "nobody"]
        fresh = installed(store)
        assert reads(fresh, users) == reads(store.recent_events, users)

        # stale: events stored after the snapshot, some ordered before the snapshot's events
        # (old timestamps, equal timestamps, none), some for users it never saw
        first, last = store.con.execute(
            'SELECT min("timestamp"), max("timestamp") FROM event_log'
        ).fetchone()
        late = [
            {"user_id": "u3", "item_id": "i5", "event_type": "cart",
             "timestamp": first - timedelta(days=1)},
            {"user_id": "u3", "item_id": "i6", "event_type": "view", "timestamp": last},
            {"user_id": "u3", "item_id": "i8", "event_type": "purchase"},
            {"user_id": "u9", "item_id": "i2", "event_type": "rating", "value": 3.0,
             "timestamp": first + (last - first) / 2},
            {"user_id": "past-watermark", "item_id": "i4", "event_type": "view",
             "timestamp": datetime(2020, 1, 1)},
            {"user_id": "past-watermark", "item_id": "i3", "event_type": "view"},
            {"user_id": "u5", "item_id": "new-item", "event_type": "view"},
        ]  # fmt: skip
        upto = int(store.con.execute("SELECT max(seq) FROM event_log").fetchone()[0])
        store.append_events(late)
        insert_untimed(store, "u3", ["i9"])  # after the snapshot too
        users += ["u3", "u5", "u9", "past-watermark"]
        expected = reads(store.recent_events, users)
        assert expected[("past-watermark", 500)] and expected[("u3", 500)][0][1] == "i9"
        # the loader that was running got the new events one by one, as the service records
        for user_id, event in events_after(store, upto):
            fresh.record(user_id, event)
        assert fresh.tail_events == len(late) + 1
        assert reads(fresh, users) == expected
        # and one installed now reads them from the store once
        assert reads(installed(store), users) == expected

        # an erasure withdraws the snapshot; the next one follows the renumbered users
        gone = ["u3", "past-watermark", users[0]]
        snapshot_dir = HistorySnapshot.current(store).path
        erase_users(store, gone)
        assert store.meta(META_KEY) is None and HistorySnapshot.current(store) is None
        assert not snapshot_dir.exists() and not snapshot_root(store_copy).exists()
        write_history_snapshot(store)
        after = installed(store)
        assert reads(after, users) == reads(store.recent_events, users)
        assert all(after(u, 500) == [] for u in gone)


def test_without_a_snapshot_reads_query_the_store(store_copy):
    with Store(store_copy) as store:
        source = StoredHistories(store.recent_events)
        source.record("u1", (10**9, "i1", "view", None, 0))  # no snapshot: nothing kept
        assert source.tail_events == 0
        users = sample_users(store, 10, seed=2)
        assert reads(source, users) == reads(store.recent_events, users)


WHO = "erase-me-Q7Z"


def test_service_reads_the_snapshot_and_erasure_removes_it(shop_model, store_copy, tmp_path):
    model = tmp_path / "model"  # the erasure rewrites the model folder's manifest
    shutil.copytree(shop_model[1], model)
    with Store(store_copy) as store:  # a user the snapshot will hold
        store.append_events(
            [{"user_id": WHO, "item_id": f"i{j}", "event_type": "view"} for j in (1, 2, 3)]
        )
    app = create_app(ServiceConfig(model=model, db=store_copy, api_key=API_KEY))
    with TestClient(app) as c:
        svc = app.state.service
        svc._clusterer.join(timeout=60)  # the background build on first start
        snapshot = svc.stored_histories.snapshot
        assert snapshot is not None and files_holding([snapshot.path], WHO)

        def store_reads(users: list[str]) -> dict:
            return reads(lambda u, n: svc.read(lambda s: s.recent_events(u, n)), users)

        # events posted while serving reach misses exactly as stored (ids stripped, canonical
        # types, the store's clock for events without a timestamp)
        posted = [
            {"user_id": "u2", "item_id": " i4 ", "event_type": "add_to_cart"},
            {"user_id": "u2", "item_id": "i5", "event_type": "view",
             "timestamp": "2020-01-01T00:00:00+02:00"},
            {"user_id": "fresh-user", "item_id": "i6", "event_type": "purchase"},
            {"user_id": WHO, "item_id": "i7", "event_type": "view"},
        ]  # fmt: skip
        assert c.post("/events", json=posted, headers=AUTH).json()["stored"] == 4
        users = ["u1", "u2", "u5", "fresh-user", WHO, "nobody"]
        assert svc.stored_histories.tail_events == 4
        assert reads(svc.stored_histories, users) == store_reads(users)

        assert c.delete(f"/users/{WHO}", headers=AUTH).status_code == 200
        # the snapshot holding the user is gone at once; a new one is built without them
        assert not snapshot.path.exists()
        assert svc.stored_histories(WHO, 500) == []
        svc._clusterer.join(timeout=60)
        rebuilt = svc.stored_histories.snapshot
        assert rebuilt is not None and rebuilt.id != snapshot.id
        assert files_holding([snapshot_root(store_copy)], WHO) == []
        assert reads(svc.stored_histories, users) == store_reads(users)
        assert c.get(f"/recommendations/{WHO}?k=3").json()["source"] == "popular"


def idle() -> threading.Thread:
    thread = threading.Thread(target=lambda: None)
    thread.start()
    return thread


def test_a_stale_snapshot_is_not_used_at_start(shop_model, store_copy, monkeypatch):
    """More events past the snapshot than `snapshot_max_lag` allows: start-up does not read
    them into memory; misses query the store until a rebuilt snapshot is installed."""
    from recsight.serving import service

    _, model = shop_model
    with Store(store_copy) as store:
        old = write_history_snapshot(store)
        store.append_events([{"user_id": "u1", "item_id": "i1", "event_type": "view"}] * 3)
    monkeypatch.setattr(service, "snapshot_max_lag", lambda n_events: 2)
    # no background build: what start-up itself installs
    monkeypatch.setattr(service.Service, "_start_clusterer", lambda self: idle())
    app = create_app(ServiceConfig(model=model, db=store_copy, api_key=API_KEY))
    with TestClient(app):
        svc = app.state.service
        assert svc.stored_histories.snapshot is None
        users = ["u1", "u2"]
        store_reads = reads(lambda u, n: svc.read(lambda s: s.recent_events(u, n)), users)
        assert reads(svc.stored_histories, users) == store_reads
        svc._cluster_by_user()
        snapshot = svc.stored_histories.snapshot
        assert snapshot is not None and snapshot.upto > old.upto
        assert not old.path.exists()
