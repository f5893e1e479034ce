"""Explicit-rating MF: the baseline, the solvers and the SVD start against hand/numpy answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.models import BiasedMF, load_model, mf
from recsight.models.mf import baseline_biases, gram_solve, solve_rows, svd_init


def test_baseline_biases_match_hand_computation():
    # ratings (u0,i0)=5, (u0,i1)=3, (u1,i0)=4; mu = 4; one sweep, both regs 1:
    # b_i0 = (1 + 0) / 3, b_i1 = -1 / 2; b_u0 = ((1 - 1/3) + (-1 + 1/2)) / 3, b_u1 = -1/3 / 2
    r = sp.csr_matrix(np.array([[5.0, 3.0], [4.0, 0.0]]))
    mu, bu, bi = baseline_biases(r, reg_user=1.0, reg_item=1.0, sweeps=1)
    assert mu == pytest.approx(4.0)
    np.testing.assert_allclose(bi, [1 / 3, -1 / 2])
    np.testing.assert_allclose(bu, [1 / 18, -1 / 6])


def _dense_ridge(m, rhs, feats, reg, weights=None, gram=None):
    out = []
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        f = feats[m.indices[lo:hi]].astype(np.float64)
        w = np.ones(hi - lo) if weights is None else weights[lo:hi]
        a = f.T @ (w[:, None] * f) + np.diag(reg[r]) + (0 if gram is None else gram)
        out.append(np.linalg.solve(a, f.T @ rhs[lo:hi]))
    return np.array(out)


def test_solvers_match_per_row_numpy():
    rng = np.random.default_rng(0)
    m = sp.random(40, 25, density=0.3, format="csr", random_state=1)
    m.data[:] = 1.0
    feats = rng.normal(size=(25, 5)).astype(np.float32)
    rhs = rng.normal(size=m.nnz)
    reg = rng.uniform(0.5, 2.0, (40, 5))
    ref = _dense_ridge(m, rhs, feats, reg)
    np.testing.assert_allclose(gram_solve(m, rhs, feats, reg), ref, rtol=1e-4, atol=1e-5)
    w = rng.uniform(0.5, 3.0, m.nnz)
    gram = feats.T.astype(np.float64) @ feats
    ref = _dense_ridge(m, rhs, feats, reg, w, gram)
    got = solve_rows(m, rhs, w, feats, reg, gram=gram)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_row_blocks_solved_in_pieces_give_the_same_bits(monkeypatch):
    """A block of many short rows is solved in pieces that bound its Gram matrices; each
    row's solve keeps its shapes, so the result is bit for bit the one-piece result."""
    rng = np.random.default_rng(3)
    m = sp.random(300, 40, density=0.05, format="csr", random_state=2)
    m.data[:] = 1.0
    feats = rng.normal(size=(40, 6)).astype(np.float32)
    rhs, w = rng.normal(size=m.nnz), rng.uniform(0.5, 3.0, m.nnz)
    reg = np.broadcast_to(np.full(6, 0.7), (300, 6))
    blocks = mf.RowBlocks(m, 6)
    whole = blocks.solve(rhs, feats, reg, w)
    monkeypatch.setattr(mf, "_BLOCK_FLOATS", 5 * 36)  # pieces of 5 rows
    assert np.array_equal(blocks.solve(rhs, feats, reg, w), whole)
    np.testing.assert_allclose(whole, _dense_ridge(m, rhs, feats, reg, w), rtol=1e-4, atol=1e-5)


def test_row_blocks_keep_only_their_rows_and_solve_empty_rows():
    """Padded positions are made per block while solving, not kept for the whole pattern
    (they were ~16 bytes a padded slot: 1.5 GB for a 100M-event fold-in); rows without
    entries (and a pattern without any) solve to zero right-hand sides."""
    rng = np.random.default_rng(5)
    m = sp.random(500, 60, density=0.1, format="csr", random_state=4)
    m.data[:] = 1.0
    blocks = mf.RowBlocks(m, 4)
    assert sum(rows.size for rows, _ in blocks.blocks) == 500  # nothing nnz-sized kept
    feats = rng.normal(size=(60, 4)).astype(np.float32)
    rhs, w = rng.normal(size=m.nnz), rng.uniform(0.5, 3.0, m.nnz)
    reg = np.broadcast_to(np.full(4, 0.7), (500, 4))
    ref = _dense_ridge(m, rhs, feats, reg, w)
    np.testing.assert_allclose(blocks.solve(rhs, feats, reg, w), ref, rtol=1e-4, atol=1e-5)
    empty = sp.csr_matrix((3, 60), dtype=np.float32)
    got = solve_rows(empty, np.zeros(0), np.zeros(0), feats, reg[:3])
    np.testing.assert_array_equal(got, np.zeros((3, 4), np.float32))


def test_solving_one_short_row_allocates_nothing_catalog_sized():
    """A served fold-in (one history over a big catalog) gathers only the history's feature
    rows: a padded copy of the whole feature matrix cost 335 ms per request at 1M items."""
    import tracemalloc

    rng = np.random.default_rng(4)
    n_items, d = 200_000, 32  # 25.6 MB of float32 features
    feats = rng.normal(size=(n_items, d)).astype(np.float32)
    cols = rng.choice(n_items, 30, replace=False)
    m = sp.csr_matrix((np.ones(30), (np.zeros(30, np.int64), cols)), shape=(1, n_items))
    rhs, w = rng.uniform(1.0, 3.0, 30), rng.uniform(0.5, 3.0, 30)
    reg = np.full((1, d), 0.7)
    gram = feats.T.astype(np.float64) @ feats
    tracemalloc.start()
    try:
        got = solve_rows(m, rhs, w, feats, reg, gram=gram)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"{peak:,} bytes traced for one 30-item row"
    ref = _dense_ridge(m.tocsr(), rhs, feats, reg, w, gram)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(12, 9), (120, 90)])
def test_svd_init_reconstructs_a_low_rank_matrix(shape):
    # dense SVD on tiny matrices, ARPACK on larger ones: both recover a rank-3 matrix
    rng = np.random.default_rng(2)
    x = rng.normal(size=(shape[0], 3)) @ rng.normal(size=(3, shape[1]))
    p, q = svd_init(sp.csr_matrix(x), 4, seed=0)
    assert p.shape == (shape[0], 4) and q.shape == (shape[1], 4)
    np.testing.assert_allclose(p @ q.T, x, atol=1e-4)


def test_default_biased_mf_beats_global_mean_and_round_trips(low_rank_ratings, tmp_path):
    train, test = low_rank_ratings
    m = BiasedMF().fit(train)
    pred = m.predict_idx(test.user_idx, test.item_idx)
    rmse = np.sqrt(np.mean((pred - test.value) ** 2))
    baseline = np.sqrt(np.mean((train.value.mean() - test.value) ** 2))
    assert rmse < 0.3 * baseline
    back = load_model(m.save(tmp_path / "mf"))
    np.testing.assert_array_equal(back.predict_idx(test.user_idx, test.item_idx), pred)
    # the last ALS half-step is the fold-in: a user's own ratings give back their row
    row = m.seen_[7]
    np.testing.assert_allclose(m.score_history(row), m.score_all(np.array([7])), atol=1e-4)
