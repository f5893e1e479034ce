import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import log_loss, roc_auc_score

from recsight.evaluation import metrics as M

HITS = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
NREL = np.array([3, 2, 1])


def test_ranking_metrics_hand_computed():
    np.testing.assert_allclose(M.precision_at_k(HITS, 3), [2 / 3, 0, 1 / 3])
    np.testing.assert_allclose(M.recall_at_k(HITS, NREL, 3), [2 / 3, 0, 1])
    np.testing.assert_allclose(M.hit_rate_at_k(HITS, 3), [1, 0, 1])
    idcg0 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    np.testing.assert_allclose(M.ndcg_at_k(HITS, NREL, 3), [1.5 / idcg0, 0, 1 / np.log2(3)])
    np.testing.assert_allclose(M.mrr_at_k(HITS, 3), [1, 0, 0.5])
    np.testing.assert_allclose(M.map_at_k(HITS, NREL, 3), [(1 + 2 / 3) / 3, 0, 0.5])


def test_ranking_metrics_cutoff_one_and_zero_relevant():
    np.testing.assert_allclose(M.precision_at_k(HITS, 1), [1, 0, 0])
    np.testing.assert_allclose(M.ndcg_at_k(HITS, NREL, 1), [1, 0, 0])
    assert M.recall_at_k(np.zeros((1, 2), bool), np.array([0]), 2)[0] == 0.0
    with pytest.raises(ValueError):
        M.precision_at_k(HITS, 0)


def test_ndcg_perfect_ranking_is_one():
    hits = np.array([[1, 1, 0, 0]], dtype=bool)
    assert M.ndcg_at_k(hits, np.array([2]), 4)[0] == pytest.approx(1.0)
    assert M.map_at_k(hits, np.array([2]), 4)[0] == pytest.approx(1.0)


def test_hits_matrix_marks_relevant_and_ignores_padding():
    truth = sp.csr_matrix(np.array([[0, 1, 0, 1], [1, 0, 0, 0]]))
    topk = np.array([[3, 0, 1], [2, -1, -1]])
    np.testing.assert_array_equal(M.hits_matrix(topk, truth), [[1, 0, 1], [0, 0, 0]])


def test_intra_list_diversity_hand_and_brute_force():
    vecs = M.normalize_rows(np.array([[1.0, 0], [2.0, 0], [0, 3.0], [0, 0]]))
    ild = M.intra_list_diversity(np.array([[0, 1, -1], [0, 2, -1], [0, 1, 2], [0, 3, -1]]), vecs)
    np.testing.assert_allclose(ild, [0.0, 1.0, 2 / 3, 1.0])
    rng = np.random.default_rng(0)
    raw = rng.random((12, 5))
    unit = M.normalize_rows(raw)
    topk = np.array([rng.choice(12, 4, replace=False) for _ in range(6)])
    dense = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    expected = []
    for row in topk:
        sims = dense[row] @ dense[row].T
        expected.append(1 - (sims.sum() - 4) / 12)
    np.testing.assert_allclose(M.intra_list_diversity(topk, unit), expected)


def test_popularity_metrics():
    counts = np.array([10, 5, 1, 0, 4])
    topk = np.array([[0, 1], [2, 3]])
    np.testing.assert_allclose(M.average_popularity(topk, counts), [7.5, 0.5])
    np.testing.assert_allclose(
        M.novelty(topk, counts, 10), [(0 + -np.log2(0.5)) / 2, (-np.log2(0.1) * 2) / 2]
    )
    tail = M.long_tail_items(counts, head_share=0.5)  # 4 active items -> head = {0, 1}
    np.testing.assert_array_equal(tail, [False, False, True, True, True])
    np.testing.assert_allclose(M.long_tail_share(topk, tail), [0, 1])
    assert M.catalog_coverage(np.array([[0, 1], [1, -1]]), 5) == pytest.approx(0.4)


def test_rating_errors_hand_computed():
    t, p = np.array([4.0, 3.0, 5.0]), np.array([3.5, 3.0, 3.0])
    assert M.mse(t, p) == pytest.approx((0.25 + 0 + 4) / 3)
    assert M.rmse(t, p) == pytest.approx(np.sqrt(4.25 / 3))
    assert M.mae(t, p) == pytest.approx(2.5 / 3)
    ids, means = M.group_means(np.array([1.0, 3.0, 5.0]), np.array([7, 2, 7]))
    np.testing.assert_array_equal(ids, [2, 7])
    np.testing.assert_allclose(means, [3.0, 3.0])


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.random(500) + 0.3 * y, 1)  # rounding creates many ties
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert M.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        M.auc([1, 1], [0.2, 0.3])


def test_gauc_is_weighted_mean_of_group_aucs():
    rng = np.random.default_rng(2)
    g = rng.integers(0, 6, 400)
    y = rng.integers(0, 2, 400)
    s = rng.random(400) + 0.2 * y
    g[:5], y[:5] = 99, 1  # a one-class group is skipped
    aucs, sizes = [], []
    for grp in np.unique(g):
        m = g == grp
        if len(np.unique(y[m])) == 2:
            aucs.append(roc_auc_score(y[m], s[m]))
            sizes.append(m.sum())
    assert M.gauc(y, s, g) == pytest.approx(np.average(aucs, weights=sizes))
    assert M.gauc(y, s, g, weight="uniform") == pytest.approx(np.mean(aucs))


def test_logloss_matches_sklearn():
    y = np.array([1, 0, 1, 1, 0])
    p = np.array([0.9, 0.2, 0.6, 0.99, 0.4])
    assert M.logloss(y, p) == pytest.approx(log_loss(y, p))
