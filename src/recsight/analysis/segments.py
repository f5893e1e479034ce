"""Section 9, segments: cluster users on recency-frequency-monetary behavior plus their
interest profile, pick k by silhouette, and describe each segment.

`describe_segment` turns a segment's numbers into its one-paragraph description; it is the seam
where generated (LLM) summaries plug in: pass another `describe` to `segments`.
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from recsight.analysis.interests import category_profiles
from recsight.analysis.source import AnalysisSource, NotAvailable
from recsight.models.topk import id_keys

K_RANGE = (2, 3, 4, 5, 6)
FIT_SAMPLE = 20_000
SILHOUETTE_SAMPLE = 3_000
INTEREST_CATEGORIES = 10


class Segment(BaseModel):
    segment: int
    size: int
    share: float
    median_events: float
    median_active_days: float | None
    median_recency_days: float | None
    median_monetary: float | None
    conversion: float | None  # share of the segment's users with a purchase
    top_categories: list[str]
    description: str = ""


class Segments(BaseModel):
    k: int
    basis: str | None = None  # segments' top_categories: "category", "topic" (from text), none
    silhouette: dict[str, float]  # k -> silhouette on the sample
    features: list[str]
    n_users: int
    segments: list[Segment]


SegmentDescriber = Callable[[Segment], str]


def describe_segment(seg: Segment) -> str:
    """Template description of a segment (replaceable by a generated summary)."""
    parts = [f"Segment {seg.segment}: {seg.size:,} users ({seg.share:.0%})"]
    parts.append(f"median {seg.median_events:g} events")
    if seg.median_active_days is not None:
        parts.append(f"{seg.median_active_days:g} active days")
    if seg.median_recency_days is not None:
        parts.append(f"last seen {seg.median_recency_days:.0f} days before the end")
    if seg.conversion is not None:
        parts.append(f"{seg.conversion:.0%} purchased")
    if seg.top_categories:
        parts.append("mostly " + ", ".join(seg.top_categories[:3]))
    return "; ".join(parts) + "."


def user_features(src: AnalysisSource) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per-user behavior and interest features (one row per user, computed in the database).

    Returns the frame (indexed by user_idx, with the `user_id`), the behavior columns and the
    interest columns.
    """
    types = src.event_type_counts
    buys = bool(types.get("purchase"))
    e = src.events
    aggs = {"frequency": e.count(), "items": e.item_idx.nunique()}
    if src.has_timestamps:
        end = src.time_range[1].timestamp()
        aggs["recency_days"] = (ibis.literal(end) - e.timestamp.max().epoch_seconds()) / 86400.0
        aggs["active_days"] = e.timestamp.date().nunique()
    if types.get("rating") and not buys:
        aggs["mean_rating"] = e.value.mean()
    # grouped by the integer id alone (the external id rides along); prices are joined to
    # the purchases only, not to every event
    base = e.group_by("user_idx").aggregate(user_id=e.user_id.arbitrary(), **aggs)
    behavior = list(aggs)
    if buys:
        p = e.filter(e.event_type == "purchase")
        p = p.left_join(src.items.select("item_idx", "price"), "item_idx")
        money = p.aggregate(
            by="user_idx",
            monetary=(p.price.fill_null(1.0) * p.value.fill_null(1.0)).sum(),
            purchases=p.count(),
        )
        base = base.left_join(money, "user_idx").drop("user_idx_right")
        behavior.append("monetary")
    interest: list[str] = []
    if src.interest_basis is not None:
        prof = category_profiles(src)
        top = src.df(
            prof.group_by("category")
            .aggregate(w=prof.weight.sum())
            .order_by(ibis.desc("w"), "category")
            .limit(INTEREST_CATEGORIES)
        ).category.tolist()
        shares = {f"cat:{c}": ibis.ifelse(prof.category == c, prof.share, 0.0).sum() for c in top}
        wide = prof.group_by("user_idx").aggregate(**shares)
        base = base.left_join(wide, "user_idx").drop("user_idx_right")
        interest = list(shares)
    d = src.df(base).set_index("user_idx").sort_index().fillna(0.0)
    return d, behavior, interest


