"""The event validation contract, one for every way events enter a store.

File ingest (`recsight.data.ingest`) checks millions of rows inside DuckDB, so its rules are
SQL; the HTTP API (`Store.append_events`, behind ``POST /events``) checks a few records in
Python. Both are built here from the same constants and in the same order, so a row is
kept, fixed or dropped for the same named reason whichever way it arrives (a property test,
`tests/fuzz/test_validation_agreement.py`, holds the two executors to that):

- user and item ids: text, trimmed (a trimmed id counts as fixed), non-empty, at most
  `MAX_ID_LENGTH` characters;
- timestamps: unix seconds or milliseconds by magnitude, or ISO-8601 (naive ones in the
  declared time zone), no earlier than the unix epoch and no later than the time of the check
  plus `FUTURE_TOLERANCE` (clock skew): a log cannot hold events that have not happened yet;
- event types: mapped onto the vocabulary (`recsight.data.schema`), unknown ones kept
  lower-cased, the raw spelling always kept beside them;
- values: finite numbers; a rating inside the store's rating scale (declared by
  ``--rating-scale`` or the format, else taken from the first ingest that has ratings, and
  recorded in the store under `SCALE_META`); no negative quantity on other events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from recsight.data.schema import (
    EVENT_TYPE_SYNONYMS,
    EVENT_TYPES,
    MILLISECONDS_THRESHOLD,
    canonical_event_type,
)
from recsight.errors import InputError

if TYPE_CHECKING:
    from recsight.data.store import Store

#: Longest user or item id accepted (the API documents the same limit).
MAX_ID_LENGTH = 256
#: How far past the time of the check a timestamp may lie (clocks of log sources drift).
FUTURE_TOLERANCE = timedelta(days=1)
#: Earliest timestamp accepted: no behavior log predates the unix epoch.
EARLIEST = datetime(1970, 1, 1)
#: Store metadata key of the rating scale, "min,max".
SCALE_META = "rating_scale"

#: Why an event is refused, in the order the checks apply (the first failing check names it),
#: with the field it concerns.
REASONS: dict[str, tuple[str, str]] = {
    "missing_user_id": ("user_id", "user id is empty"),
    "missing_item_id": ("item_id", "item id is empty"),
    "id_too_long": ("user_id", f"user or item id longer than {MAX_ID_LENGTH} characters"),
    "bad_timestamp": ("timestamp", "timestamp is not unix seconds, milliseconds or ISO-8601"),
    "missing_timestamp": (
        "timestamp",
        "timestamp is empty although the file has a timestamp column",
    ),
    "early_timestamp": ("timestamp", "timestamp before 1970-01-01 (the unix epoch)"),
    "future_timestamp": (
        "timestamp",
        "timestamp in the future (later than the time of ingest plus a day)",
    ),
    "missing_event_type": ("event_type", "event type is empty"),
    "bad_value": ("value", "value is not a finite number"),
    "rating_out_of_range": ("value", "rating outside the store's rating scale"),
    "negative_value": ("value", "negative quantity on a non-rating event"),
}


@dataclass(frozen=True)
class EventRules:
    """The parameters of the contract for one check: the rating scale (None: none known),
    the time zone of naive timestamps and the time of the check (naive UTC)."""

    rating_scale: tuple[float, float] | None = None
    tz: str = "UTC"
    now: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))

    @property
    def latest(self) -> datetime:
        """The latest timestamp accepted (naive UTC)."""
        return self.now + FUTURE_TOLERANCE

    @classmethod
    def of_store(cls, store: Store, tz: str = "UTC") -> EventRules:
        """The rules a store's events follow: its recorded rating scale, checked now."""
        return cls(rating_scale=stored_scale(store), tz=tz)


def parse_scale(text: str | None) -> tuple[float, float] | None:
    """'1,5' -> (1.0, 5.0); None stays None."""
    if not text:
        return None
    lo, hi = (float(x) for x in text.split(","))
    return lo, hi


def format_scale(scale: tuple[float, float]) -> str:
    return f"{scale[0]:g},{scale[1]:g}"


def check_scale(scale: tuple[float, float], what: str = "--rating-scale") -> tuple[float, float]:
    """A usable rating scale (finite, min <= max), else `InputError` naming `what`."""
    lo, hi = scale
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise InputError(f"{what} {lo:g},{hi:g}: expected finite MIN,MAX with MIN <= MAX")
    return float(lo), float(hi)


