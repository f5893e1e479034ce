"""The whole report: planted structure in generated data, real datasets, CLI, browser."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import typer
from conftest import need
from typer.testing import CliRunner

from recsight.analysis import (
    analyze,
    data_quality,
    from_store,
    report_schema,
    segments,
    user_profile,
    write_report,
)
from recsight.cli.analysis import register
from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.errors import InputError

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A generated shop (600 users, 2 planted bots) ingested into a store."""
    folder = tmp_path_factory.mktemp("shop")
    generate_shop(folder / "data", n_users=600, n_items=200, n_days=20, seed=0)
    db = folder / "shop.duckdb"
    with Store(db) as store:
        ingest(store, folder / "data")
    truth = pd.read_parquet(folder / "data" / "users_truth.parquet")
    return db, truth


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_bot_detection_finds_planted_bots(shop):
    db, truth = shop
    with Store(db, read_only=True) as store:
        q = data_quality(from_store(store))
    planted = set(truth.user_id[truth.is_bot])
    found = {b.user_id for b in q.bots}
    assert len(planted) == 2
    assert planted <= found
    assert len(found - planted) <= 1  # at most one human flagged out of 598


def test_duplicates_are_counted_and_shown_with_external_ids(tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text(
        "user_id,item_id,event_type,timestamp\n"
        "alice,x,view,2024-01-01T10:00:00\n"
        "alice,x,view,2024-01-01T10:00:00\n"
        "alice,x,view,2024-01-01T10:00:00\n"
        "bob,x,view,2024-01-01T10:00:00\n"
        "bob,y,view,2024-01-01T11:00:00\n"
        "bob,y,view,2024-01-01T11:00:00\n"
    )
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, csv, dedupe="none")
        q = data_quality(from_store(store))
    assert q.duplicates.count == 3  # two extra copies of alice's view, one of bob's
    shown = sorted((d["user_id"], d["item_id"], d["copies"]) for d in q.duplicates.examples)
    assert shown == [("alice", "x", 3), ("bob", "y", 2)]


def test_segments_and_profile_on_generated_shop(shop):
    db, truth = shop
    with Store(db, read_only=True) as store:
        src = from_store(store)
        s = segments(src)
        assert 2 <= s.k <= 6 and sum(x.size for x in s.segments) == s.n_users == 600
        assert all(x.description.startswith(f"Segment {x.segment}:") for x in s.segments)
        assert all(x.conversion is not None for x in s.segments)
        events = store.events_frame()
        uid = events.user_id.value_counts().index[0]
        p = user_profile(src, uid)
        mine = events[events.user_id == uid]
        assert p.n_events == len(mine)
        assert p.event_types == mine.event_type.value_counts().to_dict()
        assert sum(c.share for c in p.top_categories) <= 1 + 1e-9
        assert p.summary.startswith(f"User {uid}:")
        with pytest.raises(InputError, match="no events"):
            user_profile(src, "no-such-user")


