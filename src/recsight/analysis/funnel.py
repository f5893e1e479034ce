"""Section 5, funnels and CTR.

A user reaches stage k of an ordered funnel when they did stage k at or after the time they
reached stage k-1 (the first stage: their first event of that type). Without timestamps the
order cannot be checked, and reaching stage k means doing stages 0..k at all. By category,
the same rule runs per (user, category) of the item; by week, users are grouped by the local
week in which they reached the first stage.
"""

from __future__ import annotations

import math

import ibis
import ibis.expr.types as ir
import numpy as np
from pydantic import BaseModel

from recsight.analysis.groups import large_groups, merge_small
from recsight.analysis.source import AnalysisSource, NotAvailable, as_int

CANONICAL_STAGES = ("view", "click", "cart", "purchase")
SIDE_BRANCH = "fav"
TOP_CATEGORIES = 10
Z95 = 1.959963984540054


class Stage(BaseModel):
    name: str
    events: int
    users: int  # users (or user-category pairs) reaching this stage in order
    conversion: float  # users / users at the first stage
    step_conversion: float  # users / users at the previous stage
    median_seconds_from_previous: float | None


class FunnelGroup(BaseModel):
    group: str
    users: list[int]
    conversion: float  # last stage / first stage


class SideBranch(BaseModel):
    name: str
    users: int  # did it after reaching the first stage
    share_of_first_stage: float
    then_last_stage: int  # of those, reached the last stage afterwards
    conversion_to_last_stage: float


class Funnel(BaseModel):
    stages: list[Stage]
    ordered: bool  # False when the log has no timestamps
    side_branch: SideBranch | None
    by_category: list[FunnelGroup]
    by_week: list[FunnelGroup]


class RateInterval(BaseModel):
    key: str
    views: int
    clicks: int
    ctr: float
    wilson_low: float
    wilson_high: float
    bayes: float  # posterior mean under a Beta prior centred on the overall CTR


class CTR(BaseModel):
    impressions_type: str
    clicks_type: str
    overall: float
    prior_strength: float
    top_items: list[RateInterval]  # by Wilson lower bound
    by_category: list[RateInterval]


class RecommendationCTR(BaseModel):
    """Click-through of served recommendation lists: an exposure is one item shown in one
    response; it is clicked when an event of a click type names that response's request id
    and that item."""

    click_types: list[str]
    # key: model version; views = exposures (versions shown to fewer users than the minimum
    # group size are left out, as are such positions)
    by_model: list[RateInterval]
    by_position: list[RateInterval]  # key: 1-based position, over all versions
    lists: int  # recommendation lists served in all


def default_stages(src: AnalysisSource) -> list[str]:
    """view -> click -> cart -> purchase, keeping the types present in the log."""
    present = src.event_type_counts
    return [s for s in CANONICAL_STAGES if present.get(s)]


def reach(events: ir.Table, stages: list[str], keys: list[str], ordered: bool) -> ir.Table:
    """One row per key that did the first stage, with `t0`..`t{k}`: when it reached each stage
    (NULL if never; without `ordered`, 1/NULL flags instead of times)."""
    e = events
    if not ordered:
        flags = {f"t{i}": (e.event_type == s).any() for i, s in enumerate(stages)}
        out = e.group_by(keys).aggregate(**flags)
        out = out.filter(out.t0)
        reached = ibis.literal(True)
        cols = {}
        for i in range(len(stages)):
            reached = reached & out[f"t{i}"]
            cols[f"t{i}"] = ibis.ifelse(reached, 1, ibis.null("int64"))
        return out.mutate(**cols)
    out = e.filter(e.event_type == stages[0]).group_by(keys).aggregate(t0=e.timestamp.min())
    for i, stage in enumerate(stages[1:], start=1):
        # each stage reads the previous one once (a left join on the key and the time, then
        # one row per key again), so the expression grows linearly with the stages; the
        # previous times are constant per key (min keeps them). A NULL t{i-1} matches nothing.
        s = e.filter(e.event_type == stage)
        s = s.select(_ts=s.timestamp, **{f"_k{n}": s[k] for n, k in enumerate(keys)})
        on = [out[k] == s[f"_k{n}"] for n, k in enumerate(keys)]
        j = out.left_join(s, [*on, s._ts >= out[f"t{i - 1}"]])
        times = {f"t{m}": j[f"t{m}"].min() for m in range(i)}
        out = j.group_by(keys).aggregate(**times, **{f"t{i}": j._ts.min()})
    return out


def _counts(r: ir.Table, n: int, by: ir.Value | None = None) -> ir.Table:
    aggs = {f"u{i}": r[f"t{i}"].count() for i in range(n)}
    return r.group_by(g=by).aggregate(**aggs) if by is not None else r.aggregate(**aggs)


