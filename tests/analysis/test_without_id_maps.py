"""Queries read `event_log`, joined only to the id maps whose external ids reach their result,
instead of the `events` view, which joins every event to both maps
(`recsight.analysis.source.without_id_maps`): the same rows, with fewer joins."""

from __future__ import annotations

import ibis

from recsight.analysis.source import _table, from_store, without_id_maps
from tests.analysis.analysis_stores import build_store

EVENTS = [
    ("u1", "a", 0, "view"),
    ("u1", "b", 60, "view"),
    ("u1", "b", 120, "click"),
    ("u2", "a", 0, "view"),
    ("u2", "c", 30, "purchase"),
    ("u3", "c", 10, "view"),
]
ITEMS = {"a": "Toys", "b": "Books", "c": "Toys"}


def _queries(src) -> dict[str, tuple]:
    """name -> (query, the maps its rewrite joins; None: left as it is)."""
    e = src.events
    ec = src.events_with_category()  # a join that carries user_id and item_id along, unread
    w = e.mutate(u=e.user_id, x=e.item_idx * 2)  # user_id kept under another name
    views = e.filter(e.event_type == "view")
    return {
        "count": (e.count().as_table(), set()),
        "per_user": (views.group_by("user_idx").aggregate(n=views.count()), set()),
        "per_category": (
            ec.group_by("category").aggregate(n=ec.count(), u=ec.user_idx.nunique()),
            set(),
        ),
        "unread_id": (w.group_by("x").aggregate(n=w.count()), set()),
        "window": (
            e.mutate(
                r=ibis.row_number().over(group_by=e.user_idx, order_by=[e.timestamp, e.seq])
            ).select("seq", "r"),
            set(),
        ),
        "user_ids": (e.group_by("user_idx").aggregate(u=e.user_id.arbitrary()), {"user_map"}),
        "renamed": (w.select("seq", "u"), {"user_map"}),
        "filter_on_id": (e.filter(e.item_id == "b").select("seq"), {"item_map"}),
        "joined_ids": (ec.select("seq", "item_id"), {"item_map"}),
        "distinct_rows": (e.distinct().count().as_table(), None),
        "all_columns": (e.filter(e.event_type == "click"), None),
        "both_ids": (e.select("user_id", "item_id"), None),
    }


def _sorted(d):
    return d.sort_values(list(d.columns)).reset_index(drop=True)


def test_queries_read_the_log_with_only_the_maps_they_need(tmp_path):
    with build_store(tmp_path, EVENTS, items=ITEMS) as store:
        src = from_store(store)
        log = _table(store, "event_log")
        maps = {"user_id": _table(store, "user_map"), "item_id": _table(store, "item_map")}
        for name, (t, joined) in _queries(src).items():
            out = without_id_maps(t, src.events, log, maps)
            if joined is None:
                assert out is t, name
                continue
            sql = ibis.to_sql(out, dialect="duckdb")
            assert '"events"' not in sql and '"event_log"' in sql, name
            assert {m for m in ("user_map", "item_map") if f'"{m}"' in sql} == joined, name
            plain = store.con.execute(ibis.to_sql(t, dialect="duckdb")).df()
            assert len(plain) and _sorted(src.df(out)).equals(_sorted(plain)), name
        # a query over other tables only is left alone
        it = src.items.count().as_table()
        assert without_id_maps(it, src.events, log, maps) is it
