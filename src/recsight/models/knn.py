"""Neighbourhood models: item-based and user-based k-nearest neighbours.

Similarities are computed block by block with sparse products (a block of rows against all
rows, densified, shrunk, then cut to its top-N positive neighbours), so only the top-N lists
are ever stored: ML-1M needs a few megabytes. Similarity kinds, on the training matrix X
(users x items, event weights as values):

- ``cosine``: cosine of the raw vectors;
- ``pearson``: cosine after centring each vector's stored entries on its own mean;
- ``adjusted``: adjusted cosine, centring each stored entry on the mean of the *other* side
  (user means for item vectors, item means for user vectors).

Shrinkage multiplies a similarity by ``n / (n + shrinkage)`` where n is the number of
co-occurrences. Scores are weighted sums: item-based ``X S^T`` (S's row i holds item i's
neighbours), user-based ``S X`` (a user counts among their own neighbours, which only ever
adds to items they already have, so it never changes what ``exclude_seen`` returns, and makes
a history fold-in identical to the trained user's row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.base import Recommender

SIMILARITIES = ("cosine", "pearson", "adjusted")

#: Dense floats per similarity block (rows x n_objects).
_BLOCK_FLOATS = 1 << 24


def _row_means(m: sp.csr_matrix) -> np.ndarray:
    counts = np.diff(m.indptr)
    sums = np.asarray(m.sum(axis=1)).ravel()
    return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)


def prepare_rows(
    m: sp.csr_matrix, similarity: str, other_means: np.ndarray | None
) -> sp.csr_matrix:
    """Centre (per `similarity`) and L2-normalise the rows of `m`, in float64. The sparsity
    pattern is kept even where centring gives zero (co-occurrence counts need it)."""
    m = m.astype(np.float64).tocsr(copy=True)
    if similarity == "pearson":
        m.data -= np.repeat(_row_means(m), np.diff(m.indptr))
    elif similarity == "adjusted":
        assert other_means is not None
        m.data -= other_means[m.indices]
    elif similarity != "cosine":
        raise InputError(f"similarity {similarity!r}: expected one of {', '.join(SIMILARITIES)}")
    norms = np.sqrt(np.bincount(np.repeat(np.arange(m.shape[0]), np.diff(m.indptr)),
                                weights=m.data**2, minlength=m.shape[0]))  # fmt: skip
    m.data /= np.repeat(np.where(norms > 0, norms, 1.0), np.diff(m.indptr))
    return m


def _binary(m: sp.csr_matrix) -> sp.csr_matrix:
    b = m.copy()
    b.data = np.ones_like(b.data)
    return b


def similarity_block(
    q: sp.csr_matrix,
    xn_t: sp.csc_matrix,
    xb_t: sp.csc_matrix,
    shrinkage: float,
) -> np.ndarray:
    """Dense similarities of prepared query rows `q` against all prepared rows (given
    transposed), with shrinkage by co-occurrence counts."""
    sims = (q @ xn_t).toarray()
    if shrinkage > 0:
        co = (_binary(q) @ xb_t).toarray()
        sims *= co / (co + shrinkage)
    return sims


def top_n(sims: np.ndarray, n: int) -> sp.csr_matrix:
    """Keep each row's `n` largest positive entries; equal similarities at the cut are
    kept by lower index, so the result never depends on how rows were blocked."""
    b, m = sims.shape
    n = min(n, m)
    if n < m:
        cols = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        kth = np.take_along_axis(sims, cols, axis=1).min(axis=1)
        mask = sims > kth[:, None]
        need = n - mask.sum(axis=1)
        ties = sims == kth[:, None]
        mask |= ties & (np.cumsum(ties, axis=1) <= need[:, None])
    else:
        mask = np.ones_like(sims, dtype=bool)
    mask &= sims > 0
    rows, cols = np.nonzero(mask)
    return sp.csr_matrix((sims[rows, cols].astype(np.float32), (rows, cols)), shape=(b, m))


def knn_matrix(
    rows: sp.csr_matrix,
    similarity: str,
    other_means: np.ndarray | None,
    shrinkage: float,
    neighbors: int,
    include_self: bool,
) -> sp.csr_matrix:
    """Top-N neighbour lists among the rows of `rows`: an (n x n) CSR, row r = r's
    neighbours and their similarities."""
    xn = prepare_rows(rows, similarity, other_means)
    xn_t, xb_t = xn.T.tocsc(), _binary(xn).T.tocsc()
    n = rows.shape[0]
    step = max(1, _BLOCK_FLOATS // max(n, 1))
    parts = []
    for start in range(0, n, step):
        sims = similarity_block(xn[start : start + step], xn_t, xb_t, shrinkage)
        if not include_self:
            r = np.arange(sims.shape[0])
            sims[r, start + r] = 0.0
        parts.append(top_n(sims, neighbors))
    return sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, 0), dtype=np.float32)


class _KNNBase(Recommender):
    _state = ("similarity_",)

    def __init__(
        self,
        neighbors: int = 100,
        similarity: str = "cosine",
        shrinkage: float = 0.0,
        weights: Mapping[str, float | str] | None = None,
    ):
        self.neighbors = neighbors
        self.similarity = similarity
        self.shrinkage = shrinkage
        self.weights = weights

    def _check_params(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise InputError(
                f"similarity {self.similarity!r}: expected one of {', '.join(SIMILARITIES)}"
            )
        if int(self.neighbors) < 1:
            raise InputError(f"neighbors must be >= 1, got {self.neighbors}")


class ItemKNN(_KNNBase):
    """Item-based kNN: an item scores the sum of its neighbours' weights in the history."""

    name: ClassVar[str] = "itemknn"

    def fit(self, train: Interactions) -> ItemKNN:
        self._check_params()
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        user_means = _row_means(self.seen_) if self.similarity == "adjusted" else None
        self.similarity_ = knn_matrix(
            self.seen_.T.tocsr(), self.similarity, user_means, self.shrinkage,
            int(self.neighbors), include_self=False,
        )  # fmt: skip
        self._derive()
        return self

    def _derive(self) -> None:
        super()._derive()
        if hasattr(self, "similarity_"):
            self._sim_t = self.similarity_.T.tocsr()

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return (histories.astype(np.float32) @ self._sim_t).toarray().astype(np.float32)

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return self.score_history(self.seen_[np.asarray(user_idx, dtype=np.int64)])

    def _item_similarities(self, i: int) -> np.ndarray:
        return self.similarity_[i].toarray().ravel()

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        return hist_weights * self.similarity_[item].toarray().ravel()[hist_items]


