"""Sparse neighbour computation: identical to the dense blocks it replaced, on ML-100K."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.models import knn
from recsight.models.knn import ItemKNN, UserKNN, prepare_rows, recent_items
from tests.conftest import need
from tests.models.conftest import make_interactions

# -- the dense reference: the former implementation, block of rows x all rows densified -----


def dense_top_n(sims: np.ndarray, n: int) -> sp.csr_matrix:
    b, m = sims.shape
    n = min(n, m)
    if n < m:
        cols = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        kth = np.take_along_axis(sims, cols, axis=1).min(axis=1)
        mask = sims > kth[:, None]
        need_ = n - mask.sum(axis=1)
        ties = sims == kth[:, None]
        mask |= ties & (np.cumsum(ties, axis=1) <= need_[:, None])
    else:
        mask = np.ones_like(sims, dtype=bool)
    mask &= sims > 0
    rows, cols = np.nonzero(mask)
    return sp.csr_matrix((sims[rows, cols].astype(np.float32), (rows, cols)), shape=(b, m))


def dense_knn(rows, similarity, other_means, shrinkage, neighbors, include_self):
    xn = prepare_rows(rows, similarity, other_means)
    xb = xn.copy()
    xb.data[:] = 1.0
    sims = (xn @ xn.T.tocsc()).toarray()
    if shrinkage > 0:
        co = (xb @ xb.T.tocsc()).toarray()
        sims *= co / (co + shrinkage)
    if not include_self:
        np.fill_diagonal(sims, 0.0)
    return dense_top_n(sims, neighbors)


@pytest.fixture(scope="module")
def ml100k(data_dir):
    raw = np.loadtxt(need(data_dir / "ml-100k" / "u.data"), dtype=np.int64)
    ratings = raw[:, 2].astype(np.float32)
    data = make_interactions(raw[:, 0] - 1, raw[:, 1] - 1, ratings, event_type="rating")
    data.timestamp = raw[:, 3].astype(np.float64)
    return data


@pytest.mark.parametrize(
    ("similarity", "shrinkage", "neighbors"),
    [("cosine", 0.0, 50), ("cosine", 10.0, 20), ("pearson", 5.0, 30), ("adjusted", 0.0, 40)],
)
def test_sparse_itemknn_equals_the_dense_version(ml100k, similarity, shrinkage, neighbors):
    m = ItemKNN(neighbors=neighbors, similarity=similarity, shrinkage=shrinkage).fit(ml100k)
    means = knn._row_means(m.seen_) if similarity == "adjusted" else None
    ref = dense_knn(m.seen_.T.tocsr(), similarity, means, shrinkage, neighbors, False)
    got = m.similarity_
    assert got.nnz == ref.nnz > 0
    assert (got != ref).nnz == 0  # bit-identical, ties at the cut included
    # and so are the recommendations
    users = [f"u{u}" for u in range(0, 943, 7)]
    ids, scores = m.recommend(users, k=10)
    ref_scores = (m.seen_[np.arange(0, 943, 7)] @ ref.T).toarray()
    for row, u in enumerate(range(0, 943, 7)):
        s = ref_scores[row].copy()
        s[m.seen_[u].indices] = -np.inf
        assert np.allclose(np.sort(s)[::-1][:10], scores[row], rtol=1e-6)


def test_sparse_userknn_equals_the_dense_version_on_ml100k(ml100k):
    m = UserKNN(neighbors=25, shrinkage=3.0).fit(ml100k)
    ref = dense_knn(m.seen_, "cosine", None, 3.0, 25, True)
    assert (m.similarity_ != ref).nnz == 0


def test_blocking_does_not_change_the_neighbours(ml100k, monkeypatch):
    x = ml100k.to_csr().T.tocsr()
    whole = knn.knn_matrix(x, "cosine", None, 2.0, 30, False)
    blocks = knn.row_blocks(prepare_rows(x, "cosine", None), x.T.tocsr(), budget=20_000)
    assert len(blocks) > 50  # many small blocks, covering every row once
    assert [b.start for b in blocks[1:]] == [b.stop for b in blocks[:-1]]
    monkeypatch.setattr(knn.row_blocks, "__defaults__", (20_000,))
    assert (knn.knn_matrix(x, "cosine", None, 2.0, 30, False) != whole).nnz == 0


def test_history_cap_keeps_each_users_most_recent_items():
    # u0 uses i0, i1, i2, then i0 again, then i3: most recent first i3, i0, i2, i1
    users = np.array([0, 0, 0, 0, 0, 1, 1])
    items = np.array([0, 1, 2, 0, 3, 1, 2])
    data = make_interactions(users, items)
    x = data.to_csr()
    capped = recent_items(x, data, 2)
    assert capped[0].indices.tolist() == [0, 3] and capped[0].data.tolist() == [4.0, 2.0]
    assert capped[1].indices.tolist() == [1, 2]  # within the cap: unchanged
    assert recent_items(x, data, None) is x and (recent_items(x, data, 9) != x).nnz == 0
    # item-kNN counts co-occurrences over the capped rows only: i1-i2 now only through u1
    m = ItemKNN(neighbors=5, max_user_items=2).fit(data)
    assert m.similarity_[1].indices.tolist() == [2]
    assert m.similarity_[0].indices.tolist() == [3]
    # the cap touches only the neighbour computation: scoring reads the full history
    assert m.seen_[0].nnz == 4


def test_history_cap_is_checked():
    from recsight.errors import InputError

    data = make_interactions(np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(InputError, match="max_user_items"):
        ItemKNN(max_user_items=0).fit(data)
