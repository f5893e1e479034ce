"""Section 10, ratings: user and item bias distributions and rating vs popularity."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from recsight.analysis.overview import Quantiles, count_quantiles
from recsight.analysis.source import AnalysisSource, NotAvailable

BIAS_BINS = 20


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int | None]  # None: a bin of fewer users than the minimum group size


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


def _hist(values: np.ndarray) -> Histogram:
    counts, edges = np.histogram(values, bins=BIAS_BINS)
    return Histogram(edges=[round(float(e), 4) for e in edges], counts=counts.astype(int).tolist())


def _suppress_small_bins(src: AnalysisSource, h: Histogram) -> Histogram:
    """Bins counting fewer users than the minimum group size become None."""
    k = src.privacy.min_group_size
    small = [0 < c < k for c in h.counts]
    src.privacy.note("ratings.user_bias_histogram", sum(small))
    return Histogram(
        edges=h.edges, counts=[None if s else c for c, s in zip(h.counts, small, strict=True)]
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
    u = src.df(ub.select("b")).b.to_numpy(float)
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
        user_bias_histogram=_suppress_small_bins(src, _hist(u)),
        item_bias_histogram=_hist(items.b.to_numpy(float)),
        by_popularity=buckets,
        popularity_rating_spearman=rho,
    )
