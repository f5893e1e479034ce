"""Ingest: validate, clean and append a behavior log (plus item and user files) to a store.

The ingest contract: every row read is either kept (possibly fixed by an explicit rule) or
dropped for a named reason, and the report says how many of each with example line numbers.
Rows are parsed and checked inside DuckDB, so a 10M-row file never becomes Python objects.
A file that cannot be read at all raises `InputError` before the store is touched, and any
failure while writing rolls the whole ingest back.
"""

from __future__ import annotations

import bisect
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from recsight.data.readers import (
    Source,
    _first_line,
    _sql_str,
    check_line_endings,
    open_source,
    read_side_table,
)
from recsight.data.schema import ITEM_COLUMNS
from recsight.data.store import STORED_EVENT_COLUMNS, Store, add_ids
from recsight.data.validation import (
    REASONS,
    SCALE_META,
    EventRules,
    check_scale,
    event_type_sql,
    format_scale,
    reason_sql,
    stored_scale,
    timestamp_sql,
)
from recsight.errors import InputError

DEDUPE_POLICIES = ("exact", "none")
FILL_POLICIES = ("none", "item-mean", "user-mean", "global-mean")
#: Store metadata key of the --fill-rating policy (applied at fit time, see `_note_fill`).
FILL_META = "fill_rating"
MAX_EXAMPLES = 5

#: Why a row was dropped, in the order the checks apply (the first failing check names it).
DROP_REASONS = {
    "malformed_line": "the line does not split into the header's number of fields",
    "bad_encoding": "the line is not valid UTF-8",
    **{reason: what for reason, (_field, what) in REASONS.items()},
    "duplicate": "duplicate of an earlier row in this file (same event_id, or all fields)",
    "duplicate_of_stored": "already in the store (same event_id, or all fields)",
}


@dataclass
class TableReport:
    """What an items or users file contributed."""

    source: str
    rows_read: int
    kept: int
    new: int
    updated: int
    fixed: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    """Rows read, kept, fixed and dropped (by reason, with example line numbers)."""

    source: str
    format: str
    timezone: str
    rows_read: int
    kept: int
    fixed: dict[str, int]
    dropped: dict[str, int]
    examples: dict[str, list[int]]
    example_unit: str
    new_users: int
    new_items: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    items: TableReport | None = None
    users: TableReport | None = None

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def n_fixed(self) -> int:
        return self.fixed.get("rows", 0)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_dropped"] = self.n_dropped
        d["n_fixed"] = self.n_fixed
        return d


def _check_options(dedupe: str, fill_rating: str, tz: str | None) -> None:
    if dedupe not in DEDUPE_POLICIES:
        raise InputError(f"--dedupe {dedupe!r}: expected one of {', '.join(DEDUPE_POLICIES)}")
    if fill_rating not in FILL_POLICIES:
        raise InputError(
            f"--fill-rating {fill_rating!r}: expected one of {', '.join(FILL_POLICIES)}"
        )
    if tz is not None:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InputError(f"--tz {tz!r}: unknown time zone (e.g. UTC, Asia/Shanghai)") from None


