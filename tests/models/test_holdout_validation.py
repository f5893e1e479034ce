"""`recsight.models.validation.holdout_ndcg` (what models select on while they fit) equals the
evaluator's NDCG (`evaluate_ranking`), including ties, cold users, items both trained on and
held out, user restrictions and user sampling."""

from __future__ import annotations

import numpy as np
import pytest
from evaluation.fakes import FixedScores, interactions

from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.validation import holdout_ndcg


def _data(seed: int):
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 40
    # users 0-9 have no training rows (ranked by popularity); duplicates and train/test overlap
    tr_u = rng.integers(10, n_users, 1500)
    te_u = rng.integers(0, n_users, 400)
    train = interactions(tr_u.tolist(), rng.integers(0, n_items, 1500).tolist(), n_users, n_items)
    test = interactions(te_u.tolist(), rng.integers(0, n_items, 400).tolist(), n_users, n_items)
    # integer scores: many ties, broken by the shared hash rule
    scores = rng.integers(0, 4, (n_users, n_items)).astype(np.float32)
    return train, test, FixedScores(scores)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_equals_the_evaluators_ndcg(seed, k):
    train, test, model = _data(seed)
    ref = evaluate_ranking(model, train, test, ks=(k,), metrics=("ndcg",), batch_users=7)
    got = holdout_ndcg(model, train, test, k, batch_users=13)
    assert got == pytest.approx(ref.summary[f"ndcg@{k}"], rel=1e-6)


def test_equals_it_on_restricted_and_sampled_users():
    train, test, model = _data(3)
    users = np.arange(0, 120, 2)
    ref = evaluate_ranking(model, train, test, ks=(10,), metrics=("ndcg",), users=users)
    assert holdout_ndcg(model, train, test, 10, users=users) == pytest.approx(
        ref.summary["ndcg@10"], rel=1e-6
    )
    ref = evaluate_ranking(model, train, test, ks=(10,), metrics=("ndcg",), max_test_users=25,
                           seed=4)  # fmt: skip
    assert holdout_ndcg(model, train, test, 10, max_users=25, seed=4) == pytest.approx(
        ref.summary["ndcg@10"], rel=1e-6
    )


def test_a_perfect_scorer_scores_one_and_no_user_gives_nan():
    train = interactions([0, 1], [0, 1], 2, 3)
    test = interactions([0, 1], [2, 2], 2, 3)
    perfect = FixedScores(np.array([[0, 0, 1], [0, 0, 1]], dtype=np.float32))
    assert holdout_ndcg(perfect, train, test, 2) == pytest.approx(1.0)
    assert np.isnan(holdout_ndcg(perfect, train, train, 2))  # every held-out item was trained on
