"""Split invariants (disjoint, covering, no leakage, reproducible) and the model views."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.data.dataset import IdIndex, Interactions
from recsight.data.splits import (
    SplitSpec,
    filter_kcore,
    filter_min_rating,
    random_item_ranks,
    split,
)
from recsight.errors import InputError, NeedsTimestampsError
from tests.models.conftest import make_interactions


def make(users, items, ts=None, values=None, types=None) -> Interactions:
    users, items = np.asarray(users), np.asarray(items)
    n = len(users)
    types = types or ["rating"] * n
    names = tuple(sorted(set(types)))
    return Interactions(
        user_idx=users.astype(np.int32),
        item_idx=items.astype(np.int32),
        value=np.asarray(values if values is not None else [np.nan] * n, dtype=np.float32),
        event_type=np.array([names.index(t) for t in types], dtype=np.int8),
        event_types=names,
        seq=np.arange(n, dtype=np.int64),
        users=IdIndex([f"u{i}" for i in range(users.max() + 1)]),
        items=IdIndex([f"i{i}" for i in range(items.max() + 1)]),
        timestamp=None if ts is None else np.asarray(ts, dtype=np.float64),
    )


def keys(d: Interactions) -> set:
    return set(zip(d.seq.tolist(), strict=True))


@pytest.mark.parametrize(
    "spec",
    [
        "random:0.8",
        "random:0.7:0.1",
        "user_random:0.8",
        "temporal:0.8",
        "temporal:0.8:0.1",
        "leave_last:1",
    ],
)
def test_disjoint_covering_reproducible(ml100k_ingested, spec):
    s1, s2 = split(ml100k_ingested, spec, seed=3), split(ml100k_ingested, spec, seed=3)
    parts = [s1.train, s1.test] + ([s1.valid] if s1.valid is not None else [])
    seqs = [set(p.seq.tolist()) for p in parts]
    assert sum(len(s) for s in seqs) == len(ml100k_ingested)  # covering
    assert set().union(*seqs) == set(ml100k_ingested.seq.tolist())
    for a in range(len(seqs)):
        for b in range(a + 1, len(seqs)):
            assert not seqs[a] & seqs[b]  # disjoint
    assert np.array_equal(s1.test.seq, s2.test.seq)  # same seed, same split
    data = ml100k_ingested
    assert s1.train.users == data.users and s1.test.items == data.items  # one id space


def test_random_split_ratio_and_seed(ml100k_ingested):
    a, b = (split(ml100k_ingested, "random:0.8", seed=seed) for seed in (1, 2))
    assert abs(a.report.n_test / len(ml100k_ingested) - 0.2) < 0.01
    assert not np.array_equal(a.test.seq, b.test.seq)


def test_random_split_keeps_pairs_together():
    d = make([0, 0, 0, 1, 1, 1] * 20, [0, 0, 1, 1, 2, 2] * 20)
    s = split(d, "random:0.5", seed=0)
    train_pairs = set(zip(s.train.user_idx.tolist(), s.train.item_idx.tolist(), strict=True))
    test_pairs = set(zip(s.test.user_idx.tolist(), s.test.item_idx.tolist(), strict=True))
    assert not train_pairs & test_pairs


def test_user_random_split_per_user(ml100k_ingested):
    s = split(ml100k_ingested, "user_random:0.8", seed=42)
    n_user = np.bincount(ml100k_ingested.user_idx, minlength=ml100k_ingested.n_users)
    n_test = np.bincount(s.test.user_idx, minlength=ml100k_ingested.n_users)
    active = n_user > 0
    assert np.all(np.abs(n_test[active] - np.round(0.2 * n_user[active])) <= 1)
    assert s.report.cold_test_users == 0


def test_temporal_split_no_future_in_train(ml100k_ingested):
    s = split(ml100k_ingested, "temporal:0.8")
    assert s.train.timestamp.max() <= s.test.timestamp.min()
    assert s.report.cold_test_users > 0  # users who only appear late are reported


def test_leave_last_out_ties_broken_by_ingest_order():
    # user 0: items 0,1,2 at t=1,2,2 -> item 2 is later in the file: test; item 1 valid
    d = make([0, 0, 0, 1, 1], [0, 2, 1, 0, 1], ts=[1, 2, 2, 5, 6])
    d.seq = np.array([0, 2, 1, 3, 4])  # item 2 was ingested after item 1
    s = split(d, "leave_last:1")
    assert s.test.item_idx[s.test.user_idx == 0].tolist() == [2]
    assert s.valid.item_idx[s.valid.user_idx == 0].tolist() == [1]
    # user 1 has only 2 events: test gets the last, nothing in valid
    assert s.test.item_idx[s.test.user_idx == 1].tolist() == [1]
    assert 1 not in s.valid.user_idx.tolist()


def test_leave_last_out_on_real_data(ml100k_ingested):
    s = split(ml100k_ingested, "leave_last:1")
    assert s.report.n_test == 943 and s.report.n_valid == 943
    # every test event is its user's latest
    last = np.full(ml100k_ingested.n_users, -np.inf)
    np.maximum.at(last, s.train.user_idx, s.train.timestamp)
    np.maximum.at(last, s.valid.user_idx, s.valid.timestamp)
    assert np.all(s.test.timestamp >= last[s.test.user_idx])


def test_time_splits_need_timestamps():
    d = make([0, 1], [0, 1])
    with pytest.raises(NeedsTimestampsError, match="temporal split needs event timestamps"):
        split(d, "temporal:0.8")
    with pytest.raises(NeedsTimestampsError):
        split(d, "leave_last:1")


@pytest.mark.parametrize(
    "bad", ["nope:0.8", "random:1.2", "random:x", "leave_last:0", "random:0.8:0.3"]
)
def test_bad_split_specs(bad):
    with pytest.raises(InputError, match="--split"):
        SplitSpec.parse(bad)


def test_kcore_and_min_rating():
    # user 2 and item 3 have one partner each and vanish; then nothing else breaks the 2-core
    d = make([0, 0, 1, 1, 2], [0, 1, 0, 1, 3], values=[5, 1, 4, 2, 5])
    core = filter_kcore(d, 2)
    assert sorted(zip(core.user_idx.tolist(), core.item_idx.tolist(), strict=True)) == [
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
    ]
    pos = filter_min_rating(d, 4)
    assert pos.value.tolist() == [5, 4, 5]


def test_csr_weights_and_aggregation():
    d = make(
        [0, 0, 0, 1],
        [0, 0, 1, 1],
        ts=[1, 2, 3, 4],
        values=[np.nan, 2, np.nan, 4],
        types=["view", "purchase", "cart", "rating"],
    )
    m = d.to_csr({"view": 1, "cart": 3, "purchase": 5, "rating": "value"})
    assert m.toarray().tolist() == [[6, 3], [0, 4]]
    assert d.to_csr({"view": 1, "purchase": 5}, aggregate="max").toarray().tolist() == [
        [5, 0],
        [0, 0],
    ]
    assert d.to_csr(binary=True).toarray().tolist() == [[1, 1], [0, 1]]
    r = make([0, 0], [0, 0], ts=[2, 1], values=[3, 5])
    assert r.to_csr(aggregate="last").toarray().tolist() == [[3]]  # latest by time wins


def test_sequences_time_ordered():
    d = make([1, 0, 0, 0], [3, 2, 0, 1], ts=[9, 5, 1, 5])
    indptr, items = d.sequences()
    assert items[indptr[0] : indptr[1]].tolist() == [0, 2, 1]  # t=1, then t=5 ties by ingest order
    assert items[indptr[1] : indptr[2]].tolist() == [3]


def test_store_interactions_view(ml100k_ingested):
    data = ml100k_ingested
    assert len(data) == 100_000 and data.n_users == 943 and data.n_items == 1682
    m = data.to_csr(aggregate="last")
    assert m.nnz == 100_000 and m.max() == 5
    toy_story = data.items.index_of("1")[0]
    assert data.item_features.loc[toy_story, "title"] == "Toy Story (1995)"
    assert data.item_features.loc[0, "title"] == "Kolya (1996)"  # item 242 comes first
    assert data.users.ids_of([0])[0] == "196"  # first user in u.data


def _reference_item_ranks(data, seed):
    """`random_item_ranks` written with np.unique and an explicit gather (the former code)."""
    key = data.user_idx.astype(np.int64) * max(data.n_items, 1) + data.item_idx
    uniq, inverse = np.unique(key, return_inverse=True)
    users = uniq // max(data.n_items, 1)
    order = np.lexsort((np.random.default_rng(seed).random(len(uniq)), users))
    counts = np.bincount(users, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)])[users[order]]
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq)) - starts
    return rank, counts[users], inverse


def test_lean_pair_ranks_equal_the_np_unique_reference():
    rng = np.random.default_rng(4)
    for trial in range(20):
        n, n_users, n_items = (int(x) for x in rng.integers(1, [3000, 200, 150]))
        data = make_interactions(rng.integers(0, n_users, n), rng.integers(0, n_items, n),
                                 None, n_users, n_items)  # fmt: skip
        for got, want in zip(random_item_ranks(data, trial), _reference_item_ranks(data, trial),
                             strict=True):  # fmt: skip
            np.testing.assert_array_equal(got, want)
