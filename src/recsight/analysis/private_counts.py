"""Differentially private counts for published reports: events by type and day, and the
users reaching each funnel stage, with the Laplace mechanism under a per-user bound.

`recsight analyze --dp-epsilon E` adds these as the report's ``private_counts`` section. The
guarantee is user-level ε-DP (add/remove one user) for what this section releases, with the
budget split between its two tables as stated in the report (`DPCounts.budget`):

- **events by type and local day**: each user's events are capped at ``max_events_per_user``
  (their earliest ones by time, then ingest order), so adding or removing a user changes
  the whole table by at most that much in L1; every cell of the grid (every day between the
  first and last event x every event type) gets Laplace noise of scale
  ``max_events_per_user / ε_table``, empty cells included, so the noise also hides which
  cells have events. The cap is a public setting: pick it near a typical user's total
  (a lower cap means less noise and more clipped events; `clipped_events` is not released,
  it would need budget of its own).
- **funnel**: users reaching each ordered stage (the rule of `recsight.analysis.funnel`); a
  user counts at most once per stage, so the L1 sensitivity is the number of stages and
  each count gets Laplace noise of scale ``stages / ε_funnel``.

Released values are post-processed (rounded, clamped at 0, funnel counts made
non-increasing), which costs no privacy. Treated as public, not protected: the event-type
vocabulary, the funnel's stage list and the first/last dates of the log (the grid's extent).
The other report sections are exact: publish this section alone when the report leaves
the team. Noise is drawn from numpy's generator seeded from the OS (not a cryptographic
sampler; floating-point Laplace sampling has known theoretical side channels, Mironov 2012).
"""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
from pydantic import BaseModel

from recsight.analysis.activity import local_events
from recsight.analysis.funnel import _counts, default_stages, reach
from recsight.analysis.source import AnalysisSource, NotAvailable, as_int
from recsight.errors import InputError

#: Default share of ε for each released table.
DEFAULT_SPLIT = {"events_by_type_day": 0.5, "funnel": 0.5}


class TypeDayCount(BaseModel):
    day: str  # local date, YYYY-MM-DD
    event_type: str
    count: int  # noisy


class StageCount(BaseModel):
    stage: str
    users: int  # noisy
    conversion: float | None  # from the noisy counts


class DPCounts(BaseModel):
    """The private tables and exactly what protects them."""

    mechanism: str  # "laplace"
    unit: str  # "user"
    epsilon: float  # total for this section
    budget: dict[str, float]  # table -> ε spent on it (sums to `epsilon`)
    noise_scale: dict[str, float]  # table -> Laplace scale b
    max_events_per_user: int
    events_by_type_day: list[TypeDayCount]
    funnel: list[StageCount]
    statement: str  # the guarantee in one paragraph, for the report


def capped_type_day_counts(src: AnalysisSource, max_events_per_user: int) -> pd.DataFrame:
    """Exact counts by (local day, event type) after keeping each user's first
    `max_events_per_user` events: columns ``day`` (date), ``event_type``, ``n``."""
    e = local_events(src)
    rank = ibis.row_number().over(group_by=e.user_idx, order_by=[e.timestamp, e.seq])
    e = e.mutate(_rank=rank)
    kept = e.filter(e._rank < max_events_per_user)
    g = kept.group_by(day=kept.local.date(), event_type=kept.event_type).aggregate(n=kept.count())
    return src.df(g)


def funnel_stage_users(src: AnalysisSource, stages: list[str]) -> list[int]:
    """Exact users reaching each ordered stage (as `recsight.analysis.funnel.funnel`)."""
    e = src.events
    ordered = src.has_timestamps
    if ordered:
        e = e.filter(e.timestamp.notnull())
    r = reach(e, stages, ["user_idx"], ordered)
    row = src.df(_counts(r, len(stages))).iloc[0]
    return [as_int(row[f"u{i}"]) for i in range(len(stages))]