def ingest(
    store: Store,
    events: str | Path,
    *,
    items: str | Path | None = None,
    users: str | Path | None = None,
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    tz: str | None = None,
    dedupe: str = "exact",
    fill_rating: str = "none",
    rating_scale: tuple[float, float] | None = None,
    progress: Callable[[str], None] | None = None,
    pseudonym_key: bytes | None = None,
    chunk_rows: int | None = None,
) -> IngestReport:
    """Read `events` (file or folder, format detected unless `fmt`), clean it and append it,
    with the item and user files found beside it or given explicitly. With `pseudonym_key`,
    user ids (and session ids) are stored as keyed hashes (`recsight.data.pseudonyms`).
    Rows that may be duplicates are staged and checked `chunk_rows` at a time (default: from
    DuckDB's memory limit, see `_default_chunk_rows`), others in one aggregating scan; the
    result does not depend on it."""
    from recsight.data import pseudonyms as keys

    t0 = time.perf_counter()
    step = progress or (lambda _msg: None)
    _check_options(dedupe, fill_rating, tz)
    con = store.con
    step("reading")
    src = open_source(events, fmt, mapping, con)
    # an exported layout of a pseudonymized store holds pseudonyms already: kept as they are
    hashed = src.pseudonym_key_fingerprint
    keys.check_ingest_key(store, pseudonym_key, hashed)
    fingerprint = hashed or (keys.key_fingerprint(pseudonym_key) if pseudonym_key else None)
    if hashed:
        pseudonym_key = None
    tz = tz or src.default_tz
    if fill_rating == "none" and src.fill_rating:
        fill_rating = src.fill_rating  # an exported store's policy travels with its events
    declared = check_scale(rating_scale) if rating_scale else src.rating_scale
    known = stored_scale(store)
    rules = EventRules(rating_scale=declared or known, tz=tz)
    items_df = read_side_table(items, key="item_id") if items else src.items
    users_df = read_side_table(users, key="user_id") if users else src.users
    items_name = str(items) if items else (str(src.items_path) if src.items_path else None)
    users_name = str(users) if users else (str(src.users_path) if src.users_path else None)

    con.execute(f"SET TimeZone = {_sql_str(tz)}")
    raw = None
    try:
        raw = _open_raw(con, src, rules)
        step("checking")
        state = _check(
            con,
            raw,
            dedupe,
            pseudonym_key,
            chunk_rows or _default_chunk_rows(con),
            store_has_events=store.count("event_log") > 0,
        )
        if pseudonym_key is not None and users_df is not None:
            users_df = keys.pseudonymize_frame(users_df, "user_id", pseudonym_key)
        report = _summarise(src, raw.rejects, state, tz)
        scale = _scale_to_record(state, declared, known, report)
        if fill_rating != "none":
            _note_fill(state, store, fill_rating, report)
        step("writing")
        con.execute("BEGIN TRANSACTION")
        try:
            report.new_users, report.new_items = _write_events(con, raw, state, report)
            if items_df is not None:
                report.items = _merge_side(con, "item", items_df, items_name or "items")
            if users_df is not None:
                report.users = _merge_side(con, "user", users_df, users_name or "users")
            if fill_rating != "none":
                store.set_meta(FILL_META, fill_rating)
            if scale is not None:
                store.set_meta(SCALE_META, format_scale(scale))
            if fingerprint is not None:
                store.set_meta(keys.META_FINGERPRINT, fingerprint)
            if store.meta("timezone") is None:
                store.set_meta("timezone", tz)
            elif store.meta("timezone") != tz:
                report.notes.append(
                    f"timestamps read in {tz}; the store's declared time zone stays "
                    f"{store.meta('timezone')}"
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        for table in _SCRATCH:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        if raw is not None:
            con.execute(f"DROP {raw.kind} IF EXISTS _raw")
        con.execute("SET TimeZone = 'UTC'")
    report.seconds = round(time.perf_counter() - t0, 3)
    return report


# -- staging: parse every field and name the first problem of each row --------------------


def _types(con: duckdb.DuckDBPyConnection, scan: str) -> dict[str, str]:
    return {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}


def _text(col: str, typ: str) -> str:
    """SQL for a source column as trimmed text (NULL when empty); integral floats lose '.0'."""
    if typ in ("FLOAT", "DOUBLE"):
        return (
            f"CASE WHEN {col} = floor({col}) THEN CAST(CAST({col} AS BIGINT) AS VARCHAR) "
            f"ELSE CAST({col} AS VARCHAR) END"
        )
    if typ == "VARCHAR":
        # trim() copies every string; only the (rare) padded or empty ones need it
        return f"CASE WHEN {_padded(col)} OR {col} = '' THEN NULLIF(trim({col}), '') ELSE {col} END"
    return f"NULLIF(trim(CAST({col} AS VARCHAR)), '')"


def _padded(col: str) -> str:
    """SQL: the text starts or ends with a space (exactly when trim() would change it)."""
    return f"(prefix({col}, ' ') OR suffix({col}, ' '))"


def _present(col: str, typ: str) -> str:
    """SQL: the source field holds something (a typed column: not NULL; text: not blank)."""
    if typ in ("VARCHAR", "JSON"):
        return f"{_text(f'CAST({col} AS VARCHAR)', 'VARCHAR')} IS NOT NULL"
    return f"{col} IS NOT NULL"


_DEDUPE_FIELDS = ("user_id", "item_id", "ts", "event_type", "raw_event_type", "value", "session_id")
#: Rows with an event_id are keyed by it alone; rows without one by all their fields.
_DEDUPE_KEY = ", ".join(
    ["event_id"] + [f"CASE WHEN event_id IS NULL THEN {f} END" for f in _DEDUPE_FIELDS]
)
#: A hash that is equal whenever `_DEDUPE_KEY` is (one column to hash in the usual case).
#: A staged row's position and dedupe fields.
_KEY_COLUMNS = ", ".join(["_pos", "event_id", *_DEDUPE_FIELDS])
_DEDUPE_HASH = (
    f"CASE WHEN event_id IS NOT NULL THEN hash(event_id) ELSE hash({', '.join(_DEDUPE_FIELDS)}) END"
)


#: Temp tables of one ingest, dropped at its end whatever happens.
_SCRATCH = (
    "_stage",
    "_dupe_hashes",
    "_firsts",
    "_ranked",
    "_dupes",
    "_first_user",
    "_first_item",
    "_catn",
    "_cats",
    "_pn_new",
    "_pn_user_id",
    "_pn_session_id",
)

#: Bytes of DuckDB's memory limit per row of a chunk. A staged row takes about 180 bytes
#: (string ids, parsed fields, position, hash, reason), so a chunk fills under a quarter of
#: the limit and its passes (hash tables included) run in memory instead of spilling.
_LIMIT_BYTES_PER_CHUNK_ROW = 800
_MIN_CHUNK_ROWS = 1 << 16
#: DuckDB prints its memory limit in binary units ("1.4 GiB").
_UNITS = {u: 1 << (10 * k) for k, u in enumerate(("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"))}


def _default_chunk_rows(con: duckdb.DuckDBPyConnection) -> int:
    """Rows checked at a time: from DuckDB's memory limit (e.g. 1.5 GB: about 2M rows)."""
    setting = str(con.execute("SELECT current_setting('memory_limit')").fetchone()[0])
    number, _, unit = setting.partition(" ")
    limit = float(number) * _UNITS[unit]
    return max(_MIN_CHUNK_ROWS, int(limit / _LIMIT_BYTES_PER_CHUNK_ROW))


@dataclass
class _Raw:
    """The events as SQL: `rows(lo, hi)` selects, parsed and checked, the rows at positions
    lo..hi (all rows without bounds); `_reason` names the event-contract rule a row breaks."""

    src: Source
    kind: str  # the temp object `_raw` is: VIEW (Parquet) or TABLE (text formats)
    typed: str  # SELECT list of the parsed fields over `_raw`
    reason: str  # SQL over the parsed fields: the first broken rule, NULL when none
    pos_column: str  # column of `_raw` a position range filters on
    pos_offset: int  # its value at position 0
    n: int
    first: int  # positions span first..last
    last: int
    rejects: dict
    event_id: str = "NULL::VARCHAR"  # SQL over `_raw`: the parsed event id

    def rows(self, lo: int | None = None, hi: int | None = None) -> str:
        where = ""
        if lo is not None:
            a, b = lo + self.pos_offset, hi + self.pos_offset
            where = f"WHERE {self.pos_column} BETWEEN {a} AND {b}"
        return f"""
            WITH typed AS (SELECT {self.typed} FROM _raw {where})
            SELECT * EXCLUDE (_ts_present, _value_present),
                   {self.reason} AS _reason, {_DEDUPE_HASH} AS _h
            FROM typed"""

    def chunks(self, size: int) -> list[tuple[int, int]]:
        """Position ranges of about `size` rows each, in order (positions may have gaps)."""
        span = self.last - self.first + 1
        width = max(1, -(-size * span // self.n))
        return [(a, min(a + width - 1, self.last)) for a in range(self.first, self.last + 1, width)]


def _open_raw(con: duckdb.DuckDBPyConnection, src: Source, rules: EventRules) -> _Raw:
    """Create the temp `_raw` (the source's columns, renamed) and the SQL that parses and
    checks its rows by the event contract (`recsight.data.validation`)."""
    con.execute("DROP TABLE IF EXISTS reject_errors; DROP TABLE IF EXISTS reject_scans")
    cols = src.columns
    picks = [f"{_q(c)} AS {_q('r_' + canon)}" for canon, c in cols.items()]
    if src.event_type_fallback:
        picks.append(f"{_q(src.event_type_fallback)} AS r_event_type_fallback")
    if src.row_number_column:
        picks.append(f"{src.row_number_column} AS _rownum")
    # Parquet carries row numbers, so it is scanned through a view, by row range; text
    # formats are materialised because their row positions are row ids.
    kind = "VIEW" if src.row_number_column else "TABLE"
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP {kind} _raw AS SELECT {', '.join(picks)} FROM {src.scan_sql}"
        )
        if kind == "VIEW":  # surface unreadable files here, not halfway through checking
            con.execute("SELECT count(*) FROM _raw").fetchone()
    except duckdb.Error as exc:
        if src.format not in ("parquet", "jsonl"):
            check_line_endings(src.path)  # a mix of line ends: named with its line
        raise InputError(f"{src.path}: cannot read as {src.format} ({_first_line(exc)})") from None
    try:
        rejects = _rejects(con, src)
    except InputError:
        con.execute(f"DROP {kind} _raw")
        raise
    types = _types(con, "_raw")
    if src.row_number_column == "file_row_number":  # one file: rows 0..n-1
        n = int(con.execute("SELECT count(*) FROM _raw").fetchone()[0])
        pos_column, offset, first, last = "_rownum", 0, 0, n - 1
    else:
        pos_column = "_rownum" if src.row_number_column else "rowid"
        n, lo, hi = con.execute(
            f"SELECT count(*), min({pos_column}), max({pos_column}) FROM _raw"
        ).fetchone()
        n = int(n)
        # text rows are numbered from 0 by row id; a layout's rows keep their `seq`
        offset = int(lo or 0) if pos_column == "rowid" else 0
        first, last = int(lo or 0) - offset, int(hi or 0) - offset
    if n == 0:
        con.execute(f"DROP {kind} _raw")
        if rejects["lines"]:
            raise InputError(
                f"{src.path}: no line could be read as {src.format}: e.g. line "
                f"{rejects['lines'][0]}: {rejects['first_error']}"
            )
        raise InputError(f"{src.path}: no data rows, expected events")

    def r(canon: str) -> str:
        return _q("r_" + canon)

    user = _text(r("user_id"), types[r("user_id").strip('"')])
    item = _text(r("item_id"), types[r("item_id").strip('"')])
    has_ts = "timestamp" in cols
    ts_present = _present(r("timestamp"), types["r_timestamp"]) if has_ts else "false"
    ts = timestamp_sql(r("timestamp"), types["r_timestamp"]) if has_ts else "NULL::TIMESTAMP"
    if "event_type" in cols:
        raw_type = _text(r("event_type"), types["r_event_type"])
        etype = event_type_sql(
            f"coalesce({raw_type}, r_event_type_fallback)" if src.event_type_fallback else raw_type
        )
    else:
        default = src.constants.get("event_type") or ("rating" if "value" in cols else "view")
        raw_type, etype = "NULL::VARCHAR", _sql_str(default)
        if "event_type" not in src.constants:
            src.notes.append(f"no event type column: every row is a '{default}' event")
    if "value" in cols:
        vtype = types["r_value"]
        value_present = _present(r("value"), vtype)
        value = (
            f"TRY_CAST({_text(r('value'), vtype)} AS DOUBLE)"
            if vtype in ("VARCHAR", "JSON")
            else f"CAST({r('value')} AS DOUBLE)"
        )
    else:
        value_present, value = "false", "NULL::DOUBLE"
    opt = {
        c: (_text(r(c), types["r_" + c]) if c in cols else "NULL::VARCHAR")
        for c in ("event_id", "session_id", "request_id", "category")
    }
    pos = f"{pos_column} - {offset}" if offset else pos_column
    padded = [_padded(r(c)) for c in ("user_id", "item_id") if types["r_" + c] == "VARCHAR"]
    trimmed = " OR ".join(padded) or "false"
    typed = f"""CAST({pos} AS BIGINT) AS _pos,
                   {user} AS user_id, {item} AS item_id,
                   {ts_present} AS _ts_present, {ts} AS ts,
                   {raw_type} AS raw_event_type, {etype} AS event_type,
                   {value_present} AS _value_present, {value} AS value,
                   {opt["event_id"]} AS event_id, {opt["session_id"]} AS session_id,
                   {opt["request_id"]} AS request_id,
                   {opt["category"]} AS category,
                   coalesce({trimmed}, false) AS _fix_trim"""
    return _Raw(
        src,
        kind,
        typed,
        reason_sql(rules, has_ts),
        pos_column,
        offset,
        n,
        first,
        last,
        rejects,
        opt["event_id"],
    )


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rejects(con: duckdb.DuckDBPyConnection, src: Source) -> dict:
    """The lines DuckDB's reader rejected, by drop reason. An unterminated quote is fatal:
    the reader takes the rest of the file as one field, so every later row would be lost."""
    try:
        rows = con.execute(
            "SELECT line, any_value(error_message), bool_or(error_type = 'INVALID ENCODING'), "
            "bool_or(error_type = 'UNQUOTED VALUE') "
            "FROM reject_errors GROUP BY line ORDER BY line"
        ).fetchall()
    except duckdb.CatalogException:
        rows = []
    unterminated = [int(r[0]) for r in rows if r[3]]
    if unterminated:
        raise InputError(
            f"{src.path}: line {unterminated[0]}: a quoted field is never closed, so the rest of "
            "the file cannot be split into rows; fix the quoting (a quote inside a field is "
            'written "")'
        )
    by_reason: dict[str, list[int]] = {}
    for line, _msg, bad_encoding, _ in rows:
        by_reason.setdefault("bad_encoding" if bad_encoding else "malformed_line", []).append(
            int(line)
        )
    return {
        "lines": [int(r[0]) for r in rows],
        "by_reason": by_reason,
        "first_error": rows[0][1] if rows else None,
    }


# -- checking: chunk by chunk, so memory and spill stay bounded at any input size ----------


@dataclass
class _Tally:
    """What checking found, summed over the chunks. The rows themselves stay in the source:
    only dropped duplicates' positions (`_dupes`), each new id's first position
    (`_first_user`, `_first_item`), item categories (`_catn`) and, with a pseudonym key, the
    id -> pseudonym pairs (`_pn_*`) are kept, all bounded by distinct ids, not rows."""

    rows: int = 0
    kept: int = 0
    trimmed: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)  # positions, first five
    rating_min: float | None = None
    rating_max: float | None = None
    ratings_without_value: int = 0
    n_dupes: int = 0
    pseudonymized: bool = False


def _check(
    con: duckdb.DuckDBPyConnection,
    raw: _Raw,
    dedupe: str,
    pseudonym_key: bytes | None,
    chunk_rows: int,
    store_has_events: bool,
) -> _Tally:
    """Stage the rows a chunk at a time (the temp `_stage`, replaced per chunk outside any
    transaction, so DuckDB frees it) and tally them. Each chunk sees what earlier chunks
    left (first positions, duplicate keys), so the outcome is the one-shot one. When no row
    can be marked (no repeated key hash, nothing stored to compare with, no pseudonyms),
    nothing is staged: `_tally_streaming` aggregates the whole source instead."""
    tally = _Tally(pseudonymized=pseudonym_key is not None)
    candidates = dedupe == "exact" and _duplicate_hashes(con, raw)
    con.execute("CREATE OR REPLACE TEMP TABLE _dupes (_pos BIGINT)")
    for kind in ("user", "item"):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _first_{kind} ({kind}_id VARCHAR, first BIGINT)")
    has_category = "category" in raw.src.columns
    if has_category:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _catn "
            "(item_id VARCHAR, category VARCHAR, n BIGINT, first BIGINT)"
        )
    if pseudonym_key is not None:
        for column in ("user_id", "session_id"):
            con.execute(f"CREATE OR REPLACE TEMP TABLE _pn_{column} (_id VARCHAR, _p VARCHAR)")
    marks_stored = store_has_events and dedupe != "none"
    if _streamable(candidates, marks_stored, pseudonym_key):
        _tally_streaming(con, raw, tally, has_category)
        return tally
    for lo, hi in raw.chunks(chunk_rows):
        con.execute(f"CREATE OR REPLACE TEMP TABLE _stage AS {raw.rows(lo, hi)}")
        if pseudonym_key is not None:
            _pseudonymize_stage(con, pseudonym_key)
        if candidates:
            _mark_duplicates(con)
        if marks_stored:
            _mark_stored_duplicates(con)
        _tally_chunk(con, tally, has_category)
    return tally


