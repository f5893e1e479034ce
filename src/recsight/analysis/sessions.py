"""Section 6, sessions: sessionize by an inactivity gap (or the log's session ids) and describe
sessions per user, length, duration and bounce rate."""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
from pydantic import BaseModel

from recsight.analysis.groups import large_groups
from recsight.analysis.overview import Quantiles, count_quantiles
from recsight.analysis.source import AnalysisSource

DEFAULT_GAP_MINUTES = 30.0


class Sessions(BaseModel):
    source: str  # "session_id" (given by the log) or "gap" (inactivity gap)
    gap_minutes: float | None
    n_sessions: int
    sessions_per_user: Quantiles
    events_per_session: Quantiles
    duration_seconds: Quantiles
    bounce_rate: float  # share of sessions with a single event
    length_histogram: dict[str, int]  # events per session, "1".."9" and "10+"


def has_session_ids(src: AnalysisSource) -> bool:
    """True when every event carries a session id (then sessions are the log's own)."""
    if "has_sid" not in src._cache:
        e = src.events
        row = src.df(e.aggregate(n=e.count(), s=e.session_id.count())).iloc[0]
        src._cache["has_sid"] = bool(row.n) and int(row.s) == int(row.n)
    return src._cache["has_sid"]


def sessionized(
    src: AnalysisSource, gap_minutes: float = DEFAULT_GAP_MINUTES, events: ir.Table | None = None
) -> ir.Table:
    """Events with an integer `session` column, unique per user (not across users).

    With the log's session ids, `session` numbers them per user. Otherwise a new session
    starts at a user's first event and after any gap *strictly longer* than `gap_minutes`
    (a gap of exactly `gap_minutes` stays in the session). Events at equal times are ordered
    by ingest order.
    """
    src.require_timestamps("sessionization")
    e = src.events if events is None else events
    if has_session_ids(src):
        firsts = e.group_by("user_idx", "session_id").aggregate(t0=e.timestamp.min())
        w = ibis.window(group_by=firsts.user_idx, order_by=[firsts.t0, firsts.session_id])
        nums = firsts.mutate(session=ibis.row_number().over(w)).drop("t0")
        return e.inner_join(nums, ["user_idx", "session_id"])
    w = ibis.window(group_by=e.user_idx, order_by=[e.timestamp, e.seq])
    prev = e.timestamp.lag().over(w)
    gap = e.timestamp.epoch_seconds() - prev.epoch_seconds()
    flagged = e.mutate(_new=ibis.ifelse(prev.isnull() | (gap > gap_minutes * 60), 1, 0))
    w2 = ibis.window(
        group_by=flagged.user_idx,
        order_by=[flagged.timestamp, flagged.seq],
        preceding=None,
        following=0,
    )
    return flagged.mutate(session=flagged._new.sum().over(w2)).drop("_new")


def session_table(src: AnalysisSource, gap_minutes: float = DEFAULT_GAP_MINUTES) -> ir.Table:
    """One row per session: user_idx, session, n (events), items (distinct), start, seconds.

    Within a report it is computed once (a window over all events) and shared by the sessions
    section and the bot rule of the quality section."""

    def build() -> ir.Table:
        def per_session(s: ir.Table, key: str) -> ir.Table:
            s = s.filter(s.timestamp.notnull())
            return s.group_by("user_idx", key).aggregate(
                n=s.count(),
                items=s.item_idx.nunique(),
                start=s.timestamp.min(),
                seconds=s.timestamp.max().epoch_seconds() - s.timestamp.min().epoch_seconds(),
            )

        if has_session_ids(src):
            # the log's sessions are aggregated by their id, then numbered as `sessionized`
            # numbers them (sessions without a timestamp, numbered last there, drop out
            # anyway): no join of every event back to its session's number
            g = per_session(src.events, "session_id")
            w = ibis.window(group_by=g.user_idx, order_by=[g.start, g.session_id])
            g = g.mutate(session=ibis.row_number().over(w))
            return g.select("user_idx", "session", "n", "items", "start", "seconds")
        return per_session(sessionized(src, gap_minutes), "session")

    return src.shared(("session_table", float(gap_minutes)), build)


def sessions(src: AnalysisSource, gap_minutes: float = DEFAULT_GAP_MINUTES) -> Sessions:
    """Sessions per user, events and seconds per session, bounce rate, length histogram."""
    st = session_table(src, gap_minutes)
    per_user = st.group_by("user_idx").aggregate(n=st.count())
    bucket = ibis.ifelse(st.n >= 10, "10+", st.n.cast("string"))
    buckets = src.materialize(
        st.group_by(b=bucket).aggregate(c=st.count(), users=st.user_idx.nunique())
    )
    h = src.df(buckets)
    hist = dict(zip(h.b, h.c.astype(int), strict=True))
    n_sessions = sum(hist.values())
    # bars of fewer than k users are left out of the histogram (the rates use all sessions)
    shown = set(src.df(large_groups(src, buckets, "users", "sessions.length_histogram")).b)
    order = [str(i) for i in range(1, 10)] + ["10+"]
    given = has_session_ids(src)
    return Sessions(
        source="session_id" if given else "gap",
        gap_minutes=None if given else gap_minutes,
        n_sessions=n_sessions,
        sessions_per_user=count_quantiles(src, per_user),
        events_per_session=count_quantiles(src, st, "n"),
        duration_seconds=count_quantiles(src, st, "seconds"),
        bounce_rate=hist.get("1", 0) / n_sessions if n_sessions else 0.0,
        length_histogram={k: hist.get(k, 0) for k in order if k in shown or k not in hist},
    )
