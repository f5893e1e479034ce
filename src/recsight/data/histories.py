"""A snapshot of every user's events in files beside the store, for reading one user's
history without a query (the service's history-cache misses).

A DuckDB query by user costs 9.5-19 CPU ms at 100M events even on the by-user copy
(`Store.cluster_by_user`): at 200 requests/s of mostly new users that is two cores. The
snapshot holds the same events as numpy arrays in CSR form over `user_idx`, each user's
events in the order `Store.recent_events` returns them (timestamp, NULLs first, then seq), so
a read is a binary search for the user's index and a slice (0.3-0.7 CPU ms). Opening it
reads only headers (the id lists are Arrow memory maps, the arrays are read by slices), so
it costs the same time and memory whatever the number of users.

Layout, in ``<db>.histories/<id>/`` beside the store file: ``indptr.npy`` (int64, one
entry per user_idx + 1), per event ``seq.npy`` (int64), ``item.npy`` (int32 item_idx),
``type.npy`` (int8 code into ``meta.json``'s event types), ``value.npy`` (float64, NaN for
NULL: stored values are finite), ``ts.npy`` (int64 epoch microseconds, NULL as the smallest
int64 so it sorts first); ``users.arrow`` (user ids sorted by their UTF-8 bytes, with their
user_idx) and ``items.arrow`` (item ids by item_idx); ``meta.json`` (id, watermark seq,
counts). It holds the events with seq <= its watermark; later ones are read from
``event_log``. The store's meta key `META_KEY` names the snapshot that is current: anything
that deletes events or renumbers users (`recsight.privacy.erasure`) deletes the key and the
folder, so a snapshot never serves an erased user's events.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import shutil
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from recsight.data.store import Store

log = logging.getLogger("recsight.data")

#: Store metadata: the id of the current snapshot (absent: none is valid).
META_KEY = "history_snapshot"
#: Timestamp key of an event without a timestamp (sorts first, as NULLS FIRST).
NO_TIME = np.iinfo(np.int64).min
_FORMAT = 1
_BATCH_ROWS = 1 << 20

#: One event as a snapshot read returns it: (seq, item_id, event_type, value, ts key).
TimedEvent = tuple[int, str, str, float | None, int]


def snapshot_root(db: str | Path) -> Path:
    """The folder of a store's snapshots: ``<db>.histories`` beside the store file."""
    db = Path(db)
    return db.with_name(db.name + ".histories")


def delete_history_snapshots(db: str | Path) -> None:
    """Delete the files of a store's snapshots (after deleting `META_KEY` from its meta in
    the transaction that deleted events or renumbered users)."""
    shutil.rmtree(snapshot_root(db), ignore_errors=True)


def write_history_snapshot(store: Store, current: bool = True) -> HistorySnapshot:
    """Write a snapshot of the store's events and, with `current`, make it the store's
    current one (`HistorySnapshot.make_current`). Reads one consistent view of the store (a
    transaction): events committed meanwhile get seqs past its watermark. DuckDB sorts the
    events within its memory limit (spilling beyond it); they are written in ~1M-row batches."""
    con = store.con
    root = snapshot_root(store.path)
    sid = uuid.uuid4().hex[:12]
    tmp = root / f"{sid}.tmp"
    tmp.mkdir(parents=True)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            upto, n_events, n_users = con.execute(
                "SELECT coalesce(max(seq), -1), count(*), "
                "(SELECT coalesce(max(user_idx), -1) + 1 FROM user_map) FROM event_log"
            ).fetchall()[0]
            types = [
                r[0]
                for r in con.execute(
                    "SELECT DISTINCT event_type FROM event_log ORDER BY 1"
                ).fetchall()
            ]
            _write_events(con, tmp, int(n_events), int(n_users), types)
            users = con.sql(
                "SELECT user_id::VARCHAR AS user_id, user_idx::INTEGER AS user_idx "
                "FROM user_map ORDER BY encode(user_id)"  # bytes order = Python's str order
            ).to_arrow_table()
            items = con.sql(
                "SELECT item_id::VARCHAR AS item_id, item_idx FROM item_map ORDER BY item_idx"
            ).to_arrow_table()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        if not np.array_equal(items.column("item_idx").to_numpy(), np.arange(len(items))):
            raise ValueError(f"{store.path}: item_map's indices are not 0..n-1")
        _write_arrow(tmp / "users.arrow", users, {"user_id": pa.large_string()})
        _write_arrow(tmp / "items.arrow", items.select(["item_id"]), {"item_id": pa.large_string()})
        meta = {"format": _FORMAT, "id": sid, "upto": int(upto), "n_users": int(n_users),
                "n_events": int(n_events), "event_types": types}  # fmt: skip
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, root / sid)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    snapshot = HistorySnapshot(root / sid)
    if current:
        snapshot.make_current(store)
    return snapshot


