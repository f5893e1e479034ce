"""Plotly figures for the report, each with a one-line takeaway computed from its numbers.

`build_charts` reads only the typed section results, so the HTML shows exactly what
report.json holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from pydantic import BaseModel

from recsight.analysis.activity import DAYS

if TYPE_CHECKING:
    from recsight.analysis.report import AnalysisReport


class ChartInfo(BaseModel):
    id: str
    section: str
    title: str
    takeaway: str


def _layout(fig: go.Figure, title: str, x: str = "", y: str = "") -> go.Figure:
    fig.update_layout(
        title=title,
        xaxis_title=x,
        yaxis_title=y,
        height=380,
        margin=dict(l=60, r=20, t=50, b=50),
        template="plotly_white",
    )
    return fig


def _k(r: AnalysisReport) -> int:
    return r.privacy.min_group_size if r.privacy else 1


def _mark_suppressed(fig: go.Figure, x: list, y: list, k: int) -> int:
    """Mark the bars whose value is None (suppressed: fewer than k users) with a grey cross on
    the axis, so a suppressed bar is not read as zero. Returns how many there are."""
    xs = [a for a, b in zip(x, y, strict=True) if b is None]
    if xs:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[0] * len(xs),
                mode="markers",
                marker=dict(symbol="x", color="#888", size=9),
                name=f"suppressed (fewer than {k} users)",
            )
        )
    return len(xs)


def _suppressed_note(n: int, what: str, k: int) -> str:
    """ "; 2 bins of fewer than 5 users suppressed" (`what` singular), or "" for none."""
    return f"; {n} {what}{'s' if n != 1 else ''} of fewer than {k} users suppressed" if n else ""


def _overview(r: AnalysisReport):
    o = r.overview
    types = o.event_types
    top = max(types, key=types.get)
    yield (
        "event_types",
        "Events by type",
        (
            f"{top} makes up {types[top] / o.n_events:.0%} of {o.n_events:,} events "
            f"from {o.n_users:,} users on {o.n_items:,} items"
        ),
        _layout(go.Figure(go.Bar(x=list(types), y=list(types.values()))), "Events by type"),
    )
    if o.rating_histogram:
        h = o.rating_histogram
        shown = {v: n for v, n in h.items() if n is not None}
        fig = go.Figure(go.Bar(x=list(h), y=list(h.values()), name="ratings"))
        hidden = _mark_suppressed(fig, list(h), list(h.values()), _k(r))
        text = "every rating value was given by too few users to show"
        if shown:
            mode = max(shown, key=shown.get)
            text = (
                f"{mode} is the most common rating ({shown[mode] / sum(shown.values()):.0%} "
                "of the ratings shown)"
            )
        yield (
            "rating_histogram",
            "Rating histogram",
            text + _suppressed_note(hidden, "rating value", _k(r)),
            _layout(fig, "Ratings", "rating", "count"),
        )


def _quality(r: AnalysisReport):
    q = r.quality
    counts = {"duplicates": q.duplicates.count}
    counts |= {k: v.count for k, v in q.out_of_range.items()}
    counts |= {f"timestamp anomalies ({k})": v.count for k, v in q.timestamps.items()}
    if q.bots is not None:
        counts["suspected bots"] = len(q.bots)
    flagged = {k: v for k, v in counts.items() if v}
    text = (
        "No duplicates, out-of-range values, timestamp anomalies or bots found"
        if not flagged
        else "Found " + ", ".join(f"{v:,} {k}" for k, v in flagged.items())
    )
    yield (
        "quality_issues",
        "Data quality issues",
        text,
        _layout(
            go.Figure(go.Bar(x=list(counts), y=list(counts.values()))), "Issues found", "", "count"
        ),
    )


def _every_day(d) -> tuple[list[str], list[int | None], list[int | None]]:
    """The daily series on every calendar day of its span: days without a row (no events, or
    suppressed) are None, drawn as a break instead of a line across the gap."""
    if not d.period:
        return [], [], []
    days = pd.date_range(d.period[0], d.period[-1], freq="D").strftime("%Y-%m-%d").tolist()
    ev = dict(zip(d.period, d.events, strict=True))
    us = dict(zip(d.period, d.active_users, strict=True))
    return days, [ev.get(x) for x in days], [us.get(x) for x in days]


def _activity(r: AnalysisReport):
    a = r.activity
    d = a.daily
    busiest = max(range(len(d.events)), key=d.events.__getitem__)
    days, events, users = _every_day(d)
    fig = go.Figure(
        [
            go.Scatter(x=days, y=events, name="events"),
            go.Scatter(x=days, y=users, name="active users", yaxis="y2"),
        ]
    )
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="active users"))
    yield (
        "daily_activity",
        "Daily events and active users",
        (
            f"Busiest day {d.period[busiest]} with {d.events[busiest]:,} events; "
            f"{sum(d.active_users) / len(d.active_users):,.0f} active users per day on average"
        ),
        _layout(fig, "Daily events and active users", "day", "events"),
    )
    hm = go.Figure(go.Heatmap(z=a.heatmap, x=list(range(24)), y=list(DAYS), colorscale="Blues"))
    hm.update_yaxes(autorange="reversed")
    yield (
        "heatmap",
        f"Hour of day x day of week ({a.timezone})",
        (f"Activity peaks at {a.peak_hour}:00 and on {a.peak_day} ({a.timezone} time)"),
        _layout(hm, f"Events by hour and weekday ({a.timezone})", "hour"),
    )
    nr = a.new_vs_returning
    total_ret, total = sum(nr.returning_users), sum(nr.returning_users) + sum(nr.new_users)
    fig = go.Figure(
        [
            go.Bar(x=nr.week, y=nr.new_users, name="new"),
            go.Bar(x=nr.week, y=nr.returning_users, name="returning"),
        ]
    )
    fig.update_layout(barmode="stack")
    yield (
        "new_vs_returning",
        "New vs returning users per week",
        (f"{total_ret / total:.0%} of weekly active users are returning users"),
        _layout(fig, "New vs returning users per week", "week", "users"),
    )


def _popularity(r: AnalysisReport):
    p = r.popularity
    what = f"{p.event_type}s" if p.event_type else "events"
    fig = go.Figure(go.Scatter(x=p.curve_item_fraction, y=p.curve_event_share, mode="lines"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot"), name="equal"))
    yield (
        "popularity_curve",
        "Popularity curve",
        (
            f"20% of items take {p.top_20pct_share:.0%} of {what}; the top 1% take "
            f"{p.top_1pct_share:.0%} (Gini {p.gini:.2f})"
        ),
        _layout(fig, "Cumulative share of " + what, "top fraction of items", "share"),
    )
    cats = p.by_category
    if len(cats) > 1:
        total = sum(c.events for c in cats)
        yield (
            "category_popularity",
            "Events by category",
            (
                f"{cats[0].category} is the biggest category with {cats[0].events:,} {what} "
                f"({cats[0].events / total:.0%} of the top {len(cats)})"
            ),
            _layout(
                go.Figure(go.Bar(x=[c.category for c in cats], y=[c.events for c in cats])),
                "Top categories",
                "category",
                what,
            ),
        )


def _funnel(r: AnalysisReport):
    f = r.funnel
    if f is not None:
        s = f.stages
        worst = min(range(1, len(s)), key=lambda i: s[i].step_conversion)
        yield (
            "funnel",
            "Conversion funnel",
            (
                f"{s[-1].conversion:.1%} of users who {s[0].name} reach {s[-1].name}; the biggest "
                f"drop is {s[worst - 1].name} → {s[worst].name} ({s[worst].step_conversion:.0%} "
                "continue)"
            ),
            _layout(
                go.Figure(go.Funnel(y=[x.name for x in s], x=[x.users for x in s])),
                "Users per stage",
            ),
        )
    c = r.ctr
    if c is not None and c.by_category:
        best = max(c.by_category, key=lambda x: x.wilson_low)
        fig = go.Figure(
            go.Bar(
                x=[x.key for x in c.by_category],
                y=[x.ctr for x in c.by_category],
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=[x.wilson_high - x.ctr for x in c.by_category],
                    arrayminus=[x.ctr - x.wilson_low for x in c.by_category],
                ),
            )
        )
        yield (
            "ctr_by_category",
            "CTR by category (95% Wilson interval)",
            (
                f"Overall CTR {c.overall:.1%}; {best.key} is highest at {best.ctr:.1%} "
                f"(at least {best.wilson_low:.1%} with 95% confidence)"
            ),
            _layout(fig, "Click-through rate by category", "category", "CTR"),
        )
    rc = r.recommendation_ctr
    if rc is not None and rc.by_position:
        text = f"{rc.lists:,} recommendation lists served"
        if rc.by_model:
            best = max(rc.by_model, key=lambda x: x.wilson_low)
            text += (
                f"; model {best.key} has the best live CTR, {best.ctr:.1%} of {best.views:,} "
                "shown items"
            )
        else:
            text += f"; every model version was shown to fewer than {_k(r)} users"
        yield (
            "recommendation_ctr",
            "Live CTR of served recommendations by position",
            text,
            _layout(
                go.Figure(
                    go.Bar(x=[x.key for x in rc.by_position], y=[x.ctr for x in rc.by_position])
                ),
                "Click-through of recommendations by position",
                "position",
                "CTR",
            ),
        )


def _sessions(r: AnalysisReport):
    s = r.sessions
    h = s.length_histogram
    yield (
        "session_length",
        "Events per session",
        (
            f"The median session has {s.events_per_session.q['p50']:g} events and lasts "
            f"{s.duration_seconds.q['p50'] / 60:.1f} min; "
            f"{s.bounce_rate:.0%} are single-event bounces"
        ),
        _layout(
            go.Figure(go.Bar(x=list(h), y=list(h.values()))), "Session length", "events", "sessions"
        ),
    )


def _retention(r: AnalysisReport):
    t = r.retention
    n = len(t.rate[0]) if t.rate else 0
    z = [[None if v is None else round(v * 100, 1) for v in row] for row in t.rate]
    # suppressed cells (active is None) are labelled, not left blank like unknown ones
    label = f"<{_k(r)}"
    text = [["" if a is not None else label for a in row] for row in t.active]
    hidden = sum(row.count(label) for row in text)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"w{k}" for k in range(n)],
            y=t.cohorts,
            colorscale="Greens",
            text=text,
            texttemplate="%{text}",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    w1 = (
        "no cohort has a week 1 yet"
        if t.mean_week1 is None
        else (f"{t.mean_week1:.0%} of a cohort comes back in its second week")
    )
    yield (
        "retention",
        "Weekly cohort retention (%)",
        f"{len(t.cohorts)} weekly cohorts; {w1}" + _suppressed_note(hidden, "cell", _k(r)),
        _layout(fig, "Weekly cohort retention (%)", "weeks since first event", "cohort"),
    )


def _interests(r: AnalysisReport):
    i = r.interests
    tc = i.top_categories
    # a catalog without categories is grouped by topics from item text: say so
    what = "topic (from item text)" if i.basis == "topic" else "category"
    yield (
        "interest_categories",
        f"Interest share by {what} (time-decayed)",
        (
            f"{tc[0].category} holds {tc[0].share:.0%} of decayed interest; the median user's "
            f"normalized {what.split()[0]} entropy is {i.normalized_entropy.q['p50']:.2f}"
        ),
        _layout(
            go.Figure(go.Bar(x=[c.category for c in tc], y=[c.share for c in tc])),
            f"Interest share (half-life {i.half_life_days:g} days)",
            what,
            "share",
        ),
    )
    if i.transitions:
        hm = go.Figure(
            go.Heatmap(
                z=i.transitions,
                x=i.transition_categories,
                y=i.transition_categories,
                colorscale="Purples",
            )
        )
        hm.update_yaxes(autorange="reversed", type="category")
        hm.update_xaxes(type="category")
        yield (
            "category_transitions",
            "Category transitions",
            (
                f"{i.self_transition_share:.0%} of moves to a different item stay in the "
                "same category"
            ),
            _layout(hm, "Category transitions (from row to column)", "to", "from"),
        )


def _segments(r: AnalysisReport):
    s = r.segments
    big = max(s.segments, key=lambda x: x.size)
    yield (
        "segments",
        "User segments",
        (
            f"{s.k} segments (silhouette {s.silhouette[str(s.k)]:.2f}); the largest holds "
            f"{big.share:.0%} of users"
        ),
        _layout(
            go.Figure(
                go.Bar(
                    x=[f"S{x.segment}" for x in s.segments],
                    y=[x.size for x in s.segments],
                    hovertext=[x.description for x in s.segments],
                )
            ),
            "Segment sizes",
            "segment",
            "users",
        ),
    )


def _ratings(r: AnalysisReport):
    t = r.ratings
    fig = go.Figure()
    xs, ys = [], []
    for name, h in (("users", t.user_bias_histogram), ("items", t.item_bias_histogram)):
        mids = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
        fig.add_trace(go.Bar(x=mids, y=h.counts, name=name, opacity=0.6))
        xs, ys = xs + mids, ys + h.counts
    hidden = _mark_suppressed(fig, xs, ys, _k(r))
    fig.update_layout(barmode="overlay")
    yield (
        "rating_bias",
        "User and item bias",
        (
            f"Mean rating {t.global_mean:.2f}; half of users rate within "
            f"{t.user_bias.q['p25']:+.2f}..{t.user_bias.q['p75']:+.2f} of it, half of items within "
            f"{t.item_bias.q['p25']:+.2f}..{t.item_bias.q['p75']:+.2f}"
            + _suppressed_note(hidden, "bin", _k(r))
        ),
        _layout(fig, "Bias: mean rating minus global mean", "bias", "count"),
    )
    b = t.by_popularity
    rho = "n/a" if t.popularity_rating_spearman is None else f"{t.popularity_rating_spearman:.2f}"
    yield (
        "rating_vs_popularity",
        "Rating vs popularity",
        (
            f"Items with {b[-1].min_ratings}+ ratings average {b[-1].mean_rating:.2f} vs "
            f"{b[0].mean_rating:.2f} for items with {b[0].min_ratings}-{b[0].max_ratings} "
            f"(Spearman {rho})"
        ),
        _layout(
            go.Figure(
                go.Scatter(
                    x=[f"{x.min_ratings}-{x.max_ratings}" for x in b],
                    y=[x.mean_rating for x in b],
                    mode="lines+markers",
                )
            ),
            "Mean rating by number of ratings",
            "ratings per item",
            "mean rating",
        ),
    )


_BUILDERS: dict[str, Callable] = {
    "overview": _overview,
    "quality": _quality,
    "activity": _activity,
    "popularity": _popularity,
    "funnel": _funnel,
    "sessions": _sessions,
    "retention": _retention,
    "interests": _interests,
    "segments": _segments,
    "ratings": _ratings,
}


def build_charts(report: AnalysisReport) -> list[tuple[ChartInfo, go.Figure]]:
    """Every chart of the report's computed sections, in section order."""
    out = []
    for section, builder in _BUILDERS.items():
        if report.sections.get(section) is None or report.sections[section].status != "ok":
            continue
        for cid, title, takeaway, fig in builder(report):
            out.append((ChartInfo(id=cid, section=section, title=title, takeaway=takeaway), fig))
    return out
