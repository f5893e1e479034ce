"""How training data leaves the store: the events read as arrays, the weights summed inside
DuckDB, and the content hash, each against a plain reference implementation or its
definition written out by hand."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from recsight.data.dataset import CONTENT_HASH_VERSION, IdIndex, Interactions
from recsight.data.ingest import ingest
from recsight.data.layout import export_store, open_store
from recsight.data.store import Store
from recsight.errors import InputError

TYPES = ["view", "click", "cart", "purchase", "rating"]


def write_log(path, n=600, timestamps=True, seed=3) -> None:
    """Mixed events with repeats of the same (user, item), ratings with missing and
    fractional values, and ids of different lengths."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(TYPES, n, p=[0.5, 0.2, 0.1, 0.1, 0.1])
    rating = np.where(kind == "rating", rng.choice([1, 2.5, 3, 4.5, 5, np.nan], n), np.nan)
    frame = pd.DataFrame({
        "user_id": [f"user-{u}" for u in rng.integers(0, 15 if n < 1000 else 90, n)],
        "item_id": [f"é{i}" * (1 + i % 3) for i in rng.integers(0, 12, n)],
        "event_type": kind,
        "rating": rating,
    })  # fmt: skip
    if timestamps:
        frame["timestamp"] = 1_700_000_000 + np.sort(rng.integers(0, 10**6, n))
    frame.to_csv(path, index=False)


@pytest.fixture()
def store_path(tmp_path):
    write_log(tmp_path / "events.csv")
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        ingest(store, tmp_path / "events.csv")
    return path


def plain_read(store: Store) -> dict[str, np.ndarray | None]:
    """Reference: every column fetched with `fetchnumpy` and converted in numpy."""
    cols = store.con.execute(
        """SELECT user_idx, item_idx, coalesce(value, 'NaN'::DOUBLE) AS value, event_type,
                  seq, epoch_us("timestamp") AS ts FROM event_log ORDER BY seq"""
    ).fetchnumpy()
    types = sorted(set(cols["event_type"]))
    ts = np.ma.filled(np.ma.asarray(cols["ts"]).astype(np.float64), np.nan) / 1e6
    return {
        "user_idx": np.asarray(cols["user_idx"], np.int32),
        "item_idx": np.asarray(cols["item_idx"], np.int32),
        "value": np.asarray(cols["value"], np.float32),
        "event_type": np.array([types.index(t) for t in cols["event_type"]], np.int8),
        "seq": np.asarray(cols["seq"], np.int64),
        "timestamp": None if np.isnan(ts).all() else ts,
    }


@pytest.mark.parametrize("timestamps", [True, False])
def test_events_read_as_the_plain_fetch_reads_them(tmp_path, timestamps):
    write_log(tmp_path / "events.csv", timestamps=timestamps)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "events.csv")
        data = store.interactions(with_features=False)
        ref = plain_read(store)
    for name, expected in ref.items():
        got = getattr(data, name)
        if expected is None:
            assert got is None
        else:
            assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True)
    assert list(data.event_types) == sorted(set(data.event_types))
    assert np.isnan(data.value).any() and (data.value == 2.5).any()  # the log has both


@pytest.mark.parametrize("batch_rows", [None, 50])
@pytest.mark.parametrize("event_types", [None, ["view", "rating"]])
def test_events_out_of_seq_order_in_the_table_are_read_in_ingest_order(
    store_path, batch_rows, event_types, monkeypatch
):
    """A table whose rows are not in `seq` order (events appended out of order) is still
    read in ingest order, now sorted in numpy rather than by DuckDB's ORDER BY."""
    if batch_rows:
        monkeypatch.setattr("recsight.data.store._FETCH_ROWS", batch_rows)
    with Store(store_path) as store:
        store.con.execute("CREATE TEMP TABLE shuffled AS SELECT * FROM event_log")
        store.con.execute("DELETE FROM event_log")
        store.con.execute("INSERT INTO event_log SELECT * FROM shuffled ORDER BY hash(seq)")
        table_seq = store.con.execute("SELECT seq FROM event_log").fetchnumpy()["seq"]
        assert (np.diff(table_seq) < 0).any()  # the table really is out of order
        data = store.interactions(event_types, with_features=False)
        ref = plain_read(store)
    keep = np.ones(len(ref["seq"]), bool)
    if event_types:
        codes = [list(data.event_types).index(t) for t in event_types]
        keep = np.isin(ref["event_type"], codes)
        assert 0 < keep.sum() < len(keep)
    for name, expected in ref.items():
        np.testing.assert_array_equal(getattr(data, name), expected[keep], err_msg=name)


