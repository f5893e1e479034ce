"""How training data leaves the store: the events read as arrays, the weights summed inside
DuckDB, and the content hash, each against a plain reference implementation."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from recsight.data.dataset import IdIndex, Interactions
from recsight.data.ingest import ingest
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


WEIGHTS = [
    None,
    {"view": 1.0, "click": -1.0, "rating": "value"},  # some pairs sum to exactly zero
    {"purchase": 2.5},
    {"rating": "value"},
    {},
]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_weighted_matrix_equals_summing_the_events(store_path, weights):
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


def plain_hash(data: Interactions) -> str:
    """Reference: the content hash as first written (a string per event, one join)."""
    users = data.users.ids_of(data.user_idx).astype(str)
    items = data.items.ids_of(data.item_idx).astype(str)
    ts = np.full(len(data), np.nan) if data.timestamp is None else data.timestamp
    value = np.asarray(data.value, np.float64)
    order = np.lexsort((value, ts, items, users))
    h = hashlib.sha256()
    for col in (users, items):
        h.update("\x1f".join(col[order]).encode())
        h.update(b"\x1e")
    for col in (ts, value):
        col = col[order]
        h.update(np.where(np.isnan(col), np.nan, col).tobytes())
    return h.hexdigest()


def test_content_hash_equals_the_plain_hash(monkeypatch):
    rng = np.random.default_rng(0)
    n = 5000
    # ids whose string order differs from their index order, with non-ASCII characters
    users = IdIndex([f"{chr(0x41 + (u * 7) % 60)}{u}" for u in range(50)])
    items = IdIndex([f"ü{(i * 13) % 40}-{i}" for i in range(40)])
    data = Interactions(
        user_idx=rng.integers(0, 50, n).astype(np.int32),
        item_idx=rng.integers(0, 40, n).astype(np.int32),
        value=np.where(rng.random(n) < 0.3, np.nan, rng.integers(1, 6, n)).astype(np.float32),
        event_type=np.zeros(n, np.int8),
        event_types=("view",),
        seq=np.arange(n, dtype=np.int64),
        users=users,
        items=items,
        timestamp=np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 50, n).astype(float)),
    )
    # chunks smaller than the data, so the pieces are joined across chunk borders
    monkeypatch.setattr("recsight.data.dataset._HASH_CHUNK", 777)
    assert data.content_hash() == plain_hash(data)
    assert data.subset(np.arange(0)).content_hash() == plain_hash(data.subset(np.arange(0)))
