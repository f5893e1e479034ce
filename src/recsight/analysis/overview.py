"""Section 1, overview: size, event types, time span, sparsity and per-user/per-item spread."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import ibis
import numpy as np
from pydantic import BaseModel

from recsight.analysis.groups import blank_small
from recsight.analysis.source import AnalysisSource, iso

if TYPE_CHECKING:
    import ibis.expr.types as ir

QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


class Quantiles(BaseModel):
    """Quantiles of a per-entity count, keyed "p0", "p25", ..., "p100", plus the mean (no
    "p0"/"p100" under a minimum group size)."""

    mean: float
    q: dict[str, float]


class Overview(BaseModel):
    n_events: int
    n_users: int
    n_items: int
    n_catalog_items: int
    event_types: dict[str, int]
    time_min: str | None
    time_max: str | None
    span_days: float | None
    timezone: str
    sparsity: float | None
    events_per_user: Quantiles
    events_per_item: Quantiles
    # rating value -> ratings; None: the value was given by fewer users than the minimum
    # group size (suppressed)
    rating_histogram: dict[str, int | None] | None


def count_quantiles(src: AnalysisSource, table, col: str = "n") -> Quantiles:
    """Mean and `QUANTILES` of column `col` of `table`, computed in the database. Under a
    minimum group size the minimum and maximum (p0, p100: one entity's value each) are left
    out."""
    c = table[col]
    qs = QUANTILES
    if src.privacy.active:
        qs = tuple(q for q in QUANTILES if 0.0 < q < 1.0)
        src.privacy.note("quantiles.min_max", len(QUANTILES) - len(qs))
    aggs = {f"p{round(q * 100)}": c.quantile(q) for q in qs}
    row = src.df(table.aggregate(mean=c.mean(), **aggs)).iloc[0]
    return Quantiles(mean=float(row["mean"]), q={k: float(row[k]) for k in aggs})


def grouped_quantiles(
    src: AnalysisSource,
    t: ir.Table,
    values: ir.IntegerColumn,
    qs: tuple[float, ...],
    bucket: int = 3600,
) -> list[float | None]:
    """Exact `quantile_cont` of integer `values` (an expression over table `t`), e.g. per-event
    epoch seconds, from value counts: the database's quantile aggregate holds every value in
    memory at once (it ran out of memory on 100M events), a GROUP BY spills. Interpolates as
    `quantile_cont` does; None where there are no values.

    Two small GROUP BYs instead of one over every distinct value and a running count over
    them: counts per `bucket` consecutive values find the buckets that hold the ranks wanted,
    then only those buckets' values are counted one by one."""
    v = t.filter(values.notnull())
    coarse = src.df(v.group_by(b=values // bucket).aggregate(n=ibis._.count()).order_by("b"))
    total = int(coarse.n.sum()) if len(coarse) else 0
    if not total:
        return [None] * len(qs)
    upto = coarse.n.cumsum().to_numpy()
    # 0-based ranks whose values interpolate each quantile, and the bucket holding each
    ranks = sorted({r for q in qs for r in _ranks(total, q)})
    at = {r: int(np.searchsorted(upto, r, side="right")) for r in ranks}
    wanted = sorted({int(coarse.b.iat[i]) for i in at.values()})
    fine = src.df(
        v.filter((values // bucket).isin(wanted))
        .group_by(b=values // bucket, v=values)
        .aggregate(n=ibis._.count())
        .order_by("b", "v")
    )
    value_at: dict[int, float] = {}
    for r, i in at.items():
        rows = fine[fine.b == coarse.b.iat[i]]
        before = int(upto[i - 1]) if i else 0
        k = int(np.searchsorted(rows.n.cumsum().to_numpy(), r - before, side="right"))
        value_at[r] = float(rows.v.iat[k])
    out: list[float | None] = []
    for q in qs:
        lo, hi = (value_at[r] for r in _ranks(total, q))
        h = (total - 1) * q
        out.append(lo + (h - math.floor(h)) * (hi - lo))
    return out


def _ranks(total: int, q: float) -> tuple[int, int]:
    """The 0-based ranks below and above quantile `q` of `total` values (`quantile_cont`)."""
    h = (total - 1) * q
    return math.floor(h), math.ceil(h)


def overview(src: AnalysisSource) -> Overview:
    """Counts, event types, time span, sparsity, events per user and item, rating histogram."""
    e = src.events
    row = src.df(
        e.aggregate(
            n=e.count(),
            users=e.user_idx.nunique(),
            items=e.item_idx.nunique(),
        )
    ).iloc[0]
    pairs = int(src.scalar(e.select("user_idx", "item_idx").distinct().count()))
    n, users, items = int(row.n), int(row.users), int(row["items"])
    per_user = e.group_by("user_idx").aggregate(n=e.count())
    per_item = e.group_by("item_idx").aggregate(n=e.count())
    rng = src.time_range
    hist = None
    if "rating" in src.event_type_counts:
        r = e.filter((e.event_type == "rating") & e.value.notnull())
        h = src.df(
            r.group_by(r.value).aggregate(n=r.count(), users=r.user_idx.nunique()).order_by("value")
        )
        counts = blank_small(
            src.privacy, h.n.tolist(), h.users.tolist(), "overview.rating_histogram"
        )
        hist = dict(zip(map(_fmt, h.value), counts, strict=True))
    return Overview(
        n_events=n,
        n_users=users,
        n_items=items,
        n_catalog_items=int(src.scalar(src.items.count())),
        event_types=src.event_type_counts,
        time_min=iso(rng[0]) if rng else None,
        time_max=iso(rng[1]) if rng else None,
        span_days=round((rng[1] - rng[0]).total_seconds() / 86400, 3) if rng else None,
        timezone=src.timezone,
        sparsity=round(1 - pairs / (users * items), 6) if users and items else None,
        events_per_user=count_quantiles(src, per_user),
        events_per_item=count_quantiles(src, per_item),
        rating_histogram=hist,
    )


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


__all__ = ["Overview", "Quantiles", "count_quantiles", "grouped_quantiles", "overview"]
