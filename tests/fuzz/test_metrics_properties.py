"""Property tests of the ranking metrics (`recsight.evaluation.metrics`): bounds, a perfect
ranking scores 1, invariance under permutations that must not matter, and agreement with a
slow reference written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from recsight.evaluation import metrics as M
from tests.fuzz.bounds import bounded

BOUNDED = bounded(40)
N_ITEMS = 30


@st.composite
def rankings(draw):
    """(topk item ids per user with -1 padding, truth users x items, k)."""
    n_users = draw(st.integers(1, 6))
    width = draw(st.integers(1, 10))
    topk = np.full((n_users, width), -1, dtype=np.int64)
    truth = np.zeros((n_users, N_ITEMS), dtype=np.int8)
    for u in range(n_users):
        listed = draw(st.lists(st.integers(0, N_ITEMS - 1), unique=True, max_size=width))
        topk[u, : len(listed)] = listed
        for i in draw(st.lists(st.integers(0, N_ITEMS - 1), unique=True, max_size=12)):
            truth[u, i] = 1
    k = draw(st.integers(1, width + 2))
    return topk, sp.csr_matrix(truth), k


def reference(topk: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, list[float]]:
    """Each metric per user, from its definition, one user and one rank at a time."""
    out: dict[str, list[float]] = {m: [] for m in ("p", "r", "hr", "ndcg", "mrr", "map")}
    for u in range(topk.shape[0]):
        relevant = set(truth[u].indices[truth[u].data != 0].tolist())
        ranked = [i for i in topk[u, :k].tolist()]
        hits = [i >= 0 and i in relevant for i in ranked]
        n_rel = len(relevant)
        dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h)
        idcg = sum(1 / math.log2(j + 2) for j in range(min(n_rel, k)))
        first = next((j for j, h in enumerate(hits) if h), None)
        precisions = [sum(hits[: j + 1]) / (j + 1) for j, h in enumerate(hits) if h]
        out["p"].append(sum(hits) / k)
        out["r"].append(sum(hits) / n_rel if n_rel else 0.0)
        out["hr"].append(float(any(hits)))
        out["ndcg"].append(dcg / idcg if idcg else 0.0)
        out["mrr"].append(1 / (first + 1) if first is not None else 0.0)
        out["map"].append(sum(precisions) / min(n_rel, k) if n_rel else 0.0)
    return out


def computed(hits: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    return {
        "p": M.precision_at_k(hits, k),
        "r": M.recall_at_k(hits, n_rel, k),
        "hr": M.hit_rate_at_k(hits, k),
        "ndcg": M.ndcg_at_k(hits, n_rel, k),
        "mrr": M.mrr_at_k(hits, k),
        "map": M.map_at_k(hits, n_rel, k),
    }


@BOUNDED
@given(rankings())
def test_metrics_agree_with_the_definitions_and_stay_in_0_1(case):
    topk, truth, k = case
    hits = M.hits_matrix(topk, truth)
    n_rel = np.diff(truth.indptr)
    got = computed(hits, n_rel, k)
    for name, want in reference(topk, truth, k).items():
        np.testing.assert_allclose(got[name], want, rtol=1e-12, atol=1e-12, err_msg=name)
        assert np.all((got[name] >= 0) & (got[name] <= 1 + 1e-12)), name


@BOUNDED
@given(n_rel=st.lists(st.integers(0, 15), min_size=1, max_size=8), width=st.integers(1, 12))
def test_a_perfect_ranking_scores_one(n_rel, width):
    n = np.array(n_rel)
    hits = np.arange(width)[None, :] < np.minimum(n, width)[:, None]  # relevant items first
    has = n > 0
    np.testing.assert_allclose(M.ndcg_at_k(hits, n, width)[has], 1.0)
    np.testing.assert_allclose(M.map_at_k(hits, n, width)[has], 1.0)
    np.testing.assert_allclose(M.mrr_at_k(hits, width)[has], 1.0)
    np.testing.assert_allclose(
        M.recall_at_k(hits, n, width)[has], np.minimum(n, width)[has] / n[has]
    )
    assert np.all(M.ndcg_at_k(hits, n, width)[~has] == 0)


@BOUNDED
@given(rankings(), st.randoms(use_true_random=False))
def test_permutations_that_must_not_matter(case, rnd):
    topk, truth, k = case
    hits = M.hits_matrix(topk, truth)
    n_rel = np.diff(truth.indptr)
    base = computed(hits, n_rel, k)
    # users in another order: each user's values move with them
    order = np.array(rnd.sample(range(len(hits)), len(hits)))
    moved = computed(hits[order], n_rel[order], k)
    for name in base:
        np.testing.assert_allclose(moved[name], base[name][order], err_msg=name)
    # the order inside the top-k does not change the set-based metrics
    cut = hits[:, :k].copy()
    for row in cut:
        rnd.shuffle(row)
    shuffled = computed(np.hstack([cut, hits[:, k:]]), n_rel, k)
    for name in ("p", "r", "hr"):
        np.testing.assert_allclose(shuffled[name], base[name], err_msg=name)
    # and the rank-based ones never gain from it over hits sorted to the top
    best = computed(np.sort(cut, axis=1)[:, ::-1], n_rel, k)
    for name in ("ndcg", "mrr", "map"):
        assert np.all(shuffled[name] <= best[name] + 1e-12), name
    # the catalog's item ids are labels: renaming items consistently changes nothing
    perm = np.array(rnd.sample(range(N_ITEMS), N_ITEMS))
    renamed_topk = np.where(topk >= 0, perm[np.maximum(topk, 0)], -1)
    renamed_truth = sp.csr_matrix(truth.toarray()[:, np.argsort(perm)])
    np.testing.assert_array_equal(M.hits_matrix(renamed_topk, renamed_truth), hits)