def test_to_csr_reads_the_event_arrays_without_changing_them(store_path):
    with Store(store_path, read_only=True) as store:
        data = store.interactions(with_features=False)
    before = {c: getattr(data, c).copy() for c in ("user_idx", "item_idx", "value")}
    m = data.to_csr({t: 1.0 for t in TYPES})  # every event kept
    dense = np.zeros(m.shape, np.float32)
    np.add.at(dense, (data.user_idx, data.item_idx), 1.0)
    np.testing.assert_array_equal(m.toarray(), dense)
    for name, arr in before.items():
        np.testing.assert_array_equal(getattr(data, name), arr)


WEIGHTS = [
    None,
    {"view": 1.0, "click": -1.0, "rating": "value"},  # some pairs sum to exactly zero
    {"purchase": 2.5},
    {"rating": "value"},
    {},
]


@pytest.mark.parametrize("batch_rows", [None, 7])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_weighted_matrix_equals_summing_the_events(store_path, weights, batch_rows, monkeypatch):
    if batch_rows:  # the pairs arrive in many small batches, as at 100M events
        monkeypatch.setattr("recsight.data.store._FETCH_ROWS", batch_rows)
    with Store(store_path, read_only=True) as store:
        got = store.weighted_matrix(weights)
        expected = store.interactions().to_csr(weights)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert np.array_equal(got.indptr, expected.indptr)
    assert np.array_equal(got.indices, expected.indices)
    assert np.array_equal(got.data, expected.data)


def test_rating_fills_are_left_to_the_events(tmp_path):
    write_log(tmp_path / "events.csv")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "events.csv", fill_rating="item-mean")
        assert store.needs_event_fill(None) and not store.needs_event_fill({"view": 1.0})
        with pytest.raises(InputError, match="fill policy"):
            store.weighted_matrix(None)


def md5_sum_hash(rows: list[str]) -> str:
    """Reference: the content hash's definition written out in Python (MD5 of each row's
    text, exact sums of the digests' little-endian 64-bit halves, sha256 of count and sums)."""
    digests = [hashlib.md5(r.encode()).digest() for r in rows]
    upper = sum(int.from_bytes(d[:8], "little") for d in digests)
    lower = sum(int.from_bytes(d[8:], "little") for d in digests)
    text = f"{CONTENT_HASH_VERSION}:{len(rows)}:{upper}:{lower}"
    return hashlib.sha256(text.encode()).hexdigest()


def small(user_ids, item_ids, ts, values) -> Interactions:
    n = len(user_ids)
    users = IdIndex(sorted(set(user_ids), reverse=True))  # integer ids not in string order
    items = IdIndex(sorted(set(item_ids)))
    return Interactions(
        user_idx=users.index_of(user_ids).astype(np.int32),
        item_idx=items.index_of(item_ids).astype(np.int32),
        value=np.asarray(values, np.float32),
        event_type=np.zeros(n, np.int8),
        event_types=("view",),
        seq=np.arange(n, dtype=np.int64),
        users=users,
        items=items,
        timestamp=None if ts is None else np.asarray(ts, np.float64),
    )


def test_content_hash_by_hand():
    """The hash of a few rows, written out by hand from its definition: ids with their
    lengths (in characters), then the time and the value as text, NaN as `nan`."""
    data = small(["u1", "ü22", "u1"], ["i7", "i7", "x"], [1.5, np.nan, 1700000000.25],
                 [4.0, np.nan, 1.0])  # fmt: skip
    rows = ["2:u12:i7|1.5|4.0", "3:ü222:i7|nan|nan", "2:u11:x|1700000000.25|1.0"]
    assert data.content_hash() == md5_sum_hash(rows)
    no_time = small(["u1"], ["i7"], None, [2.5])
    assert no_time.content_hash() == md5_sum_hash(["2:u12:i7|nan|2.5"])
    assert data.subset(np.arange(0)).content_hash() == md5_sum_hash([])


