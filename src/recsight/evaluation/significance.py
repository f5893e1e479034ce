"""Paired significance tests over per-user metric arrays, Holm correction, bootstrap CIs."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from recsight.errors import InputError

TESTS = ("wilcoxon", "ttest")


def check_paired(
    users_a: np.ndarray, users_b: np.ndarray, names: tuple[str, str] = ("a", "b")
) -> None:
    """`InputError` unless two per-user arrays are keyed by the same users in the same order
    (a paired test of misaligned arrays compares different people's values)."""
    ua, ub = np.asarray(users_a), np.asarray(users_b)
    if ua.shape == ub.shape and np.array_equal(ua, ub):
        return
    n = min(len(ua), len(ub))
    diff = np.flatnonzero(ua[:n] != ub[:n])
    where = f"first difference at position {diff[0]}" if len(diff) else "one is longer"
    raise InputError(
        f"paired test: {names[0]} and {names[1]} were evaluated on different users "
        f"({len(ua)} vs {len(ub)} users, {where}); evaluate both on the same test users"
    )


def paired_pvalue(
    a: np.ndarray,
    b: np.ndarray,
    test: str = "wilcoxon",
    users_a: np.ndarray | None = None,
    users_b: np.ndarray | None = None,
) -> float:
    """Two-sided p-value that paired per-user values `a` and `b` differ.

    "wilcoxon" is the signed-rank test (zero differences dropped, normal approximation with
    tie correction for large samples); "ttest" the paired t-test. Identical arrays give 1.
    With `users_a`/`users_b` (the users each array is keyed by) the pairing is checked
    first (`check_paired`).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if (users_a is None) != (users_b is None):
        raise ValueError("give the users of both arrays, or of neither")
    if users_a is not None:
        check_paired(users_a, users_b)  # type: ignore[arg-type]
        if len(users_a) != len(a) or len(users_b) != len(b):  # type: ignore[arg-type]
            raise ValueError("users_a/users_b must have one entry per value")
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    if test not in TESTS:
        raise InputError(f"significance test: expected one of {', '.join(TESTS)}, not {test!r}")
    d = a - b
    if len(d) < 2 or np.allclose(d, 0.0):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if test == "wilcoxon":
            res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
        else:
            res = stats.ttest_rel(a, b)
    p = float(res.pvalue)
    return 1.0 if np.isnan(p) else p


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    adj_sorted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adj = np.empty(m)
    adj[order] = np.minimum(adj_sorted, 1.0)
    return adj


def bootstrap_ci(
    values: np.ndarray,
    weights: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of the (weighted) mean of per-user `values`, resampling users.

    With `weights` (e.g. test ratings per user and per-user MSE) the statistic is
    ``sum(w v) / sum(w)``, i.e. the event-level mean, resampled by user. `transform` maps the
    resampled means (e.g. ``np.sqrt`` for RMSE from MSE).
    """
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return (float("nan"), float("nan"))
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    # resample in blocks so memory stays ~ block x n whatever n_boot is
    block = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for s in range(0, n_boot, block):
        b = min(block, n_boot - s)
        idx = rng.integers(0, n, size=(b, n))
        means[s : s + b] = (w[idx] * v[idx]).sum(axis=1) / w[idx].sum(axis=1)
    if transform is not None:
        means = transform(means)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass
class Comparison:
    """One model against the best on one metric."""

    model: str
    mean: float
    p_value: float
    p_adjusted: float
    worse: bool  # significantly worse than the best after Holm correction


def compare_to_best(
    per_model: Mapping[str, np.ndarray],
    higher_is_better: bool = True,
    test: str = "wilcoxon",
    alpha: float = 0.05,
    users: Mapping[str, np.ndarray] | None = None,
) -> tuple[str, dict[str, Comparison]]:
    """Find the best model by mean and test every other one against it (paired, Holm-corrected
    over the comparisons). Arrays must be aligned on the same users: with `users` (name ->
    the users each array is keyed by) that is checked, and misaligned arrays raise
    `InputError`. Returns ``(best_name, {name: Comparison})``; the best compares to itself
    with p = 1."""
    if not per_model:
        raise ValueError("no models to compare")
    names = list(per_model)
    if users is not None:
        for n in names[1:]:
            check_paired(users[names[0]], users[n], (names[0], n))
    lengths = {len(per_model[n]) for n in names}
    if len(lengths) != 1:
        raise ValueError("per-user arrays must be aligned (same users) across models")
    means = {n: float(np.mean(per_model[n])) for n in names}
    sign = 1.0 if higher_is_better else -1.0
    best = max(names, key=lambda n: sign * means[n])
    others = [n for n in names if n != best]
    raw = [paired_pvalue(per_model[n], per_model[best], test) for n in others]
    adj = holm(raw)
    out = {best: Comparison(best, means[best], 1.0, 1.0, False)}
    for n, p, pa in zip(others, raw, adj, strict=True):
        worse = bool(pa < alpha and sign * means[n] < sign * means[best])
        out[n] = Comparison(n, means[n], float(p), float(pa), worse)
    return best, out
