"""One user's profile: activity, decayed interests, diversity, drift and items.

`user_profile` filters to the user inside every query, so it costs one user's events, not the
whole log; the HTTP service serves it. `profile_summary` writes the one-line text and is the
seam for generated (LLM) summaries: pass another `describe`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ibis
import pandas as pd
from pydantic import BaseModel

from recsight.analysis.interests import (
    CategoryShare,
    category_profiles,
    decayed,
    drift_table,
)
from recsight.analysis.source import AnalysisSource, iso
from recsight.errors import InputError


class ProfileItem(BaseModel):
    item_id: str
    title: str | None
    category: str | None
    weight: float  # decayed, type-weighted interaction strength


class RecentEvent(BaseModel):
    item_id: str
    title: str | None
    event_type: str
    timestamp: str | None
    value: float | None


class UserProfile(BaseModel):
    user_id: str
    n_events: int
    event_types: dict[str, int]
    first_seen: str | None
    last_seen: str | None
    active_days: int | None
    basis: str | None = None  # top_categories are "category" or "topic" (from item text)
    top_categories: list[CategoryShare]
    entropy: float | None  # nats, of the decayed category distribution
    normalized_entropy: float | None  # entropy / ln(categories the user touched); 0 for one
    drift: float | None  # early vs recent half, total variation (None under 10 events)
    early_top: str | None = None  # top category of the early half (with drift)
    recent_top: str | None = None  # top category of the recent half (with drift)
    days_since_last: float | None = None  # days from the user's last event to the log's end
    mean_rating: float | None
    top_items: list[ProfileItem]
    recent: list[RecentEvent]
    summary: str = ""
    interest_summary: str = ""  # the grounded persona: interests, recency, drift


ProfileDescriber = Callable[[UserProfile], str]

#: Drift (total variation) from which recent interests count as different from early ones.
DRIFT_NOTABLE = 0.5


def interest_facts(p: UserProfile) -> list[str]:
    """The facts an interest summary may state, each from the profile's own numbers."""
    what = "topic from item text" if p.basis == "topic" else "category"
    facts = [f"{what} {c.category}: {c.share:.0%} of interest" for c in p.top_categories[:3]]
    if p.drift is not None and p.early_top and p.recent_top:
        facts.append(
            f"interest drift {p.drift:.2f} (0 same, 1 disjoint): early mostly {p.early_top}, "
            f"recently mostly {p.recent_top}"
        )
    if p.days_since_last is not None:
        facts.append(f"last event {p.days_since_last:.0f} days before the end of the log")
    return facts


def interest_summary(p: UserProfile) -> str:
    """Template persona from the user's top categories (or topics), drift and recency; every
    name in it comes from the profile (replaceable by a reworded one: see
    `recsight.llm.summaries.interest_describer`)."""
    if not p.top_categories:
        head = "No category or topic information for this user's items"
    else:
        tops = [f"{c.category} ({c.share:.0%})" for c in p.top_categories[:2]]
        what = "topic" if p.basis == "topic" else "category"
        what = {"topic": "topics", "category": "categories"}[what] if len(tops) > 1 else what
        head = f"Interested mostly in the {what} {' and '.join(tops)}"
    parts = [head]
    if (
        p.drift is not None
        and p.drift >= DRIFT_NOTABLE
        and p.early_top
        and p.recent_top
        and p.early_top != p.recent_top
    ):
        parts.append(f"lately more {p.recent_top} than {p.early_top}")
    elif p.drift is not None and p.drift < DRIFT_NOTABLE:
        parts.append("steady interests")
    if p.days_since_last is not None:
        d = p.days_since_last
        parts.append(
            "active until the end of the log"
            if d < 1
            else f"last active {d:.0f} days before the end of the log"
        )
    return "; ".join(parts) + "."


def profile_summary(p: UserProfile) -> str:
    """Template summary of a profile (replaceable by a generated one)."""
    parts = [f"User {p.user_id}: {p.n_events:,} events"]
    if p.active_days is not None:
        parts.append(f"over {p.active_days} active days")
    if p.top_categories:
        tops = ", ".join(f"{c.category} ({c.share:.0%})" for c in p.top_categories[:3])
        parts.append(f"mostly {tops}")
    if p.normalized_entropy is not None:
        kind = "broad" if p.normalized_entropy >= 0.6 else "focused"
        parts.append(f"{kind} interests")
    if p.drift is not None and p.drift >= 0.5:
        parts.append("recent interests differ from early ones")
    if p.mean_rating is not None:
        parts.append(f"mean rating {p.mean_rating:.2f}")
    return "; ".join(parts) + "."


