"""The event store: one DuckDB database file with events, items, users and the id maps.

DuckDB allows one writing process per database file at a time; readers in other processes
need `read_only=True` and cannot open the file while a writer holds it. A running
`recsight serve` is therefore the only writer; other processes read its Parquet snapshots.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from recsight.data.schema import EVENT_COLUMNS
from recsight.data.validation import EventRules, check_event
from recsight.errors import InputError

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp

    from recsight.data.dataset import IdIndex, Interactions

DEFAULT_DB = "recsight.duckdb"
SCHEMA_VERSION = "2"
#: Derived copy of the events sorted by user, for the service's reads by user.
BY_USER_TABLE = "event_log_by_user"
#: Topics derived from item text (`recsight.llm.topics`): one row per item and level.
TOPICS_TABLE = "item_topics"
#: The topics themselves (name, terms, size, parent) per level.
TOPIC_NAMES_TABLE = "topics"

# Events are stored with integer ids only (`event_log`); the `events` view joins the external
# ids back from the maps. Writing two string columns per event was the largest single cost of
# a bulk ingest, while the join costs a read little (the maps are small build sides).
# `event_id` is stored uncompressed: ids are unique per event, so DuckDB's dictionary+FSST
# analysis of them was a quarter of a bulk ingest's write (18.7 -> 14.1 CPU s for 10M events),
# for 78 MB more per 10M events (a generated shop's store: 184 -> 262 MB).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS user_map (user_idx INTEGER PRIMARY KEY, user_id VARCHAR UNIQUE);
CREATE TABLE IF NOT EXISTS item_map (item_idx INTEGER PRIMARY KEY, item_id VARCHAR UNIQUE);
CREATE TABLE IF NOT EXISTS event_log (
    seq BIGINT,
    user_idx INTEGER NOT NULL,
    item_idx INTEGER NOT NULL,
    "timestamp" TIMESTAMP,
    event_type VARCHAR NOT NULL,
    raw_event_type VARCHAR,
    value DOUBLE,
    event_id VARCHAR USING COMPRESSION uncompressed,
    session_id VARCHAR,
    request_id VARCHAR
);
CREATE TABLE IF NOT EXISTS items (
    item_id VARCHAR NOT NULL, item_idx INTEGER NOT NULL, title VARCHAR, description VARCHAR,
    category VARCHAR, tags VARCHAR[], "text" VARCHAR, price DOUBLE
);
CREATE TABLE IF NOT EXISTS users (user_id VARCHAR NOT NULL, user_idx INTEGER NOT NULL);
"""

#: The columns of `event_log`: the event columns less the external ids.
STORED_EVENT_COLUMNS: tuple[str, ...] = tuple(
    c for c in EVENT_COLUMNS if c not in ("user_id", "item_id")
)

_ID_SOURCE = {"user_id": "u.user_id", "item_id": "i.item_id"}

#: The events as every reader sees them: `EVENT_COLUMNS`, external ids included.
_EVENTS_VIEW = f"""
CREATE VIEW IF NOT EXISTS events AS
SELECT {", ".join(_ID_SOURCE.get(c, f'e."{c}"') for c in EVENT_COLUMNS)}
FROM event_log e JOIN user_map u ON e.user_idx = u.user_idx
                 JOIN item_map i ON e.item_idx = i.item_idx
"""

#: A version-1 `events` table (string ids stored) in the shape of `event_log`.
_V1_AS_LOG = f"""SELECT {", ".join(f'"{c}"' for c in STORED_EVENT_COLUMNS)} FROM events"""


