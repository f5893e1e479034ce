"""Neighbourhood models: item-based and user-based k-nearest neighbours.

Similarities are computed block by block with sparse products that stay sparse (a block of
rows against all rows, shrunk by co-occurrence counts on the stored entries only, then cut to
each row's top-N positive neighbours), so nothing catalog x catalog is ever dense and only the
top-N lists are kept: blocks are sized by the co-occurrences they produce, not by the catalog.
Item-kNN counts co-occurrences over each user's `max_user_items` most recent items only, so
one very active user (a bot, a crawler) adds at most that many squared pairs. Similarity
kinds, on the training matrix X (users x items, event weights as values):

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
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.base import Recommender

SIMILARITIES = ("cosine", "pearson", "adjusted")

#: Co-occurrences (stored entries of a similarity block) computed at once; bounds memory.
_BLOCK_PAIRS = 1 << 24


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


def cooccurrences(q: sp.csr_matrix, xb_t: sp.csr_matrix) -> sp.csr_matrix:
    """Co-occurrence counts of query rows `q` with all rows (their binary patterns given
    transposed as `xb_t`): entry (r, s) = how many columns r and s share."""
    return (_binary(q) @ xb_t).tocsr()


def similarity_block(
    q: sp.csr_matrix,
    xn_t: sp.csr_matrix,
    xb_t: sp.csr_matrix,
    shrinkage: float,
) -> sp.csr_matrix:
    """Sparse similarities of prepared query rows `q` against all prepared rows (given
    transposed), shrunk by co-occurrence counts; only co-occurring pairs are stored."""
    sims = (q @ xn_t).tocsr()
    if shrinkage > 0:
        co = cooccurrences(q, xb_t)
        co.data = co.data / (co.data + shrinkage)
        sims = sims.multiply(co).tocsr()  # entry-wise: the pattern stays sims' own
    return sims


def top_n(sims: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep each row's `n` largest positive stored entries; equal similarities at the cut
    are kept by lower index, so the result never depends on how rows were blocked."""
    sims = sims.tocsr()
    sims.sum_duplicates()
    rows = np.repeat(np.arange(sims.shape[0]), np.diff(sims.indptr))
    pos = sims.data > 0
    rows, cols, vals = rows[pos], sims.indices[pos], sims.data[pos]
    order = np.lexsort((cols, -vals, rows))  # by row, best first, ties by lower index
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(sims.shape[0]))
    keep = np.arange(len(rows)) - starts[rows] < n
    return sp.csr_matrix(
        (vals[keep].astype(np.float32), (rows[keep], cols[keep])), shape=sims.shape
    )


def row_blocks(q: sp.csr_matrix, x_t: sp.csr_matrix, budget: int = _BLOCK_PAIRS) -> list[slice]:
    """Consecutive row ranges of `q` whose products with `x_t` hold at most about `budget`
    stored entries each (counted as multiply-adds, an upper bound on the entries)."""
    feature_nnz = np.diff(x_t.indptr).astype(np.float64)  # rows of x having each feature
    work = np.bincount(
        np.repeat(np.arange(q.shape[0]), np.diff(q.indptr)),
        weights=feature_nnz[q.indices],
        minlength=q.shape[0],
    )
    block = np.floor((np.cumsum(work) - work) / budget).astype(np.int64)
    cuts = np.flatnonzero(np.diff(block)) + 1
    bounds = [0, *cuts.tolist(), q.shape[0]]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def knn_matrix(
    rows: sp.csr_matrix,
    similarity: str,
    other_means: np.ndarray | None,
    shrinkage: float,
    neighbors: int,
    include_self: bool,
    queries: np.ndarray | None = None,
) -> sp.csr_matrix:
    """Top-N neighbour lists among the rows of `rows`: an (n x n) CSR, row r = r's
    neighbours and their similarities. With `queries` (row indices), only those rows' lists,
    as a (len(queries) x n) CSR in that order (what unlearning recomputes)."""
    xn = prepare_rows(rows, similarity, other_means)
    xn_t, xb_t = xn.T.tocsr(), _binary(xn).T.tocsr()
    n = rows.shape[0]
    q_idx = np.arange(n) if queries is None else np.asarray(queries, dtype=np.int64)
    q = xn if queries is None else xn[q_idx]
    parts = []
    for block in row_blocks(q, xn_t):
        sims = similarity_block(q[block], xn_t, xb_t, shrinkage)
        if not include_self:
            sims = sims.tocoo()
            off = q_idx[block][sims.row] != sims.col
            sims = sp.csr_matrix((sims.data[off], (sims.row[off], sims.col[off])), sims.shape)
        parts.append(top_n(sims, neighbors))
    if not parts:
        return sp.csr_matrix((len(q_idx), n), dtype=np.float32)
    return sp.vstack(parts).tocsr()