def test_content_hash_sees_every_row_and_no_order():
    """Order and integer ids do not matter; a changed, added (even a repeat) or removed row
    does, as does a row moved between users."""
    data = small(["a", "b", "b", "c"], ["x", "y", "x", "x"], [1.0, 2.0, 3.0, 4.0],
                 [np.nan, 1.0, 2.0, np.nan])  # fmt: skip
    base = data.content_hash()
    assert small(["c", "b", "a", "b"], ["x", "x", "x", "y"], [4.0, 3.0, 1.0, 2.0],
                 [np.nan, 2.0, np.nan, 1.0]).content_hash() == base  # fmt: skip
    variants = [
        small(["a", "b", "b", "c"], ["x", "y", "x", "x"], [1.0, 2.0, 3.0, 4.0],
              [np.nan, 1.0, 2.5, np.nan]),  # a value
        small(["a", "b", "b", "c"], ["x", "y", "x", "x"], [1.0, 2.0, 3.0, 4.5],
              [np.nan, 1.0, 2.0, np.nan]),  # a time
        small(["a", "b", "b", "c"], ["x", "y", "y", "x"], [1.0, 2.0, 3.0, 4.0],
              [np.nan, 1.0, 2.0, np.nan]),  # an item
        small(["a", "a", "b", "c"], ["x", "y", "x", "x"], [1.0, 2.0, 3.0, 4.0],
              [np.nan, 1.0, 2.0, np.nan]),  # a user
        data.subset(np.array([0, 1, 2, 3, 3])),  # a repeated row
        data.subset(np.array([0, 1, 2])),  # a removed row
        small(["a", "b", "b", "c"], ["x", "y", "x", "x"], None, [np.nan, 1.0, 2.0, np.nan]),
    ]  # fmt: skip
    hashes = {v.content_hash() for v in variants}
    assert len(hashes) == len(variants) and base not in hashes


@pytest.mark.parametrize("timestamps", [True, False])
def test_store_content_hash_equals_the_arrays_hash(tmp_path, timestamps):
    """`Store.content_hash` (in SQL, no events read) equals the hash of the events read as
    arrays, for a log with repeats, missing and fractional ratings, non-ASCII ids; ingesting
    the same events in another order (other integer ids) gives the same hash; deleting,
    changing or repeating one event in the store changes it. Its Parquet layout (read through
    views) hashes the same."""
    write_log(tmp_path / "events.csv", timestamps=timestamps)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "events.csv")
        base = store.content_hash()
        assert base == store.interactions().content_hash()
        frame = pd.read_csv(tmp_path / "events.csv")
        frame.iloc[::-1].to_csv(tmp_path / "reversed.csv", index=False)
        with Store(tmp_path / "r.duckdb") as other:
            ingest(other, tmp_path / "reversed.csv")
            assert other.user_index() != store.user_index()
            assert other.content_hash() == base
        export_store(store, tmp_path / "layout")
        with open_store(tmp_path / "layout") as layout:  # the Parquet layout's views
            assert layout.content_hash() == base
        seen = {base}
        store.con.execute("INSERT INTO event_log SELECT * FROM event_log WHERE seq = 5")
        seen.add(store.content_hash())
        store.con.execute("DELETE FROM event_log WHERE seq = 5")
        seen.add(store.content_hash())
        store.con.execute("UPDATE event_log SET value = 2 WHERE seq = 7")
        seen.add(store.content_hash())
        assert len(seen) == 4
        assert store.content_hash() == store.interactions().content_hash()


def test_event_counts_match_the_arrays(store_path):
    with Store(store_path, read_only=True) as store:
        n, users, items, last = store.event_counts()
        data = store.interactions()
    assert (n, users, items) == (len(data), np.unique(data.user_idx).size,
                                 np.unique(data.item_idx).size)  # fmt: skip
    assert last == np.nanmax(data.timestamp)


def test_default_memory_limit_scales_with_ram(monkeypatch):
    from recsight.data.store import default_memory_limit

    monkeypatch.setenv("RECSIGHT_MEMORY_LIMIT", "3GB")
    assert default_memory_limit() == "3GB"
    monkeypatch.delenv("RECSIGHT_MEMORY_LIMIT")
    total = __import__("psutil").virtual_memory().total
    assert default_memory_limit() == f"{max(1536, total // 5 // 2**20)}MB"
