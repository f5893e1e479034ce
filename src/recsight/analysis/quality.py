"""Section 2, data quality: duplicates, missing fields, out-of-range values, timestamp
anomalies and suspected bots, each with a count and a few examples."""

from __future__ import annotations

import datetime as dt

import ibis
import numpy as np
import pandas as pd
from pydantic import BaseModel

from recsight.analysis.groups import large_groups
from recsight.analysis.overview import grouped_quantiles
from recsight.analysis.sessions import DEFAULT_GAP_MINUTES, session_table
from recsight.analysis.source import AnalysisSource, as_int, iso
from recsight.data.schema import EVENT_TYPES

N_EXAMPLES = 5
#: Earliest plausible event time: anything before is a clock or parsing error.
EARLIEST_PLAUSIBLE = dt.datetime(1990, 1, 1)
#: Robust z-score (median/MAD, log scale) above which activity counts as far outside the range.
BOT_Z = 5.0
#: Floors that keep a tight majority (MAD near 0) from flagging mildly active users.
BOT_MIN_PER_MINUTE = 10
BOT_MIN_ITEMS_PER_SESSION = 50
#: Minute with more events than this robust z (MAD of per-minute counts) is a burst.
BURST_Z = 10.0


class Issue(BaseModel):
    """A count with a handful of example rows (as plain dicts)."""

    count: int
    examples: list[dict] = []


class SuspectedBot(BaseModel):
    user_id: str
    n_events: int
    peak_events_per_minute: int
    max_items_per_session: int
    z_per_minute: float
    z_items_per_session: float


class DataQuality(BaseModel):
    n_events: int
    duplicates: Issue  # extra copies of (user, item, timestamp, event type, value)
    missing: dict[str, int]  # events.<col> / items.<col> -> null count
    items_not_in_catalog: int
    out_of_range: dict[str, Issue]
    timestamps: dict[str, Issue]  # future, too_early, outside_bulk, bursts
    bots: list[SuspectedBot] | None  # None when the log has no timestamps
    bot_rule: str


def _examples(
    src: AnalysisSource, t, n: int = N_EXAMPLES, where: str | None = "quality.examples"
) -> list[dict]:
    """Up to `n` rows of `t`. Rows of single events show one user each: with a minimum group
    size they are left out (unless examples were asked for) and counted under `where`."""
    if where is not None and not src.privacy.examples_allowed:
        src.privacy.note(where, int(src.scalar(t.limit(n).count())))
        return []
    d = src.df(t.limit(n))
    for c in d.columns:
        if pd.api.types.is_datetime64_any_dtype(d[c]):
            d[c] = d[c].map(iso)
    return [
        {k: (None if _isnull(v) else _plain(v)) for k, v in r.items()} for r in d.to_dict("records")
    ]


def _isnull(v) -> bool:
    return not isinstance(v, list | np.ndarray) and pd.isna(v)


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _issue(src: AnalysisSource, t, cols: list[str]) -> Issue:
    return Issue(count=int(src.scalar(t.count())), examples=_examples(src, t.select(*cols)))


def robust_z(x: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD), with the scale floored at 0.25 so that a log where most
    values are equal does not make every small deviation infinite."""
    med = np.median(x)
    scale = max(1.4826 * float(np.median(np.abs(x - med))), 0.25)
    return (x - med) / scale


def suspected_bots(
    src: AnalysisSource, z: float = BOT_Z, gap_minutes: float = DEFAULT_GAP_MINUTES
) -> list[SuspectedBot]:
    """Users whose peak events per minute or distinct items per session is far above everyone
    else's: robust z (median/MAD of log1p values) above `z`, and above absolute floors."""
    src.require_timestamps("bot detection")
    e = src.events.filter(src.events.timestamp.notnull())
    minute = e.timestamp.truncate("m")
    per_min = e.group_by("user_idx", m=minute).aggregate(c=e.count())
    peak = per_min.group_by("user_idx").aggregate(peak=per_min.c.max())
    st = session_table(src, gap_minutes)
    per_sess = st.group_by("user_idx").aggregate(items=st["items"].max())
    users = e.group_by("user_idx").aggregate(n=e.count(), user_id=e.user_id.arbitrary())
    j = users.inner_join(peak, "user_idx").inner_join(per_sess, "user_idx")
    d = src.df(j.select("user_idx", "user_id", "n", "peak", "items"))
    if d.empty:
        return []
    z_min = robust_z(np.log1p(d.peak.to_numpy(float)))
    z_items = robust_z(np.log1p(d["items"].to_numpy(float)))
    flag = ((z_min > z) & (d.peak >= BOT_MIN_PER_MINUTE)) | (
        (z_items > z) & (d["items"] >= BOT_MIN_ITEMS_PER_SESSION)
    )
    out = [
        SuspectedBot(
            user_id=str(r.user_id),
            n_events=int(r.n),
            peak_events_per_minute=int(r.peak),
            max_items_per_session=int(r["items"]),
            z_per_minute=round(float(zm), 2),
            z_items_per_session=round(float(zi), 2),
        )
        for (_, r), zm, zi, f in zip(d.iterrows(), z_min, z_items, flag, strict=True)
        if f
    ]
    return sorted(out, key=lambda b: -max(b.z_per_minute, b.z_items_per_session))