def _streamable(candidates: bool, marks_stored: bool, pseudonym_key: bytes | None) -> bool:
    """Whether each row's outcome is its own `_reason`: no row can be a duplicate of another
    row or of a stored event, and ids are kept as read."""
    return not candidates and not marks_stored and pseudonym_key is None


#: `grouping(_reason, user_id, category)` of each grouping set of `_tally_streaming`.
_BY_REASON, _BY_USER, _BY_ITEM, _BY_ITEM_CATEGORY = 0b011, 0b101, 0b111, 0b110


def _tally_streaming(
    con: duckdb.DuckDBPyConnection, raw: _Raw, tally: _Tally, has_category: bool
) -> None:
    """Tally the whole source as `_tally_chunk` tallies chunks, in one aggregating scan
    that stores nothing per row (and a second one for example positions when rows were
    dropped): materialising `_stage` cost more than parsing, 9.7 of the 15.6 CPU seconds
    of checking 10M events."""
    sets = "(_reason), (user_id), (item_id)"
    which, category = "grouping(_reason, user_id) * 2 + 1", "NULL"
    if has_category:
        sets += ", (item_id, category)"
        which, category = "grouping(_reason, user_id, category)", "category"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT {which} AS _set, _reason, user_id, item_id, {category} AS category,
               count(*) AS n_rows, count(*) FILTER (_reason IS NULL) AS n,
               min(_pos) FILTER (_reason IS NULL) AS first,
               count(*) FILTER (_reason IS NULL AND _fix_trim) AS trimmed,
               min(value) FILTER (_rating AND value IS NOT NULL) AS lo,
               max(value) FILTER (_rating AND value IS NOT NULL) AS hi,
               count(*) FILTER (_rating AND value IS NULL) AS unvalued
        FROM (SELECT *, _reason IS NULL AND event_type = 'rating' AS _rating
              FROM ({raw.rows()}))
        GROUP BY GROUPING SETS ({sets})
    """)
    by_reason = con.execute(
        f"SELECT _reason, n_rows, trimmed, lo, hi, unvalued FROM _ranked WHERE _set = {_BY_REASON}"
    ).fetchall()
    for reason, rows, trimmed, lo, hi, unvalued in by_reason:
        tally.rows += int(rows)
        if reason is not None:
            tally.dropped[reason] = int(rows)
            continue
        tally.kept = int(rows)
        tally.trimmed = int(trimmed)
        tally.ratings_without_value = int(unvalued)
        tally.rating_min, tally.rating_max = lo, hi
    if tally.dropped:
        examples = con.execute(f"""
            SELECT _reason, min(_pos, {MAX_EXAMPLES}) FROM ({raw.rows()})
            WHERE _reason IS NOT NULL GROUP BY _reason
        """).fetchall()
        tally.examples = {reason: sorted(positions) for reason, positions in examples}
    for kind, code in (("user", _BY_USER), ("item", _BY_ITEM)):
        con.execute(
            f"INSERT INTO _first_{kind} SELECT {kind}_id, first FROM _ranked "
            f"WHERE _set = {code} AND n > 0"
        )
    if has_category:
        con.execute(f"""
            INSERT INTO _catn SELECT item_id, category, n, first FROM _ranked
            WHERE _set = {_BY_ITEM_CATEGORY} AND n > 0 AND category IS NOT NULL
        """)
    con.execute("DROP TABLE _ranked")


def _duplicate_hashes(con: duckdb.DuckDBPyConnection, raw: _Raw) -> bool:
    """Find the dedupe-key hashes held by more than one row (the temp `_dupe_hashes`); False
    when there are none, the usual case, which one count(DISTINCT) answers (about half the
    cost of the GROUP BY). Invalid rows count too: a superset of candidates, checked exactly
    (and only among valid rows) chunk by chunk."""
    n, n_distinct = _count_key_hashes(con, raw)
    if n_distinct == n:
        return False
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _dupe_hashes AS
        SELECT _h AS h FROM ({raw.rows()}) GROUP BY _h HAVING count(*) > 1
    """)
    con.execute("DROP TABLE IF EXISTS _firsts")  # created from the first chunk's shape
    return True


