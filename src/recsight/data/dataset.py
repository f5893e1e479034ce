"""In-memory views over the store for models: id indexes and interaction arrays.

`Interactions` is what every model's `fit` receives: plain numpy arrays in one integer id space
owned by the store, plus the `IdIndex` objects that translate back to the user's own string ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsight.errors import InputError, NeedsTimestampsError

if TYPE_CHECKING:
    import duckdb

#: Default event weights for implicit-feedback matrices; "value" means use the event's value.
DEFAULT_WEIGHTS: dict[str, float | str] = {
    "view": 1.0,
    "click": 2.0,
    "cart": 3.0,
    "fav": 3.0,
    "purchase": 5.0,
    "rating": "value",
}


#: Lookups of at most this many ids go through a dict instead of pandas.
SMALL_LOOKUP = 256


class IdIndex:
    """A bijection between external string ids and contiguous integer indices 0..n-1."""

    def __init__(self, ids: Iterable[str], *, known_unique: bool = False):
        """`known_unique` skips the uniqueness check (ids read back from a saved model,
        checked when it was fitted): hashing 3M user ids took ~3 CPU s of every service
        start, and the service never looks users up by id."""
        self.ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=object)
        self._pd_index: pd.Index | None = None
        if not known_unique and not self._index.is_unique:
            raise ValueError("IdIndex ids must be unique")
        self._dict: dict[str, int] | None = None

    @property
    def _index(self) -> pd.Index:
        if self._pd_index is None:  # built on first use
            self._pd_index = pd.Index(self.ids)
        return self._pd_index

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdIndex) and np.array_equal(self.ids, other.ids)

    __hash__ = None  # type: ignore[assignment]

    def index_of(self, ids: Iterable[object] | object, missing: str = "raise") -> np.ndarray:
        """Indices of external ids (any type; compared as strings). Unknown ids raise
        `InputError` or, with ``missing="ignore"``, map to -1."""
        scalar = isinstance(ids, (str, int, np.integer))
        arr = [str(ids)] if scalar else [str(x) for x in ids]  # type: ignore[union-attr]
        if len(arr) <= SMALL_LOOKUP:
            # a dict beats pandas' vectorised lookup (~1 ms of fixed cost) for the handful of
            # ids a single request carries
            pos = self._positions()
            idx = np.fromiter((pos.get(a, -1) for a in arr), dtype=np.int64, count=len(arr))
        else:
            idx = self._index.get_indexer(arr)
        if missing == "raise" and (idx < 0).any():
            unknown = [a for a, i in zip(arr, idx, strict=True) if i < 0][:5]
            raise InputError(f"unknown id(s): {', '.join(unknown)}")
        return idx.astype(np.int64)

    def warm(self) -> None:
        """Build the lookup dict of small lookups now rather than on the first one."""
        self._positions()

    def _positions(self) -> dict[str, int]:
        if self._dict is None:
            self._dict = {str(k): i for i, k in enumerate(self.ids)}
        return self._dict

    def ids_of(self, idx: Iterable[int] | np.ndarray) -> np.ndarray:
        """External string ids of integer indices."""
        return self.ids[np.asarray(idx, dtype=np.int64)]


#: The per-event arrays of `Interactions` (the rest is shared by its subsets).
EVENT_COLUMNS = ("user_idx", "item_idx", "value", "event_type", "seq", "timestamp")


@dataclass
class Interactions:
    """Events as aligned arrays over the store's id space.

    `timestamp` holds epoch seconds (float64, NaN where unknown) or is None when the log has no
    timestamps at all; `seq` is the ingest order, used to break timestamp ties.
    `fill_rating` (the store's ``--fill-rating`` policy) fills missing ratings in `weights`
    from these events' own ratings, so a model's fill never sees rows outside its training
    data (see `rating_values`); `value` itself keeps them missing.
    """

    user_idx: np.ndarray
    item_idx: np.ndarray
    value: np.ndarray
    event_type: np.ndarray
    event_types: tuple[str, ...]
    seq: np.ndarray
    users: IdIndex
    items: IdIndex
    timestamp: np.ndarray | None = None
    item_features: pd.DataFrame | None = field(default=None, repr=False)
    user_features: pd.DataFrame | None = field(default=None, repr=False)
    #: How rating events without a value are filled (`FILL_POLICIES`; None: left missing).
    fill_rating: str | None = None

    def __len__(self) -> int:
        return len(self.user_idx)

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def has_timestamps(self) -> bool:
        return self.timestamp is not None and not np.isnan(self.timestamp).all()

    def require_timestamps(self, what: str) -> np.ndarray:
        """The timestamp array, or a clear error naming the operation that needs it."""
        if not self.has_timestamps:
            raise NeedsTimestampsError(
                f"{what} needs event timestamps, but this data has none; use a split or "
                "analysis that does not depend on time (e.g. random or user_random)"
            )
        assert self.timestamp is not None
        return self.timestamp

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        """The events selected by a boolean mask or index array, in the same id space."""
        sel = mask_or_index
        return replace(
            self,
            **{
                c: None if getattr(self, c) is None else getattr(self, c)[sel]
                for c in EVENT_COLUMNS
            },
        )

    def type_mask(self, types: Iterable[str]) -> np.ndarray:
        """Boolean mask of events whose canonical type is in `types`."""
        codes = [i for i, t in enumerate(self.event_types) if t in set(types)]
        return np.isin(self.event_type, codes)

    def weights(self, weights: Mapping[str, float | str] | None = None) -> np.ndarray:
        """Per-event weight: a number per event type, or "value" to use the event's value
        (events whose value is missing then weigh 1). Types not listed weigh 0."""
        weights = DEFAULT_WEIGHTS if weights is None else weights
        w = np.zeros(len(self), dtype=np.float32)
        values = self.rating_values() if "value" in weights.values() else self.value
        for code, name in enumerate(self.event_types):
            rule = weights.get(name, 0.0)
            mask = self.event_type == code
            if rule == "value":
                v = values[mask]
                w[mask] = np.where(np.isnan(v), 1.0, v)
            else:
                w[mask] = float(rule)
        return w

    def rating_values(self) -> np.ndarray:
        """`value` with missing ratings filled by the `fill_rating` policy: the mean of the
        item's ("item-mean") or user's ("user-mean") ratings among these events, else of all
        of them ("global-mean", and the fallback). Computed from this object's own rows, so on
        a training split it never sees test ratings. Without a policy: `value` unchanged."""
        if self.fill_rating in (None, "none"):
            return self.value
        keys = {"item-mean": self.item_idx, "user-mean": self.user_idx, "global-mean": None}
        if self.fill_rating not in keys:
            raise InputError(
                f"fill_rating: expected one of none, {', '.join(keys)}, not {self.fill_rating!r}"
            )
        is_rating = self.type_mask(["rating"])
        missing = is_rating & np.isnan(self.value)
        real = is_rating & ~missing
        if not missing.any() or not real.any():
            return self.value
        v = self.value[real].astype(np.float64)
        fill = np.full(int(missing.sum()), v.mean())
        key = keys[self.fill_rating]
        if key is not None:
            n = int(key.max()) + 1
            sums = np.bincount(key[real], weights=v, minlength=n)
            counts = np.bincount(key[real], minlength=n)
            k = key[missing]
            fill = np.where(counts[k] > 0, sums[k] / np.maximum(counts[k], 1), fill)
        out = self.value.copy()
        out[missing] = fill
        return out

    def to_csr(
        self,
        weights: Mapping[str, float | str] | None = None,
        aggregate: str = "sum",
        binary: bool = False,
    ) -> sp.csr_matrix:
        """User x item matrix over the full id space.

        `aggregate` combines repeated (user, item) events: "sum", "max" or "last" (latest by
        time, then ingest order; what explicit-rating models want). `binary` sets every
        stored entry to 1.
        """
        w = self.weights(weights)
        keep = w != 0
        if keep.all():  # the event arrays themselves, not copies (2.4 GB at 100M events)
            u, i = self.user_idx, self.item_idx
        else:
            u, i, w = self.user_idx[keep], self.item_idx[keep], w[keep]
        shape = (self.n_users, self.n_items)
        if aggregate == "sum":
            m = sp.csr_matrix((w, (u, i)), shape=shape, dtype=np.float32)
            m.sum_duplicates()
        elif aggregate in ("max", "last"):
            order = self._time_order(keep) if aggregate == "last" else np.argsort(w, kind="stable")
            u, i, w = u[order], i[order], w[order]
            key = u.astype(np.int64) * self.n_items + i
            # keep the final occurrence of each (user, item) in the chosen order
            _, first_rev = np.unique(key[::-1], return_index=True)
            last = len(key) - 1 - first_rev
            m = sp.csr_matrix((w[last], (u[last], i[last])), shape=shape, dtype=np.float32)
        else:
            raise ValueError(f"aggregate must be sum, max or last, not {aggregate!r}")
        m.eliminate_zeros()
        if binary:
            m.data[:] = 1.0
        return m

    def _time_order(self, mask: np.ndarray | None = None) -> np.ndarray:
        seq = self.seq if mask is None else self.seq[mask]
        if self.timestamp is None:
            return np.argsort(seq, kind="stable")
        ts = self.timestamp if mask is None else self.timestamp[mask]
        return np.lexsort((seq, np.nan_to_num(ts, nan=-np.inf)))

    def sequences(self, require_time: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per-user item sequences ordered by time (ties by ingest order), as CSR-style
        ``(indptr, items)``: user u's sequence is ``items[indptr[u]:indptr[u+1]]``."""
        if require_time:
            ts = self.require_timestamps("ordering per-user sequences")
            order = np.lexsort((self.seq, ts, self.user_idx))
        else:
            order = np.lexsort((self.seq, self.user_idx))
        items = self.item_idx[order]
        counts = np.bincount(self.user_idx, minlength=self.n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return indptr, items

    def content_hash(self) -> str:
        """A hash of the events as a multiset of (user_id, item_id, timestamp, value) rows
        with external ids: the same events give the same hash whatever their order or the
        store's integer ids (what a saved model's manifest records it was trained on).
        `Store.content_hash` gives the same hash for a store's events; see `hash_rows`."""
        import duckdb
        import pyarrow as pa

        con = duckdb.connect()
        try:
            # the arrays are scanned in place; only the id lists become Arrow strings
            cols = {"user_idx": self.user_idx, "item_idx": self.item_idx, "value": self.value}
            if self.timestamp is not None:
                cols["ts"] = np.asarray(self.timestamp, np.float64)
            con.register("ev", pa.table(cols))
            for name, ids in (("users", self.users.ids), ("items", self.items.ids)):
                col = pa.array([str(x) for x in ids], pa.string())
                con.register(name, pa.table({"idx": np.arange(len(ids), dtype=np.int32),
                                             "id": col}))  # fmt: skip
            source = f"""SELECT u.id AS user_id, i.id AS item_id,
                               {"ev.ts" if self.timestamp is not None else "'NaN'"}::DOUBLE AS ts,
                               ev.value::FLOAT AS value
                         FROM ev JOIN users u ON ev.user_idx = u.idx
                                 JOIN items i ON ev.item_idx = i.idx"""
            return hash_rows(con, source)
        finally:
            con.close()

    def to_frame(self) -> pd.DataFrame:
        """Events as a pandas frame with external ids."""
        df = pd.DataFrame(
            {
                "user_id": self.users.ids_of(self.user_idx),
                "item_id": self.items.ids_of(self.item_idx),
                "event_type": np.asarray(self.event_types, dtype=object)[self.event_type],
                "value": self.value,
                "seq": self.seq,
            }
        )
        if self.timestamp is not None:
            df["timestamp"] = pd.to_datetime(self.timestamp, unit="s")
        return df


#: Version tag of the content hash's definition (`hash_rows`), hashed with its sums.
CONTENT_HASH_VERSION = "recsight-rows-md5sum-v2"


def hash_rows(con: duckdb.DuckDBPyConnection, source_sql: str, params: Sequence[Any] = ()) -> str:
    """The content hash of the rows of `source_sql` (columns ``user_id``, ``item_id``
    VARCHAR, ``ts`` epoch seconds DOUBLE, NaN where unknown, ``value`` FLOAT, NaN where
    missing), computed inside DuckDB as one streamed aggregate: no per-row data reaches
    Python, so hashing 100M events costs DuckDB's scan, not arrays of the events.

    Each row is written as text, ``len(user_id):user_id len(item_id):item_id|ts|value``
    (numbers in DuckDB's shortest round-trip form, ``nan`` for NaN; the lengths keep any
    id unambiguous), and MD5-hashed; the row count and the exact sums of the digests' two
    64-bit halves (little-endian, as DuckDB's ``md5_number_upper``/``_lower``) are then
    hashed with sha256 under `CONTENT_HASH_VERSION`. Sums make it independent of row order
    while a repeated row still counts twice; any added, removed or changed row changes a
    sum except with chance ~2**-64 per half. It detects changed data; it is not a
    cryptographic commitment (a sum of digests can be forged on purpose)."""
    n, upper, lower = con.execute(
        f"""SELECT count(*), coalesce(sum(md5_number_upper(r)), 0),
                   coalesce(sum(md5_number_lower(r)), 0)
            FROM (SELECT concat(length(user_id), ':', user_id, length(item_id), ':', item_id,
                                '|', ts::DOUBLE, '|', value::FLOAT) AS r
                  FROM ({source_sql}))""",
        list(params),
    ).fetchone()
    return hashlib.sha256(f"{CONTENT_HASH_VERSION}:{n}:{upper}:{lower}".encode()).hexdigest()