def test_analyze_cli_on_generated_shop(shop, tmp_path):
    db, _ = shop
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        _cli(),
        # an LLM endpoint that refuses connections: every summary falls back to the template
        [
            "analyze",
            "--db",
            str(db),
            "--out",
            str(out),
            "--json",
            "--llm-url",
            "http://127.0.0.1:9",
            "--llm-model",
            "m",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data == json.loads((out / "report.json").read_text())
    assert all(s["status"] == "ok" for s in data["sections"].values())
    stages = [s["name"] for s in data["funnel"]["stages"]]
    assert stages == ["view", "click", "cart", "purchase"]
    assert data["ctr"]["overall"] > 0 and data["funnel"]["side_branch"]["name"] == "fav"
    assert data["sessions"]["source"] == "session_id"
    assert (out / "report.html").stat().st_size > 1_000_000  # plotly.js inlined
    schema = json.loads((out / "report.schema.json").read_text())
    assert schema == json.loads(json.dumps(report_schema()))
    assert set(data) <= set(schema["properties"])


def test_sections_option_and_bad_input(shop, tmp_path):
    db, _ = shop
    app = _cli()
    r = CliRunner().invoke(
        app, ["analyze", "--db", str(db), "--out", str(tmp_path), "--sections", "overview,funnel",
              "--funnel", "view,purchase"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "report.json").read_text())
    assert list(data["sections"]) == ["overview", "funnel"]
    assert data["retention"] is None
    assert [s["name"] for s in data["funnel"]["stages"]] == ["view", "purchase"]
    r = CliRunner().invoke(app, ["analyze", "--db", str(db), "--out", str(tmp_path),
                                 "--sections", "nope"])  # fmt: skip
    assert r.exit_code == 2 and "nope" in r.output
    r = CliRunner().invoke(app, ["profile", "u1", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 2


def test_profile_cli_json(shop):
    db, _ = shop
    r = CliRunner().invoke(_cli(), ["profile", "u1", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["user_id"] == "u1"


def test_log_without_timestamps_reports_not_available(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("user_id,item_id\n" + "".join(f"u{k % 7},i{k % 11}\n" for k in range(60)))
    with Store(tmp_path / "p.duckdb") as store:
        ingest(store, path)
        rep = analyze(from_store(store))
    st = {k: v.status for k, v in rep.sections.items()}
    for name in ("activity", "retention", "sessions"):
        assert st[name] == "not_available" and "timestamps" in rep.sections[name].reason
    assert st["overview"] == st["popularity"] == "ok"
    assert rep.overview.n_events == 60 and rep.overview.time_min is None


# -- real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taobao_report(data_dir, tmp_path_factory):
    path = need(data_dir / "taobao-userbehavior" / "UserBehavior_users_head.csv")
    folder = tmp_path_factory.mktemp("taobao")
    with Store(folder / "tb.duckdb") as store:
        ingest(store, path)
    r = CliRunner().invoke(_cli(), ["analyze", "--db", str(folder / "tb.duckdb"),
                                    "--out", str(folder / "rep")])  # fmt: skip
    assert r.exit_code == 0, r.output
    return folder / "rep"


def test_taobao_users_head_key_figures(taobao_report):
    data = json.loads((taobao_report / "report.json").read_text())
    o = data["overview"]
    assert o["event_types"] == {"view": 75693, "cart": 4494, "fav": 2351, "purchase": 1749}
    assert (o["n_events"], o["n_users"], o["n_items"]) == (84287, 814, 55233)
    assert o["timezone"] == "Asia/Shanghai"
    stages = {s["name"]: s["events"] for s in data["funnel"]["stages"]}
    assert stages == {"view": 75693, "cart": 4494, "purchase": 1749}
    assert data["funnel"]["side_branch"]["name"] == "fav"
    assert data["ctr"] is None  # no click events in Taobao
    assert data["ratings"] is None
    assert data["interests"]["n_categories"] == 2911


def test_ml100k_key_figures(data_dir, tmp_path):
    need(data_dir / "ml-100k" / "u.data")
    with Store(tmp_path / "ml.duckdb") as store:
        ingest(store, data_dir / "ml-100k")
        rep = analyze(from_store(store))
    write_report(rep, tmp_path / "rep")
    o = rep.overview
    assert (o.n_events, o.n_users, o.n_items) == (100_000, 943, 1682)
    assert o.rating_histogram == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    assert o.sparsity == pytest.approx(1 - 100_000 / (943 * 1682), abs=1e-6)
    assert rep.ratings.global_mean == pytest.approx(3.52986)
    assert rep.sections["funnel"].status == "not_available"
    assert rep.popularity.n_items == 1682 and 0.5 < rep.popularity.gini < 0.8


# -- the report as a person sees it ------------------------------------------------------


def test_report_renders_in_headless_chromium(taobao_report):
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is required under CI=true")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    data = json.loads((taobao_report / "report.json").read_text())
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        page = browser.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto((taobao_report / "report.html").as_uri())
        page.wait_for_load_state("load")
        ids = [c["id"] for c in data["charts"]]
        rendered = page.evaluate(
            """ids => ids.filter(id => {
                const el = document.getElementById('chart-' + id);
                return el && el.querySelector('.main-svg') && el.querySelectorAll('.trace').length
                    + el.querySelectorAll('.hm, .funnellayer path, .heatmaplayer image').length > 0;
            })""",
            ids,
        )
        toc = page.eval_on_selector_all("nav a", "els => els.map(e => e.getAttribute('href'))")
        browser.close()
    assert errors == []
    assert len(ids) >= 10 and rendered == ids
    assert toc == [f"#{name}" for name in data["sections"]]
