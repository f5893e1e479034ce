"""Section 4, popularity and the long tail: popularity curve, Gini coefficient, the share of
events on the top 1% and 20% of items, overall and per category."""

from __future__ import annotations

import ibis
import numpy as np
from pydantic import BaseModel

from recsight.analysis.groups import large_groups, merge_small
from recsight.analysis.source import AnalysisSource

CURVE_POINTS = 200
TOP_CATEGORIES = 20


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = all equal, -> 1 = one item takes all).

    G = sum_i (2i - n - 1) x_(i) / (n * sum x), x sorted ascending, i = 1..n.
    """
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * total))


def top_share(counts: np.ndarray, fraction: float) -> float:
    """Share of the total held by the top `fraction` of entries (at least one entry)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))[::-1]
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    k = max(1, int(round(fraction * len(x))))
    return float(x[:k].sum() / x.sum())


class CategoryPopularity(BaseModel):
    category: str
    items: int
    events: int
    gini: float
    top_20pct_share: float


class Popularity(BaseModel):
    event_type: str | None  # which events count (None: all)
    n_items: int  # items with at least one counted event
    n_catalog_items_without_events: int
    gini: float
    top_1pct_share: float
    top_20pct_share: float
    curve_item_fraction: list[float]  # x: top fraction of items (by popularity)
    curve_event_share: list[float]  # y: cumulative share of events
    top_items: list[dict]  # item_id, title, category, events
    by_category: list[CategoryPopularity]


def popularity(src: AnalysisSource, event_type: str | None = None) -> Popularity:
    """Popularity over events of `event_type` (default: views when present, else all)."""
    e = src.events
    if event_type is None and "view" in src.event_type_counts:
        event_type = "view"
    if event_type is not None:
        e = e.filter(e.event_type == event_type)
    # categories of fewer than k users are reported together as "other"
    ec = merge_small(src, src.events_with_category(e), "category", "popularity.by_category")
    # read whole here and again for the top items: aggregated over the events once
    per_item = src.materialize(
        ec.group_by("item_idx", "category").aggregate(n=ec.count(), users=ec.user_idx.nunique())
    )
    d = src.df(per_item)
    counts = d.n.to_numpy(np.int64)
    order = np.argsort(-counts, kind="stable")
    cum = np.cumsum(counts[order]) / max(counts.sum(), 1)
    pick = np.unique(np.linspace(0, len(cum) - 1, min(CURVE_POINTS, len(cum))).astype(int))
    shown = large_groups(src, per_item, "users", "popularity.top_items")
    top = src.df(shown.order_by(ibis.desc("n"), "item_idx").limit(10))
    it = src.items
    meta = src.df(
        it.filter(it.item_idx.isin(top.item_idx.astype(int).tolist())).select(
            "item_idx", "item_id", "title"
        )
    ).set_index("item_idx")
    by_cat = []
    small = set()
    if src.privacy.active:  # "other" itself can still be too small
        cats = ec.group_by("category").aggregate(users=ec.user_idx.nunique())
        small = set(src.df(cats.filter(cats.users < src.privacy.min_group_size)).category)
        src.privacy.note("popularity.by_category", len(small))
    for cat, g in d.groupby("category", sort=False):
        if cat in small:
            continue
        c = g.n.to_numpy(np.int64)
        by_cat.append(
            CategoryPopularity(
                category=str(cat),
                items=len(c),
                events=int(c.sum()),
                gini=round(gini(c), 6),
                top_20pct_share=round(top_share(c, 0.2), 6),
            )
        )
    by_cat.sort(key=lambda c: -c.events)
    n_catalog = int(src.scalar(src.items.count()))
    return Popularity(
        event_type=event_type,
        n_items=len(counts),
        n_catalog_items_without_events=max(n_catalog - len(counts), 0),
        gini=round(gini(counts), 6),
        top_1pct_share=round(top_share(counts, 0.01), 6),
        top_20pct_share=round(top_share(counts, 0.2), 6),
        curve_item_fraction=[round((i + 1) / len(cum), 6) for i in pick],
        curve_event_share=[round(float(cum[i]), 6) for i in pick],
        top_items=[
            {
                "item_id": str(meta.item_id.get(r.item_idx, "")),
                "title": None
                if meta.title.get(r.item_idx) is None
                else str(meta.title.get(r.item_idx)),
                "category": str(r.category),
                "events": int(r.n),
            }
            for r in top.itertuples()
        ],
        by_category=by_cat[:TOP_CATEGORIES],
    )
