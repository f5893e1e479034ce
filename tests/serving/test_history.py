"""The service's history LRU and precomputed filters: same answers as loading everything."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from recsight.data.store import Store
from recsight.llm.explain import Catalog, explain_recommendation
from recsight.models.base import history_user_keys
from recsight.models.registry import load_model
from recsight.models.topk import top_k
from recsight.serving.history import HistoryCache
from recsight.serving.pipeline import History, Pipeline
from tests.serving.conftest import AUTH

#: What the service loaded at start-up before the LRU: every user's last n events.
EAGER = """
SELECT user_id, item_id, event_type, value FROM (
    SELECT user_id, item_id, event_type, value, "timestamp", seq,
           row_number() OVER (PARTITION BY user_id
                              ORDER BY "timestamp" DESC NULLS LAST, seq DESC) AS r
    FROM events)
WHERE r <= ? ORDER BY user_id, "timestamp" NULLS FIRST, seq
"""


def eager_histories(store: Store, max_events: int) -> dict[str, History]:
    out: dict[str, History] = {}
    for user, item, etype, value in store.con.execute(EAGER, [max_events]).fetchall():
        h = out.setdefault(user, History(user_id=user))
        h.items.append(item)
        h.types.append(etype)
        h.values.append(value)
    return out


def lists(recs) -> list[tuple[str, float]]:
    return [(r.item_id, round(r.score, 5)) for r in recs.items]


@pytest.mark.parametrize("clustered", [False, True])
def test_lru_gives_the_eager_caches_recommendations(shop_model, store_copy, clustered):
    _, model = shop_model
    with Store(store_copy) as store:
        if clustered:
            store.cluster_by_user()
            # events after the copy are read from the event table's tail
            store.append_events(
                [{"user_id": "u3", "item_id": f"i{j}", "event_type": "cart"} for j in range(4)]
                + [{"user_id": "new-user", "item_id": "i7", "event_type": "view"}]
            )
        eager = eager_histories(store, 30)
        pipe = Pipeline.load(model, store.items_frame())
        # a cache far smaller than the user base: most requests evict someone
        cache = HistoryCache(store.recent_events, max_events=30, max_users=7)
        users = sorted(eager)
        assert len(users) > 250
        for user in users + users[::-3]:  # the second pass reloads evicted users
            h = cache.get(user)
            assert (h.items, h.types, h.values) == (
                eager[user].items,
                eager[user].types,
                eager[user].values,
            )
            assert lists(pipe.recommend(h, k=5)) == lists(pipe.recommend(eager[user], k=5))
        assert len(cache) == 7
        assert cache.misses == len(users) + len(users[::-3]) - cache.hits
        assert cache.get("nobody").items == []


def test_by_user_reads_agree_with_a_scan_whatever_the_watermark(store_copy):
    """Reads by user = the by-user copy up to its watermark + the event log past it: equal to
    a scan of the log with the copy fresh, stale (events appended after it), and extending
    past the watermark read (a rebuild that commits between the two statements of a read)."""
    users = ["u1", "u3", "u5", "new-user"]
    with Store(store_copy) as store:
        scan = {u: store.recent_events(u, 40) for u in users}  # no copy yet: a scan
        store.cluster_by_user()
        assert {u: store.recent_events(u, 40) for u in users} == scan
        added = [{"user_id": u, "item_id": f"i{j}", "event_type": "cart"} for j in range(3)
                 for u in users]  # fmt: skip
        store.append_events(added)  # past the copy: read from the log's tail
        upto = int(store.meta("by_user_upto"))
        store.con.execute("DELETE FROM meta WHERE key = 'by_user_upto'")
        scan = {u: store.recent_events(u, 40) for u in users}
        assert all(r[0] > upto for r in scan["new-user"]) and len(scan["new-user"]) == 3
        store.set_meta("by_user_upto", str(upto))
        assert {u: store.recent_events(u, 40) for u in users} == scan
        store.cluster_by_user()  # the copy now holds the appended events too...
        store.set_meta("by_user_upto", str(upto))  # ...beyond the watermark a read saw
        assert {u: store.recent_events(u, 40) for u in users} == scan


def test_evicted_user_reloads_with_events_added_meanwhile(store_copy):
    with Store(store_copy) as store:
        cache = HistoryCache(store.recent_events, max_events=500, max_users=2)
        before = cache.get("u1").items
        cache.get("u2")
        cache.get("u3")  # evicts u1
        assert "u1" not in cache
        res = store.append_events([{"user_id": "u1", "item_id": "i9", "event_type": "purchase"}])
        cache.add("u1", res[0]["seq"], "i9", "purchase", None)  # not cached: left alone
        assert cache.get("u1").items == [*before, "i9"]  # read back from the store
        res = store.append_events([{"user_id": "u1", "item_id": "i8", "event_type": "view"}])
        cache.add("u1", res[0]["seq"], "i8", "view", None)  # cached: appended
        assert cache.get("u1").items == [*before, "i9", "i8"]
        # evict() after the store lost the user's events: the next read sees that
        store.con.execute(
            "DELETE FROM event_log WHERE user_idx = "
            "(SELECT user_idx FROM user_map WHERE user_id = 'u1')"
        )
        assert cache.get("u1").items[-1] == "i8"
        cache.evict("u1")
        assert cache.get("u1").items == []


def test_cached_never_reads_the_store():
    """`cached` (what the event loop calls) answers from memory only."""
    reads: list[str] = []

    def load(user: str, n: int) -> list:
        reads.append(user)
        return [(1, "i1", "view", None), (2, "i2", "purchase", None)]

    cache = HistoryCache(load, max_users=1)
    assert cache.cached("u1") is None and reads == []
    loaded = cache.get("u1")
    assert reads == ["u1"] and (cache.hits, cache.misses) == (0, 1)
    assert cache.cached("u1") == loaded and loaded.items == ["i1", "i2"]
    assert cache.hits == 1
    cache.get("u2")  # evicts u1
    assert cache.cached("u1") is None and reads == ["u1", "u2"]


@pytest.mark.parametrize("committed_before_read", [True, False])
def test_event_added_while_its_user_loads_counts_once(store_copy, committed_before_read):
    """The race between a history load and a concurrent event post, both orders."""
    with Store(store_copy) as store:
        cache = HistoryCache(lambda u, n: load(u, n), max_events=500)
        new = {"user_id": "u4", "item_id": "i11", "event_type": "cart"}

        def post() -> None:
            seq = store.append_events([new])[0]["seq"]
            cache.add("u4", seq, "i11", "cart", None)

        def load(user: str, n: int):
            if committed_before_read:
                post()  # committed and added before the query: the query sees it too
                return store.recent_events(user, n)
            rows = store.recent_events(user, n)
            post()  # committed after the query: only the add carries it
            return rows

        items = cache.get("u4").items
        # neither lost (added after the query) nor doubled (seen by the query and added)
        assert items == [e[1] for e in store.recent_events("u4", 500)]
        assert items[-1] == "i11"


def test_evict_during_a_load_reads_again(store_copy):
    with Store(store_copy) as store:
        calls = []

        def load(user: str, n: int):
            calls.append(user)
            rows = store.recent_events(user, n)
            if len(calls) == 1:
                cache.evict(user)  # e.g. the user was forgotten while we read
            return rows

        cache = HistoryCache(load)
        cache.get("u6")
        assert calls == ["u6", "u6"]


def test_concurrent_gets_and_adds_are_consistent(store_copy):
    with Store(store_copy) as store:
        lock = threading.Lock()

        def load(user: str, n: int):
            with lock, store.reader() as r:
                return r.recent_events(user, n)

        cache = HistoryCache(load, max_users=5)
        users = [f"u{i}" for i in range(1, 30)]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda u: cache.get(u).items, users * 3))
        expected = {u: [e[1] for e in store.recent_events(u, 200)] for u in users}
        assert got == [expected[u] for u in users * 3]


# -- precomputed filters and popularity order ---------------------------------------------------


def reference_popular(pipe: Pipeline, history: History, k: int, category: str | None):
    """The per-request computation the precomputed order replaced."""
    main = pipe.main
    pop = main.item_popularity_.astype(np.float64).copy()
    ids = pd.Index(main.items_.ids)
    keep = ~ids.isin(list(pipe._unavailable))
    if category is not None:
        keep &= (pipe._meta["category"].reindex(ids) == category).to_numpy()
    pop[~keep] = -np.inf
    seen = main.items_.index_of(history.items, missing="ignore")
    pop[seen[seen >= 0]] = -np.inf
    cols, _ = top_k(pop[None, :], k, history_user_keys(history.user_id), main.item_keys_)
    return [(str(main.items_.ids[c]), round(float(pop[c]), 5)) for c in cols[0] if c >= 0]


def test_popularity_order_and_category_masks_match_the_full_computation(shop_model):
    base, model = shop_model
    with Store(base, read_only=True) as store:
        items = store.items_frame()
    # some items unavailable, and many popularity ties (the tie rule must still decide)
    items["available"] = [i % 7 != 0 for i in range(len(items))]
    main = load_model(model)
    main.item_popularity_ = np.floor(main.item_popularity_ / 8).astype(np.float32)
    pipe = Pipeline(main, items=items)
    cats = [None, *sorted(items["category"].dropna().unique()), "no-such-category"]
    rng = np.random.default_rng(0)
    ids = list(pipe.main.items_.ids)
    for trial in range(60):
        seen = list(rng.choice(ids, size=int(rng.integers(0, 6)), replace=False))
        h = History(user_id=f"u{trial}", items=seen, types=["view"] * len(seen))
        h.values = [None] * len(seen)
        cat = cats[trial % len(cats)]
        k = int(rng.integers(1, 15))
        got = pipe._popular(h, k, exclude_seen=True, category=cat)
        assert [(r.item_id, round(r.score, 5)) for r in got] == reference_popular(pipe, h, k, cat)
        mask = pipe._candidates(pipe.main, cat)
        keep = np.array([i % 7 != 0 for i in range(len(items))])
        by_id = dict(zip(items["item_id"], keep, strict=True))
        cat_of = dict(zip(items["item_id"], items["category"], strict=True))
        expect = np.array(
            [by_id[i] and (cat is None or cat_of[i] == cat) for i in pipe.main.items_.ids]
        )
        assert np.array_equal(mask, expect)


def test_analytics_never_wait_for_the_write_lock(client):
    """Profile and dashboard read on their own connection: with the write lock held (as
    during a long ingest commit) they still answer."""
    svc = client.app.state.service
    out: dict[str, int] = {}

    def call() -> None:
        out["profile"] = client.get("/users/u1/profile").status_code
        out["dashboard"] = client.get("/api/dashboard").status_code

    with svc.write_lock:
        t = threading.Thread(target=call)
        t.start()
        t.join(timeout=30)
    assert out == {"profile": 200, "dashboard": 200}


def test_posted_event_reflected_for_a_user_loaded_on_demand(client):
    first = client.get("/recommendations/u2?k=3").json()["recommendations"]
    target = first[0]["item_id"]
    ack = client.post(
        "/events", json={"user_id": "u2", "item_id": target, "event_type": "purchase"}, headers=AUTH
    )
    assert ack.json()["stored"] == 1
    after = client.get("/recommendations/u2?k=3").json()["recommendations"]
    assert target not in {r["item_id"] for r in after}
    health = client.get("/health").json()["history_cache"]
    assert health["misses"] >= 1 and health["hits"] >= 1


def test_explanation_names_are_built_on_first_explanation(shop_model):
    """Start-up leaves the explanations' catalog (10 CPU s at 1M items) for the first request
    that asks for explanations; those equal the ones from a catalog built up front."""
    base, model = shop_model
    with Store(base, read_only=True) as store:
        items = store.items_frame()
        history = HistoryCache(store.recent_events, max_events=30).get("u1")
    pipe = Pipeline.load(model, items)
    assert pipe._catalog is None
    recs = pipe.recommend(history, k=4, explain=True)
    assert pipe._catalog is not None and pipe.catalog is pipe.catalog
    eager = Catalog.from_items(items)
    for r in recs.items:
        exp = explain_recommendation(
            pipe.main, history.items, r.item_id, eager, top=2, weights=history.weights()
        )
        assert r.explanation == (exp.text if exp.grounded else "popular with users like you")
    assert any(r.evidence for r in recs.items)