def recent_items(x: sp.csr_matrix, train: Interactions, cap: int | None) -> sp.csr_matrix:
    """`x` (users x items) with each user's row cut to the `cap` items they used most
    recently (by last event time, then ingest order); rows within the cap are unchanged."""
    x = x.tocsr()
    deg = np.diff(x.indptr)
    if cap is None or not (deg > cap).any():
        return x
    if train.timestamp is None:
        order = np.argsort(train.seq, kind="stable")
    else:
        order = np.lexsort((train.seq, np.nan_to_num(train.timestamp, nan=-np.inf)))
    key = train.user_idx.astype(np.int64) * x.shape[1] + train.item_idx
    recency = np.empty(len(order), np.int64)
    recency[order] = np.arange(len(order))
    # last use of each (user, item) pair, looked up for the stored entries of x
    uniq, inv = np.unique(key, return_inverse=True)
    last = np.full(len(uniq), -1, np.int64)
    np.maximum.at(last, inv, recency)
    rows = np.repeat(np.arange(x.shape[0]), deg)
    entry_key = rows.astype(np.int64) * x.shape[1] + x.indices
    when = last[np.searchsorted(uniq, entry_key)]
    by_row = np.lexsort((-when, rows))  # per row, most recent first
    starts = x.indptr[:-1]
    rank = np.empty(len(rows), np.int64)
    rank[by_row] = np.arange(len(rows)) - starts[rows[by_row]]
    keep = rank < cap
    out = sp.csr_matrix((x.data[keep], (rows[keep], x.indices[keep])), shape=x.shape)
    out.sort_indices()
    return out


@dataclass(eq=False, repr=False)
class _KNNBase(Recommender):
    """The kNN models' shared hyperparameters (a dataclass, so `ItemKNN` adds its own
    without restating these; ``__init__`` only stores them, positional order kept)."""

    _state = ("similarity_",)

    neighbors: int = 100
    similarity: str = "cosine"
    shrinkage: float = 0.0
    weights: Mapping[str, float | str] | None = None

    def _check_params(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise InputError(
                f"similarity {self.similarity!r}: expected one of {', '.join(SIMILARITIES)}"
            )
        if int(self.neighbors) < 1:
            raise InputError(f"neighbors must be >= 1, got {self.neighbors}")


@dataclass(eq=False, repr=False)
class ItemKNN(_KNNBase):
    """Item-based kNN: an item scores the sum of its neighbours' weights in the history."""

    name: ClassVar[str] = "itemknn"
    _state = ("similarity_", "capped_")
    _user_state = ("capped_",)
    #: the entries of `seen_` left out of the similarities by `max_user_items` (kept so
    #: unlearning recomputes lists from the same rows); None in models saved before it
    capped_: sp.csr_matrix | None = field(default=None, init=False)

    max_user_items: int | None = 1000

    def fit(self, train: Interactions) -> ItemKNN:
        self._check_params()
        if self.max_user_items is not None and int(self.max_user_items) < 1:
            raise InputError(f"max_user_items must be >= 1 or None, got {self.max_user_items}")
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        cap = None if self.max_user_items is None else int(self.max_user_items)
        kept = recent_items(self.seen_, train, cap)
        self.capped_ = (_binary(self.seen_) - _binary(kept)).tocsr()
        self.capped_.eliminate_zeros()
        self.similarity_ = self.neighbour_lists()
        self._derive()
        return self

    def neighbour_lists(self, items: np.ndarray | None = None) -> sp.csr_matrix:
        """The top-N neighbour lists of `items` (all items when None), computed from `seen_`
        less the entries `max_user_items` left out."""
        x = self.seen_
        if self.capped_ is not None and self.capped_.nnz:
            x = x.tocoo()
            left_out = self.capped_.tocoo()
            width = np.int64(x.shape[1])
            keep = ~np.isin(x.row * width + x.col, left_out.row * width + left_out.col)
            x = sp.csr_matrix((x.data[keep], (x.row[keep], x.col[keep])), shape=x.shape)
            x.sort_indices()
        user_means = _row_means(self.seen_) if self.similarity == "adjusted" else None
        return knn_matrix(
            x.T.tocsr(), self.similarity, user_means, self.shrinkage, int(self.neighbors),
            include_self=False, queries=items,
        )  # fmt: skip

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
        self._xn_t = self._xn.T.tocsr()
        self._xb_t = _binary(self._xn).T.tocsr()

    def _neighbours(self, histories: sp.csr_matrix) -> sp.csr_matrix:
        q = prepare_rows(histories, self.similarity, self._item_means)
        parts = [
            top_n(similarity_block(q[b], self._xn_t, self._xb_t, self.shrinkage),
                  int(self.neighbors))
            for b in row_blocks(q, self._xn_t)
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
        h = self._history_row(hist_items, hist_weights)
        nb = self._neighbours(h)
        v, s = nb.indices, nb.data.astype(np.float64)
        q = prepare_rows(h, self.similarity, self._item_means)
        qh = q.toarray().ravel()[hist_items]
        xnh = self._xn[v][:, hist_items].toarray()
        raw = xnh @ qh
        f = np.divide(s, raw, out=np.zeros_like(s), where=raw != 0)
        x_vi = self.seen_[v][:, [item]].toarray().ravel()
        return qh * (xnh.T @ (f * x_vi))