class UserKNN(_KNNBase):
    """User-based kNN: an item scores the similarity-weighted sum over the user's neighbours."""

    name: ClassVar[str] = "userknn"

    def fit(self, train: Interactions) -> UserKNN:
        self._check_params()
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        self.similarity_ = self._neighbours(self.seen_)
        return self

    def _derive(self) -> None:
        super()._derive()
        self._item_means = (
            _row_means(self.seen_.T.tocsr()) if self.similarity == "adjusted" else None
        )
        self._xn = prepare_rows(self.seen_, self.similarity, self._item_means)
        self._xn_t = self._xn.T.tocsc()
        self._xb_t = _binary(self._xn).T.tocsc()

    def _neighbours(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        q = prepare_rows(histories, self.similarity, self._item_means)
        step = max(1, _BLOCK_FLOATS // max(self.seen_.shape[0], 1))
        parts = [
            top_n(similarity_block(q[s : s + step], self._xn_t, self._xb_t, self.shrinkage),
                  int(self.neighbors))
            for s in range(0, q.shape[0], step)
        ]  # fmt: skip
        return sp.vstack(parts).tocsr()

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        s = self.similarity_[np.asarray(user_idx, dtype=np.int64)]
        return (s @ self.seen_).toarray().astype(np.float32)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return (self._neighbours(histories) @ self.seen_).toarray().astype(np.float32)

    def _item_similarities(self, i: int) -> np.ndarray:
        cols = prepare_rows(self.seen_.T.tocsr(), "cosine", None)
        return (cols @ cols[i].T).toarray().ravel()

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # sim(u, v) = sum_j q_uj xn_vj (times the shrinkage factor), so the score splits
        # exactly over history items j: sum_v f_uv q_uj xn_vj x_vi
        h = sp.csr_matrix(
            (hist_weights, (np.zeros(len(hist_items), np.int64), hist_items)),
            shape=(1, self.n_items),
        )
        nb = self._neighbours(h)
        v, s = nb.indices, nb.data.astype(np.float64)
        q = prepare_rows(h, self.similarity, self._item_means)
        qh = q.toarray().ravel()[hist_items]
        xnh = self._xn[v][:, hist_items].toarray()
        raw = xnh @ qh
        f = np.divide(s, raw, out=np.zeros_like(s), where=raw != 0)
        x_vi = self.seen_[v][:, [item]].toarray().ravel()
        return qh * (xnh.T @ (f * x_vi))