def _count_key_hashes(con: duckdb.DuckDBPyConnection, raw: _Raw) -> tuple[int, int]:
    """Rows and distinct dedupe-key hashes. When every row has an event id, each row's key
    hash is its id's, so only that column is read (10M rows: 5.9 -> 4.1 CPU s); a source
    without ids in every row has its rows parsed whole."""
    if "event_id" in raw.src.columns:
        # a column with NULLs is known from the Parquet statistics, without reading it
        n, n_raw_ids = con.execute(
            f"SELECT count(*), count({_q('r_event_id')}) FROM _raw"
        ).fetchone()
        if n_raw_ids == n:
            n, n_ids, n_distinct = con.execute(f"""
                SELECT count(*), count(e), count(DISTINCT hash(e))
                FROM (SELECT {raw.event_id} AS e FROM _raw)
            """).fetchone()
            if n_ids == n:  # no id was blank either
                return int(n), int(n_distinct)
    n, n_distinct = con.execute(
        f"SELECT count(*), count(DISTINCT _h) FROM ({raw.rows()})"
    ).fetchone()
    return int(n), int(n_distinct)


def _pseudonymize_stage(con: duckdb.DuckDBPyConnection, key: bytes) -> None:
    """Replace user and session ids in `_stage` by keyed hashes, remembering each pair so the
    write can hash the same rows the same way without staging them again."""
    from recsight.data import pseudonyms as keys

    for column, purpose in (("user_id", "pseudonym"), ("session_id", "session")):
        pairs = f"_pn_{column}"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _pn_new AS
            SELECT DISTINCT s.{column} AS _id, s.{column} AS _p FROM _stage s
            ANTI JOIN {pairs} p ON s.{column} = p._id WHERE s.{column} IS NOT NULL
        """)
        keys.pseudonymize_column(con, "_pn_new", "_p", key, purpose)
        con.execute(f"INSERT INTO {pairs} SELECT _id, _p FROM _pn_new")
        con.execute(
            f"UPDATE _stage SET {column} = p._p FROM {pairs} p WHERE _stage.{column} = p._id"
        )


def _mark_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Mark rows of this chunk whose dedupe key an earlier valid row holds, in this chunk or
    an earlier one (`_firsts` keeps the first row of each candidate key seen so far). Only
    rows whose key hash is a candidate are compared, exactly, by a window over their keys."""
    con.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS _firsts AS SELECT {_KEY_COLUMNS} FROM _stage LIMIT 0"
    )
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _ranked AS
        SELECT _pos, _new, row_number() OVER (PARTITION BY {_DEDUPE_KEY} ORDER BY _pos) AS rn
        FROM (SELECT false AS _new, {_KEY_COLUMNS} FROM _firsts
              UNION ALL
              SELECT true, {_KEY_COLUMNS} FROM _stage SEMI JOIN _dupe_hashes d ON _stage._h = d.h
              WHERE _reason IS NULL)
    """)
    con.execute(f"""
        INSERT INTO _firsts SELECT {_KEY_COLUMNS} FROM _stage
        WHERE _pos IN (SELECT _pos FROM _ranked WHERE _new AND rn = 1)
    """)
    con.execute(
        "UPDATE _stage SET _reason = 'duplicate' "
        "WHERE _pos IN (SELECT _pos FROM _ranked WHERE rn > 1)"
    )


def _mark_stored_duplicates(con: duckdb.DuckDBPyConnection) -> None:
    """Mark rows of this chunk already in the store (nothing is written while checking, so
    `events` holds exactly the stored events)."""
    same = " AND ".join(
        f"s.{f} IS NOT DISTINCT FROM e.{'timestamp' if f == 'ts' else f}" for f in _DEDUPE_FIELDS
    )
    con.execute(f"""
        UPDATE _stage SET _reason = 'duplicate_of_stored' WHERE _pos IN (
            SELECT s._pos FROM _stage s JOIN events e ON s.event_id = e.event_id
            WHERE s._reason IS NULL
            UNION ALL
            SELECT s._pos FROM _stage s JOIN events e
              ON s.user_id = e.user_id AND s.item_id = e.item_id AND {same}
            WHERE s._reason IS NULL AND s.event_id IS NULL)
    """)


def _tally_chunk(con: duckdb.DuckDBPyConnection, tally: _Tally, has_category: bool) -> None:
    rows, kept, trimmed, lo, hi, unvalued = con.execute("""
        SELECT count(*), count(*) FILTER (_reason IS NULL),
               count(*) FILTER (_reason IS NULL AND _fix_trim),
               min(value) FILTER (_rating AND value IS NOT NULL),
               max(value) FILTER (_rating AND value IS NOT NULL),
               count(*) FILTER (_rating AND value IS NULL)
        FROM (SELECT *, _reason IS NULL AND event_type = 'rating' AS _rating FROM _stage)
    """).fetchone()
    tally.rows += int(rows)
    tally.kept += int(kept)
    tally.trimmed += int(trimmed)
    tally.ratings_without_value += int(unvalued)
    if lo is not None:
        tally.rating_min = lo if tally.rating_min is None else min(tally.rating_min, lo)
        tally.rating_max = hi if tally.rating_max is None else max(tally.rating_max, hi)
    reasons = con.execute(
        f"SELECT _reason, count(*), list(_pos ORDER BY _pos)[1:{MAX_EXAMPLES}] FROM _stage "
        "WHERE _reason IS NOT NULL GROUP BY 1"
    ).fetchall()
    for reason, count, positions in reasons:
        tally.dropped[reason] = tally.dropped.get(reason, 0) + int(count)
        # chunks come in position order: the earliest examples are the first ones seen
        tally.examples[reason] = (tally.examples.get(reason, []) + positions)[:MAX_EXAMPLES]
        if reason in ("duplicate", "duplicate_of_stored"):
            tally.n_dupes += int(count)
            con.execute(f"INSERT INTO _dupes SELECT _pos FROM _stage WHERE _reason = '{reason}'")
    for kind in ("user", "item"):
        # an id first seen in an earlier chunk keeps that chunk's (earlier) position
        con.execute(f"""
            INSERT INTO _first_{kind}
            SELECT n.{kind}_id, n.first FROM (
                SELECT {kind}_id, min(_pos) AS first FROM _stage WHERE _reason IS NULL
                GROUP BY {kind}_id) n
            ANTI JOIN _first_{kind} f ON n.{kind}_id = f.{kind}_id
        """)
    if has_category:
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _catn AS
            SELECT item_id, category, CAST(sum(n) AS BIGINT) AS n, min(first) AS first
            FROM (SELECT * FROM _catn
                  UNION ALL
                  SELECT item_id, category, count(*), min(_pos) FROM _stage
                  WHERE _reason IS NULL AND category IS NOT NULL GROUP BY 1, 2)
            GROUP BY 1, 2
        """)


