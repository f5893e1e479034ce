"""Section 3, activity over time: events and active users per day/week/month, new vs returning
users per week, and the hour-of-day x day-of-week heatmap, all in the declared time zone."""

from __future__ import annotations

from pydantic import BaseModel

from recsight.analysis.groups import large_groups
from recsight.analysis.source import AnalysisSource

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
UNITS = {"D": "daily", "W": "weekly", "M": "monthly"}


class Series(BaseModel):
    """Per-period figures; `period` holds the local start date of each period (YYYY-MM-DD)."""

    period: list[str]
    events: list[int]
    active_users: list[int]


class NewReturning(BaseModel):
    week: list[str]
    new_users: list[int]  # first event ever in that week
    returning_users: list[int]  # active that week, first seen in an earlier week


class Activity(BaseModel):
    timezone: str
    daily: Series
    weekly: Series
    monthly: Series
    new_vs_returning: NewReturning
    heatmap: list[list[int]]  # [day of week Mon..Sun][hour 0..23] event counts
    peak_hour: int
    peak_day: str


def local_events(src: AnalysisSource):
    """Timestamped events with `local` (wall time in the declared zone)."""
    e = src.events.filter(src.events.timestamp.notnull())
    return e.mutate(local=src.local_time(e.timestamp))


def _series(src: AnalysisSource, unit: str) -> Series:
    e = local_events(src)
    g = e.group_by(p=e.local.truncate(unit).date()).aggregate(
        events=e.count(), users=e.user_idx.nunique()
    )
    g = large_groups(src, g, "users", f"activity.{UNITS[unit]}")
    d = src.df(g.order_by("p"))
    return Series(
        period=[str(p)[:10] for p in d.p],
        events=d.events.astype(int).tolist(),
        active_users=d.users.astype(int).tolist(),
    )


def activity(src: AnalysisSource) -> Activity:
    """Daily/weekly/monthly events and active users, new vs returning, hour x weekday."""
    src.require_timestamps("activity over time")
    e = local_events(src)
    week = e.local.truncate("W").date()
    first = e.group_by("user_idx").aggregate(first=week.min())
    uw = e.select("user_idx", w=week).distinct()
    j = uw.inner_join(first, "user_idx")
    weeks = j.group_by("w").aggregate(
        new=(j.w == j.first).sum(), ret=(j.w != j.first).sum(), users=j.count()
    )
    nr = src.df(large_groups(src, weeks, "users", "activity.new_vs_returning").order_by("w"))
    cells = e.group_by(dow=e.local.day_of_week.index(), hour=e.local.hour()).aggregate(
        n=e.count(), users=e.user_idx.nunique()
    )
    hm = src.df(large_groups(src, cells, "users", "activity.heatmap"))
    grid = [[0] * 24 for _ in range(7)]
    for dow, hour, n in zip(hm.dow, hm.hour, hm.n, strict=True):
        grid[int(dow)][int(hour)] = int(n)
    by_hour = [sum(grid[d][h] for d in range(7)) for h in range(24)]
    by_day = [sum(row) for row in grid]
    return Activity(
        timezone=src.timezone,
        daily=_series(src, "D"),
        weekly=_series(src, "W"),
        monthly=_series(src, "M"),
        new_vs_returning=NewReturning(
            week=[str(w)[:10] for w in nr.w],
            new_users=nr.new.astype(int).tolist(),
            returning_users=nr.ret.astype(int).tolist(),
        ),
        heatmap=grid,
        peak_hour=int(max(range(24), key=by_hour.__getitem__)),
        peak_day=DAYS[max(range(7), key=by_day.__getitem__)],
    )