def funnel(src: AnalysisSource, stages: list[str] | None = None) -> Funnel:
    """Users reaching each ordered stage, conversions, median time between stages, fav branch,
    and the funnel per category and per week."""
    stages = list(stages) if stages else default_stages(src)
    present = src.event_type_counts
    missing = [s for s in stages if not present.get(s)]
    if missing:
        raise NotAvailable(f"funnel stages {missing} have no events (present: {sorted(present)})")
    if len(stages) < 2:
        raise NotAvailable(f"a funnel needs two stages present; found {stages}")
    ordered = src.has_timestamps
    e = src.events
    if ordered:
        e = e.filter(e.timestamp.notnull())
    n = len(stages)
    # per-user stage times: the counts, medians, side branch and weeks all read them
    r = src.materialize(reach(e, stages, ["user_idx"], ordered))
    row = src.df(_counts(r, n)).iloc[0]
    users = [as_int(row[f"u{i}"]) for i in range(n)]
    medians: list[float | None] = [None]
    if ordered:
        gaps = {
            f"m{i}": (r[f"t{i}"].epoch_seconds() - r[f"t{i - 1}"].epoch_seconds()).median()
            for i in range(1, n)
        }
        mrow = src.df(r.aggregate(**gaps)).iloc[0]
        medians += [None if np.isnan(mrow[f"m{i}"]) else float(mrow[f"m{i}"]) for i in range(1, n)]
    else:
        medians += [None] * (n - 1)
    out_stages = [
        Stage(
            name=s,
            events=int(present.get(s, 0)),
            users=users[i],
            conversion=_ratio(users[i], users[0]),
            step_conversion=_ratio(users[i], users[i - 1]) if i else 1.0,
            median_seconds_from_previous=medians[i],
        )
        for i, s in enumerate(stages)
    ]

    side = None
    if present.get(SIDE_BRANCH) and SIDE_BRANCH not in stages:
        side = _side_branch(src, e, r, stages, ordered)

    # groups are the users who reached the first stage: fewer than k of them are merged into
    # "other" (categories) or left out (weeks)
    ec = merge_small(src, src.events_with_category(e), "category", "funnel.by_category")
    rc = reach(ec, stages, ["user_idx", "category"], ordered)
    cats = large_groups(src, _counts(rc, n, rc.category), "u0", "funnel.by_category")
    dc = src.df(cats.order_by(ibis.desc("u0"), "g").limit(TOP_CATEGORIES))
    by_week = []
    if ordered:
        wk = src.local_time(r.t0).truncate("W").date()
        dw = src.df(large_groups(src, _counts(r, n, wk), "u0", "funnel.by_week").order_by("g"))
        by_week = _groups(dw, n)
    return Funnel(
        stages=out_stages,
        ordered=ordered,
        side_branch=side,
        by_category=_groups(dc, n),
        by_week=by_week,
    )


def _groups(d, n: int) -> list[FunnelGroup]:
    return [
        FunnelGroup(
            group=str(row.g)[:10] if not isinstance(row.g, str) else row.g,
            users=[as_int(getattr(row, f"u{i}")) for i in range(n)],
            conversion=_ratio(as_int(getattr(row, f"u{n - 1}")), as_int(row.u0)),
        )
        for row in d.itertuples()
    ]


