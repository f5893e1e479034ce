"""Intermediates materialized once per report (`AnalysisSource.scope` / `materialize`): the
report is the same as when every query recomputes them (and reads the events view where
`from_store` reads event_log), and the temporary tables are gone after the report."""

from __future__ import annotations

import json

import ibis
import pytest

from recsight.analysis import analyze, from_store
from recsight.analysis.groups import GroupPolicy
from recsight.analysis.sessions import session_table
from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from tests.analysis.compare import assert_same


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A generated shop (with planted bots, a fav side branch, clicks and categories) whose
    local time zone has a daylight-saving change."""
    folder = tmp_path_factory.mktemp("mat")
    generate_shop(folder / "data", n_users=200, n_items=100, n_days=10, seed=3)
    path = folder / "shop.duckdb"
    with Store(path) as store:
        ingest(store, folder / "data", tz="Europe/Berlin")
    return path


def _temp_tables(store: Store) -> list[str]:
    rows = store.con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    return [r[0] for r in rows]


def _report(src) -> dict:
    return json.loads(analyze(src).model_dump_json())


@pytest.mark.parametrize("k", [1, 5])
def test_report_equals_the_report_that_recomputes_everything(db, k):
    with Store(db, read_only=True) as store:
        kept: list[str] = []
        src = from_store(store)
        keep = src.keep

        def keep_then_check(name, expr):
            drop = keep(name, expr)
            kept.append(name)
            assert name in _temp_tables(store)
            return drop

        src.keep = keep_then_check
        src.privacy = GroupPolicy(min_group_size=k)
        stored = _report(src)
        lazy_src = from_store(store)
        lazy_src.keep = None  # every query computes its intermediates again
        # ... from the events view as written (`without_id_maps` off): queries reading
        # event_log where no external id is needed give the same report
        lazy_src.execute = lambda e: store.con.execute(ibis.to_sql(e, dialect="duckdb")).df()
        lazy_src.privacy = GroupPolicy(min_group_size=k)
        lazy = _report(lazy_src)
        # floats within 1e-9: the mean drift, a sum of doubles, differed in its last bit
        assert_same(stored, lazy)
        assert stored["sections"]["funnel"]["status"] == "ok"
        assert stored["sessions"]["n_sessions"] > 0
        # reach, side branch, CTR per item, sessions, profiles, drift, recent items, ...
        assert len(kept) >= 10
        assert _temp_tables(store) == []  # all dropped after the report


def test_temp_tables_are_dropped_when_a_section_fails(db):
    with Store(db, read_only=True) as store:
        src = from_store(store)
        with pytest.raises(RuntimeError, match="boom"), src.scope():
            st = session_table(src)
            assert session_table(src) is st  # shared within the scope, stored once
            assert len(_temp_tables(store)) == 1
            raise RuntimeError("boom")
        assert _temp_tables(store) == []
        assert session_table(src) is not st  # the scope's tables are forgotten with it


def test_materialize_outside_a_scope_is_the_expression(db):
    with Store(db, read_only=True) as store:
        src = from_store(store)
        expr = src.events.group_by("user_idx").aggregate(n=src.events.count())
        assert src.materialize(expr) is expr
        with src.scope():
            t = src.materialize(expr)
            assert t is not expr and t.schema() == expr.schema()
            assert src.df(t.order_by("user_idx")).equals(src.df(expr.order_by("user_idx")))
        assert _temp_tables(store) == []
