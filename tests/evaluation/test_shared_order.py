"""Popularity and cold users ranked from one global order (`top_k_shared`): the evaluator
and `recommend` give exactly the lists and metrics of ranking every user's full score row."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.data.splits import concat, split
from recsight.evaluation import protocol
from recsight.evaluation.protocol import evaluate_ranking, ranking_pairs
from recsight.models import base
from recsight.models.knn import ItemKNN
from recsight.models.popular import MostPopular
from recsight.models.topk import TIE_SEED, top_k
from tests.conftest import need
from tests.models.conftest import make_interactions

N_COLD = 40


def _dense_shared(scores, k, masked, user_keys, item_keys, seed=TIE_SEED):
    """The reference: `top_k` over the shared row repeated per user, masks set to -inf."""
    full = np.broadcast_to(np.asarray(scores, np.float32), (len(user_keys), len(scores))).copy()
    if masked is not None:
        r, c = masked.nonzero()
        full[r, c] = -np.inf
    return top_k(full, k, user_keys, item_keys, seed)


class Dense:
    """A model's scores without `shared_scores`: every warm user takes the chunked path."""

    def __init__(self, model):
        self.model = model
        self.seen_ = model.seen_
        self.item_popularity_ = model.item_popularity_

    def score_all(self, user_idx):
        return self.model.score_all(user_idx)


@pytest.fixture(scope="module")
def ml100k(data_dir):
    """ML-100K split by user_random:0.8, with N_COLD users' train events moved to test (cold
    users); popularity over 1,682 items has long runs of tied counts."""
    raw = np.loadtxt(need(data_dir / "ml-100k" / "u.data"), dtype=np.int64)
    data = make_interactions(raw[:, 0] - 1, raw[:, 1] - 1, raw[:, 2].astype(np.float32))
    parts = split(data, "user_random:0.8", seed=3)
    cold = np.isin(parts.train.user_idx, np.arange(N_COLD))
    return parts.train.subset(~cold), concat(parts.test, parts.train.subset(cold))


@pytest.mark.parametrize("exclude_seen", [True, False])
def test_popularity_evaluation_equals_the_dense_ranking(ml100k, monkeypatch, exclude_seen):
    train, test = ml100k
    pop = MostPopular().fit(train)
    kw = {"ks": (5, 10, 50), "exclude_seen": exclude_seen, "batch_users": 97}
    fast = evaluate_ranking(pop, train, test, **kw)
    assert fast.cold.sum() == N_COLD
    dense = evaluate_ranking(Dense(pop), train, test, **kw)  # warm users: full score rows
    monkeypatch.setattr(protocol, "top_k_shared", _dense_shared)
    dense_cold = evaluate_ranking(Dense(pop), train, test, **kw)  # and cold users too
    for ref in (dense, dense_cold):
        np.testing.assert_array_equal(fast.users, ref.users)
        assert fast.per_user.keys() == ref.per_user.keys()
        for key, v in fast.per_user.items():
            np.testing.assert_array_equal(v, ref.per_user[key], err_msg=key)
        assert fast.summary == ref.summary


def test_cold_users_of_a_personal_model_equal_the_dense_fallback(ml100k, monkeypatch):
    train, test = ml100k
    knn = ItemKNN(neighbors=20).fit(train)
    pairs = ranking_pairs(train, test)
    fast = evaluate_ranking(knn, train, test, ks=(10,), pairs=pairs)
    monkeypatch.setattr(protocol, "top_k_shared", _dense_shared)
    ref = evaluate_ranking(knn, train, test, ks=(10,))
    assert fast.summary == ref.summary
    for key, v in fast.per_user.items():
        np.testing.assert_array_equal(v, ref.per_user[key], err_msg=key)


def test_popularity_is_never_scored_as_a_dense_block(ml100k):
    class NoBlocks(MostPopular):
        def score_all(self, user_idx):
            raise AssertionError("a users x items block was built")

    train, test = ml100k
    res = evaluate_ranking(NoBlocks().fit(train), train, test, ks=(10,), metrics=("ndcg",))
    assert res.summary["ndcg@10"] > 0.05  # popularity on ML-100K, far above random


def test_pairs_made_for_another_setting_are_refused(ml100k):
    train, test = ml100k
    with pytest.raises(ValueError, match="pairs"):
        evaluate_ranking(
            MostPopular().fit(train), train, test, pairs=ranking_pairs(train, test, False)
        )


@pytest.mark.parametrize("make", [lambda: MostPopular(half_life_days=30.0), ItemKNN])
def test_recommend_equals_the_dense_ranking(ml100k, monkeypatch, make):
    """Every user (cold ones included), with seen items excluded or not and a candidate
    list, gets `top_k`'s list over the full row."""
    train, _ = ml100k
    model = make().fit(train)
    users = list(train.users.ids)
    cands = list(train.items.ids[::3])
    got = [model.recommend(users, k=30, exclude_seen=e, candidates=c)
           for e in (True, False) for c in (None, cands)]  # fmt: skip
    monkeypatch.setattr(base, "top_k_shared", _dense_shared)
    want = [model.recommend(users, k=30, exclude_seen=e, candidates=c)
            for e in (True, False) for c in (None, cands)]  # fmt: skip
    for (ids, scores), (ref_ids, ref_scores) in zip(got, want, strict=True):
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)
    assert got[0][0][0][0] is not None
