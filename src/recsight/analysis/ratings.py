"""Section 10, ratings: user and item bias distributions and rating vs popularity."""

from __future__ import annotations

import ibis.expr.types as ir
import numpy as np
from pydantic import BaseModel

from recsight.analysis.groups import blank_small
from recsight.analysis.overview import Quantiles, count_quantiles
from recsight.analysis.source import AnalysisSource, NotAvailable

BIAS_BINS = 20


class Histogram(BaseModel):
    edges: list[float]
    # None: a bin whose ratings come from fewer users than the minimum group size
    counts: list[int | None]


class PopularityBucket(BaseModel):
    min_ratings: int  # bucket lower bound (ratings per item)
    max_ratings: int
    items: int
    mean_rating: float


class Ratings(BaseModel):
    n_ratings: int
    global_mean: float
    user_bias: Quantiles  # user mean - global mean
    item_bias: Quantiles
    user_bias_histogram: Histogram
    item_bias_histogram: Histogram
    by_popularity: list[PopularityBucket]  # items bucketed by number of ratings (log2 bins)
    popularity_rating_spearman: float | None


def _hist(src: AnalysisSource, bias: ir.Table, raters: ir.Table, key: str, where: str) -> Histogram:
    """Histogram of `bias.b` in `BIAS_BINS` equal bins over its range (as numpy's: the last
    one includes its right edge, a constant spans +-0.5). A bin describes the distinct users
    who gave its ratings (`raters`: rows of `key` and `user_idx`); bins of 1..k-1 of them are
    None. Binned in the database so that both engines assign values to bins alike."""
    rng = src.df(bias.aggregate(lo=bias.b.min(), hi=bias.b.max())).iloc[0]
    lo, hi = float(rng.lo), float(rng.hi)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, BIAS_BINS + 1)
    pos = ((bias.b - lo) / (hi - lo) * BIAS_BINS).floor().cast("int64")
    binned = bias.select(key, bin=pos.clip(lower=0, upper=BIAS_BINS - 1))
    j = raters.inner_join(binned, key)
    per_bin = binned.group_by("bin").aggregate(n=binned.count())
    users = j.group_by("bin").aggregate(users=j.user_idx.nunique())
    d = src.df(per_bin.inner_join(users, "bin"))
    counts, people = [0] * BIAS_BINS, [0] * BIAS_BINS
    for b, n, u in zip(d["bin"], d.n, d.users, strict=True):
        counts[int(b)], people[int(b)] = int(n), int(u)
    return Histogram(
        edges=[round(float(e), 4) for e in edges],
        counts=blank_small(src.privacy, counts, people, where),
    )


def ratings(src: AnalysisSource) -> Ratings:
    """Bias distributions (mean rating of each user/item minus the global mean) and the mean
    rating of items by how often they are rated."""
    e = src.events
    r = e.filter((e.event_type == "rating") & e.value.notnull())
    row = src.df(r.aggregate(n=r.count(), mu=r.value.mean())).iloc[0]
    if not row.n:
        raise NotAvailable("the log has no ratings")
    mu = float(row.mu)
    ub = r.group_by("user_idx").aggregate(b=r.value.mean() - mu)
    ib = r.group_by("item_idx").aggregate(b=r.value.mean() - mu, n=r.count())
    items = src.df(ib.select("b", "n"))
    bucket = np.floor(np.log2(items.n.to_numpy(float))).astype(int)
    items = items.assign(bucket=bucket, mean=items.b + mu)
    buckets = [
        PopularityBucket(
            min_ratings=2**k,
            max_ratings=2 ** (k + 1) - 1,
            items=len(g),
            mean_rating=round(float(g["mean"].mean()), 4),
        )
        for k, g in items.groupby("bucket")
    ]
    rho = None
    if len(items) > 2 and items.n.nunique() > 1:
        rho = float(items.n.rank().corr(items["mean"].rank()))
    return Ratings(
        n_ratings=int(row.n),
        global_mean=mu,
        user_bias=count_quantiles(src, ub, "b"),
        item_bias=count_quantiles(src, ib, "b"),
        user_bias_histogram=_hist(src, ub, ub, "user_idx", "ratings.user_bias_histogram"),
        item_bias_histogram=_hist(
            src, ib, r.select("item_idx", "user_idx"), "item_idx", "ratings.item_bias_histogram"
        ),
        by_popularity=buckets,
        popularity_rating_spearman=rho,
    )