def stored_scale(store: Store) -> tuple[float, float] | None:
    """The rating scale recorded in a store (None: no ratings ingested with one yet)."""
    return parse_scale(store.meta(SCALE_META))


# -- the Python executor (API records) ------------------------------------------------------


class EventError(InputError):
    """An event breaks the contract: `field` is the offending field, `reason` a key of
    `REASONS`, `index` the record's position in its batch."""

    def __init__(self, index: int, field: str, reason: str, detail: str):
        self.index, self.field, self.reason, self.detail = index, field, reason, detail
        super().__init__(f"event {index}: field {field!r} {detail}")


def _epoch(num: float) -> datetime | None:
    """Unix seconds or milliseconds by magnitude (as `epoch_sql`); None when out of range."""
    if not math.isfinite(num) or abs(num) >= MILLISECONDS_THRESHOLD * 1000:
        return None
    scale = 1_000_000 if abs(num) < MILLISECONDS_THRESHOLD else 1000
    # DuckDB's DOUBLE -> BIGINT cast rounds half to even, as Python's round does
    us = round(num * scale)
    try:
        return datetime(1970, 1, 1) + timedelta(microseconds=us)
    except OverflowError:
        return None


def parse_timestamp(value: Any, tz: str = "UTC") -> datetime | None:
    """A timestamp as naive UTC: a datetime (naive ones in `tz`), unix seconds or milliseconds
    (numbers or numeric text), or ISO-8601 text. None for an empty value; `ValueError` for
    anything else."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, (int, float)):
        ts = _epoch(float(value))
        if ts is None:
            raise ValueError(f"not unix seconds or milliseconds: {value!r}")
        return ts
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            num = float(text)
        except ValueError:
            num = None
        if num is not None:
            return parse_timestamp(num, tz)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not unix seconds, milliseconds or ISO-8601: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"not a timestamp: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value.astimezone(UTC).replace(tzinfo=None)


def _number(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def check_event(index: int, rec: Mapping[str, Any], rules: EventRules) -> dict[str, Any]:
    """One event record (canonical field names) as the row to store, or `EventError` naming
    the first rule it breaks. A missing timestamp means now."""

    def text(name: str) -> str | None:
        v = rec.get(name)
        return None if v is None else str(v).strip(" ") or None

    def fail(reason: str, detail: str | None = None, name: str | None = None) -> EventError:
        where, what = REASONS[reason]
        return EventError(index, name or where, reason, detail or what)

    user, item = text("user_id"), text("item_id")
    if user is None:
        raise fail("missing_user_id", "is required and must not be empty")
    if item is None:
        raise fail("missing_item_id", "is required and must not be empty")
    for name, v in (("user_id", user), ("item_id", item)):
        if len(v) > MAX_ID_LENGTH:
            raise fail("id_too_long", f"is longer than {MAX_ID_LENGTH} characters", name)
    try:
        ts = parse_timestamp(rec.get("timestamp"), rules.tz)
    except ValueError as exc:
        raise fail("bad_timestamp", f"is {exc}") from None
    if ts is None:
        ts = rules.now
    if ts < EARLIEST:
        raise fail("early_timestamp", f"is before 1970-01-01 (the unix epoch): {ts:%Y-%m-%d}")
    if ts > rules.latest:
        raise fail(
            "future_timestamp",
            f"is in the future: {ts.isoformat()} (latest accepted: "
            f"{rules.latest:%Y-%m-%d %H:%M} UTC, a day past now)",
        )
    raw_type = text("event_type")
    if raw_type is None:
        raise fail("missing_event_type", "is required and must not be empty")
    etype = canonical_event_type(raw_type)
    try:
        value = _number(rec.get("value"))
    except (TypeError, ValueError):
        raise fail("bad_value", f"must be a finite number, got {rec.get('value')!r}") from None
    if value is not None and not math.isfinite(value):
        raise fail("bad_value", f"must be a finite number, got {value!r}")
    scale = rules.rating_scale
    if etype == "rating" and value is not None and scale and not scale[0] <= value <= scale[1]:
        raise fail(
            "rating_out_of_range",
            f"is a rating of {value:g}, outside the store's rating scale "
            f"{scale[0]:g} to {scale[1]:g}",
        )
    if etype != "rating" and value is not None and value < 0:
        raise fail("negative_value", f"must not be negative for {etype!r} events")
    return {
        "user_id": user,
        "item_id": item,
        "timestamp": ts,
        "event_type": etype,
        "raw_event_type": raw_type,
        "value": value,
        "event_id": text("event_id"),
        "session_id": text("session_id"),
        "request_id": text("request_id"),
    }


# -- the SQL executor (file ingest, inside DuckDB) ------------------------------------------


def sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def epoch_sql(num: str) -> str:
    """SQL: unix seconds or milliseconds by magnitude; out-of-range numbers give NULL."""
    return (
        f"CASE WHEN abs({num}) < {MILLISECONDS_THRESHOLD} "
        f"THEN make_timestamp(CAST({num} * 1000000 AS BIGINT)) "
        f"WHEN abs({num}) < {MILLISECONDS_THRESHOLD * 1000} "
        f"THEN make_timestamp(CAST({num} * 1000 AS BIGINT)) END"
    )


def timestamp_sql(col: str, typ: str) -> str:
    """SQL turning a source timestamp of any DuckDB type into naive UTC (NULL when it cannot
    be read). Naive inputs are read in the session time zone, which ingest sets."""
    if typ.startswith("TIMESTAMP WITH TIME ZONE"):
        # the instant's UTC microseconds as a naive timestamp (10x cheaper than timezone())
        return f"make_timestamp(epoch_us({col}))"
    if typ.startswith("TIMESTAMP") or typ == "DATE":
        return f"timezone('UTC', CAST({col} AS TIMESTAMPTZ))"
    if typ in ("VARCHAR", "JSON"):
        txt = f"NULLIF(trim(CAST({col} AS VARCHAR)), '')"
        num = f"TRY_CAST({txt} AS DOUBLE)"
        return (
            f"CASE WHEN {num} IS NOT NULL THEN {epoch_sql(num)} "
            f"ELSE timezone('UTC', TRY_CAST({txt} AS TIMESTAMPTZ)) END"
        )
    return epoch_sql(f"CAST({col} AS DOUBLE)")


def event_type_sql(raw: str) -> str:
    """SQL of `canonical_event_type` over the (trimmed) raw type column."""
    whens = " ".join(f"WHEN {sql_str(k)} THEN {sql_str(v)}" for k, v in EVENT_TYPE_SYNONYMS.items())
    # most logs already use canonical spellings: those skip lower() and the synonym list
    canonical = ", ".join(sql_str(t) for t in EVENT_TYPES)
    return (
        f"CASE WHEN {raw} IN ({canonical}) THEN {raw} "
        f"ELSE CASE lower({raw}) {whens} ELSE lower({raw}) END END"
    )


def reason_sql(rules: EventRules, has_timestamp: bool) -> str:
    """SQL CASE naming the first rule a staged row breaks (NULL: keep it). The row has
    `user_id`, `item_id` (trimmed text), `ts` (parsed), `_ts_present` (the source field held
    something), `event_type`, `value` (parsed) and `_value_present`."""
    if rules.rating_scale:
        lo, hi = rules.rating_scale
        out_of_range = (
            f"event_type = 'rating' AND value IS NOT NULL AND (value < {lo!r} OR value > {hi!r})"
        )
    else:
        out_of_range = "false"
    latest = sql_str(rules.latest.isoformat(sep=" "))
    earliest = sql_str(EARLIEST.isoformat(sep=" "))
    return f"""CASE
        WHEN user_id IS NULL THEN 'missing_user_id'
        WHEN item_id IS NULL THEN 'missing_item_id'
        WHEN length(user_id) > {MAX_ID_LENGTH} OR length(item_id) > {MAX_ID_LENGTH}
          THEN 'id_too_long'
        WHEN _ts_present AND ts IS NULL THEN 'bad_timestamp'
        WHEN {str(has_timestamp).lower()} AND NOT _ts_present THEN 'missing_timestamp'
        WHEN ts < TIMESTAMP {earliest} THEN 'early_timestamp'
        WHEN ts > TIMESTAMP {latest} THEN 'future_timestamp'
        WHEN event_type IS NULL THEN 'missing_event_type'
        WHEN _value_present AND (value IS NULL OR NOT isfinite(value)) THEN 'bad_value'
        WHEN {out_of_range} THEN 'rating_out_of_range'
        WHEN event_type <> 'rating' AND value < 0 THEN 'negative_value'
    END"""
