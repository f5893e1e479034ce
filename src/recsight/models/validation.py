"""Holdout NDCG for model selection inside `fit` (blend weights, VAE early stopping).

The evaluator's ranking protocol, in the form a model needs while it trains: full ranking over
the catalog, the training items masked, held-out items that were also trained on dropped, users
without training rows ranked by training popularity, and the shared tie rule of
`recsight.models.topk`. It lives here, not in `recsight.evaluation`, because evaluation measures
models (it imports them) and models must not import it back; `tests/models/test_validation.py`
checks that it equals `recsight.evaluation.protocol.evaluate_ranking`'s NDCG.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.models.topk import TIE_SEED, id_keys, top_k


class Scorer(Protocol):
    def score_all(self, user_idx: np.ndarray) -> np.ndarray: ...


def pair_matrix(data: Interactions, shape: tuple[int, int]) -> sp.csr_matrix:
    """The (user, item) pairs of `data` as a binary CSR of `shape` (repeats count once)."""
    m = sp.csr_matrix(
        (np.ones(len(data), dtype=np.float32), (data.user_idx, data.item_idx)), shape=shape
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def holdout_ndcg(
    scorer: Scorer,
    train: Interactions,
    holdout: Interactions,
    k: int,
    users: np.ndarray | None = None,
    max_users: int | None = None,
    seed: int = 0,
    batch_users: int = 1024,
) -> float:
    """Mean NDCG@k (binary relevance) of `scorer` on the `holdout` items of the users who have
    any that they did not also train on, restricted to `users` and, with `max_users`, to a
    seeded sample of that many (the sample `evaluate_ranking(max_test_users=, seed=)` draws).
    NaN when no user qualifies."""
    shape = (train.n_users, train.n_items)
    seen = pair_matrix(train, shape)
    truth = pair_matrix(holdout, shape)
    truth = truth - truth.multiply(seen)
    truth.eliminate_zeros()
    n_rel = np.diff(truth.indptr)
    candidates = np.flatnonzero(n_rel > 0)
    if users is not None:
        candidates = candidates[np.isin(candidates, np.asarray(users))]
    if max_users is not None and len(candidates) > max_users:
        pick = np.random.default_rng([seed, 1]).choice(len(candidates), max_users, False)
        candidates = candidates[np.sort(pick)]
    if not len(candidates):
        return float("nan")
    can_score = np.diff(seen.indptr) > 0
    popularity = np.diff(seen.tocsc().indptr).astype(np.float32)
    item_keys = id_keys(train.items.ids)
    discount = 1.0 / np.log2(np.arange(k) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    total = 0.0
    for start in range(0, len(candidates), batch_users):
        chunk = candidates[start : start + batch_users]
        warm = can_score[chunk]
        scores = np.empty((len(chunk), train.n_items), dtype=np.float32)
        scores[~warm] = popularity
        if warm.any():
            scores[warm] = np.asarray(scorer.score_all(chunk[warm]), dtype=np.float32)
        r, c = seen[chunk].nonzero()
        scores[r, c] = -np.inf
        topk, _ = top_k(scores, k, id_keys(train.users.ids[chunk]), item_keys, TIE_SEED)
        rows = truth[chunk]
        hits = np.array(
            [np.isin(topk[i], rows.indices[rows.indptr[i] : rows.indptr[i + 1]]) for i in
             range(len(chunk))],
            dtype=np.float64,
        ).reshape(len(chunk), -1)  # fmt: skip
        hits[topk < 0] = 0.0
        dcg = hits @ discount[: hits.shape[1]]
        total += float((dcg / ideal[np.minimum(n_rel[chunk], k)]).sum())
    return total / len(candidates)