def _side_branch(src, e, r, stages, ordered) -> SideBranch:
    f = e.filter(e.event_type == SIDE_BRANCH)
    first = r.select("user_idx", "t0")
    j = f.inner_join(first, "user_idx")
    if ordered:
        j = j.filter(j.timestamp >= j.t0)
    favs = src.materialize(j.group_by("user_idx").aggregate(tf=j.timestamp.min()))
    last = e.filter(e.event_type == stages[-1])
    k = last.inner_join(favs, "user_idx")
    if ordered:
        k = k.filter(k.timestamp >= k.tf)
    n_fav = int(src.scalar(favs.count()))
    n_then = int(src.scalar(k.user_idx.nunique()))
    n0 = int(src.scalar(first.count()))
    return SideBranch(
        name=SIDE_BRANCH,
        users=n_fav,
        share_of_first_stage=_ratio(n_fav, n0),
        then_last_stage=n_then,
        conversion_to_last_stage=_ratio(n_then, n_fav),
    )


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def wilson_interval(successes: float, trials: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (0, 0 when there are no trials)."""
    if trials <= 0:
        return 0.0, 0.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(key: str, views: int, clicks: int, prior: float, strength: float) -> RateInterval:
    clicks = min(clicks, views)  # a click without an impression cannot raise the rate past 1
    lo, hi = wilson_interval(clicks, views)
    return RateInterval(
        key=key,
        views=views,
        clicks=clicks,
        ctr=_ratio(clicks, views),
        wilson_low=round(lo, 6),
        wilson_high=round(hi, 6),
        bayes=round((clicks + prior * strength) / (views + strength), 6),
    )


def ctr(
    src: AnalysisSource,
    impressions: str = "view",
    clicks: str = "click",
    prior_strength: float = 20.0,
    top_k: int = 20,
) -> CTR:
    """Click-through rate per item and category with Wilson intervals and Bayesian smoothing
    (`prior_strength` pseudo-impressions at the overall CTR)."""
    present = src.event_type_counts
    if not present.get(impressions) or not present.get(clicks):
        raise NotAvailable(f"CTR needs both {impressions!r} and {clicks!r} events")
    ec = src.events_with_category(
        src.events.filter(src.events.event_type.isin([impressions, clicks]))
    )
    ec = merge_small(src, ec, "category", "ctr.by_category")
    agg = {
        "views": (ec.event_type == impressions).sum(),
        "clicks": (ec.event_type == clicks).sum(),
        "users": ec.user_idx.nunique(),
    }
    # the total, the ranking and its privacy count read it; grouped by the integer id (the
    # external ids of the top rows only are looked up)
    per_item = src.materialize(ec.group_by("item_idx").aggregate(**agg))
    tot = src.df(per_item.aggregate(v=per_item.views.sum(), c=per_item.clicks.sum())).iloc[0]
    overall = _ratio(as_int(tot.c), as_int(tot.v))
    # Rank by the Wilson lower bound in the database; only the top rows come back.
    p = per_item.clicks.cast("float64").clip(upper=per_item.views) / per_item.views
    nv = per_item.views.cast("float64")
    z2 = Z95 * Z95
    low = (p + z2 / (2 * nv) - Z95 * (p * (1 - p) / nv + z2 / (4 * nv * nv)).sqrt()) / (1 + z2 / nv)
    ranked = per_item.filter(per_item.views > 0).mutate(low=low)
    ranked = large_groups(src, ranked, "users", "ctr.top_items")
    top = src.df(ranked.order_by(ibis.desc("low"), "item_idx").limit(top_k))
    item_id = {}
    if len(top):
        e = src.events
        ids = src.df(
            e.filter(e.item_idx.isin([int(i) for i in top.item_idx]))
            .group_by("item_idx")
            .aggregate(item_id=e.item_id.arbitrary())
        )
        item_id = dict(zip(ids.item_idx, ids.item_id, strict=True))
    cats = large_groups(src, ec.group_by("category").aggregate(**agg), "users", "ctr.by_category")
    cats = src.df(cats.order_by(ibis.desc("views"), "category"))
    return CTR(
        impressions_type=impressions,
        clicks_type=clicks,
        overall=overall,
        prior_strength=prior_strength,
        top_items=[
            _rate(str(item_id[r.item_idx]), int(r.views), int(r.clicks), overall, prior_strength)
            for r in top.itertuples()
        ],
        by_category=[
            _rate(str(r.category), int(r.views), int(r.clicks), overall, prior_strength)
            for r in cats.itertuples()
            if r.views > 0
        ][: TOP_CATEGORIES * 2],
    )


def recommendation_ctr(
    src: AnalysisSource,
    click_types: tuple[str, ...] = ("click", "cart", "purchase"),
    positions: int = 10,
) -> RecommendationCTR:
    """Live click-through of the service's recommendations, per model version and position."""
    x = src.exposures
    if x is None:
        raise NotAvailable("no recommendations have been served (no exposures table)")
    e = src.events.filter(src.events.request_id.notnull() & src.events.event_type.isin(click_types))
    hits = e.select("request_id", "item_id").distinct().mutate(hit=ibis.literal(1))
    j = x.left_join(hits, ["request_id", "item_id"])
    joined = j.select(
        x.request_id, x.user_id, x.item_id, x.model_version, x.position, hit=j.hit.fill_null(0)
    )
    agg = {"views": ibis._.count(), "clicks": ibis._.hit.sum(), "users": ibis._.user_id.nunique()}
    models = joined.group_by("model_version").aggregate(**agg)
    totals = src.df(models.aggregate(views=models.views.sum(), clicks=models.clicks.sum()))
    if not as_int(totals.views.iat[0]):
        raise NotAvailable("the exposures table is empty")
    # versions and positions shown to fewer than k users are left out (counted in `privacy`)
    by_model = src.df(
        large_groups(src, models, "users", "recommendation_ctr.by_model").order_by("model_version")
    )
    top = joined.filter(joined.position < positions)
    per_pos = top.group_by("position").aggregate(**agg)
    by_pos = src.df(
        large_groups(src, per_pos, "users", "recommendation_ctr.by_position").order_by("position")
    )
    overall = _ratio(as_int(totals.clicks.iat[0]), as_int(totals.views.iat[0]))
    return RecommendationCTR(
        click_types=list(click_types),
        by_model=[
            _rate(str(r.model_version), int(r.views), int(r.clicks), overall, 20.0)
            for r in by_model.itertuples()
        ],
        by_position=[
            _rate(str(int(r.position) + 1), int(r.views), int(r.clicks), overall, 20.0)
            for r in by_pos.itertuples()
        ],
        lists=int(src.scalar(joined.request_id.nunique())),
    )
