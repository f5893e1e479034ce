"""Pure, vectorized metric functions.

Ranking metrics take a boolean ``hits`` matrix (users x K: was the item at rank j relevant)
and the number of relevant items per user, and return one value per user, so callers can
average, bootstrap and pair-test them. Rating and CTR metrics take flat arrays.

Conventions (the common ones in the literature, stated so numbers are comparable):
- Recall@K divides by the user's number of relevant items (not min(n_rel, K)).
- NDCG@K uses binary gains and the ideal DCG of min(n_rel, K) hits at the top.
- MAP@K averages precision at each hit over min(n_rel, K).
- MRR@K is 1 / rank of the first hit within K, else 0.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# --- ranking ------------------------------------------------------------------------------


def _cut(hits: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, not {k}")
    return np.asarray(hits, dtype=bool)[:, :k]


def _n_rel(n_relevant: np.ndarray) -> np.ndarray:
    return np.asarray(n_relevant, dtype=np.float64)


def precision_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Share of the top-K that is relevant (K is the denominator even if fewer were ranked)."""
    return _cut(hits, k).sum(axis=1) / k


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Share of the user's relevant items found in the top-K (0 for users with none)."""
    n = _n_rel(n_relevant)
    found = _cut(hits, k).sum(axis=1)
    return np.divide(found, n, out=np.zeros(len(n)), where=n > 0)


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """1 when at least one relevant item is in the top-K."""
    return _cut(hits, k).any(axis=1).astype(np.float64)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Normalised discounted cumulative gain with binary relevance."""
    h = _cut(hits, k)
    disc = _discounts(h.shape[1])
    dcg = h @ disc
    ideal_cum = np.concatenate([[0.0], np.cumsum(_discounts(k))])
    idcg = ideal_cum[np.minimum(_n_rel(n_relevant), k).astype(np.int64)]
    return np.divide(dcg, idcg, out=np.zeros(len(idcg)), where=idcg > 0)


def mrr_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Reciprocal rank of the first relevant item within the top-K (0 when none)."""
    h = _cut(hits, k)
    any_hit = h.any(axis=1)
    first = np.argmax(h, axis=1)
    return np.where(any_hit, 1.0 / (first + 1), 0.0)


def map_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Average precision at K: mean of precision@j over hit positions j, over min(n_rel, K)."""
    h = _cut(hits, k)
    prec = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1)
    denom = np.minimum(_n_rel(n_relevant), k)
    total = (prec * h).sum(axis=1)
    return np.divide(total, denom, out=np.zeros(len(denom)), where=denom > 0)


def hits_matrix(topk: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """``hits[u, j]`` = item ``topk[u, j]`` is in row u of `truth` (users x items, nonzero =
    relevant). Entries of `topk` below 0 mean "no item" and never hit."""
    topk = np.asarray(topk)
    if truth.shape[0] != topk.shape[0]:
        raise ValueError("topk and truth must have one row per user")
    # looked up in the sparse rows (sorted (row, item) keys), never densified: a chunk of
    # users x a million items would not fit
    t = sp.csr_matrix(truth)
    rows = np.repeat(np.arange(t.shape[0], dtype=np.int64), np.diff(t.indptr))
    nz = t.data != 0
    keys = np.sort(rows[nz] * t.shape[1] + t.indices[nz])
    if not len(keys):
        return np.zeros(topk.shape, dtype=bool)
    query = np.arange(topk.shape[0], dtype=np.int64)[:, None] * t.shape[1] + topk
    pos = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return (keys[pos] == query) & (topk >= 0)


# --- beyond accuracy ----------------------------------------------------------------------


def catalog_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list."""
    items = np.asarray(topk).ravel()
    return float(np.unique(items[items >= 0]).size / n_items) if n_items else 0.0


def self_information(item_counts: np.ndarray, n_users: int) -> np.ndarray:
    """-log2 of the share of users who interacted with each item; items nobody interacted
    with are treated as seen by one user so the value stays finite."""
    p = np.maximum(np.asarray(item_counts, dtype=np.float64), 1.0) / max(n_users, 1)
    return -np.log2(np.minimum(p, 1.0))


def _list_mean(values_per_item: np.ndarray, topk: np.ndarray) -> np.ndarray:
    topk = np.asarray(topk)
    valid = topk >= 0
    v = np.where(valid, values_per_item[np.where(valid, topk, 0)], 0.0)
    n = valid.sum(axis=1)
    return np.divide(v.sum(axis=1), n, out=np.zeros(len(n)), where=n > 0)


def novelty(topk: np.ndarray, item_counts: np.ndarray, n_users: int) -> np.ndarray:
    """Mean self-information (bits) of the recommended items, per user: higher = less
    popular, more surprising recommendations."""
    return _list_mean(self_information(item_counts, n_users), topk)


