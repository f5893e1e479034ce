"""The dashboard page: behavior overview, the leaderboard, live CTR and a "try a user" panel.

One static HTML page; its script fetches `/api/dashboard`, `/users/{id}/profile` and
`/recommendations/{id}` from the same service, and draws charts with the Plotly bundle the
page inlines (so it works without internet).
"""

from __future__ import annotations

import functools
import json
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


def dashboard_data(s: Service, config: ServiceConfig) -> dict[str, Any]:
    """Aggregates for the dashboard, computed on the calling thread's read connection (never
    under the write lock, so event ingest goes on meanwhile)."""
    store = s.reader()
    con = store.con
    info = store.info()
    # minimum group size: days and items of fewer distinct users are not shown, nor (unless
    # asked for) the sample users, each of whom is one person
    k = int(config.min_group_size)
    per_day = _rows(
        con,
        f"""
        SELECT CAST("timestamp" AS DATE) AS day, count(*) AS events,
               count(DISTINCT user_id) AS users
        FROM events WHERE "timestamp" IS NOT NULL GROUP BY 1
        HAVING count(DISTINCT user_id) >= {k} ORDER BY 1""",
    )
    top_items = _rows(
        con,
        f"""
        SELECT e.item_id, any_value(i.title) AS title, count(*) AS events
        FROM events e LEFT JOIN items i ON e.item_id = i.item_id
        GROUP BY 1 HAVING count(DISTINCT e.user_id) >= {k} ORDER BY 3 DESC, 1 LIMIT 10""",
    )
    users = []
    if config.show_examples or k <= 1:
        users = _rows(
            con,
            "SELECT user_id, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 8",
        )
    # categories, or topics from item text when the catalog has none (`basis` says which)
    src = from_store(store)
    src.privacy = GroupPolicy(k, config.show_examples)
    categories = category_counts(src, top_k=10).model_dump()
    try:
        live = recommendation_ctr(from_store(store))
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
    return {
        "info": info.to_dict(),
        "per_day": per_day,
        "top_items": top_items,
        "categories": categories,
        "sample_users": users,
        "live_ctr": ctr,
        "leaderboard": _leaderboard(config),
        "manifest": s.pipeline.manifest,
        "erasures_pending_retrain": pending_retrain(s.pipeline.manifest),
        "min_group_size": k,
    }


@functools.cache
def render_dashboard() -> str:
    from plotly.offline import get_plotlyjs

    page = (Path(__file__).with_name("dashboard.html")).read_text()
    return page.replace("/*PLOTLY_JS*/", get_plotlyjs())