def dp_counts(
    src: AnalysisSource,
    epsilon: float = 1.0,
    max_events_per_user: int = 100,
    split: dict[str, float] | None = None,
    seed: int | None = None,
) -> DPCounts:
    """User-level ε-DP event counts by type and day, and funnel stage counts (see the module
    docstring). `split` shares ε between ``events_by_type_day`` and ``funnel`` (default
    half each); `seed` fixes the noise (tests only: a known seed voids the guarantee)."""
    if not (isinstance(epsilon, (int, float)) and np.isfinite(epsilon) and epsilon > 0):
        raise InputError(f"--dp-epsilon: expected a positive number, not {epsilon!r}")
    if isinstance(max_events_per_user, bool) or not (
        isinstance(max_events_per_user, (int, np.integer)) and max_events_per_user >= 1
    ):
        raise InputError(
            f"--dp-user-events: expected a positive integer, not {max_events_per_user!r}"
        )
    share = dict(DEFAULT_SPLIT if split is None else split)
    if (
        set(share) != set(DEFAULT_SPLIT)
        or any(v < 0 for v in share.values())
        or not np.isclose(sum(share.values()), 1.0)
    ):
        raise InputError(
            f"dp split: expected shares for {sorted(DEFAULT_SPLIT)} summing to 1, not {share}"
        )
    src.require_timestamps("differentially private counts by day")
    rng = np.random.default_rng(seed)
    budget = {k: float(epsilon) * v for k, v in share.items()}
    scale: dict[str, float] = {}

    # events by type and day: every cell of the public grid, noised
    types = sorted(src.event_type_counts)
    exact = capped_type_day_counts(src, int(max_events_per_user))
    e = local_events(src)
    span = src.df(e.aggregate(lo=e.local.min(), hi=e.local.max())).iloc[0]
    first, last = pd.Timestamp(span.lo).date(), pd.Timestamp(span.hi).date()
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    grid = pd.MultiIndex.from_product([days, types], names=["day", "event_type"])
    exact_series = exact.assign(day=pd.to_datetime(exact.day).dt.date).set_index(
        ["day", "event_type"]
    )["n"]
    counts = exact_series.reindex(grid, fill_value=0).to_numpy(np.float64)
    table_rows: list[TypeDayCount] = []
    if budget["events_by_type_day"] > 0:
        b = max_events_per_user / budget["events_by_type_day"]
        scale["events_by_type_day"] = b
        noisy = np.maximum(np.rint(counts + rng.laplace(0.0, b, len(counts))), 0).astype(int)
        table_rows = [
            TypeDayCount(day=d.isoformat(), event_type=t, count=int(c))
            for (d, t), c in zip(grid, noisy, strict=True)
        ]

    # funnel: users per stage, one per user and stage
    stage_rows: list[StageCount] = []
    stages = default_stages(src)
    if budget["funnel"] > 0 and len(stages) >= 2:
        b = len(stages) / budget["funnel"]
        scale["funnel"] = b
        users = np.array(funnel_stage_users(src, stages), np.float64)
        noisy = np.maximum(np.rint(users + rng.laplace(0.0, b, len(users))), 0)
        noisy = np.minimum.accumulate(noisy).astype(int)  # a funnel never widens
        stage_rows = [
            StageCount(
                stage=s,
                users=int(n),
                conversion=None if noisy[0] == 0 else round(float(n / noisy[0]), 4),
            )
            for s, n in zip(stages, noisy, strict=True)
        ]
    elif budget["funnel"] > 0:
        raise NotAvailable(f"a funnel needs two of {stages or 'view/click/cart/purchase'}")
    statement = (
        f"User-level {epsilon:g}-differential privacy (Laplace mechanism, add/remove one "
        f"user) for this section: events by type and day get ε = "
        f"{budget['events_by_type_day']:g} with each user's events capped at "
        f"{max_events_per_user} (noise scale {scale.get('events_by_type_day', 0):.3g}); "
        f"funnel stage counts get ε = {budget['funnel']:g} "
        f"(noise scale {scale.get('funnel', 0):.3g}). Values are rounded, clamped at 0 and "
        "the funnel made non-increasing after the noise. Other report sections are exact."
    )
    return DPCounts(
        mechanism="laplace",
        unit="user",
        epsilon=float(epsilon),
        budget=budget,
        noise_scale=scale,
        max_events_per_user=int(max_events_per_user),
        events_by_type_day=table_rows,
        funnel=stage_rows,
        statement=statement,
    )