def _write_events(con, out: Path, n: int, n_users: int, types: list[str]) -> None:
    """The events in CSR order, streamed from DuckDB into the arrays' files."""
    cols = {
        "seq": np.int64, "item": np.int32, "type": np.int8, "value": np.float64, "ts": np.int64,
    }  # fmt: skip
    files = {name: (out / f"{name}.npy").open("wb") for name in cols}
    for name, dt in cols.items():
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dt)), "fortran_order": False,
                  "shape": (n,)}  # fmt: skip
        np.lib.format.write_array_header_1_0(files[name], header)
    counts = np.zeros(n_users, np.int64)
    reader = con.sql(
        f"""SELECT user_idx::INTEGER AS user, seq::BIGINT AS seq, item_idx::INTEGER AS item,
                   (list_position(?::VARCHAR[], event_type) - 1)::TINYINT AS type,
                   coalesce(value, 'NaN'::DOUBLE) AS value,
                   coalesce(epoch_us("timestamp"), {NO_TIME}) AS ts
            FROM event_log ORDER BY user_idx, "timestamp" NULLS FIRST, seq""",
        params=[types],
    ).to_arrow_reader(_BATCH_ROWS)
    at = 0
    try:
        for batch in reader:
            counts += np.bincount(batch.column("user").to_numpy(), minlength=n_users)
            for name, dt in cols.items():
                files[name].write(batch.column(name).to_numpy().astype(dt, copy=False).tobytes())
            at += batch.num_rows
    finally:
        for f in files.values():
            f.close()
    if at != n:
        raise ValueError(f"read {at} events, expected {n}")
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    np.save(out / "indptr.npy", indptr)


def _write_arrow(path: Path, table: pa.Table, types: dict[str, pa.DataType]) -> None:
    """`table` as one record batch (its string columns as `types`) in an Arrow IPC file."""
    schema = pa.schema([(f.name, types.get(f.name, f.type)) for f in table.schema])
    batch = table.cast(schema).combine_chunks().to_batches()
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for b in batch:  # one batch (none for an empty table)
            writer.write_batch(b)


def _read_arrow(path: Path, column: str) -> pa.Array:
    """One column of an Arrow file written by `_write_arrow`, its buffers memory-mapped
    (no copy, nothing read until used)."""
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    col = table.column(column)
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


class _SortedIds:
    """Index access to the sorted user ids as Python strings, for `bisect`."""

    def __init__(self, ids: pa.LargeStringArray):
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> str:
        return self._ids[i].as_py()


class _Column:
    """One array of a snapshot read by slices with `os.pread` (thread-safe, no shared file
    position). Not memory-mapped: a mapped read puts every page it touches, and the kernel's
    fault-around pages with it, in the process's RSS (+650 MB per 1,000 misses at 100M
    events, up to the whole 2.8 GB snapshot), where pread costs no more CPU per miss."""

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r")  # reads the header only
        self.dtype, self._offset, self._fd = header.dtype, header.offset, os.open(path, os.O_RDONLY)
        del header

    def __getitem__(self, rows: slice) -> np.ndarray:
        size = self.dtype.itemsize
        data = os.pread(self._fd, (rows.stop - rows.start) * size, self._offset + rows.start * size)
        return np.frombuffer(data, self.dtype)

    def close(self) -> None:
        os.close(self._fd)