def _scale_to_record(
    tally: _Tally,
    declared: tuple[float, float] | None,
    known: tuple[float, float] | None,
    report: IngestReport,
) -> tuple[float, float] | None:
    """The rating scale the store records after this ingest (None: leave it as it is): a
    declared one, or, when neither the store nor the ingest has one, the range of the kept
    ratings, so later ingests and the API hold new ratings to the same scale."""
    if declared is not None:
        if known not in (None, declared):
            report.notes.append(
                f"the store's rating scale changes from {format_scale(known)} to "
                f"{format_scale(declared)}"
            )
        return declared
    if known is not None:
        return None
    lo, hi = tally.rating_min, tally.rating_max
    if lo is None:
        return None
    report.notes.append(
        f"rating scale taken as {lo:g} to {hi:g} from the ratings (declare one with "
        "--rating-scale MIN,MAX); later ingests and the API refuse ratings outside it"
    )
    return float(lo), float(hi)


def _note_fill(tally: _Tally, store: Store, policy: str, report: IngestReport) -> None:
    """Count the kept ratings without a value. They stay NULL in the store: the fill is a
    statistic of ratings, so it is computed when a model is fitted, from its training rows
    only (`Interactions.fill_rating`), never from test rows (and rating metrics only ever
    see real ratings)."""
    n = tally.ratings_without_value
    if n:
        report.notes.append(
            f"{n:,} ratings without a value are kept empty; models fill them with the "
            f"{policy} of their training ratings (--fill-rating {policy})"
        )
    before = store.meta(FILL_META)
    if before not in (None, policy):
        report.notes.append(f"--fill-rating: the store's policy changes from {before} to {policy}")


