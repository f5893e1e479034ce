"""The canonical Parquet dataset layout: one folder that every engine reads the same way.

::

    DIR/
      events/event_date=YYYY-MM-DD/part-*.parquet   events, partitioned by their UTC date
      items.parquet                                 item_id + attributes (may have no rows)
      users.parquet                                 user_id + attributes (may have no rows)
      manifest.json                                 schema version, counts, time range, zone

Events carry the canonical columns `LAYOUT_EVENT_COLUMNS` (external string ids, `timestamp`
as UTC instants, `event_type` in the one vocabulary, `seq` the order the events were
written, which breaks timestamp ties). Events without a timestamp sit in Hive's null partition
``event_date=__HIVE_DEFAULT_PARTITION__``. `manifest.json` is written last: a folder without
it is an incomplete write and is refused.

Write it with `LayoutWriter` (streamed batches: `recsight generate`) or `export_store` (a
store: `recsight export`); read it with `open_store` (DuckDB, in memory, no store file: a
read-only `Store` whose `events`, `items`, `users`, `event_log` and id maps are views, so
analysis, `Interactions` and `info` work unchanged) or on Spark (`recsight.spark.layout`).

Integer indices are not stored: both engines derive them with the same Ibis expressions
(`view_expressions`): ids in order of first appearance (smallest `seq`, then the id), then
ids only in the side tables, by id.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsight.data.schema import EVENT_COLUMNS, EVENT_TYPE_SYNONYMS, ITEM_COLUMNS
from recsight.errors import InputError

#: Version of the layout (the manifest's `schema_version`); readers refuse newer ones.
LAYOUT_VERSION = "1"
MANIFEST = "manifest.json"
EVENTS_DIR = "events"
PARTITION_COLUMN = "event_date"
#: Hive's (and Spark's) name for the partition of null values.
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"

#: The events' Parquet schema: canonical columns, external ids, UTC instants.
EVENTS_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()),
        ("raw_event_type", pa.string()),
        ("value", pa.float64()),
        ("event_id", pa.string()),
        ("session_id", pa.string()),
        ("request_id", pa.string()),
    ]
)
LAYOUT_EVENT_COLUMNS: tuple[str, ...] = tuple(EVENTS_SCHEMA.names)
_REQUIRED = ("user_id", "item_id", "event_type")

#: Types of the known item attributes (the store's `items` table).
ITEM_ATTRIBUTE_TYPES: dict[str, str] = {
    "title": "string",
    "description": "string",
    "category": "string",
    "tags": "array<string>",
    "text": "string",
    "price": "float64",
}
assert tuple(ITEM_ATTRIBUTE_TYPES) == ITEM_COLUMNS


@dataclass
class Manifest:
    """`manifest.json`: what a layout holds. Times are ISO-8601 UTC ('Z'); `timezone` is the
    declared zone for local-time figures (hour of day), not the zone of the stored times."""

    schema_version: str
    n_events: int
    n_users: int  # users with events
    n_items: int  # items with events
    n_catalog_users: int  # rows of users.parquet
    n_catalog_items: int  # rows of items.parquet
    event_types: dict[str, int]
    time_min: str | None
    time_max: str | None
    timezone: str = "UTC"
    partitioning: str = f"{EVENTS_DIR}/{PARTITION_COLUMN}=YYYY-MM-DD (UTC date of timestamp)"
    columns: list[str] = field(default_factory=lambda: list(LAYOUT_EVENT_COLUMNS))
    created: str = ""
    source: str = ""
    #: set when the user ids are pseudonyms (`recsight.data.pseudonyms`): the key's fingerprint
    pseudonym_key_fingerprint: str | None = None
    fill_rating: str | None = None  # the store's --fill-rating policy (applied at fit time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_layout(path: str | Path) -> bool:
    """Whether `path` is a (local) folder in the canonical layout."""
    p = Path(path)
    return (p / MANIFEST).is_file() and (p / EVENTS_DIR).is_dir()


def parse_manifest(text: str, where: str) -> Manifest:
    """A manifest from its JSON text; `where` names the file in errors."""
    try:
        raw = json.loads(text)
        version = str(raw["schema_version"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{where}: not a recsight layout manifest") from None
    if int(version) > int(LAYOUT_VERSION):
        raise InputError(
            f"{where}: layout version {version} is newer than this recsight reads "
            f"({LAYOUT_VERSION}); upgrade recsight"
        )
    known = set(Manifest.__dataclass_fields__)
    return Manifest(**{k: v for k, v in raw.items() if k in known})


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of a local layout folder; a clear `InputError` when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: no such dataset folder (expected a recsight layout)")
    m = p / MANIFEST
    if not m.is_file():
        if (p / EVENTS_DIR).is_dir():
            raise InputError(f"{p}: no {MANIFEST}: the layout was not finished writing")
        raise InputError(
            f"{p}: not a recsight dataset layout (expected {MANIFEST} and {EVENTS_DIR}/; "
            "write one with `recsight export --out DIR` or `recsight generate`)"
        )
    return parse_manifest(m.read_text(encoding="utf-8"), str(m))


# -- writing ---------------------------------------------------------------------------------


def _canonical_types(raw: pa.Array) -> pa.Array:
    """Raw event types mapped onto the vocabulary (the rule of `canonical_event_type`),
    computed once per distinct value."""
    enc = pc.dictionary_encode(raw).combine_chunks() if raw.num_chunks else raw
    if isinstance(enc, pa.ChunkedArray):  # an empty chunked array
        return pa.array([], pa.string())
    dictionary = [v.strip().lower() for v in enc.dictionary.to_pylist()]
    mapped = pa.array([EVENT_TYPE_SYNONYMS.get(v, v) for v in dictionary], pa.string())
    return mapped.take(enc.indices)


def _as_table(batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> pa.Table:
    if isinstance(batch, pd.DataFrame):
        return pa.Table.from_pandas(batch, preserve_index=False)
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    if isinstance(batch, pa.Table):
        return batch
    raise TypeError(f"expected a pyarrow Table/RecordBatch or pandas DataFrame, got {type(batch)}")


def _string_column(col: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type) or pa.types.is_integer(col.type):
        return pc.cast(col, pa.string())
    if pa.types.is_dictionary(col.type):
        return pc.cast(col.cast(col.type.value_type), pa.string())
    raise InputError(f"events column {name!r}: expected strings or integers, got {col.type}")


def normalize_events(batch: pa.Table | pa.RecordBatch | pd.DataFrame, first_seq: int) -> pa.Table:
    """A batch of events in `EVENTS_SCHEMA`: ids as strings, timestamps as UTC instants (naive
    ones read as UTC), `event_type` on the vocabulary (the given type kept as
    `raw_event_type` when none is given), missing optional columns null, `seq` numbered from
    `first_seq` when absent."""
    t = _as_table(batch)
    names = set(t.column_names)
    for c in _REQUIRED:
        if c not in names:
            raise InputError(f"events batch: required column {c!r} is missing")
        if t[c].null_count:
            raise InputError(f"events batch: column {c!r} has {t[c].null_count} null value(s)")
    n = t.num_rows
    cols: dict[str, pa.ChunkedArray | pa.Array] = {}
    cols["seq"] = (
        pc.cast(t["seq"], pa.int64())
        if "seq" in names
        else pa.array(np.arange(first_seq, first_seq + n, dtype=np.int64))
    )
    for c in ("user_id", "item_id"):
        cols[c] = _string_column(t[c], c)
    if "timestamp" in names:
        ts = t["timestamp"]
        if not pa.types.is_timestamp(ts.type):
            raise InputError(f"events column 'timestamp': expected timestamps, got {ts.type}")
        if ts.type.tz is None:
            ts = pc.assume_timezone(ts, "UTC")
        cols["timestamp"] = pc.cast(ts, pa.timestamp("us", tz="UTC"))
    else:
        cols["timestamp"] = pa.nulls(n, pa.timestamp("us", tz="UTC"))
    raw = _string_column(t["event_type"], "event_type")
    cols["event_type"] = _canonical_types(raw)
    cols["raw_event_type"] = (
        _string_column(t["raw_event_type"], "raw_event_type") if "raw_event_type" in names else raw
    )
    cols["value"] = pc.cast(t["value"], pa.float64()) if "value" in names else pa.nulls(n)
    for c in ("event_id", "session_id", "request_id"):
        cols[c] = _string_column(t[c], c) if c in names else pa.nulls(n, pa.string())
    return pa.table({c: cols[c] for c in LAYOUT_EVENT_COLUMNS}, schema=EVENTS_SCHEMA)


def _normalize_side(batch: pa.Table | pa.RecordBatch | pd.DataFrame, key: str) -> pa.Table:
    t = _as_table(batch)
    if key not in t.column_names:
        raise InputError(f"{key.split('_')[0]}s table: required column {key!r} is missing")
    i = t.column_names.index(key)
    t = t.set_column(i, key, _string_column(t[key], key))
    if "item_idx" in t.column_names or "user_idx" in t.column_names:
        t = t.drop_columns([c for c in ("item_idx", "user_idx") if c in t.column_names])
    return t.replace_schema_metadata(None)


class LayoutWriter:
    """Write events (streamed in batches), items and users into the canonical layout.

    ::

        with LayoutWriter(out) as w:
            for batch in batches:          # pyarrow Table/RecordBatch or pandas DataFrame
                w.write(batch)
            w.write_items(items)           # optional; may also be called per batch
            w.write_users(users_batch)
        manifest = w.manifest              # written to out/manifest.json on exit

    Each event date gets its own partition folder; rows are buffered per date and written in
    row groups of `row_group_rows`, so memory stays bounded by the open dates' buffers (at
    most `max_buffered_rows` rows in all) whatever the number of events. At most `max_open`
    files are open at once (older dates continue in a new part file). Batches must come in
    `seq` order (numbered here when they carry no `seq`). An existing layout in `out` is
    replaced only with ``overwrite=True``; the manifest is written last, and not at all when
    the block raises.
    """

    def __init__(
        self,
        out: str | Path,
        timezone: str = "UTC",
        source: str = "",
        overwrite: bool = False,
        row_group_rows: int = 122_880,
        max_buffered_rows: int = 4_000_000,
        max_open: int = 64,
        pseudonym_key_fingerprint: str | None = None,
        fill_rating: str | None = None,
    ):
        self.out = Path(out)
        self.timezone = timezone
        self.source = source
        self.pseudonym_key_fingerprint = pseudonym_key_fingerprint
        self.fill_rating = fill_rating
        self.row_group_rows = row_group_rows
        self.max_buffered_rows = max_buffered_rows
        self.max_open = max_open
        existing = [self.out / n for n in (EVENTS_DIR, MANIFEST)]
        if any(p.exists() for p in existing):
            if not overwrite:
                raise InputError(f"{self.out}: already holds a dataset layout (pass overwrite)")
            (self.out / MANIFEST).unlink(missing_ok=True)  # first: a partial folder is refused
            shutil.rmtree(self.out / EVENTS_DIR, ignore_errors=True)
        (self.out / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered: dict[str, int] = {}
        self._open: OrderedDict[str, pq.ParquetWriter] = OrderedDict()
        self._parts: dict[str, int] = {}
        self._side: dict[str, pq.ParquetWriter] = {}
        self._side_rows = {"items": 0, "users": 0}
        self._n = 0
        self._next_seq = 0
        self._types: dict[str, int] = {}
        self._tmin: pd.Timestamp | None = None
        self._tmax: pd.Timestamp | None = None
        self.manifest: Manifest | None = None

    def __enter__(self) -> LayoutWriter:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close_files()

    # -- events ----------------------------------------------------------------------------
    def write(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> None:
        """Append a batch of events (canonical column names; see `normalize_events`)."""
        t = normalize_events(batch, self._next_seq)
        if t.num_rows == 0:
            return
        seq = t["seq"]
        if pc.min(seq).as_py() < self._next_seq:
            raise InputError("events batch: seq must increase from batch to batch")
        self._next_seq = pc.max(seq).as_py() + 1
        self._n += t.num_rows
        for v in pc.value_counts(t["event_type"]).to_pylist():
            self._types[v["values"]] = self._types.get(v["values"], 0) + v["counts"]
        lo, hi = pc.min(t["timestamp"]).as_py(), pc.max(t["timestamp"]).as_py()
        if lo is not None:
            lo, hi = pd.Timestamp(lo), pd.Timestamp(hi)
            self._tmin = lo if self._tmin is None else min(self._tmin, lo)
            self._tmax = hi if self._tmax is None else max(self._tmax, hi)
        # days since 1970 per row (nulls last), then a stable sort keeps seq order in each day
        days = pc.fill_null(pc.cast(pc.cast(t["timestamp"], pa.date32()), pa.int32()), _NO_DAY)
        days = days.to_numpy()
        if days[0] != days[-1] or (days != days[0]).any():
            order = np.argsort(days, kind="stable")
            t, days = t.take(pa.array(order)), days[order]
        cuts = np.flatnonzero(np.diff(days)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(days)], strict=True):
            self._buffer(_partition_name(int(days[lo])), t.slice(lo, hi - lo))
        while sum(self._buffered.values()) > self.max_buffered_rows:
            self._flush(max(self._buffered, key=self._buffered.__getitem__))

    def _buffer(self, part: str, t: pa.Table) -> None:
        self._buffers.setdefault(part, []).append(t)
        self._buffered[part] = self._buffered.get(part, 0) + t.num_rows
        if self._buffered[part] >= self.row_group_rows:
            self._flush(part)

    def _flush(self, part: str) -> None:
        t = pa.concat_tables(self._buffers.pop(part))
        self._buffered.pop(part)
        w = self._open.pop(part, None)
        if w is None:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1].close()
            n = self._parts.get(part, 0)
            self._parts[part] = n + 1
            folder = self.out / EVENTS_DIR / f"{PARTITION_COLUMN}={part}"
            folder.mkdir(exist_ok=True)
            w = pq.ParquetWriter(folder / f"part-{n:05d}.parquet", EVENTS_SCHEMA)
        self._open[part] = w  # most recently used last
        w.write_table(t, row_group_size=self.row_group_rows)

    # -- side tables -----------------------------------------------------------------------
    def write_items(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> None:
        """Append item rows (`item_id` plus attributes; every call the same columns)."""
        self._write_side("items", _normalize_side(batch, "item_id"))

    def write_users(self, batch: pa.Table | pa.RecordBatch | pd.DataFrame) -> None:
        """Append user rows (`user_id` plus attributes; every call the same columns)."""
        self._write_side("users", _normalize_side(batch, "user_id"))

    def _write_side(self, kind: str, t: pa.Table) -> None:
        w = self._side.get(kind)
        if w is None:
            w = self._side[kind] = pq.ParquetWriter(self.out / f"{kind}.parquet", t.schema)
        elif not t.schema.equals(w.schema):
            raise InputError(f"{kind} batch: columns differ from the first batch's")
        w.write_table(t)
        self._side_rows[kind] += t.num_rows

    # -- finishing -------------------------------------------------------------------------
    def _close_files(self) -> None:
        for w in [*self._open.values(), *self._side.values()]:
            w.close()
        self._open.clear()
        self._side.clear()

    def close(self) -> Manifest:
        """Flush, write empty side tables where none were given, then the manifest."""
        if self.manifest is not None:
            return self.manifest
        for part in list(self._buffers):
            self._flush(part)
        for kind in ("items", "users"):
            if kind not in self._side:
                key = kind[:-1] + "_id"
                self._write_side(kind, pa.table({key: pa.array([], pa.string())}))
        self._close_files()
        n_users, n_items = _distinct_ids(self.out) if self._n else (0, 0)
        self.manifest = Manifest(
            schema_version=LAYOUT_VERSION,
            n_events=self._n,
            n_users=n_users,
            n_items=n_items,
            n_catalog_users=self._side_rows["users"],
            n_catalog_items=self._side_rows["items"],
            event_types=dict(sorted(self._types.items(), key=lambda kv: (-kv[1], kv[0]))),
            time_min=_iso(self._tmin),
            time_max=_iso(self._tmax),
            timezone=self.timezone,
            created=dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            source=self.source,
            pseudonym_key_fingerprint=self.pseudonym_key_fingerprint,
            fill_rating=self.fill_rating,
        )
        tmp = self.out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest.to_dict(), indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.out / MANIFEST)
        return self.manifest


_NO_DAY = np.iinfo(np.int32).max  # the day number of events without a timestamp


def _partition_name(day: int) -> str:
    if day == _NO_DAY:
        return NULL_PARTITION
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def _iso(t: pd.Timestamp | None) -> str | None:
    return None if t is None else t.tz_convert("UTC").tz_localize(None).isoformat() + "Z"


def events_glob(path: str | Path) -> str:
    """The glob of a layout's event files (for DuckDB's `read_parquet`)."""
    return str(Path(path) / EVENTS_DIR / "*" / "*.parquet")


def _distinct_ids(out: Path) -> tuple[int, int]:
    import duckdb

    con = duckdb.connect()
    try:
        row = con.execute(
            "SELECT count(DISTINCT user_id), count(DISTINCT item_id) FROM "
            "read_parquet(?, hive_partitioning = false)",
            [events_glob(out)],
        ).fetchone()
    finally:
        con.close()
    return int(row[0]), int(row[1])


def export_store(store, out: str | Path, batch_rows: int = 1_000_000) -> Manifest:
    """Write a store (`recsight.data.store.Store`) into the layout at `out` (replacing one
    that is there), events streamed in ingest order."""
    con = store.con.cursor()  # its own result stream, beside any unfinished one of the store's
    from recsight.data.pseudonyms import META_FINGERPRINT

    with LayoutWriter(
        out,
        timezone=store.timezone,
        source=str(store.path),
        overwrite=True,
        pseudonym_key_fingerprint=store.meta(META_FINGERPRINT),
        fill_rating=store.meta("fill_rating"),
    ) as writer:
        cur = con.sql(
            """SELECT seq, user_id, item_id, timezone('UTC', "timestamp") AS "timestamp",
                       event_type, raw_event_type, value, event_id, session_id, request_id
                FROM events ORDER BY seq"""
        )
        for rb in cur.to_arrow_reader(batch_rows):
            writer.write(rb)
        for kind, key in (("items", "item_idx"), ("users", "user_idx")):
            t = con.sql(f"SELECT * EXCLUDE ({key}) FROM {kind} ORDER BY {key}").to_arrow_table()
            writer.write_items(t) if kind == "items" else writer.write_users(t)
    assert writer.manifest is not None
    from recsight.data.exports import record_export

    record_export(store.path, out)  # so an erasure can list the copies made before it
    return writer.manifest


# -- reading: the shared view definitions --------------------------------------------------


def raw_events_table(name: str = "layout_events") -> ir.Table:
    """The unbound Ibis table of a layout's event files (partition column not included)."""
    return ibis.table(ibis.Schema.from_pyarrow(EVENTS_SCHEMA), name=name)