@dataclass
class HistorySnapshot:
    """A snapshot opened for reading: its arrays are read by slices, its id lists are
    memory-mapped; nothing is read at opening. Files deleted meanwhile (a newer snapshot,
    an erasure) stay readable until this object is dropped: whoever deletes a snapshot
    for an erasure must stop reading from it."""

    path: Path

    def __post_init__(self) -> None:
        meta = json.loads((self.path / "meta.json").read_text())
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{self.path}: unknown snapshot format {meta.get('format')!r}")
        self.id: str = meta["id"]
        #: the last seq the snapshot holds
        self.upto: int = meta["upto"]
        self.n_events: int = meta["n_events"]
        self._types: list[str] = meta["event_types"]
        cols = {name: _Column(self.path / f"{name}.npy")
                for name in ("indptr", "seq", "item", "type", "value", "ts")}  # fmt: skip
        weakref.finalize(self, lambda: [c.close() for c in cols.values()])
        self._indptr, self._seq, self._item = cols["indptr"], cols["seq"], cols["item"]
        self._type, self._value, self._ts = cols["type"], cols["value"], cols["ts"]
        self._user_ids = _SortedIds(_read_arrow(self.path / "users.arrow", "user_id"))
        self._user_idx = _read_arrow(self.path / "users.arrow", "user_idx").to_numpy()
        self._items = _read_arrow(self.path / "items.arrow", "item_id")

    @classmethod
    def current(cls, store: Store) -> HistorySnapshot | None:
        """The store's current snapshot, or None (none written, or invalidated)."""
        sid = store.meta(META_KEY)
        if sid is None:
            return None
        path = snapshot_root(store.path) / sid
        try:
            return cls(path)
        except (OSError, ValueError, KeyError):
            log.warning("history snapshot %s unreadable; reading histories from the store", path)
            return None

    def make_current(self, store: Store) -> None:
        """Record this snapshot as the store's current one and delete the others (a reader
        that has them open keeps its memory maps of the deleted files)."""
        store.set_meta(META_KEY, self.id)
        for old in self.path.parent.iterdir():
            if old != self.path:
                shutil.rmtree(old, ignore_errors=True)

    def user_index(self, user_id: str) -> int | None:
        """The user's index in the snapshot, None for a user it does not know."""
        pos = bisect.bisect_left(self._user_ids, user_id)
        if pos < len(self._user_ids) and self._user_ids[pos] == user_id:
            return int(self._user_idx[pos])
        return None

    def events(self, user_id: str, limit: int) -> list[TimedEvent]:
        """The user's last `limit` events in the snapshot, oldest first, each with its
        timestamp key (epoch microseconds, `NO_TIME` for none) for merging newer events."""
        u = self.user_index(user_id)
        if u is None or limit <= 0:
            return []
        lo, hi = self._indptr[u : u + 2].tolist()
        lo = max(lo, hi - limit)
        if lo >= hi:
            return []
        types = self._types
        items = self._items.take(pa.array(self._item[lo:hi])).to_pylist()
        values = [None if v != v else v for v in self._value[lo:hi].tolist()]  # NaN: NULL
        return list(
            zip(
                self._seq[lo:hi].tolist(),
                items,
                [types[c] for c in self._type[lo:hi].tolist()],
                values,
                self._ts[lo:hi].tolist(),
                strict=True,
            )
        )


def events_after(store: Store, upto: int) -> list[tuple[str, TimedEvent]]:
    """The events past a snapshot's watermark as (user_id, event), in seq order. The events
    are read first, then only their ids: a join of the whole log's tail to the id maps in
    one query built its hash table on the maps (6 s at 100M events with no tail at all)."""
    con = store.con
    tail = con.sql(
        f"""SELECT seq, user_idx, item_idx, event_type, value,
                   coalesce(epoch_us("timestamp"), {NO_TIME}) AS ts
            FROM event_log WHERE seq > {int(upto)}"""  # a constant: row groups skipped
    ).to_arrow_table()
    if not tail.num_rows:
        return []
    con.register("_history_tail", tail)
    try:
        rows = con.execute(
            """SELECT u.user_id, t.seq, i.item_id, t.event_type, t.value, t.ts
               FROM _history_tail t JOIN user_map u ON t.user_idx = u.user_idx
                                    JOIN item_map i ON t.item_idx = i.item_idx
               ORDER BY t.seq"""
        ).fetchall()
    finally:
        con.unregister("_history_tail")
    return [(r[0], (r[1], r[2], r[3], r[4], r[5])) for r in rows]