def _summarise(src: Source, rejects: dict, tally: _Tally, tz: str) -> IngestReport:
    dropped: dict[str, int] = {}
    examples: dict[str, list[int]] = {}
    reject_lines = rejects["lines"]
    for reason, lines in rejects["by_reason"].items():
        dropped[reason] = len(lines)
        examples[reason] = lines[:MAX_EXAMPLES]
    for reason in DROP_REASONS:
        if reason in tally.dropped:
            dropped[reason] = tally.dropped[reason]
            examples[reason] = [_line_of(src, int(p), reject_lines) for p in tally.examples[reason]]
    fixed: dict[str, int] = {}
    if tally.trimmed:  # the one repair made to kept rows
        fixed = {"id_whitespace_trimmed": tally.trimmed, "rows": tally.trimmed}
    return IngestReport(
        source=str(src.path),
        format=src.format,
        timezone=tz,
        rows_read=tally.rows + len(reject_lines),
        kept=tally.kept,
        fixed=fixed,
        dropped=dropped,
        examples=examples,
        example_unit="row" if src.row_number_column else "line",
        new_users=0,
        new_items=0,
        seconds=0.0,
        notes=list(src.notes),
    )


def _line_of(src: Source, pos: int, reject_lines: list[int]) -> int:
    """1-based file line (text formats) or row number (Parquet) of a staged row."""
    if src.row_number_column:
        return pos + 1
    line = pos + 1 + src.header_lines
    # rejected lines were skipped by the reader: shift past each one at or before this line
    shift = 0
    while True:
        n = bisect.bisect_right(reject_lines, line + shift)
        if n == shift:
            return line + shift
        shift = n