def average_popularity(topk: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
    """Average recommendation popularity (ARP): mean training count of the recommended
    items, per user. Higher = stronger popularity bias."""
    return _list_mean(np.asarray(item_counts, dtype=np.float64), topk)


def long_tail_items(item_counts: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask of long-tail items: all but the most popular `head_share` of the items
    that have any interactions (items with none are tail)."""
    counts = np.asarray(item_counts)
    active = np.flatnonzero(counts > 0)
    n_head = int(np.ceil(head_share * active.size))
    head = active[np.argsort(-counts[active], kind="stable")[:n_head]]
    tail = np.ones(counts.size, dtype=bool)
    tail[head] = False
    return tail


def long_tail_share(topk: np.ndarray, tail_mask: np.ndarray) -> np.ndarray:
    """Share of each list drawn from the long tail (APLT); lower = stronger popularity bias."""
    return _list_mean(np.asarray(tail_mask, dtype=np.float64), topk)


def normalize_rows(vectors: np.ndarray | sp.spmatrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), as CSR."""
    m = sp.csr_matrix(vectors, dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv) @ m)


def intra_list_diversity(topk: np.ndarray, unit_vectors: sp.csr_matrix) -> np.ndarray:
    """Mean pairwise cosine distance (1 - cosine) between the items of each list.

    `unit_vectors` holds one L2-normalised row per item (see `normalize_rows`); an item with
    a zero vector is at distance 1 from every other. Computed without forming pairs: for
    unit vectors, the sum of pairwise cosines is ``|sum v|^2 - sum |v|^2``.
    """
    topk = np.asarray(topk)
    n_users, k = topk.shape
    valid = topk >= 0
    rows = np.repeat(np.arange(n_users), k)[valid.ravel()]
    cols = topk.ravel()[valid.ravel()]
    pick = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, unit_vectors.shape[0]))
    summed = pick @ unit_vectors
    sq = np.asarray(summed.multiply(summed).sum(axis=1)).ravel()
    self_norms = pick @ np.asarray(unit_vectors.multiply(unit_vectors).sum(axis=1)).ravel()
    n = valid.sum(axis=1).astype(np.float64)
    pairs = n * (n - 1)
    mean_cos = np.divide(sq - self_norms, pairs, out=np.zeros(n_users), where=pairs > 0)
    return np.where(pairs > 0, 1.0 - mean_cos, 0.0)


# --- rating prediction --------------------------------------------------------------------


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {t.shape} vs {p.shape}")
    if t.size == 0:
        raise ValueError("no values to score")
    return t, p


def mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def group_means(values: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` per distinct group id: ``(group_ids, means)``, ids sorted."""
    ids, inverse = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64))
    counts = np.bincount(inverse)
    return ids, sums / counts


# --- CTR-style classification -------------------------------------------------------------


def _grouped_auc(
    y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC by the Mann-Whitney rank formula (ties get average ranks).

    Returns ``(auc, n_events, defined)`` per group in sorted group order; `defined` is False
    for groups with only one class.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(y_score, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"y_true and y_score differ in shape: {y.shape} vs {s.shape}")
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    order = np.lexsort((s, g))
    g_s, s_s, y_s = g[order], s[order], y[order]
    n = len(order)
    # a new tie block starts where the group or the score changes
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = (g_s[1:] != g_s[:-1]) | (s_s[1:] != s_s[:-1])
    block = np.cumsum(new_block) - 1
    group_start = np.searchsorted(g_s, g_s, side="left")
    pos = np.arange(n) - group_start + 1  # 1-based rank inside the group
    block_first = pos[new_block]
    block_size = np.bincount(block)
    avg_rank = (block_first + (block_first + block_size - 1)) / 2.0
    rank = avg_rank[block]
    n_groups = g.max() + 1 if n else 0
    pos_count = np.bincount(g_s, weights=y_s, minlength=n_groups)
    total = np.bincount(g_s, minlength=n_groups).astype(np.float64)
    neg_count = total - pos_count
    rank_sum = np.bincount(g_s, weights=rank * y_s, minlength=n_groups)
    defined = (pos_count > 0) & (neg_count > 0)
    u = rank_sum - pos_count * (pos_count + 1) / 2.0
    auc = np.divide(u, pos_count * neg_count, out=np.full(n_groups, np.nan), where=defined)
    return auc, total, defined


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half), equal to sklearn's roc_auc_score."""
    y = np.asarray(y_true)
    a, _, defined = _grouped_auc(y, y_score, np.zeros(len(y), dtype=np.int8))
    if not defined.all():
        raise ValueError("AUC needs both positive and negative labels")
    return float(a[0])


def gauc(
    y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray, weight: str = "impressions"
) -> float:
    """Group AUC: per-group (usually per-user) AUC averaged with weights, skipping groups with
    one class only. `weight` is "impressions" (events per group, as in DIN) or "uniform"."""
    a, total, defined = _grouped_auc(y_true, y_score, groups)
    if not defined.any():
        raise ValueError("GAUC needs at least one group with both positive and negative labels")
    if weight == "impressions":
        w = total[defined]
    elif weight == "uniform":
        w = np.ones(int(defined.sum()))
    else:
        raise ValueError(f"weight must be 'impressions' or 'uniform', not {weight!r}")
    return float(np.average(a[defined], weights=w))


def logloss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    """Binary cross-entropy of predicted probabilities (clipped to [eps, 1 - eps])."""
    t, p = _pair(y_true, y_prob)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
