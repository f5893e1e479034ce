"""Cold users in evaluation get what users get from `recommend` (and serving): the
popularity fallback for an empty history, not whatever a model's scores are for a row it
never saw (zeros for EASE and kNN: an order decided by ties). Their metrics are reported
apart."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.evaluation import metrics as M
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.ease import EASE
from recsight.models.knn import ItemKNN

from .fakes import interactions

N_WARM, N_COLD, N_ITEMS = 30, 4, 25


def _data():
    """Warm users click 6 items each, skewed to low item numbers (items 0-2 the most
    popular); cold users have test events only, on the popular items."""
    rng = np.random.default_rng(3)
    p = 1.0 / np.arange(1, N_ITEMS + 1)
    us, its = [], []
    for u in range(N_WARM):
        chosen = rng.choice(N_ITEMS, 6, replace=False, p=p / p.sum())
        us += [u] * 6
        its += list(chosen)
    n = len(us)
    test_mask = np.zeros(n + 3 * N_COLD, dtype=bool)
    test_mask[np.arange(5, n, 6)] = True  # each warm user's last click
    test_mask[n:] = True
    for c in range(N_COLD):
        us += [N_WARM + c] * 3
        its += [0, 1, 2]
    data = interactions(us, its, N_WARM + N_COLD, N_ITEMS)
    return data.subset(~test_mask), data.subset(test_mask)


def _ndcg_of_lists(model, train, test, users, k):
    ids, _ = model.recommend(list(train.users.ids[users]), k=k)
    out = []
    for u, row in zip(users, ids, strict=True):
        truth = set(test.item_idx[test.user_idx == u]) - set(train.item_idx[train.user_idx == u])
        idx = [int(train.items.index_of([i])[0]) for i in row if i is not None]
        hits = np.array([[i in truth for i in idx]])
        out.append(M.ndcg_at_k(hits, np.array([len(truth)]), k)[0])
    return np.array(out)


@pytest.mark.parametrize("make", [lambda: EASE(reg=10.0), lambda: ItemKNN(neighbors=10)])
def test_evaluator_scores_every_user_as_recommend_ranks_them(make):
    train, test = _data()
    model = make().fit(train)
    res = evaluate_ranking(model, train, test, ks=(5,), metrics=("ndcg",))
    expected = _ndcg_of_lists(model, train, test, res.users, 5)
    np.testing.assert_allclose(res.per_user["ndcg@5"], expected, atol=1e-6)
    cold = res.users >= N_WARM
    np.testing.assert_array_equal(res.cold, cold)
    assert cold.sum() == N_COLD
    # the popular items are what a cold user is shown, and here what they clicked (a random
    # order of 25 items would give them about 0.2)
    assert (res.per_user["ndcg@5"][cold] > 0.9).all()
    d = res.to_dict()
    assert d["cold_users"]["n_users"] == N_COLD
    assert d["cold_users"]["metrics"]["ndcg@5"] == pytest.approx(expected[cold].mean())
    assert d["warm_users"]["metrics"]["ndcg@5"] == pytest.approx(expected[~cold].mean())


def test_cold_users_are_not_scored_by_the_model():
    """The model is asked only for the users it can score."""
    asked: list[int] = []

    class Recorder:
        def score_all(self, user_idx: np.ndarray) -> np.ndarray:
            asked.extend(int(u) for u in user_idx)
            return np.zeros((len(user_idx), N_ITEMS), dtype=np.float32)

    train, test = _data()
    evaluate_ranking(Recorder(), train, test, ks=(5,), metrics=("ndcg",))
    assert sorted(asked) == list(range(N_WARM))


def test_leaderboard_rows_report_cold_users_apart():
    from recsight.evaluation.leaderboard import ModelRun, build_leaderboard

    train, test = _data()
    res = evaluate_ranking(EASE(reg=10.0).fit(train), train, test, ks=(5,), metrics=("ndcg",))
    board = build_leaderboard("t", "ranking", [ModelRun("ease", "ease", {}, res, 0.0, 0.0)])
    row = board.to_dict()["models"][0]
    assert row["cold_users"]["n_users"] == N_COLD
    assert row["cold_users"]["metrics"]["ndcg@5"] == pytest.approx(
        res.per_user["ndcg@5"][res.cold].mean()
    )