@dataclass
class StoreInfo:
    """Summary of a store, as printed by `recsight info` (the keys of its JSON)."""

    db: str
    n_events: int
    n_users: int
    n_items: int
    n_catalog_items: int
    n_catalog_users: int
    event_types: dict[str, int]
    raw_event_types: dict[str, int]
    time_range: dict[str, str | None]
    sparsity: float | None
    rating_histogram: dict[str, int]
    timezone: str
    has_timestamps: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Rows per Arrow batch when reading events into arrays (bounds the read's extra memory).
_FETCH_ROWS = 1 << 20


def default_memory_limit() -> str:
    """DuckDB's buffer limit: RECSIGHT_MEMORY_LIMIT, else a fifth of the machine's RAM (at
    least 1.5 GB), so big ingests and reports spill to disk instead of growing without bound.
    A fixed 1.5 GB made a 100M-event ingest spill 12 GB and its report take 3.2x longer per
    event than at 10M."""
    import psutil

    env = os.environ.get("RECSIGHT_MEMORY_LIMIT")
    if env:
        return env
    return f"{max(1536, psutil.virtual_memory().total // 5 // 2**20)}MB"


class StoreBusyError(InputError):
    """The store file is held by another process (a running service or ingest)."""


class Store:
    """A recsight store on a DuckDB file (created on first write).

    Use as a context manager or call `close()`. `con` is the DuckDB connection for callers
    that need SQL; the id maps are owned here, so callers never map ids by hand.
    """

    def __init__(self, path: str | Path = DEFAULT_DB, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if read_only and not self.path.exists():
            raise InputError(f"{self.path}: no such store; create it with `recsight ingest`")
        self._connect()
        if not read_only:
            self._create_or_migrate()
        elif self.meta("schema_version") == "1":
            # read-only, so no upgrade: give the old `events` table the new table's shape
            self.con.execute(f"CREATE TEMP VIEW event_log AS {_V1_AS_LOG}")

    def _connect(self) -> None:
        try:
            self.con = duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.IOException as exc:
            raise StoreBusyError(
                f"{self.path}: cannot open the store ({str(exc).splitlines()[0]}). DuckDB allows "
                "one writing process: if `recsight serve` or another ingest is running, stop it "
                "or read a snapshot instead"
            ) from None
        self.con.execute(f"SET memory_limit='{default_memory_limit()}'")
        # progress is shown by the CLI (Rich); DuckDB's own bar would draw over it
        self.con.execute("SET enable_progress_bar=false")
        self.con.execute("SET preserve_insertion_order=true")

    def compact(self) -> None:
        """Rewrite the database file with only its live rows and swap it in.

        DuckDB leaves deleted rows' bytes in the file's free blocks (a CHECKPOINT does not
        clear them), so after an erasure the whole database is copied into a new file
        (`COPY FROM DATABASE`: tables, constraints, views) which replaces the old one. The
        connection is reopened on the new file; other connections to it must be reopened too.
        """
        if self.read_only:
            raise InputError(f"{self.path}: opened read-only; cannot compact")
        fresh = self.path.with_name(self.path.name + ".compact")
        fresh.unlink(missing_ok=True)
        name = self.con.execute("SELECT current_database()").fetchone()[0]
        self.con.execute("CHECKPOINT")
        self.con.execute("ATTACH '" + str(fresh).replace("'", "''") + "' AS _compact")
        try:
            self.con.execute(f'COPY FROM DATABASE "{name}" TO _compact')
        finally:
            self.con.execute("DETACH _compact")
        self.con.close()
        os.replace(fresh, self.path)
        self.path.with_name(self.path.name + ".wal").unlink(missing_ok=True)
        self._connect()

    @classmethod
    def over(cls, con: duckdb.DuckDBPyConnection, path: str | Path) -> Store:
        """A read-only store around an open connection that already has the store's tables
        (or views of the same shape), e.g. a Parquet layout (`recsight.data.layout`)."""
        store = cls.__new__(cls)
        store.path, store.read_only, store.con = Path(path), True, con
        return store

    def _create_or_migrate(self) -> None:
        tables = dict(
            self.con.execute(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = 'main'"
            ).fetchall()
        )
        if "meta" in tables and self.meta("schema_version") == SCHEMA_VERSION:
            return
        # A new store, or a version-1 one that kept the string ids in an `events` table: move
        # it to `event_log` in one transaction, so an interrupted upgrade leaves it as it was.
        self.con.execute("BEGIN TRANSACTION")
        try:
            if tables.get("events") == "BASE TABLE":
                self.con.execute(f"CREATE TABLE event_log AS {_V1_AS_LOG} ORDER BY seq")
                self.con.execute("DROP TABLE events")
            self.con.execute(_SCHEMA)
            self.con.execute(_EVENTS_VIEW)
            self.set_meta("schema_version", SCHEMA_VERSION)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def reader(self) -> Store:
        """Another connection to this open database, for reads that must neither wait for nor
        block this connection's writes (DuckDB isolates them: the reader sees committed data).
        Close it when done."""
        other = object.__new__(Store)
        other.path, other.read_only, other.con = self.path, True, self.con.cursor()
        return other

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # -- metadata -------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        rows = self.con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self.con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])

    @property
    def timezone(self) -> str:
        """The declared time zone for local-time figures (hour of day, day of week)."""
        return self.meta("timezone") or "UTC"

    # -- id maps --------------------------------------------------------------------------
    def user_index(self) -> IdIndex:
        from recsight.data.dataset import IdIndex

        ids = self.con.execute("SELECT user_id FROM user_map ORDER BY user_idx").fetchnumpy()
        return IdIndex(ids["user_id"].astype(object))

    def item_index(self) -> IdIndex:
        from recsight.data.dataset import IdIndex

        ids = self.con.execute("SELECT item_id FROM item_map ORDER BY item_idx").fetchnumpy()
        return IdIndex(ids["item_id"].astype(object))

    # -- summaries ------------------------------------------------------------------------
    def count(self, table: str) -> int:
        # fetchall: a result left unfinished blocks a streamed read on this connection
        return int(self.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])

    def info(self) -> StoreInfo:
        """Counts, time range, event types, sparsity and the rating histogram."""
        q = self.con.execute
        n_events, n_users, n_items, n_pairs = q(
            "SELECT count(*), count(DISTINCT user_idx), count(DISTINCT item_idx), "
            "count(DISTINCT (user_idx, item_idx)) FROM event_log"
        ).fetchone()
        types = dict(
            q("SELECT event_type, count(*) FROM event_log GROUP BY 1 ORDER BY 2 DESC").fetchall()
        )
        raw = dict(
            q(
                "SELECT coalesce(raw_event_type, '(none)'), count(*) FROM event_log "
                "GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        )
        lo, hi, n_ts = q(
            'SELECT min("timestamp"), max("timestamp"), count("timestamp") FROM event_log'
        ).fetchone()
        hist = q(
            "SELECT value, count(*) FROM event_log WHERE event_type = 'rating' AND value IS "
            "NOT NULL GROUP BY 1 ORDER BY 1"
        ).fetchall()
        sparsity = 1.0 - n_pairs / (n_users * n_items) if n_users and n_items else None
        return StoreInfo(
            db=str(self.path),
            n_events=int(n_events),
            n_users=int(n_users),
            n_items=int(n_items),
            n_catalog_items=self.count("items"),
            n_catalog_users=self.count("users"),
            event_types={k: int(v) for k, v in types.items()},
            raw_event_types={k: int(v) for k, v in raw.items()},
            time_range={
                "min": None if lo is None else lo.isoformat() + "Z",
                "max": None if hi is None else hi.isoformat() + "Z",
            },
            sparsity=None if sparsity is None else round(float(sparsity), 6),
            rating_histogram={_fmt_num(v): int(c) for v, c in hist},
            timezone=self.timezone,
            has_timestamps=bool(n_ts),
        )

    # -- the small-batch write path (the service) ----------------------------------------------
    def append_events(
        self, records: Sequence[Mapping[str, Any]], rules: EventRules | None = None
    ) -> list[dict[str, Any]]:
        """Validate (by the event contract, `recsight.data.validation`, with the store's
        rating scale unless `rules` are given) and persist a batch of events in one
        transaction; returns, per record, ``{"status": "stored" | "duplicate", "seq": int |
        None}``. A record that breaks a rule raises `EventError` naming it and the field,
        and nothing of the batch is stored.

        Records use the canonical field names (`user_id`, `item_id`, `event_type`, `value`,
        `timestamp` (datetime; naive means UTC; default now), `event_id`, `session_id`,
        `request_id`). A record whose `event_id` is already stored, or repeated earlier in the
        batch, is a duplicate and is not stored again, which makes retries idempotent.
        """
        import pandas as pd

        rules = rules or EventRules.of_store(self)
        rows = [check_event(i, r, rules) for i, r in enumerate(records)]
        if not rows:
            return []
        df = pd.DataFrame(rows)
        df["_pos"] = np.arange(len(df), dtype=np.int64)
        batch_dupe = df["event_id"].notna() & df["event_id"].duplicated()
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.register("_append_df", df)
            stored = {
                r[0]
                for r in self.con.execute(
                    "SELECT DISTINCT e.event_id FROM event_log e "
                    "SEMI JOIN _append_df a ON e.event_id = a.event_id"
                ).fetchall()
            }
            dupe = batch_dupe | df["event_id"].isin(stored)
            self.con.unregister("_append_df")
            fresh = df[~dupe]
            self.con.register("_append_df", fresh)
            next_seq = "SELECT coalesce(max(seq), -1) + 1 FROM event_log"
            base = self.con.execute(next_seq).fetchone()[0]
            for kind in ("user", "item"):
                add_ids(
                    self.con,
                    kind,
                    f"SELECT {kind}_id, min(_pos) AS first FROM _append_df GROUP BY {kind}_id",
                )
            self.con.execute(f"""
                INSERT INTO event_log
                SELECT {base} + a._pos, um.user_idx, im.item_idx, a."timestamp", a.event_type,
                       a.raw_event_type, a.value, a.event_id, a.session_id, a.request_id
                FROM _append_df a JOIN user_map um ON a.user_id = um.user_id
                                  JOIN item_map im ON a.item_id = im.item_id
            """)
            self.con.unregister("_append_df")
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return [
            {"status": "duplicate", "seq": None} if d else {"status": "stored", "seq": base + p}
            for p, d in zip(df["_pos"].tolist(), dupe.tolist(), strict=True)
        ]

    # -- reads by user (the service) ------------------------------------------------------
    def cluster_by_user(self) -> int:
        """(Re)build `BY_USER_TABLE`, a copy of the event columns the service reads, sorted by
        user, so reading one user's events skips all other row groups by their min/max (at
        10M events: 4 ms median against 70 ms for a scan and 35 ms through an ART index,
        `benchmarks/bench_history_lookup.py`). Events appended later are read from the
        `event_log` tail past the copy's `by_user_upto` seq. Returns the rows copied.

        The copy is derived data: whatever deletes events from `event_log` must delete them
        here too (or drop the table; reads then fall back to scanning `event_log`)."""
        upto = self.con.execute("SELECT coalesce(max(seq), -1) FROM event_log").fetchone()[0]
        self.con.execute("BEGIN TRANSACTION")
        try:
            self.con.execute(f"""
                CREATE OR REPLACE TABLE {BY_USER_TABLE} AS
                SELECT user_idx, seq, item_idx, "timestamp", event_type, value
                FROM event_log WHERE seq <= {int(upto)} ORDER BY user_idx, seq""")
            self.set_meta("by_user_upto", str(upto))
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        return self.count(BY_USER_TABLE)

    def by_user_lag(self) -> int | None:
        """Events stored after the by-user copy was built (None when there is no copy)."""
        upto = self.meta("by_user_upto")
        if upto is None:
            return None
        sql = "SELECT count(*) FROM event_log WHERE seq > ?"
        return int(self.con.execute(sql, [int(upto)]).fetchone()[0])

    def recent_events(self, user_id: str, limit: int) -> list[tuple[int, str, str, float | None]]:
        """One user's last `limit` events as (seq, item_id, event_type, value), oldest first
        (by timestamp, then ingest order); empty for an unknown user. Reads the by-user copy
        plus the newer tail of `event_log` when the copy exists, else scans `event_log`."""
        found = self.con.execute(
            "SELECT user_idx, (SELECT value FROM meta WHERE key = 'by_user_upto') "
            "FROM user_map WHERE user_id = ?",
            [str(user_id)],
        ).fetchall()
        if not found:
            return []
        user, upto = found[0]
        cols = 'seq, item_idx, event_type, value, "timestamp"'
        # the user and the watermark go in as constants: DuckDB skips row groups by their
        # min/max only for constant filters, not for a subquery's result (at 100M events a
        # miss cost 13 CPU ms with subqueries, 9.5 with constants)
        if upto is None:
            rows, params = f"SELECT {cols} FROM event_log WHERE user_idx = $user", {}
        else:
            # a rebuild committing after the watermark was read only extends the copy, so
            # the copy up to the watermark and the log past it never overlap nor leave a gap
            rows = f"""SELECT {cols} FROM {BY_USER_TABLE} WHERE user_idx = $user AND seq <= $upto
                       UNION ALL
                       SELECT {cols} FROM event_log WHERE seq > $upto AND user_idx = $user"""
            params = {"upto": int(upto)}
        return self.con.execute(
            f"""
            SELECT e.seq, i.item_id, e.event_type, e.value
            FROM ({rows} ORDER BY "timestamp" DESC NULLS LAST, seq DESC LIMIT $limit) e
            JOIN item_map i ON e.item_idx = i.item_idx
            ORDER BY e."timestamp" NULLS FIRST, e.seq
            """,
            {"user": int(user), "limit": int(limit), **params},
        ).fetchall()

    # -- views for models -----------------------------------------------------------------
    def interactions(
        self,
        event_types: list[str] | None = None,
        with_features: bool = True,
        users: Sequence[str] | None = None,
    ) -> Interactions:
        """All events (optionally only some canonical types, or some users' events) as
        `Interactions` arrays over the full id space.

        The columns are read as numbers (event types as codes, computed in DuckDB) in Arrow
        batches written into arrays allocated once, so reading costs the arrays themselves
        plus one batch (a `fetchnumpy` of the events held a Python string per event and a
        second copy of every column: 2.9 GB at its peak for 10M events, 0.8 GB kept). Rows
        come in the table's order and are put in ingest order (`seq`) here, by a permutation
        only when the table is not already in that order: DuckDB's ``ORDER BY seq`` buffered
        every column of the result to sort it (~3 GB at 100M events)."""
        from recsight.data.dataset import Interactions

        where, params = self._event_filter(event_types, users)
        types = [
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT event_type FROM event_log ORDER BY 1"
            ).fetchall()
        ]
        # fetchall: the relation read below refuses to start beside an unfinished result
        n = int(
            self.con.execute(f"SELECT count(*) FROM event_log {where}", params).fetchall()[0][0]
        )
        cols = {
            "user_idx": np.empty(n, np.int32),
            "item_idx": np.empty(n, np.int32),
            # DOUBLE -> FLOAT rounds to nearest, as numpy's astype(float32) does
            "value": np.empty(n, np.float32),
            "event_type": np.empty(n, np.int8),
            "seq": np.empty(n, np.int64),
            "ts": np.empty(n, np.float64),
        }
        # epoch seconds as numpy computes them from microseconds (int64 -> float64, / 1e6);
        # unknown timestamps NaN
        reader = self.con.sql(
            f"""SELECT user_idx::INTEGER AS user_idx, item_idx::INTEGER AS item_idx,
                       coalesce(value, 'NaN'::DOUBLE)::FLOAT AS value,
                       (list_position(?::VARCHAR[], event_type) - 1)::TINYINT AS event_type,
                       seq::BIGINT AS seq, epoch_us("timestamp") AS ts
                FROM event_log {where}""",
            params=[types, *params],
        ).to_arrow_reader(_FETCH_ROWS)
        at = 0
        for batch in reader:
            m = batch.num_rows
            for name, out in cols.items():
                col = batch.column(name)
                if name == "ts":
                    us = col.to_numpy(zero_copy_only=False)  # float64, NaN for NULL
                    out[at : at + m] = us / 1e6
                else:
                    out[at : at + m] = col.to_numpy(zero_copy_only=False)
            at += m
        if at != n:  # the store changed between the count and the read
            raise InputError(f"{self.path}: the events changed while being read; try again")
        seq = cols["seq"]
        if n > 1 and not (seq[1:] > seq[:-1]).all():  # appended out of order: sort here
            order = np.argsort(seq, kind="stable")
            for name in cols:  # one column's copy at a time
                cols[name] = cols[name][order]
            del order
        ts: np.ndarray | None = cols["ts"]
        if np.isnan(ts).all():
            ts = None
        data = Interactions(
            user_idx=cols["user_idx"],
            item_idx=cols["item_idx"],
            value=cols["value"],
            event_type=cols["event_type"],
            event_types=tuple(types),
            seq=cols["seq"],
            users=self.user_index(),
            items=self.item_index(),
            timestamp=ts,
            fill_rating=self.meta("fill_rating"),  # set by ingest --fill-rating
        )
        if with_features:
            # the catalog as ingested: derived topics are not model features
            items = self.items_frame(topics=False)
            data.item_features = items.set_index("item_idx").sort_index()
            data.user_features = self.users_frame().set_index("user_idx").sort_index()
        return data

    def content_hash(self) -> str:
        """`Interactions.content_hash` of every event, computed inside DuckDB from the
        store's tables (`recsight.data.dataset.hash_rows`): equal to
        ``interactions().content_hash()`` without reading the events into Python."""
        from recsight.data.dataset import hash_rows

        # epoch seconds and values exactly as `interactions` computes them
        return hash_rows(
            self.con,
            """SELECT u.user_id, i.item_id,
                      coalesce(epoch_us(e."timestamp")::DOUBLE / 1e6, 'NaN'::DOUBLE) AS ts,
                      coalesce(e.value, 'NaN'::DOUBLE)::FLOAT AS value
               FROM event_log e JOIN user_map u ON e.user_idx = u.user_idx
                                JOIN item_map i ON e.item_idx = i.item_idx""",
        )

    def event_counts(self) -> tuple[int, int, int, float | None]:
        """Events, distinct users and items among them, and the latest event time (epoch
        seconds as `interactions` computes them; None without timestamps), counted in SQL."""
        n, users, items, last = self.con.execute(
            """SELECT count(*), count(DISTINCT user_idx), count(DISTINCT item_idx),
                      max(epoch_us("timestamp"))::DOUBLE / 1e6
               FROM event_log"""
        ).fetchone()
        return int(n), int(users), int(items), None if last is None else float(last)

    def _event_filter(
        self, event_types: list[str] | None, users: Sequence[str] | None
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (and its parameters) selecting some event types or users."""
        conditions: list[str] = []
        params: list[Any] = []
        if event_types:
            conditions.append("event_type IN (" + ", ".join("?" * len(event_types)) + ")")
            params += list(event_types)
        if users is not None:
            conditions.append(
                "user_idx IN (SELECT user_idx FROM user_map WHERE user_id IN (SELECT unnest(?)))"
            )
            params.append([str(u) for u in users])
        return ("WHERE " + " AND ".join(conditions) if conditions else ""), params

    def needs_event_fill(self, weights: Mapping[str, float | str] | None = None) -> bool:
        """Whether these weights need per-event rating fills (a ``"value"`` rule under the
        store's ``--fill-rating`` policy), which `weighted_matrix` does not compute."""
        from recsight.data.dataset import DEFAULT_WEIGHTS

        rules = DEFAULT_WEIGHTS if weights is None else weights
        return "value" in rules.values() and self.meta("fill_rating") not in (None, "none")

    def weighted_matrix(self, weights: Mapping[str, float | str] | None = None) -> sp.csr_matrix:
        """``interactions().to_csr(weights)`` summed inside DuckDB: only the distinct
        (user, item) pairs and their summed weights are fetched, never the events, so a matrix
        model trains without the event arrays in memory.

        Each event weighs its type's number (float32, as `Interactions.weights`), or its
        value for a ``"value"`` rule (missing values weigh 1); sums are taken in double and
        rounded to float32 once (identical to `to_csr`'s float32 sums whenever those are exact,
        e.g. integer weights and star ratings). A ``"value"`` rule under the store's rating
        fill policy (``ingest --fill-rating``) needs per-event fills: use `interactions`."""
        import scipy.sparse as sp

        from recsight.data.dataset import DEFAULT_WEIGHTS

        rules = DEFAULT_WEIGHTS if weights is None else weights
        if self.needs_event_fill(weights):
            raise InputError(
                "weights: a 'value' weight with the store's rating fill policy is computed "
                "per event; read the events with Store.interactions() instead"
            )
        cases, params = [], []
        for name, rule in rules.items():
            if rule == "value":
                cases.append("WHEN ? THEN CASE WHEN value IS NULL OR isnan(value) THEN 1 "
                             "ELSE value::FLOAT END")  # fmt: skip
                params.append(name)
            else:
                cases.append("WHEN ? THEN ?::FLOAT")
                params += [name, float(rule)]
        weight = f"CASE event_type {' '.join(cases)} ELSE 0 END" if cases else "0"
        n_users, n_items = self.count("user_map"), self.count("item_map")
        # streamed in batches: a whole result (~80M pairs at 100M events) would have to fit in
        # DuckDB's memory limit at once, where its sort spills
        reader = self.con.sql(
            f"""SELECT user_idx::INTEGER AS u, item_idx::INTEGER AS i, sum(w)::FLOAT AS w
                FROM (SELECT user_idx, item_idx, ({weight})::FLOAT AS w FROM event_log)
                WHERE w <> 0 GROUP BY ALL HAVING sum(w)::FLOAT <> 0 ORDER BY u, i""",
            params=params,
        ).to_arrow_reader(_FETCH_ROWS)
        counts = np.zeros(n_users, np.int64)
        items, weights = [], []
        for batch in reader:
            u = batch.column("u").to_numpy()
            counts += np.bincount(u, minlength=n_users)
            items.append(batch.column("i").to_numpy())
            weights.append(batch.column("w").to_numpy())
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        return sp.csr_matrix(
            (
                np.concatenate(weights) if weights else np.empty(0, np.float32),
                np.concatenate(items) if items else np.empty(0, np.int32),
                indptr,
            ),
            shape=(n_users, n_items),
        )

    def events_frame(self, limit: int | None = None) -> pd.DataFrame:
        """Events as a pandas frame (external ids, UTC timestamps), in ingest order."""
        lim = f" LIMIT {int(limit)}" if limit else ""
        return self.con.execute(
            "SELECT * EXCLUDE (user_idx, item_idx) FROM events ORDER BY seq" + lim
        ).df()

    def items_frame(self, topics: bool = True) -> pd.DataFrame:
        """The catalog, by item_idx. With `topics` and topics built (`recsight topics`), a
        `topic` column (and `topic_group`, the coarser level, when built) holds each item's
        topic name; a catalog without any category also gets the topic as its `category`
        (``frame.attrs["category_source"] == "topic"``), so that every consumer of categories
        (filters, explanations, features) works on it. Real categories are never replaced."""
        items = self.con.execute("SELECT * FROM items ORDER BY item_idx").df()
        items.attrs["category_source"] = "category"
        if not topics or not self.has_table(TOPICS_TABLE):
            return items
        t = self.con.execute(
            f"SELECT item_id, level, label FROM {TOPICS_TABLE} WHERE level IN (1, 2)"
        ).df()
        for level, col in ((1, "topic"), (2, "topic_group")):
            names = t[t.level == level].set_index("item_id").label
            if len(names):
                items[col] = items.item_id.map(names)
        no_categories = "category" not in items.columns or not items["category"].notna().any()
        if "topic" in items.columns and no_categories:
            items["category"] = items["topic"]
            items.attrs["category_source"] = "topic"
        return items

    def has_table(self, name: str) -> bool:
        """Whether the database has a table or view called `name`."""
        row = self.con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = ? AND NOT temporary "
            "UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = ?",
            [name, name],
        ).fetchall()
        return any(r[0] for r in row)

    def topics_frame(self) -> pd.DataFrame:
        """The stored topics (level, topic, label, words, size, parent, backend, rejected),
        empty when none were built."""
        import pandas as pd

        if not self.has_table(TOPIC_NAMES_TABLE):
            return pd.DataFrame(
                columns=["level", "topic", "label", "words", "size", "parent", "backend"]
            )
        return self.con.execute(f"SELECT * FROM {TOPIC_NAMES_TABLE} ORDER BY level, topic").df()

    def replace_topics(
        self, item_topics: pd.DataFrame, topics: pd.DataFrame, meta: Mapping[str, str]
    ) -> None:
        """Replace the derived topic attributes in one transaction (item rows: item_idx,
        item_id, level, topic, label, model, text_hash; `topics`: one row per topic)."""
        self.con.execute("BEGIN")
        try:
            for name, frame in ((TOPICS_TABLE, item_topics), (TOPIC_NAMES_TABLE, topics)):
                self.con.register("_topics_new", frame)
                self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM _topics_new")
                self.con.unregister("_topics_new")
            for key, value in meta.items():
                self.set_meta(key, value)
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def users_frame(self) -> pd.DataFrame:
        return self.con.execute("SELECT * FROM users ORDER BY user_idx").df()

    # -- snapshots ------------------------------------------------------------------------
    def export_parquet(self, out_dir: str | Path) -> dict[str, str]:
        """Write events/items/users Parquet files that `recsight ingest DIR` reads back."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        queries = {
            "events": "SELECT seq, user_id, item_id, timezone('UTC', \"timestamp\") AS "
            '"timestamp", event_type, raw_event_type, value, event_id, session_id, '
            "request_id FROM events ORDER BY seq",
            "items": "SELECT * EXCLUDE (item_idx) FROM items ORDER BY item_idx",
            "users": "SELECT * EXCLUDE (user_idx) FROM users ORDER BY user_idx",
        }
        for name, sql in queries.items():
            path = out / f"{name}.parquet"
            tmp = path.with_suffix(".parquet.tmp")
            self.con.execute(f"COPY ({sql}) TO '{tmp}' (FORMAT parquet)")
            os.replace(tmp, path)  # readers never see a half-written snapshot
            files[name] = str(path)
        from recsight.data.exports import record_export

        record_export(self.path, out)
        return files


def add_ids(con: duckdb.DuckDBPyConnection, kind: str, source_sql: str) -> int:
    """Give every id in `source_sql` (columns: `<kind>_id`, `first`) that is not yet mapped
    the next free index, in order of first appearance. Returns how many were added."""
    idx, col = f"{kind}_idx", f"{kind}_id"
    before = con.execute(f"SELECT count(*) FROM {kind}_map").fetchone()[0]
    con.execute(f"""
        INSERT INTO {kind}_map
        SELECT (SELECT coalesce(max({idx}), -1) FROM {kind}_map)
               + row_number() OVER (ORDER BY first, n.{col}), n.{col}
        FROM ({source_sql}) n ANTI JOIN {kind}_map m ON n.{col} = m.{col}
    """)
    return int(con.execute(f"SELECT count(*) FROM {kind}_map").fetchone()[0] - before)


def _fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)
