"""The one top-k routine and its tie rule, shared by every path that ranks items.

`Recommender.recommend`, the evaluator, training-time validation, serving, batch
recommendations (single node and Spark) and the peer harness in ``benchmarks/`` all rank with
`top_k` (or count a target's position with `target_ranks`, which agrees with it), so a model
gets the same list wherever it is asked. Scores shared by every user (popularity, the fallback
of cold users) are ranked by `top_k_shared`, which returns `top_k`'s lists from one global
order instead of a dense users x items block.

**Tie rule.** Higher scores come first. Equal scores are ordered by a pseudo-random key,
``hash(seed, user, item)``, computed from the *external* ids (`id_keys`), so the order is the
same in every chunk, process, Spark partition and request, and it does not follow item index
order (which follows ingest order and so correlates with time and popularity). A model whose
scores are all equal therefore ranks like a random model. Keys are computed only for the k
entries a row returns and, where the k-th score also occurs beyond them, for the tied items.

**Non-finite scores.** ``-inf`` marks an excluded item (seen, filtered). NaN and ``+inf`` are
treated as ``-inf``: such items are never recommended and a target that scores them is a miss
(`non_finite_count` lets training stop with a clear message instead).

The hash is written here because it must be identical in numpy, on Spark executors and across
versions: splitmix64's finaliser (public domain, Steele et al. 2014) over pandas' SipHash of
the id strings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Default seed of the tie keys (an experiment may set its own; every path must then agree).
TIE_SEED = 0
_HASH_KEY = "recsight-tiekey1"  # pandas' SipHash key: exactly 16 characters
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def id_keys(ids: object) -> np.ndarray:
    """A uint64 key per external id (ids compared as strings, so 42 and "42" agree)."""
    arr = np.asarray(ids, dtype=object).reshape(-1)
    as_str = np.array([str(x) for x in arr], dtype=object)
    return pd.util.hash_array(as_str, hash_key=_HASH_KEY, categorize=False).astype(np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def tie_keys(user_keys: np.ndarray, item_keys: np.ndarray, seed: int = TIE_SEED) -> np.ndarray:
    """``hash(seed, user, item)`` for broadcastable arrays of user and item keys."""
    u = np.asarray(user_keys, dtype=np.uint64)
    i = np.asarray(item_keys, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(u ^ _mix(i + np.uint64(seed) * _GOLDEN))


def _clean(scores: np.ndarray) -> np.ndarray:
    """float32 scores with NaN and +inf replaced by -inf (a copy only when needed)."""
    s = np.asarray(scores, dtype=np.float32)
    bad = np.isnan(s) | np.isposinf(s)
    if bad.any():
        s = s.copy()
        s[bad] = -np.inf
    return s


def non_finite_count(scores: np.ndarray) -> int:
    """How many scores are NaN or +inf (``-inf`` is a mask, not an error)."""
    s = np.asarray(scores)
    return int(np.count_nonzero(np.isnan(s) | np.isposinf(s)))


def _row_item_keys(item_keys: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Item keys of the columns `cols` (n x w); `item_keys` is (m,) or per row (n, m)."""
    if item_keys.ndim == 1:
        return item_keys[cols]
    return np.take_along_axis(item_keys, cols, axis=1)