def _id_map(events: ir.Table, side: ir.Table, key: str, idx: str) -> ir.Table:
    """Ids in order of first appearance in the events (smallest seq, then id), then ids only
    in the side table, by id; `idx` numbers them from 0."""
    first = events.group_by(key).aggregate(first=events.seq.min()).mutate(src=ibis.literal(0))
    only_side = side.select(key).distinct().anti_join(first, key)
    only_side = only_side.mutate(first=ibis.literal(0, "int64"), src=ibis.literal(1))
    both = first.union(only_side.select(key, "first", "src"))
    order = ibis.row_number().over(order_by=[both.src, both.first, both[key]])
    return both.select(order.cast("int32").name(idx), key)


def view_expressions(events: ir.Table, items: ir.Table, users: ir.Table) -> dict[str, ir.Table]:
    """The store-shaped views over a layout's raw tables, in creation order: `user_map`,
    `item_map`, `events`, `event_log`, `items`, `users` (each refers to earlier ones by
    name). Both engines create them from these same expressions."""
    user_map = _id_map(events, users, "user_id", "user_idx")
    item_map = _id_map(events, items, "item_id", "item_idx")
    um = ibis.table(user_map.schema(), name="user_map")
    im = ibis.table(item_map.schema(), name="item_map")
    j = events.join(um, "user_id").join(im, "item_id")
    events_view = j.select(
        *[j.timestamp.cast("timestamp").name(c) if c == "timestamp" else c for c in EVENT_COLUMNS]
    )
    ev = ibis.table(events_view.schema(), name="events")
    log = ev.select(*[c for c in EVENT_COLUMNS if c not in ("user_id", "item_id")])
    ij = items.join(im, "item_id")
    attrs = [
        (ij[c].cast(t) if c in items.columns else ibis.null(t)).name(c)
        for c, t in ITEM_ATTRIBUTE_TYPES.items()
    ]
    extra = [c for c in items.columns if c not in ("item_id", *ITEM_COLUMNS)]
    items_view = ij.select("item_id", "item_idx", *attrs, *extra)
    uj = users.join(um, "user_id")
    users_view = uj.select("user_id", "user_idx", *[c for c in users.columns if c != "user_id"])
    return {
        "user_map": user_map,
        "item_map": item_map,
        "events": events_view,
        "event_log": log,
        "items": items_view,
        "users": users_view,
    }


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def open_store(path: str | Path, memory_limit: str | None = None):
    """A read-only `Store` over a local layout, in an in-memory DuckDB database: its tables
    are views over the Parquet files, so nothing is copied except the id maps."""
    import duckdb

    from recsight.data.store import SCHEMA_VERSION, Store, default_memory_limit

    path = Path(path)
    manifest = read_manifest(path)
    con = duckdb.connect()
    con.execute(f"SET memory_limit='{memory_limit or default_memory_limit()}'")
    con.execute("SET enable_progress_bar=false")
    con.execute("SET preserve_insertion_order=true")
    con.execute("SET TimeZone='UTC'")  # casts of the UTC instants to naive times stay UTC
    try:
        if manifest.n_events:
            con.execute(
                f"CREATE VIEW layout_events AS SELECT {', '.join(LAYOUT_EVENT_COLUMNS)} "
                f"FROM read_parquet({_sql_str(events_glob(path))}, hive_partitioning = false)"
            )
        else:  # no event files at all
            con.register("_no_events", EVENTS_SCHEMA.empty_table())
            con.execute("CREATE TABLE layout_events AS SELECT * FROM _no_events")
        for kind in ("items", "users"):
            con.execute(
                f"CREATE VIEW layout_{kind} AS SELECT * FROM "
                f"read_parquet({_sql_str(path / f'{kind}.parquet')})"
            )
    except duckdb.Error as exc:
        con.close()
        raise InputError(f"{path}: cannot read the layout ({str(exc).splitlines()[0]})") from None
    raw = {k: _duckdb_table(con, f"layout_{k}") for k in ("events", "items", "users")}
    for name, expr in view_expressions(raw["events"], raw["items"], raw["users"]).items():
        kind = "TABLE" if name.endswith("_map") else "VIEW"  # the maps are computed once
        con.execute(f"CREATE {kind} {name} AS {ibis.to_sql(expr, dialect='duckdb')}")
    con.execute("CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
    con.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [["schema_version", SCHEMA_VERSION], ["timezone", manifest.timezone]]
        + ([["fill_rating", manifest.fill_rating]] if manifest.fill_rating else []),
    )
    if manifest.pseudonym_key_fingerprint:  # the ids are pseudonyms: readers hash theirs
        from recsight.data.pseudonyms import META_FINGERPRINT

        con.execute(
            "INSERT INTO meta VALUES (?, ?)", [META_FINGERPRINT, manifest.pseudonym_key_fingerprint]
        )
    return Store.over(con, path)


def _duckdb_table(con, name: str) -> ir.Table:
    rows = con.execute(f"DESCRIBE {name}").fetchall()
    mapper = ibis.backends.sql.datatypes.DuckDBType
    return ibis.table({r[0]: mapper.from_string(r[1]) for r in rows}, name=name)