# -- writing --------------------------------------------------------------------------------


def _write_events(
    con: duckdb.DuckDBPyConnection, raw: _Raw, tally: _Tally, report: IngestReport
) -> tuple:
    """Map the new ids (in order of first appearance) and append the kept rows, parsed again
    from the source in one streaming INSERT: no staged copy of the rows is ever held, so
    memory does not grow with the input (and the transaction keeps no dropped chunks)."""
    new_users = add_ids(con, "user", "SELECT user_id, first FROM _first_user")
    new_items = add_ids(con, "item", "SELECT item_id, first FROM _first_item")
    user, session, joins = "s.user_id", "s.session_id", ""
    if tally.pseudonymized:
        user, session = "pu._p", "ps._p"
        joins = (
            "JOIN _pn_user_id pu ON s.user_id = pu._id "
            "LEFT JOIN _pn_session_id ps ON s.session_id = ps._id "
        )
    if tally.n_dupes:
        joins += "ANTI JOIN _dupes d ON s._pos = d._pos "
    # the contract (1.8 CPU s per 10M rows) is not evaluated again when it dropped no row
    marked = ("duplicate", "duplicate_of_stored")
    where = "WHERE s._reason IS NULL" if set(tally.dropped) - set(marked) else ""
    # seq carries the order, so the rows may be written in any order: let DuckDB parallelise
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"""
        INSERT INTO event_log ({", ".join(_q(c) for c in STORED_EVENT_COLUMNS)})
        SELECT (SELECT coalesce(max(seq), -1) FROM event_log) + 1 + s._pos,
               um.user_idx, im.item_idx, s.ts, s.event_type, s.raw_event_type, s.value,
               s.event_id, {session}, s.request_id
        FROM ({raw.rows()}) s {joins}
             JOIN user_map um ON {user} = um.user_id
             JOIN item_map im ON s.item_id = im.item_id
        {where}
    """)
    con.execute("SET preserve_insertion_order = true")
    if "category" in raw.src.columns:
        _categories_from_events(con, report)
    return new_users, new_items