def top_k(
    scores: np.ndarray,
    k: int,
    user_keys: np.ndarray,
    item_keys: np.ndarray,
    seed: int = TIE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``scores`` (n x m) under the tie rule of this module.

    `user_keys` has one key per row, `item_keys` one per column (shape (m,), or (n, m) when
    each row has its own candidate columns). Returns ``(columns, values)`` of shape
    ``(n, k)``: int64 column indices best first and float32 scores; positions without an
    allowed item (fewer than k finite scores) hold -1 and NaN.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    s = _clean(scores)
    n, m = s.shape
    ukeys = np.asarray(user_keys, dtype=np.uint64).reshape(-1)
    ikeys = np.asarray(item_keys, dtype=np.uint64)
    if len(ukeys) != n:
        raise ValueError(f"user_keys: expected {n} keys (one per row), got {len(ukeys)}")
    if ikeys.shape[-1] != m:
        raise ValueError(f"item_keys: expected {m} keys (one per column), got {ikeys.shape[-1]}")
    width = min(k, m)
    if m >= PREFILTER_MIN_COLUMNS and width * 8 <= _SAMPLE_COLUMNS:
        return _top_k_prefiltered(s, k, width, ukeys, ikeys, seed)
    return _top_k_rows(s, k, width, ukeys, ikeys, seed)


#: Catalogs from this many columns are ranked through a threshold prefilter (`_top_k_prefiltered`).
PREFILTER_MIN_COLUMNS = 32_768
_SAMPLE_COLUMNS = 2_048  # columns (evenly strided) whose k-th best value is the threshold
_MAX_CANDIDATES = 65_536  # rows with more candidates than this take the full path


def _top_k_prefiltered(
    s: np.ndarray, k: int, width: int, ukeys: np.ndarray, ikeys: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`_top_k_rows` over a few candidate columns per row, with the same result: the k-th
    best score of an evenly strided subset of the columns is at most the row's k-th best,
    so every column of the top k, every column tied with the k-th included, scores at least
    that threshold. One comparison pass then replaces a partition of each whole row, which
    is what ranks a million-item catalog several times faster (numpy has no row-wise
    threshold select to call instead)."""
    n, m = s.shape
    sample = s[:, :: m // _SAMPLE_COLUMNS]
    at = sample.shape[1] - width
    threshold = np.partition(sample, at, axis=1)[:, at]
    mask = s >= threshold[:, None]
    counts = np.count_nonzero(mask, axis=1)
    fast = np.isfinite(threshold) & (counts <= _MAX_CANDIDATES)
    cols = np.empty((n, k), dtype=np.int64)
    vals = np.empty((n, k), dtype=np.float32)
    slow = np.flatnonzero(~fast)
    if len(slow):  # fewer than k finite sampled scores, or a threshold with a huge tie
        rows_ikeys = ikeys if ikeys.ndim == 1 else ikeys[slow]
        cols[slow], vals[slow] = _top_k_rows(s[slow], k, width, ukeys[slow], rows_ikeys, seed)
    rows = np.flatnonzero(fast)
    if len(rows):
        r, c = np.nonzero(mask[rows])
        per_row = counts[rows]
        pos = np.arange(len(r)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        wide = int(per_row.max())
        cand = np.zeros((len(rows), wide), dtype=np.int64)
        cand[r, pos] = c
        cand_s = np.full((len(rows), wide), -np.inf, dtype=np.float32)
        cand_s[r, pos] = s[rows[r], c]  # padding stays -inf: never above a finite threshold
        cand_ikeys = _row_item_keys(ikeys if ikeys.ndim == 1 else ikeys[rows], cand)
        sub, sub_vals = _top_k_rows(cand_s, k, width, ukeys[rows], cand_ikeys, seed)
        cols[rows] = np.where(sub >= 0, np.take_along_axis(cand, np.maximum(sub, 0), axis=1), -1)
        vals[rows] = sub_vals
    return cols, vals


def _top_k_rows(
    s: np.ndarray, k: int, width: int, ukeys: np.ndarray, ikeys: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`top_k` of clean scores by a partition of each whole row."""
    n, m = s.shape
    if width < m:
        part = np.argpartition(-s, width - 1, axis=1)[:, :width]
        part_s = np.take_along_axis(s, part, axis=1)
        kth = part_s.min(axis=1)
        # rows whose k-th score also occurs outside the partition: choose among the tied
        # items by key, not by whatever argpartition happened to leave in place
        n_ge = np.count_nonzero(s >= kth[:, None], axis=1)
        for r in np.flatnonzero((n_ge > width) & np.isfinite(kth)):
            row = s[r]
            above = np.flatnonzero(row > kth[r])
            tied = np.flatnonzero(row == kth[r])
            need = width - len(above)
            row_ikeys = ikeys if ikeys.ndim == 1 else ikeys[r]
            keys = tie_keys(ukeys[r], row_ikeys[tied], seed)
            part[r] = np.concatenate([above, tied[np.argpartition(keys, need - 1)[:need]]])
        part_s = np.take_along_axis(s, part, axis=1)
    else:
        part = np.broadcast_to(np.arange(m), (n, m)).copy()
        part_s = s.copy()
    keys = tie_keys(ukeys[:, None], _row_item_keys(ikeys, part), seed)
    order = np.lexsort((keys, -part_s), axis=1)
    cols = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(part_s, order, axis=1).astype(np.float32)
    invalid = ~np.isfinite(vals)
    cols[invalid] = -1
    vals[invalid] = np.nan
    if width < k:
        cols = np.pad(cols, ((0, 0), (0, k - width)), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, k - width)), constant_values=np.nan)
    return cols, vals


def target_ranks(
    scores: np.ndarray,
    targets: np.ndarray,
    user_keys: np.ndarray,
    item_keys: np.ndarray,
    seed: int = TIE_SEED,
) -> np.ndarray:
    """0-based position of one target column per row under the same rule as `top_k` (a
    target at position r < k is exactly what `top_k` returns at r). A target whose score is
    not finite (masked, NaN, inf) gets position m, i.e. a miss at every cut-off."""
    s = _clean(scores)
    n, m = s.shape
    targets = np.asarray(targets, dtype=np.int64)
    rows = np.arange(n)
    ukeys = np.asarray(user_keys, dtype=np.uint64).reshape(-1)
    ikeys = np.asarray(item_keys, dtype=np.uint64)
    t = s[rows, targets]
    rank = np.count_nonzero(s > t[:, None], axis=1).astype(np.int64)
    eq = s == t[:, None]
    eq[rows, targets] = False
    r, c = np.nonzero(eq)
    if len(r):
        if ikeys.ndim == 1:
            tkey = tie_keys(ukeys, ikeys[targets], seed)
            keys = tie_keys(ukeys[r], ikeys[c], seed)
        else:
            tkey = tie_keys(ukeys, ikeys[rows, targets], seed)
            keys = tie_keys(ukeys[r], ikeys[r, c], seed)
        rank += np.bincount(r[keys < tkey[r]], minlength=n)
    rank[~np.isfinite(t)] = m
    return rank


