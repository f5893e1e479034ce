"""The dashboard as a person sees it: Playwright driving Debian's Chromium headless at
1280x800, after live events that leave a nine-month gap, an erasure and long item titles."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import duckdb
import httpx
import pytest

from recsight.data.store import Store
from recsight.models.manifest import write_manifest
from recsight.models.registry import create_model
from recsight.serving.dashboard import MAX_DAYS, _per_day
from tests.serving.conftest import API_KEY, AUTH
from tests.serving.live import live_server

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LATER = "2026-10-01"  # nine months after the shop's last event (2026-01-20)
LONELY = "2026-10-03"  # a day of two users: fewer than the minimum group size of 5
STRAY = "1970-01-02"  # five users' events with a broken clock: counted, not drawn
LONG_TITLE = "The Extraordinarily Long Illustrated Collector's Edition of Everything, Volume 12"
METRICS = ["recall@10", "recall@20", "ndcg@10", "ndcg@20", "hr@10", "hr@20", "coverage@10"]
MODELS = ["popular", "itemknn", "ease", "biased_mf", "als", "sasrec", "text_sasrec", "blend"]

# Every element of every card lies inside its card (1 px of rounding allowed), and no card
# scrolls sideways; the bodies of Plotly's hover and drag layers are empty until used.
OVERFLOWS = """() => {
  const out = [];
  for (const card of document.querySelectorAll("main > section")) {
    const c = card.getBoundingClientRect();
    if (card.scrollWidth > card.clientWidth + 1) out.push(`${card.id}: scrolls sideways`);
    for (const el of card.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (!r.width || !r.height) continue;
      if (r.left < c.left - 1 || r.right > c.right + 1 || r.top < c.top - 1 ||
          r.bottom > c.bottom + 1) {
        const what = (el.textContent || "").trim().slice(0, 40);
        out.push(`${card.id}: <${el.tagName.toLowerCase()}> "${what}" ` +
                 `[${Math.round(r.left)}, ${Math.round(r.right)}] outside ` +
                 `[${Math.round(c.left)}, ${Math.round(c.right)}]`);
      }
    }
  }
  return out;
}"""

# For each chart: its traces and how many non-null values each plots.
CHARTS = """() => [...document.querySelectorAll(".js-plotly-plot")].map(gd => ({
  id: gd.id,
  traces: gd.data.map(t => ({
    x: Array.from(t.x || []), y: Array.from(t.y || []),
    plotted: Array.from(t.orientation === "h" ? t.x : t.y).filter(v => v !== null).length,
  })),
  svgPoints: gd.querySelectorAll(".scatterlayer path.js-line, .barlayer .point").length,
}))"""


# The overview cards' (top, width).
KPIS = """() => [...document.querySelectorAll("#kpis .kpi")].map(
    k => { const r = k.getBoundingClientRect(); return [r.top, r.width]; })"""


def _even_rows(kpis: list[list[float]]) -> None:
    """Cards of one width, the same number in every row (no 3 + 1)."""
    rows: dict[int, int] = {}
    for top, _ in kpis:
        rows[round(top)] = rows.get(round(top), 0) + 1
    assert len(set(rows.values())) == 1, f"cards per row: {list(rows.values())}"
    assert max(w for _, w in kpis) - min(w for _, w in kpis) < 1, kpis


def _leaderboard(path: Path) -> Path:
    """A leaderboard.json as `recsight evaluate` writes it: eight models, seven metrics."""
    rows = [
        {
            "model": m,
            "name": m,
            "params": {},
            "fit_seconds": 1.5 * i,
            "n_users": 300,
            "metrics": {
                c: {
                    "mean": 0.1 + 0.01 * i + 0.001 * j,
                    "ci95": [0.09, 0.2],
                    "p_holm": 0.01,
                    "significantly_worse": i < 7,
                }  # fmt: skip
                for j, c in enumerate(METRICS)
            },
        }
        for i, m in enumerate(MODELS)
    ]
    best = dict.fromkeys(METRICS, "blend")
    board = {"experiment": "shop", "task": "ranking", "protocol": "leave last 20% out",
             "columns": METRICS, "best": best, "models": rows}  # fmt: skip
    path.write_text(json.dumps(board))
    return path


@pytest.fixture
def pipeline(shop_model, tmp_path) -> Path:
    """ItemKNN (unlearns exactly) with a biased MF fallback (cannot: an erasure leaves it
    pending a retrain)."""
    base, _ = shop_model
    folder = tmp_path / "pipeline"
    with Store(base, read_only=True) as s:
        data = s.interactions()
    create_model("itemknn").fit(data).save(folder / "main")
    create_model("biased_mf").fit(data).save(folder / "mf")
    write_manifest(folder, "main", ["mf"], training_cutoff="2026-01-21T00:00:00Z")
    return folder


def _need_chromium() -> None:
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is required under CI=true")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


@pytest.mark.slow
def test_dashboard_as_a_person_sees_it(pipeline, store_copy, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    _need_chromium()
    con = duckdb.connect(str(store_copy))
    (top_item,) = con.execute(
        "SELECT item_id FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
    ).fetchone()
    con.execute("UPDATE items SET title = ? WHERE item_id = ?", [LONG_TITLE, top_item])
    (first,) = con.execute('SELECT min(CAST("timestamp" AS DATE)) FROM events').fetchone()
    users = [
        u
        for (u,) in con.execute("SELECT DISTINCT user_id FROM events ORDER BY 1 LIMIT 9").fetchall()
    ]
    con.close()
    errors: list[str] = []
    board = _leaderboard(tmp_path / "leaderboard.json")
    with live_server(pipeline, store_copy, API_KEY, extra=("--leaderboard", str(board))) as url:
        # live events after a nine-month gap: six users on one day, two on another
        live = [{"user_id": u, "item_id": top_item, "event_type": "view",
                 "timestamp": f"{LATER}T10:00:00Z"} for u in users[:6]]  # fmt: skip
        live += [{"user_id": u, "item_id": top_item, "event_type": "view",
                  "timestamp": f"{LONELY}T10:00:00Z"} for u in users[6:8]]  # fmt: skip
        live += [{"user_id": u, "item_id": top_item, "event_type": "view",
                  "timestamp": f"{STRAY}T10:00:00Z"} for u in users[:5]]  # fmt: skip
        r = httpx.post(url + "/events", json=live, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["stored"] == 13, r.text
        erased = httpx.delete(f"{url}/users/{users[8]}", headers=AUTH, timeout=60)
        assert erased.status_code == 200, erased.text
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + "/")
            page.wait_for_selector("#kpis .kpi")
            page.wait_for_selector("#chart-activity .main-svg")
            page.wait_for_selector("#chart-top-items .main-svg")
            page.wait_for_selector("#chart-categories .main-svg")
            page.wait_for_selector("#leaderboard table")
            page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
            overflows = page.evaluate(OVERFLOWS)
            charts = page.evaluate(CHARTS)
            kpis = page.evaluate(KPIS)
            labels = page.evaluate("""() => {
                const box = document.getElementById("chart-top-items").getBoundingClientRect();
                return [...document.querySelectorAll("#chart-top-items .ytick text")].map(t => {
                  const r = t.getBoundingClientRect();
                  return {text: t.textContent, inside: r.left >= box.left - 1};
                });
            }""")
            hover = page.evaluate("""() => document.getElementById("chart-top-items").data[0]
                .hovertext""")
            board_cols = page.locator("#leaderboard th").all_inner_texts()
            privacy = " ".join(page.locator("#privacy").all_inner_texts())
            notes = first, page.inner_text("#activity-note"), page.inner_text("#interests-title")
            _check_overview(overflows, charts, kpis, labels, hover, board_cols, privacy, notes)
            # a narrower window (two columns of 467 px): the cards still fill even rows
            page.set_viewport_size({"width": 1000, "height": 800})
            page.wait_for_timeout(300)
            _even_rows(page.evaluate(KPIS))
            assert page.evaluate(OVERFLOWS) == []
            page.set_viewport_size({"width": 1280, "height": 800})
            # "try a user": type an id, press Enter, see history and explained recommendations
            page.fill("#user-input", users[0])
            page.press("#user-input", "Enter")
            page.wait_for_selector("#user-recs tr.rec")
            recs = page.locator("#user-recs tr.rec").count()
            why = page.locator("#user-recs tr.rec .why").all_inner_texts()
            history_rows = page.locator("#user-history tr").count()
            summary = page.inner_text("#user-summary")
            overflows = page.evaluate(OVERFLOWS)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            browser.close()
    assert errors == [] and overflows == []
    assert 1 <= recs <= 10 and all("because you liked" in w for w in why)
    assert history_rows > 1 and summary


def _check_overview(overflows, charts, kpis, labels, hover, board_cols, privacy, notes) -> None:
    """What a person sees before trying a user."""
    assert overflows == [], "\n".join(overflows)
    # every chart has data and draws it
    assert {c["id"] for c in charts} == {"chart-activity", "chart-top-items", "chart-categories"}
    for c in charts:
        assert c["traces"] and all(t["plotted"] > 0 for t in c["traces"]), c["id"]
        assert c["svgPoints"] > 0, c["id"]
    # activity: every calendar day from the first to the last, so the gap is drawn as zeros
    # and the day of two users as a break (null), never as one line across nine months
    days = next(c for c in charts if c["id"] == "chart-activity")["traces"][0]
    xs = [date.fromisoformat(d[:10]) for d in days["x"]]
    assert all((b - a).days == 1 for a, b in zip(xs, xs[1:], strict=False))
    by_day = dict(zip((d.isoformat() for d in xs), days["y"], strict=True))
    assert by_day[LATER] == 6 and by_day["2026-06-15"] == 0 and by_day[LONELY] is None
    # the stray 1970 events are left off (the window: at most three years before the last
    # event, from its first day with events), and the note under the chart says so
    first, activity_note, interests_title = notes  # first: the shop's first event day
    assert (xs[0], xs[-1]) == (first, date.fromisoformat(LONELY)), (xs[0], xs[-1])
    assert f"5 earlier events (from {STRAY}) not drawn" in activity_note, activity_note
    assert f"Shown from {first} (at most {MAX_DAYS:,} days" in activity_note, activity_note
    # the shop's categories, by events, with the title for catalog categories
    cats = next(c for c in charts if c["id"] == "chart-categories")["traces"][0]
    assert interests_title == "Categories" and len(cats["x"]) >= 3
    assert cats["x"] == sorted(cats["x"]), cats["x"]  # most events on top
    # the long title is shortened to fit, never clipped, and whole on hover
    assert labels and all(lb["inside"] for lb in labels), labels
    assert any(lb["text"].endswith("…") for lb in labels) and LONG_TITLE in hover
    # overview cards: one even row
    assert len(kpis) >= 4 and len({round(t) for t, _ in kpis}) == 1
    _even_rows(kpis)
    # the whole leaderboard: every model and metric column
    assert board_cols == ["model", *METRICS]
    # pending erasures and what the minimum group size hid (the day of two users among it)
    assert "1 erasure pending a retrain" in privacy, privacy
    assert "fewer than 5 users" in privacy and re.search(r"\b1 day\b", privacy), privacy


def test_activity_window_is_bounded():
    """A stray 1970 timestamp would make ~20,000 daily rows: the series stops at `MAX_DAYS`
    days up to the last event and counts what it left out (hidden under k users)."""
    con = duckdb.connect()
    con.execute('CREATE TABLE events (user_id VARCHAR, "timestamp" TIMESTAMP)')
    # 30 days, six users a day; then one stray user in 1970
    con.execute("INSERT INTO events SELECT 'u' || (i % 6), TIMESTAMP '2026-01-01 12:00' + "
                "INTERVAL (i // 6) DAY FROM range(180) t(i)")  # fmt: skip
    rows, suppressed, window = _per_day(con, 5)
    assert len(rows) == 30 and window["events_before"] == 0 and suppressed == 0
    con.execute("INSERT INTO events VALUES ('stray', TIMESTAMP '1970-01-01 00:00')")
    rows, _, window = _per_day(con, 5)
    assert [r["day"] for r in rows] == [str(date(2026, 1, d)) for d in range(1, 31)]
    assert window["from"] == "2026-01-01" and sum(r["events"] for r in rows) == 180
    # the window's bound: an event MAX_DAYS - 1 days before the last one is still drawn
    bound = date(2026, 1, 30) - timedelta(MAX_DAYS - 1)
    con.execute("INSERT INTO events SELECT 'b' || i, ? FROM range(5) t(i)", [bound])
    rows, _, window = _per_day(con, 5)
    assert len(rows) == MAX_DAYS and rows[0] == {"day": str(bound), "events": 5, "users": 5}
    con.execute("DELETE FROM events WHERE user_id LIKE 'b%'")
    assert window["events_before"] is None and window["first_day"] is None  # one user: hidden
    con.execute("INSERT INTO events SELECT 's' || i, TIMESTAMP '1970-01-01' FROM range(4) t(i)")
    _, _, window = _per_day(con, 5)
    assert (window["events_before"], window["first_day"]) == (5, "1970-01-01")