def _categories_from_events(con: duckdb.DuckDBPyConnection, report: IngestReport) -> None:
    """Items named with a category in the events get it; an item seen with several keeps the
    most frequent (ties: first seen), and the report says how many had more than one."""
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cats AS
        SELECT item_id, arg_max(category, n * 1e12 - first) AS category,
               count(*) AS n_categories
        FROM _catn GROUP BY item_id
    """)
    n_conflict, example = con.execute(
        "SELECT count(*) FILTER (n_categories > 1), min(item_id) FILTER (n_categories > 1) "
        "FROM _cats"
    ).fetchone()
    if n_conflict:
        report.notes.append(
            f"{n_conflict} item(s) appear with more than one category; kept the most frequent "
            f"(e.g. item {example})"
        )
    con.execute("""
        UPDATE items SET category = c.category FROM _cats c
        WHERE items.item_id = c.item_id AND items.category IS NULL
    """)
    con.execute("""
        INSERT INTO items (item_id, item_idx, category)
        SELECT c.item_id, m.item_idx, c.category FROM _cats c
        JOIN item_map m ON c.item_id = m.item_id
        ANTI JOIN items i ON c.item_id = i.item_id
    """)


def _normalise_side(df: pd.DataFrame, kind: str, name: str) -> tuple[pd.DataFrame, TableReport]:
    key = f"{kind}_id"
    rep = TableReport(source=name, rows_read=len(df), kept=0, new=0, updated=0)
    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    ids = df[key].astype("string").str.strip()
    ids = ids.where(ids != "", None)
    missing = ids.isna()
    if missing.any():
        rep.dropped[f"missing_{key}"] = int(missing.sum())
    df[key] = ids
    df = df[~missing]
    if kind == "item":
        if "tags" in df.columns:
            df["tags"] = [_as_tags(t) for t in df["tags"]]
        if "price" in df.columns:
            price = pd.to_numeric(df["price"], errors="coerce")
            bad = price.isna() & df["price"].notna()
            if bad.any():
                rep.fixed["bad_price_set_null"] = int(bad.sum())
            df["price"] = price
        for col in ("title", "description", "category", "text"):
            if col in df.columns:
                df[col] = df[col].astype("string")
    for col in df.columns:
        if col in (key, "tags") or col in ITEM_COLUMNS:
            continue
        if df[col].dtype == object or str(df[col].dtype) == "string":
            num = pd.to_numeric(df[col], errors="coerce")
            if num.notna().sum() == df[col].notna().sum() and df[col].notna().any():
                df[col] = num
    dup = df[key].duplicated(keep=False)
    if dup.any():
        n_dup = int(df[key].duplicated().sum())
        rep.dropped[f"duplicate_{key}"] = n_dup
        if "category" in df.columns:
            conflicts = df[dup].groupby(key)["category"].nunique()
            if (conflicts > 1).any():
                rep.notes.append(
                    f"{int((conflicts > 1).sum())} {kind}(s) listed with more than one category; "
                    "kept the most frequent"
                )
            mode = (
                df[dup]
                .groupby(key)["category"]
                .agg(lambda s: s.value_counts().index[0] if s.notna().any() else None)
            )
        df = df.groupby(key, sort=False, as_index=False).last()
        if "category" in df.columns:
            df.loc[df[key].isin(mode.index), "category"] = df[key].map(mode)
    rep.kept = len(df)
    return df.reset_index(drop=True), rep


def _as_tags(value: object) -> list[str] | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    text = str(value)
    sep = "|" if "|" in text else ","
    return [t.strip() for t in text.split(sep) if t.strip()]


def _merge_side(
    con: duckdb.DuckDBPyConnection, kind: str, df: pd.DataFrame, name: str
) -> TableReport:
    """Upsert an items/users frame: new ids get an index; known ids get non-null fields
    updated; columns the table lacks are added."""
    df, rep = _normalise_side(df, kind, name)
    table, key = f"{kind}s", f"{kind}_id"
    con.register("_incoming_df", df)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _incoming AS SELECT * FROM _incoming_df")
    finally:
        con.unregister("_incoming_df")
    have = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    incoming = {r[0]: r[1] for r in con.execute("DESCRIBE _incoming").fetchall()}
    for col, typ in incoming.items():
        if col not in have:
            typ = "VARCHAR" if typ == "NULL" else typ
            con.execute(f"ALTER TABLE {table} ADD COLUMN {_q(col)} {typ}")
            have[col] = typ
    cols = [c for c in incoming if c != key]
    add_ids(con, kind, f"SELECT {key}, rowid AS first FROM _incoming")
    rep.updated = int(
        con.execute(
            f"SELECT count(*) FROM _incoming i SEMI JOIN {table} t ON i.{key} = t.{key}"
        ).fetchone()[0]
    )
    if cols:
        sets = ", ".join(
            f"{_q(c)} = coalesce(TRY_CAST(i.{_q(c)} AS {have[c]}), {table}.{_q(c)})" for c in cols
        )
        con.execute(f"UPDATE {table} SET {sets} FROM _incoming i WHERE {table}.{key} = i.{key}")
    col_list = ", ".join(_q(c) for c in cols)
    casts = ", ".join(f"TRY_CAST(i.{_q(c)} AS {have[c]})" for c in cols)
    con.execute(f"""
        INSERT INTO {table} ({key}, {kind}_idx{", " + col_list if cols else ""})
        SELECT i.{key}, m.{kind}_idx{", " + casts if cols else ""}
        FROM _incoming i JOIN {kind}_map m ON i.{key} = m.{key}
        ANTI JOIN {table} t ON i.{key} = t.{key}
    """)
    rep.new = rep.kept - rep.updated
    con.execute("DROP TABLE _incoming")
    return rep
