import numpy as np
import pytest

from recsight.errors import InputError
from recsight.evaluation import metrics as M
from recsight.evaluation.protocol import evaluate_ranking, evaluate_rating
from recsight.models.topk import id_keys, top_k

from .fakes import FixedRatings, FixedScores, interactions

# train: u0 {0}, u1 {1, 2}; test: u0 {1, 3}, u1 {0, 2 (seen in train)}, u2 {4} (cold user)
TRAIN = interactions([0, 1, 1], [0, 1, 2], 3, 5)
TEST = interactions([0, 0, 1, 1, 2], [1, 3, 0, 2, 4], 3, 5)
SCORES = np.array([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [0, 0, 0, 0, 9]], dtype=np.float32)


def test_full_ranking_hand_computed():
    res = evaluate_ranking(FixedScores(SCORES), TRAIN, TEST, ks=(1, 3))
    assert res.protocol == "full ranking"
    np.testing.assert_array_equal(res.users, [0, 1, 2])
    # u0 ranks [1, 2, 3, 4] (item 0 masked): hits at ranks 1 and 3 of 2 relevant
    # u1 ranks [4, 3, 0] (items 1, 2 masked); item 2 dropped from truth as seen in train
    # u2 is cold (no train event): like `recommend`, it gets train popularity, where items
    # 0-2 (one user each) come before item 4 (none): a miss whatever its own scores say
    np.testing.assert_allclose(res.per_user["recall@3"], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(res.per_user["hr@1"], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(res.per_user["mrr@3"], [1.0, 1 / 3, 0.0])
    idcg2 = 1 + 1 / np.log2(3)
    np.testing.assert_allclose(res.per_user["ndcg@3"], [(1 + 0.5) / idcg2, 0.5, 0.0])
    np.testing.assert_allclose(res.per_user["precision@3"], [2 / 3, 1 / 3, 0.0])
    assert res.summary["ndcg@3"] == pytest.approx(res.per_user["ndcg@3"].mean())
    np.testing.assert_array_equal(res.cold, [False, False, True])
    d = res.to_dict()
    assert d["cold_users"] == {"n_users": 1, "metrics": pytest.approx(
        {k: v[2] for k, v in res.per_user.items()})}  # fmt: skip
    assert d["warm_users"]["n_users"] == 2
    assert d["warm_users"]["metrics"]["ndcg@3"] == pytest.approx((1.5 / idcg2 + 0.5) / 2)
    # lists at 3: u0 {1,2,3}, u1 {4,3,0}, u2 {0,1,2}: all 5 items covered; at 1: u0 1, u1 4
    # and u2 whichever of 0-2 the tie rule puts first
    u2_first = top_k(np.array([[1, 1, 1, 0, 0]]), 1, id_keys(["u2"]), id_keys(TRAIN.items.ids))
    assert res.summary["coverage@3"] == pytest.approx(1.0)
    assert res.summary["coverage@1"] == pytest.approx(len({1, 4, int(u2_first[0][0, 0])}) / 5)


def test_exclude_seen_false_counts_repeats():
    res = evaluate_ranking(FixedScores(SCORES), TRAIN, TEST, ks=(2,), exclude_seen=False)
    # u1 truth is {0, 2}; ranking [4, 3, 2, 1, 0] -> no hit in top 2
    np.testing.assert_allclose(res.per_user["recall@2"], [0.5, 0.0, 0.0])
    assert res.metadata["exclude_seen"] is False


def test_users_with_only_seen_test_items_are_skipped():
    test = interactions([0, 1], [1, 1], 3, 5)  # u1's test item was in its train
    res = evaluate_ranking(FixedScores(SCORES), TRAIN, test, ks=(1,))
    np.testing.assert_array_equal(res.users, [0])
    assert res.n_skipped == 1


def _brute_force(scores, train, test, k):
    ndcg, recall = [], []
    for u in np.unique(test.user_idx):
        seen = set(train.item_idx[train.user_idx == u])
        truth = set(test.item_idx[test.user_idx == u]) - seen
        if not truth:
            continue
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen][:k]
        hits = np.array([[i in truth for i in ranked]])
        ndcg.append(M.ndcg_at_k(hits, np.array([len(truth)]), k)[0])
        recall.append(len(truth & set(ranked)) / len(truth))
    return np.array(ndcg), np.array(recall)


def test_chunked_matches_per_user_loop_and_chunk_size():
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 30
    pairs = rng.random((n_users, n_items)) < 0.3
    u, i = np.nonzero(pairs)
    side = rng.random(len(u)) < 0.7
    train = interactions(list(u[side]), list(i[side]), n_users, n_items)
    test = interactions(list(u[~side]), list(i[~side]), n_users, n_items)
    scores = rng.random((n_users, n_items)).astype(np.float32)
    model = FixedScores(scores)
    small = evaluate_ranking(model, train, test, ks=(5,), batch_users=7)
    assert max(model.calls) <= 7
    big = evaluate_ranking(FixedScores(scores), train, test, ks=(5,), batch_users=1000)
    ndcg, recall = _brute_force(scores, train, test, 5)
    np.testing.assert_allclose(small.per_user["ndcg@5"], ndcg)
    np.testing.assert_allclose(small.per_user["recall@5"], recall)
    for key in small.per_user:
        np.testing.assert_allclose(small.per_user[key], big.per_user[key])


def test_sampled_negatives_labelled_and_all_negatives_equals_full():
    rng = np.random.default_rng(4)
    scores = rng.random((3, 5)).astype(np.float32)
    full = evaluate_ranking(FixedScores(scores), TRAIN, TEST, ks=(3,))
    all_neg = evaluate_ranking(FixedScores(scores), TRAIN, TEST, ks=(3,), sampled_negatives=5)
    assert all_neg.protocol == "sampled (5 negatives)"
    np.testing.assert_allclose(full.per_user["ndcg@3"], all_neg.per_user["ndcg@3"])
    one = evaluate_ranking(FixedScores(scores), TRAIN, TEST, ks=(3,), sampled_negatives=1)
    # with one negative, u2 ranks its item among 2 candidates: hit within 3 always
    assert one.per_user["hr@3"][2] == 1.0
    assert one.protocol == "sampled (1 negatives)"


def test_top_k_orders_and_pads_masked():
    s = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
    keys = (id_keys(["u"]), id_keys(["a", "b", "c", "d"]))
    np.testing.assert_array_equal(top_k(s, 3, *keys)[0], [[1, 3, 0]])
    np.testing.assert_array_equal(top_k(s, 6, *keys)[0], [[1, 3, 0, -1, -1, -1]])


def test_ranking_rejects_bad_arguments():
    with pytest.raises(InputError, match="metrics"):
        evaluate_ranking(FixedScores(SCORES), TRAIN, TEST, metrics=["nope"])
    with pytest.raises(InputError, match="ks"):
        evaluate_ranking(FixedScores(SCORES), TRAIN, TEST, ks=(0,))
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(FixedScores(SCORES[:, :4]), TRAIN, TEST)


def test_rating_hand_computed_and_per_user():
    test = interactions([0, 0, 1, 2], [0, 1, 0, 3], 3, 5, values=[4, 2, 5, 3])
    pred = np.full((3, 5), 3.0)
    pred[2, 3] = np.nan  # unscorable pair is reported, not scored
    res = evaluate_rating(FixedRatings(pred), test, batch_size=2)
    assert res.n_ratings == 3 and res.n_unscored == 1
    assert res.mse == pytest.approx((1 + 1 + 4) / 3)
    assert res.rmse == pytest.approx(np.sqrt(2.0))
    assert res.mae == pytest.approx(4 / 3)
    np.testing.assert_array_equal(res.users, [0, 1])
    np.testing.assert_allclose(res.per_user["mse"], [1.0, 4.0])
    np.testing.assert_array_equal(res.counts, [2, 1])
