"""Minimum group size: no row of the report or the dashboard describes fewer than k users."""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recsight.analysis import analyze, from_store
from recsight.analysis.groups import GroupPolicy
from recsight.analysis.report import render_html
from recsight.cli.main import app
from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.models.registry import create_model
from recsight.serving.app import ServiceConfig, create_app

SECTIONS = ["activity", "popularity", "retention", "quality", "funnel", "interests", "sessions"]
LONE_DAY = datetime(2026, 3, 30, 12, 0)  # weeks after the shop's last event


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A shop plus two users alone on their own day (and week) with an item of a category
    nobody else has."""
    root = tmp_path_factory.mktemp("groups")
    shop = generate_shop(root / "shop", n_users=40, n_items=20, n_days=10, seed=4)
    path = root / "s.duckdb"
    with Store(path) as s:
        ingest(s, shop.out_dir)
        s.append_events(
            [
                {"user_id": u, "item_id": "rare-item", "event_type": "view", "timestamp": LONE_DAY}
                for u in ("lone-1", "lone-2")
            ]  # fmt: skip
        )
        s.con.execute("INSERT INTO items (item_id, item_idx, category) SELECT item_id, "
                      "item_idx, 'rare-cat' FROM item_map WHERE item_id = 'rare-item'")  # fmt: skip
    return path


def _report(db, k: int, show: bool = False, sections: list[str] = SECTIONS):
    with Store(db, read_only=True) as s:
        src = from_store(s)
        src.privacy = GroupPolicy(k, show)
        return analyze(src, sections)


def _q(db, sql: str):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_small_groups_suppressed(db):
    r = _report(db, 5)
    small_days = _q(db, 'SELECT count(*) FROM (SELECT CAST("timestamp" AS DATE) d FROM events '
                        "GROUP BY 1 HAVING count(DISTINCT user_id) < 5)")[0][0]  # fmt: skip
    assert small_days >= 1  # the lone day at least
    assert LONE_DAY.date().isoformat() not in r.activity.daily.period
    assert min(r.activity.daily.active_users) >= 5
    assert min(r.activity.weekly.active_users) >= 5
    assert r.privacy.suppressed_by_place["activity.daily"] == small_days
    # every listed item has at least 5 users; the rare one and its category are not shown
    users_of = dict(_q(db, "SELECT item_id, count(DISTINCT user_id) FROM events GROUP BY 1"))
    assert r.popularity.top_items and all(users_of[t["item_id"]] >= 5
                                          for t in r.popularity.top_items)  # fmt: skip
    assert "rare-cat" not in {c.category for c in r.popularity.by_category}
    assert "rare-item" not in {t["item_id"] for t in r.popularity.top_items}
    assert min(r.retention.sizes) >= 5
    assert r.sessions.length_histogram  # still drawn, without bars of fewer than 5 users
    # the min and max of per-entity figures are one entity's values each
    assert set(r.interests.entropy.q) == {"p25", "p50", "p75", "p90", "p99"}
    assert all(g.users[0] >= 5 for g in r.funnel.by_category + r.funnel.by_week)
    assert "rare-cat" not in {g.group for g in r.funnel.by_category}
    assert all(pair.users >= 5 for pair in r.interests.associations)
    assert r.interests.top_drifters == []
    assert "rare-cat" not in {c.category for c in r.interests.top_categories}
    assert "rare-cat" not in r.interests.transition_categories
    assert r.quality.bots == []  # rows about single users are left out
    assert all(not i.examples for i in r.quality.timestamps.values())
    p = r.privacy
    assert p.min_group_size == 5 and p.suppressed_rows == sum(p.suppressed_by_place.values())
    assert "Minimum group size 5" in render_html(r)


def test_off_with_one_and_examples_on_request(db):
    r = _report(db, 1, sections=["activity", "retention"])
    assert LONE_DAY.date().isoformat() in r.activity.daily.period
    assert r.privacy.suppressed_rows == 0
    assert 2 in r.retention.sizes  # the lone users' cohort
    shown = _report(db, 5, show=True, sections=["quality"])
    assert shown.privacy.show_examples
    assert "quality.examples" not in shown.privacy.suppressed_by_place


def test_cli_default_is_five(db, tmp_path):
    res = CliRunner().invoke(app, ["analyze", "--db", str(db), "--out", str(tmp_path / "r"),
                                   "--sections", "activity", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["privacy"]["min_group_size"] == 5
    assert report["privacy"]["suppressed_rows"] >= 1
    assert min(report["activity"]["daily"]["active_users"]) >= 5


def test_dashboard_hides_small_groups(db, tmp_path):
    with Store(db, read_only=True) as s:
        data = s.interactions()
    create_model("popular").fit(data).save(tmp_path / "m")
    live = tmp_path / "live.duckdb"
    live.write_bytes(db.read_bytes())
    with TestClient(create_app(ServiceConfig(model=tmp_path / "m", db=live))) as c:
        d = c.get("/api/dashboard").json()
    assert d["sample_users"] == [] and d["min_group_size"] == 5
    shown = [r for r in d["per_day"] if r["users"]]  # days without events are 0
    assert shown and min(r["users"] for r in shown) >= 5
    # the lone day is a break in the chart (None), not a figure, and counted as suppressed
    days = {r["day"][:10]: r for r in d["per_day"]}
    assert days[LONE_DAY.date().isoformat()] == {"day": "2026-03-30", "events": None, "users": None}
    assert d["suppressed"]["days"] >= 1 and d["suppressed"]["items"] >= 1
    assert "rare-item" not in {r["item_id"] for r in d["top_items"]}
    config = ServiceConfig(model=tmp_path / "m", db=live, min_group_size=1, show_examples=True)
    with TestClient(create_app(config)) as c:
        d = c.get("/api/dashboard").json()
    assert len(d["sample_users"]) == 8
    days = {r["day"][:10]: r for r in d["per_day"]}
    assert days[LONE_DAY.date().isoformat()] == {"day": "2026-03-30", "events": 2, "users": 2}
    assert d["suppressed"] == {"days": 0, "items": 0, "event_types": 0, "live_ctr": 0}


def test_blank_small_keeps_empty_cells():
    from recsight.analysis.groups import blank_small

    policy = GroupPolicy(5)
    # an empty cell describes nobody; 3 users is too few; 7 events of 5 users are shown
    assert blank_small(policy, [0, 3, 7], [0, 3, 5], "here") == [0, None, 7]
    assert policy.suppressed == {"here": 1}
    assert blank_small(GroupPolicy(1), [1, 2], [1, 2], "x") == [1, 2]