def data_quality(src: AnalysisSource, now: dt.datetime | None = None) -> DataQuality:
    """Duplicates, missing fields, out-of-range values, timestamp anomalies, suspected bots."""
    e = src.events
    show = ["user_id", "item_id", "timestamp", "event_type", "value"]
    # grouped by the integer ids (one-to-one with the external ones, and cheaper to hash);
    # the external ids are fetched only for the few examples shown
    key = ["user_idx", "item_idx", "timestamp", "event_type", "value"]

    def dup_groups(**extra):
        groups = e.group_by(key).aggregate(copies=e.count(), **extra)
        return groups.filter(groups.copies > 1)

    counted = dup_groups()
    n_dup = as_int(src.scalar(counted.aggregate(x=(counted.copies - 1).sum()).x))
    shown = dup_groups(user_id=e.user_id.arbitrary(), item_id=e.item_id.arbitrary())
    examples = _examples(src, shown.select(*show, "copies")) if n_dup else []
    duplicates = Issue(count=n_dup, examples=examples)

    ev_cols = ["timestamp", "value", "event_id", "session_id", "raw_event_type"]
    it_cols = ["title", "category", "price"]
    counts = src.df(e.aggregate(**{c: e[c].isnull().sum() for c in ev_cols})).iloc[0]
    it = src.items
    icounts = src.df(it.aggregate(**{c: it[c].isnull().sum() for c in it_cols})).iloc[0]
    missing = {f"events.{c}": as_int(counts[c]) for c in ev_cols}
    missing |= {f"items.{c}": as_int(icounts[c]) for c in it_cols}
    rated = e.filter((e.event_type == "rating") & e.value.isnull())
    missing["events.value (rating events)"] = int(src.scalar(rated.count()))
    catalog = it.select("item_idx")
    not_in = int(src.scalar(e.anti_join(catalog, "item_idx").count()))

    out = {
        "negative_value": _issue(src, e.filter((e.event_type != "rating") & (e.value < 0)), show),
        "nonfinite_value": _issue(src, e.filter(e.value.isnan() | e.value.isinf()), show),
        "unknown_event_type": _issue(
            src, e.filter(~e.event_type.isin(list(EVENT_TYPES))), show + ["raw_event_type"]
        ),
        "nonpositive_price": _issue(src, it.filter(it.price <= 0), ["item_id", "price"]),
    }

    times: dict[str, Issue] = {}
    bots = None
    if src.has_timestamps:
        now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ts = e.timestamp
        times["future"] = _issue(
            src, e.filter(ts > now).order_by(ibis.desc("timestamp"), "seq"), show
        )
        times["too_early"] = _issue(
            src, e.filter(ts < EARLIEST_PLAUSIBLE).order_by(ts, "seq"), show
        )
        times["outside_bulk"] = _outside_bulk(src, show)
        times["bursts"] = _bursts(src)
        bots = suspected_bots(src)
        if not src.privacy.examples_allowed:  # each row is one user
            src.privacy.note("quality.bots", len(bots))
            bots = []
    return DataQuality(
        n_events=int(src.scalar(e.count())),
        duplicates=duplicates,
        missing=missing,
        items_not_in_catalog=not_in,
        out_of_range=out,
        timestamps=times,
        bots=bots,
        bot_rule=(
            f"robust z > {BOT_Z:g} (median/MAD of log1p) on peak events per minute "
            f"(and >= {BOT_MIN_PER_MINUTE}) or distinct items per session "
            f"(and >= {BOT_MIN_ITEMS_PER_SESSION})"
        ),
    )


def _outside_bulk(src: AnalysisSource, show: list[str]) -> Issue:
    """Events far outside the central 99.8% of times: beyond a quarter of that range."""
    e = src.events
    q_lo, q_hi = grouped_quantiles(src, e, e.timestamp.epoch_seconds(), (0.001, 0.999))
    if q_lo is None:
        return Issue(count=0, examples=[])
    pad = 0.25 * (q_hi - q_lo)
    lo = pd.Timestamp(int(q_lo - pad), unit="s").to_pydatetime()
    hi = pd.Timestamp(int(q_hi + pad) + 1, unit="s").to_pydatetime()
    return _issue(
        src, e.filter((e.timestamp < lo) | (e.timestamp > hi)).order_by("timestamp", "seq"), show
    )


def _bursts(src: AnalysisSource) -> Issue:
    """Minutes whose event count is more than `BURST_Z` robust z above the typical minute."""
    e = src.events.filter(src.events.timestamp.notnull())
    per_min = src.materialize(  # its median, its MAD, the count and the examples read it
        e.group_by(minute=e.timestamp.truncate("m")).aggregate(
            events=e.count(), users=e.user_idx.nunique()
        )
    )
    c = per_min.events
    stats = src.df(per_min.aggregate(med=c.median())).iloc[0]
    dev = (c - float(stats.med)).abs()
    mad = float(src.scalar(per_min.aggregate(m=dev.median()).m))
    limit = float(stats.med) + BURST_Z * max(1.4826 * mad, 1.0)
    b = per_min.filter(c > limit)
    shown = large_groups(src, b, "users", "quality.bursts").order_by(ibis.desc("events"), "minute")
    return Issue(count=int(src.scalar(b.count())), examples=_examples(src, shown, where=None))
