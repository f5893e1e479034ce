"""`top_k_shared`: the lists `top_k` gives for one score row shared by every user (popularity,
the cold-user fallback), taken from one global order without a dense users x items block."""

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.models import topk
from recsight.models.topk import id_keys, top_k, top_k_shared


def _dense_reference(scores, masked, k, ukeys, ikeys):
    """`top_k` over the full rows: the shared scores repeated, each row's mask set to -inf."""
    n = len(ukeys)
    full = np.broadcast_to(np.asarray(scores, np.float32), (n, len(scores))).copy()
    if masked is not None:
        r, c = masked.nonzero()
        full[r, c] = -np.inf
    return top_k(full, k, ukeys, ikeys)


def _random_case(rng, trial):
    m = int(rng.integers(1, 80))
    n = int(rng.integers(1, 25))
    k = int(rng.integers(1, 20))  # often more than the unmasked items: padded rows
    scores = rng.integers(0, 4, m).astype(np.float32)  # heavy ties
    if trial % 3 == 0:
        scores[rng.random(m) < 0.2] = -np.inf
    if trial % 5 == 0:
        scores[rng.random(m) < 0.1] = np.nan
    if trial % 7 == 0:
        scores[rng.random(m) < 0.1] = np.inf  # ranks as -inf, as in top_k
    masked = sp.random(n, m, density=float(rng.random()) * 0.8, format="csr", random_state=trial)
    masked.data[:] = 1.0
    ukeys = id_keys([f"u{trial}-{i}" for i in range(n)])
    ikeys = id_keys([f"i{j}" for j in range(m)])
    return scores, masked, k, ukeys, ikeys


def test_equals_top_k_over_full_rows_with_heavy_ties_masks_and_short_catalogs():
    rng = np.random.default_rng(0)
    for trial in range(400):
        scores, masked, k, ukeys, ikeys = _random_case(rng, trial)
        want_cols, want_vals = _dense_reference(scores, masked, k, ukeys, ikeys)
        cols, vals = top_k_shared(scores, k, masked, ukeys, ikeys)
        np.testing.assert_array_equal(cols, want_cols, err_msg=f"trial {trial}")
        np.testing.assert_array_equal(vals, want_vals, err_msg=f"trial {trial}")


def test_boundary_ties_are_ranked_by_each_users_keys():
    """Every item ties: each user's list is the items with the smallest tie keys of that
    user, not the first k of the global order (which would be the same for everyone)."""
    m, k = 200, 5
    scores = np.ones(m, np.float32)
    ukeys = id_keys([f"u{i}" for i in range(30)])
    ikeys = id_keys([f"i{j}" for j in range(m)])
    cols, _ = top_k_shared(scores, k, None, ukeys, ikeys)
    want, _ = _dense_reference(scores, None, k, ukeys, ikeys)
    np.testing.assert_array_equal(cols, want)
    assert len({tuple(r) for r in cols}) == 30  # users differ in their lists
    # a tie group straddling the k-th position: 3 clear winners, then 50 tied items
    scores = np.r_[[9.0, 8.0, 7.0], np.full(50, 2.0), np.zeros(m - 53)].astype(np.float32)
    cols, _ = top_k_shared(scores, k, None, ukeys, ikeys)
    want, _ = _dense_reference(scores, None, k, ukeys, ikeys)
    np.testing.assert_array_equal(cols, want)
    np.testing.assert_array_equal(cols[:, :3], np.tile([0, 1, 2], (30, 1)))


def test_blocks_of_rows_give_the_same_lists(monkeypatch):
    rng = np.random.default_rng(5)
    m, n, k = 500, 60, 10
    scores = rng.integers(0, 30, m).astype(np.float32)
    masked = sp.random(n, m, density=0.1, format="csr", random_state=1)
    ukeys = id_keys([f"u{i}" for i in range(n)])
    ikeys = id_keys([f"i{j}" for j in range(m)])
    whole = top_k_shared(scores, k, masked, ukeys, ikeys)
    monkeypatch.setattr(topk, "_SHARED_BLOCK", 7)  # about one row per block
    blocks = top_k_shared(scores, k, masked, ukeys, ikeys)
    np.testing.assert_array_equal(whole[0], blocks[0])
    want, _ = _dense_reference(scores, masked, k, ukeys, ikeys)
    np.testing.assert_array_equal(blocks[0], want)


def test_large_catalog_matches_the_prefiltered_top_k():
    """At a catalog size where `top_k` takes its threshold prefilter, a popularity-like
    vector (long tail of small integer counts) ranks identically."""
    rng = np.random.default_rng(2)
    m, n, k = topk.PREFILTER_MIN_COLUMNS + 11, 8, 20
    scores = np.floor(rng.zipf(1.3, m).clip(max=5000)).astype(np.float32)
    masked = sp.random(n, m, density=0.0005, format="csr", random_state=3)
    ukeys = id_keys([f"u{i}" for i in range(n)])
    ikeys = id_keys([f"i{j}" for j in range(m)])
    cols, vals = top_k_shared(scores, k, masked, ukeys, ikeys)
    want_cols, want_vals = _dense_reference(scores, masked, k, ukeys, ikeys)
    np.testing.assert_array_equal(cols, want_cols)
    np.testing.assert_array_equal(vals, want_vals)


def test_bad_shapes_are_refused():
    keys = id_keys(["a", "b"])
    with pytest.raises(ValueError, match="item_keys"):
        top_k_shared(np.ones(3), 2, None, keys, keys)
    with pytest.raises(ValueError, match="masked"):
        top_k_shared(np.ones(2), 2, sp.csr_matrix((3, 2)), keys, keys)
    with pytest.raises(ValueError, match="k must be"):
        top_k_shared(np.ones(2), 0, None, keys, keys)