def user_profile(
    src: AnalysisSource,
    user_id: str,
    top_k: int = 10,
    describe: ProfileDescriber = profile_summary,
    describe_interests: ProfileDescriber = interest_summary,
) -> UserProfile:
    """The profile of `user_id` (external id); InputError when the user has no events.
    `describe` writes `summary`, `describe_interests` the persona `interest_summary`."""
    e = src.events.filter(src.events.user_id == str(user_id))
    ts = e.timestamp
    row = src.df(
        e.aggregate(
            n=e.count(),
            lo=ts.min(),
            hi=ts.max(),
            days=ts.date().nunique(),
            r=ibis.ifelse(e.event_type == "rating", e.value, ibis.null("float64")).mean(),
        )
    ).iloc[0]
    if not row.n:
        raise InputError(f"user {user_id!r}: no events in {src.name or 'the store'}")
    types = src.df(e.group_by("event_type").aggregate(c=e.count()).order_by(ibis.desc("c")))
    prof = src.df(category_profiles(src, e).order_by(ibis.desc("weight"), "category"))
    ent = norm = None
    if len(prof):
        p = prof.share.to_numpy(float)
        ent = float(-(p * pd.Series(p).apply(math.log)).sum())
        norm = ent / math.log(len(p)) if len(p) > 1 else 0.0
    w = decayed(src, src.events_with_category(e))
    items = w.group_by("item_idx", "item_id", "category").aggregate(weight=w.w.sum())
    titles = src.items.select("item_idx", "title")
    top = src.df(
        items.left_join(titles, "item_idx").order_by(ibis.desc("weight"), "item_id").limit(top_k)
    )
    order = [ibis.desc(e.timestamp), ibis.desc(e.seq)] if src.has_timestamps else [ibis.desc(e.seq)]
    recent = src.df(
        e.left_join(titles, "item_idx")
        .order_by(order)
        .limit(top_k)
        .select("item_id", "title", "event_type", "timestamp", "value")
    )
    drift = src.df(drift_table(src, e))
    prof_obj = UserProfile(
        user_id=str(user_id),
        n_events=int(row.n),
        event_types=dict(zip(types.event_type, types.c.astype(int), strict=True)),
        first_seen=iso(row.lo),
        last_seen=iso(row.hi),
        active_days=None if pd.isna(row.lo) else int(row.days),
        basis=src.interest_basis,
        top_categories=[
            CategoryShare(category=str(c), share=round(float(s), 6))
            for c, s in zip(prof.category[:top_k], prof.share[:top_k], strict=True)
        ],
        entropy=None if ent is None else round(ent, 6),
        normalized_entropy=None if norm is None else round(norm, 6),
        drift=None if drift.empty else round(float(drift.drift.iloc[0]), 6),
        early_top=None if drift.empty else str(drift.early_top.iloc[0]),
        recent_top=None if drift.empty else str(drift.recent_top.iloc[0]),
        days_since_last=_days_before_end(src, row.hi),
        mean_rating=None if pd.isna(row.r) else round(float(row.r), 4),
        top_items=[
            ProfileItem(
                item_id=str(r.item_id),
                title=None if pd.isna(r.title) else str(r.title),
                category=None if pd.isna(r.category) else str(r.category),
                weight=round(float(r.weight), 6),
            )
            for r in top.itertuples()
        ],
        recent=[
            RecentEvent(
                item_id=str(r.item_id),
                title=None if pd.isna(r.title) else str(r.title),
                event_type=str(r.event_type),
                timestamp=iso(r.timestamp),
                value=None if pd.isna(r.value) else float(r.value),
            )
            for r in recent.itertuples()
        ],
    )
    prof_obj.summary = describe(prof_obj)
    prof_obj.interest_summary = describe_interests(prof_obj)
    return prof_obj


def _days_before_end(src: AnalysisSource, last: pd.Timestamp | None) -> float | None:
    rng = src.time_range
    if rng is None or last is None or pd.isna(last):
        return None
    return round((rng[1] - pd.Timestamp(last)).total_seconds() / 86400.0, 3)
