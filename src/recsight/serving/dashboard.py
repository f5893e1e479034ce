"""The dashboard page: behavior overview, the leaderboard, live CTR and a "try a user" panel.

One static HTML page; its script fetches `/api/dashboard`, `/users/{id}/profile` and
`/recommendations/{id}` from the same service, and draws charts with the Plotly bundle the
page inlines (so it works without internet).
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsight.analysis.funnel import recommendation_ctr
from recsight.analysis.groups import GroupPolicy
from recsight.analysis.interests import category_counts
from recsight.analysis.source import NotAvailable, from_store
from recsight.privacy.unlearn import pending_retrain

if TYPE_CHECKING:
    from recsight.serving.service import Service, ServiceConfig


def _rows(con, sql: str) -> list[dict[str, Any]]:
    cur = con.execute(sql)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, (_plain(v) for v in row), strict=True)) for row in cur.fetchall()]


def _plain(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def _leaderboard(config: ServiceConfig) -> Any:
    candidates = [config.leaderboard] if config.leaderboard else []
    candidates += [
        Path(config.model) / "leaderboard.json",
        Path(config.model).parent / "leaderboard.json",
    ]
    for path in candidates:
        if path and Path(path).is_file():
            return json.loads(Path(path).read_text())
    return None


#: Longest span the activity chart covers, ending at the last event's day (three years: the
#: whole of MovieLens-1M); earlier events (a stray 1970 timestamp) are counted, not drawn.
MAX_DAYS = 1096


def _per_day(con, k: int) -> tuple[list[dict[str, Any]], int, dict[str, Any]]:
    """Events and active users on every UTC day of the chart's window: from the first day with
    events among the last `MAX_DAYS` days up to the last event's day. Days without events are
    0 (so a gap in the log shows as one, never as a line across it) and days of 1..k-1 users
    are None (suppressed). Also how many days were suppressed, and what the window left out
    (events before it and their first day; None when they are of 1..k-1 users)."""
    day = 'CAST("timestamp" AS DATE)'
    (first, last) = con.execute(f"SELECT min({day}), max({day}) FROM events").fetchone()
    window: dict[str, Any] = {"max_days": MAX_DAYS, "from": None, "events_before": 0,
                              "first_day": None}  # fmt: skip
    if last is None:
        return [], 0, window
    start = first
    if (last - first).days >= MAX_DAYS:
        (start,) = con.execute(
            f"SELECT min({day}) FROM events WHERE {day} > ?", [last - timedelta(MAX_DAYS)]
        ).fetchone()
        events, users = con.execute(
            f"SELECT count(*), count(DISTINCT user_id) FROM events WHERE {day} < ?", [start]
        ).fetchone()
        small = users < k
        window["events_before"] = None if small else events
        window["first_day"] = None if small else first.isoformat()
    window["from"] = start.isoformat()
    rows = _rows(
        con,
        f"""
        WITH d AS (
            SELECT {day} AS day, count(*) AS events, count(DISTINCT user_id) AS users
            FROM events WHERE {day} >= DATE '{start}' GROUP BY 1),
        span AS (
            SELECT CAST(unnest(generate_series(DATE '{start}', DATE '{last}', INTERVAL 1 DAY))
                        AS DATE) AS day)
        SELECT span.day, d.events, d.users FROM span LEFT JOIN d USING (day) ORDER BY 1""",
    )
    suppressed = 0
    for r in rows:
        if r["users"] is None:
            r["events"] = r["users"] = 0
        elif r["users"] < k:
            r["events"] = r["users"] = None
            suppressed += 1
    return rows, suppressed, window


def dashboard_data(s: Service, config: ServiceConfig) -> dict[str, Any]:
    """Aggregates for the dashboard, computed on the calling thread's read connection (never
    under the write lock, so event ingest goes on meanwhile)."""
    store = s.reader()
    con = store.con
    info = store.info()
    # minimum group size: days, items and live-CTR rows of fewer distinct users are not
    # shown, nor (unless asked for) the sample users, each of whom is one person
    k = int(config.min_group_size)
    policy = GroupPolicy(k, config.show_examples)
    per_day, small_days, per_day_window = _per_day(con, k)
    policy.note("days", small_days)
    top_items = _rows(
        con,
        f"""
        SELECT e.item_id, any_value(i.title) AS title, count(*) AS events
        FROM events e LEFT JOIN items i ON e.item_id = i.item_id
        GROUP BY 1 HAVING count(DISTINCT e.user_id) >= {k} ORDER BY 3 DESC, 1 LIMIT 10""",
    )
    if policy.active:
        (small_items,) = con.execute(
            "SELECT count(*) FROM (SELECT item_id FROM events GROUP BY 1 "
            "HAVING count(DISTINCT user_id) < ?)",
            [k],
        ).fetchone()
        policy.note("items", small_items)
    users = []
    if policy.examples_allowed:
        users = _rows(
            con,
            "SELECT user_id, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 8",
        )
    # categories, or topics from item text when the catalog has none (`basis` says which)
    src = from_store(store)
    src.privacy = policy
    categories = category_counts(src, top_k=10).model_dump()
    try:
        live = recommendation_ctr(src)
        ctr = [
            {
                "model_version": r.key,
                "exposures": r.views,
                "clicks": r.clicks,
                "ctr": r.ctr,
                "ctr_low95": r.wilson_low,
            }
            for r in live.by_model
        ]
    except NotAvailable:
        ctr = []
    overview = info.to_dict()
    if policy.active:
        # event types of fewer users are named without a count; the raw types and the rating
        # histogram are not drawn on the page, so they are not sent (the report has them)
        small = {t for (t,) in con.execute(
            "SELECT event_type FROM events GROUP BY 1 HAVING count(DISTINCT user_id) < ?", [k]
        ).fetchall()}  # fmt: skip
        overview["event_types"] = {
            t: None if t in small else n for t, n in overview["event_types"].items()
        }
        policy.note("event_types", len(small & set(overview["event_types"])))
        overview.pop("rating_histogram", None)
        overview.pop("raw_event_types", None)
    return {
        "info": overview,
        "per_day": per_day,
        "per_day_window": per_day_window,
        "top_items": top_items,
        "categories": categories,
        "sample_users": users,
        "live_ctr": ctr,
        "leaderboard": _leaderboard(config),
        "manifest": s.pipeline.manifest,
        "erasures_pending_retrain": pending_retrain(s.pipeline.manifest),
        "min_group_size": k,
        "show_examples": policy.examples_allowed,
        # what the minimum group size hid: days, items, event types, live-CTR model versions
        "suppressed": {
            "days": policy.suppressed.get("days", 0),
            "items": policy.suppressed.get("items", 0),
            "event_types": policy.suppressed.get("event_types", 0),
            "live_ctr": policy.suppressed.get("recommendation_ctr.by_model", 0),
        },
    }


@functools.cache
def render_dashboard() -> str:
    from plotly.offline import get_plotlyjs

    page = (Path(__file__).with_name("dashboard.html")).read_text()
    return page.replace("/*PLOTLY_JS*/", get_plotlyjs())
