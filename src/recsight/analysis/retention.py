"""Section 7, retention: the weekly cohort retention matrix.

A user's cohort is the local week (Monday start) of their first event; they are retained in
week offset k when they have any event in the cohort week + k. Offset 0 is 100% by definition.
"""

from __future__ import annotations

import pandas as pd
from pydantic import BaseModel

from recsight.analysis.activity import local_events
from recsight.analysis.groups import blank_small, large_groups
from recsight.analysis.source import AnalysisSource

WEEK_SECONDS = 7 * 86400


class Retention(BaseModel):
    cohorts: list[str]  # cohort week start (YYYY-MM-DD)
    sizes: list[int]
    # [cohort][week offset] users active; None: 1..k-1 users, fewer than the minimum group
    # size (suppressed)
    active: list[list[int | None]]
    rate: list[list[float | None]]  # active / size; None past the end of the data or suppressed
    # size-weighted share active in week 1 over cohorts that have one (None when none has, or
    # when fewer users than the minimum group size come back)
    mean_week1: float | None


def retention(src: AnalysisSource, max_weeks: int = 26) -> Retention:
    """Weekly cohort retention for up to `max_weeks` week offsets."""
    src.require_timestamps("retention")
    e = local_events(src)
    uw = e.select("user_idx", w=e.local.truncate("W")).distinct()
    first = uw.group_by("user_idx").aggregate(c=uw.w.min())
    cohorts = first.group_by("c").aggregate(users=first.count())
    kept = large_groups(src, cohorts, "users", "retention.cohorts").select(kept_c="c")
    first = first.inner_join(kept, first.c == kept.kept_c).drop("kept_c")
    j = uw.inner_join(first, "user_idx")
    k = ((j.w.epoch_seconds() - j.c.epoch_seconds()) / WEEK_SECONDS).round().cast("int64")
    d = src.df(j.group_by("c", k=k).aggregate(n=j.count()).filter(lambda t: t.k <= max_weeks))
    cohorts = sorted(d.c.unique())
    # The last week with data: offsets beyond it are unknown for every cohort.
    last = (
        max(c + pd.Timedelta(weeks=int(kk)) for c, kk in zip(d.c, d.k, strict=True))
        if len(d)
        else None
    )
    n_off = int(d.k.max()) + 1 if len(d) else 0
    active = {(c, int(kk)): int(n) for c, kk, n in zip(d.c, d.k, d.n, strict=True)}
    sizes = [active.get((c, 0), 0) for c in cohorts]
    act_rows, rate_rows = [], []
    w1_num = w1_den = 0
    for c, size in zip(cohorts, sizes, strict=True):
        # Offsets past the last week of data are unknown, not zero.
        horizon = int(round((last - c).total_seconds() / WEEK_SECONDS))
        n = [active.get((c, k), 0) for k in range(n_off)]
        shown = blank_small(src.privacy, n, n, "retention.cells")
        act_rows.append(shown)
        rate_rows.append(
            [v / size if v is not None and k <= horizon else None for k, v in enumerate(shown)]
        )
        if horizon >= 1:
            w1_num += active.get((c, 1), 0)
            w1_den += size
    # the pooled week-1 share is a count of returning users too
    (w1_shown,) = blank_small(src.privacy, [w1_num], [w1_num], "retention.mean_week1")
    return Retention(
        cohorts=[str(c)[:10] for c in cohorts],
        sizes=sizes,
        active=act_rows,
        rate=rate_rows,
        mean_week1=w1_shown / w1_den if w1_den and w1_shown is not None else None,
    )