#: Candidate positions `top_k_shared` ranks at once (each ~40 bytes with its temporaries).
_SHARED_BLOCK = 1 << 22


def top_k_shared(
    scores: np.ndarray,
    k: int,
    masked: sp.csr_matrix | None,
    user_keys: np.ndarray,
    item_keys: np.ndarray,
    seed: int = TIE_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """`top_k` for rows that all share one score per item (popularity; the popularity
    fallback of cold users) without a dense rows x items block: exactly the lists `top_k`
    returns for `scores` repeated once per row with row r's `masked` entries set to -inf.

    `scores` has shape (m,); `masked` (n x m, or None: nothing masked) excludes every stored
    entry of row r from row r (a user's seen items); `user_keys` has one key per row,
    `item_keys` one per column. Each row reads only the head of one global order: its first
    k unmasked items plus every item tied with the k-th of them (the tie rule orders a tie
    group by the row's own keys, so the whole group at the boundary competes), i.e. about
    k + |masked row| positions instead of m.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    s = _clean(np.asarray(scores).reshape(-1))
    m = len(s)
    ukeys = np.asarray(user_keys, dtype=np.uint64).reshape(-1)
    ikeys = np.asarray(item_keys, dtype=np.uint64).reshape(-1)
    n = len(ukeys)
    if len(ikeys) != m:
        raise ValueError(f"item_keys: expected {m} keys (one per column), got {len(ikeys)}")
    masked = sp.csr_matrix((n, m), dtype=np.float32) if masked is None else sp.csr_matrix(masked)
    if masked.shape != (n, m):
        raise ValueError(f"masked: expected shape {(n, m)}, got {masked.shape}")
    cols = np.full((n, k), -1, dtype=np.int64)
    vals = np.full((n, k), np.nan, dtype=np.float32)
    if m == 0 or n == 0:
        return cols, vals
    order = np.argsort(-s, kind="stable")  # ties in any fixed order: the rows re-key them
    s_sorted = s[order]
    n_finite = int(np.count_nonzero(np.isfinite(s_sorted)))
    position = np.empty(m, dtype=np.int64)
    position[order] = np.arange(m)
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    group_end = np.repeat(np.r_[starts[1:], m], np.diff(np.r_[starts, m]))
    # each row's masked positions in the global order, sorted and distinct
    rows_of = np.repeat(np.arange(n, dtype=np.int64), np.diff(masked.indptr))
    flat = np.unique(rows_of * m + position[masked.indices])
    mrow, mpos = flat // m, flat % m
    per_row = np.bincount(mrow, minlength=n)
    mstart = np.cumsum(per_row) - per_row
    j = np.arange(len(flat)) - np.repeat(mstart, per_row)
    # for sorted distinct positions p_0 < p_1 < ..., p_j - j never decreases, and the k-th
    # unmasked position is k - 1 plus the number of masked positions p_j with p_j - j < k
    kth = k - 1 + np.bincount(mrow[mpos - j < k], minlength=n)
    length = np.where(kth < n_finite, group_end[np.minimum(kth, m - 1)], n_finite)
    begin = 0
    while begin < n:  # blocks of rows holding at most _SHARED_BLOCK candidate positions
        cum = np.cumsum(length[begin:])
        end = begin + max(1, int(np.searchsorted(cum, _SHARED_BLOCK, side="right")))
        rows = np.arange(begin, end)
        lens = length[rows]
        row = np.repeat(rows, lens)
        pos = np.arange(len(row)) - np.repeat(np.cumsum(lens) - lens, lens)
        # drop the masked positions that fall inside their row's head
        lo, hi = mstart[begin], mstart[end - 1] + per_row[end - 1]
        mr, mp = mrow[lo:hi], mpos[lo:hi]
        inside = mp < length[mr]
        keep = np.ones(len(row), dtype=bool)
        keep[(np.cumsum(lens) - lens)[mr[inside] - begin] + mp[inside]] = False
        row, pos = row[keep], pos[keep]
        item, val = order[pos], s_sorted[pos]
        rank = np.lexsort((tie_keys(ukeys[row], ikeys[item], seed), -val, row))
        row, item, val = row[rank], item[rank], val[rank]
        counts = np.bincount(row - begin, minlength=len(rows))
        at = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
        top = at < k
        cols[row[top], at[top]] = item[top]
        vals[row[top], at[top]] = val[top]
        begin = end
    return cols, vals