def _matrix(d: pd.DataFrame, behavior: list[str], interest: list[str]) -> np.ndarray:
    """Standardized features: log1p of the heavy-tailed counts, then z-scores; the interest
    block is scaled to carry the same total variance as the behavior block."""
    b = d[behavior].to_numpy(float)
    skewed = [i for i, c in enumerate(behavior) if c != "mean_rating"]
    b[:, skewed] = np.log1p(np.maximum(b[:, skewed], 0))
    x = StandardScaler().fit_transform(b)
    if interest:
        s = StandardScaler().fit_transform(d[interest].to_numpy(float))
        x = np.hstack([x, s * np.sqrt(len(behavior) / len(interest))])
    return x


def _fit(x, fit_idx, sil_idx, k_range, seed) -> tuple[dict, dict]:
    """MiniBatchKMeans per k on the fit sample; silhouette of each on the smaller sample."""
    scores, models = {}, {}
    for k in k_range:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        km.fit(x[fit_idx])
        labels = km.predict(x[sil_idx])
        if len(set(labels)) < 2:
            continue
        scores[k] = float(silhouette_score(x[sil_idx], labels))
        models[k] = km
    return scores, models


def segments(
    src: AnalysisSource,
    k_range: tuple[int, ...] = K_RANGE,
    seed: int = 42,
    describe: SegmentDescriber = describe_segment,
) -> Segments:
    """KMeans user segments, k chosen by silhouette on a sample, each segment described."""
    d, behavior, interest = user_features(src)
    if len(d) < max(k_range) * 5:
        raise NotAvailable(f"segmentation needs at least {max(k_range) * 5} users; found {len(d)}")
    x = _matrix(d, behavior, interest)
    # The samples are the users with the smallest hash of (seed, user id), in that order: the
    # same users on every engine and under any numbering of the ids.
    keys = id_keys([f"{seed}:{u}" for u in d.user_id])
    fit_idx = np.argsort(keys, kind="stable")[: min(FIT_SAMPLE, len(x))]
    sil_idx = fit_idx[: min(SILHOUETTE_SAMPLE, len(fit_idx))]
    # One thread: on a shared machine OpenMP oversubscription costs far more than it gains here.
    with threadpool_limits(1):
        scores, models = _fit(x, fit_idx, sil_idx, k_range, seed)
        if scores:
            best = max(scores, key=scores.get)
            labels = models[best].predict(x)
    if not scores:
        raise NotAvailable("users do not separate into clusters (all features equal)")

    # Number segments by size, largest first, so the numbering is stable and meaningful.
    order = np.argsort(-np.bincount(labels, minlength=best), kind="stable")
    relabel = np.empty(best, dtype=int)
    relabel[order] = np.arange(best)
    labels = relabel[labels]
    out = []
    for s in range(best):
        g = d[labels == s]
        if len(g) < src.privacy.min_group_size:
            src.privacy.note("segments", 1)
            continue
        seg = Segment(
            segment=s + 1,
            size=len(g),
            share=round(len(g) / len(d), 6),
            median_events=float(g.frequency.median()),
            median_active_days=float(g.active_days.median()) if "active_days" in g else None,
            median_recency_days=(
                round(float(g.recency_days.median()), 3) if "recency_days" in g else None
            ),
            median_monetary=round(float(g.monetary.median()), 3) if "monetary" in g else None,
            conversion=round(float((g.purchases > 0).mean()), 6) if "purchases" in g else None,
            top_categories=[
                c[4:] for c in g[interest].mean().sort_values(ascending=False).index[:3]
            ]
            if interest
            else [],
        )
        seg.description = describe(seg)
        out.append(seg)
    return Segments(
        k=best,
        basis=src.interest_basis,
        silhouette={str(k): round(v, 6) for k, v in scores.items()},
        features=behavior + interest,
        n_users=len(d),
        segments=out,
    )
