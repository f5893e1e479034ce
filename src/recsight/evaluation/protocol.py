"""Evaluation protocols: full-ranking top-K evaluation and rating-prediction error.

`evaluate_ranking` scores every item of the catalog for chunks of users (`model.score_all`), so
memory is bounded by ``batch_users x n_items`` whatever the number of users; by default the
chunk is sized from a memory budget (`memory_budget`; default a quarter of the machine's RAM,
or half of the memory available when evaluation starts if that is less), and hits are looked up
in the sparse test matrix, never in a dense one. With `max_test_users` a seeded sample of the
test users is evaluated, and the protocol label says so. Chunking never changes a metric: users
are ranked independently. Ground truth is each user's distinct test items. With
``exclude_seen=True`` (the default) the user's train items are masked out of the ranking *and*
dropped from the ground truth: they could never be recommended, so counting them would only cap
every model's recall alike. Users left with no test item are not evaluated
(`RankingResult.n_skipped` counts them). To evaluate repeat consumption (e.g. leave-last-out
where the last item was seen before) pass ``exclude_seen=False``: then nothing is masked and
repeats count as hits.

Cold users (no training event, or none the model kept) get what `recommend` and serving give
them: the model cannot personalise an empty history, so they are ranked by the model's
training popularity (`item_popularity_`: distinct training users per item, as of the training
data, never time-decayed; the train matrix's counts for a bare scorer). A serving pipeline's
content fallback only answers histories whose items the main model does not know, which
cannot happen for a user with no history, so the chain ends at popularity here as it does
there. Their metrics are also reported on their own (`RankingResult.cold`, ``cold_users``).

Sampled-negatives evaluation (rank the test items among N random unseen items) is available on
request only, and the result's `protocol` label says so, because it inflates every metric.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.evaluation import metrics as M
from recsight.models.topk import TIE_SEED, id_keys, top_k, top_k_shared
from recsight.models.validation import pair_matrix

#: Accuracy metrics computed at each K, in display order.
ACCURACY_METRICS = ("precision", "recall", "hr", "ndcg", "mrr", "map")
#: Per-user beyond-accuracy metrics computed at each K (coverage is a catalog-level number).
BEYOND_METRICS = ("novelty", "diversity", "popularity", "long_tail")
RANKING_METRICS = ACCURACY_METRICS + BEYOND_METRICS + ("coverage",)
RATING_METRICS = ("rmse", "mse", "mae")

#: Bytes a chunk needs per (user, item) score while it is ranked: the model's float32 scores
#: and their copy, top-k's int64 partition indices and its float and boolean temporaries.
BYTES_PER_SCORE = 32
#: What sampled negatives add per score: float64 random keys and two boolean masks.
BYTES_PER_SAMPLED_SCORE = 10
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def memory_budget_bytes(spec: int | str | None) -> int:
    """A memory budget in bytes: an int, or a size such as ``4GB``, ``512MiB``, ``1.5 GB``;
    None means the default, `default_memory_budget()`."""
    if spec is None:
        return default_memory_budget()
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        value = float(spec)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(spec))
        if m is None or m.group(2).upper() not in _UNITS:
            raise InputError(f"memory budget {spec!r}: expected a size such as 4GB, 512MB or 2GiB")
        value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise InputError(f"memory budget {spec!r}: expected a positive size")
    return int(value)


def default_memory_budget() -> int:
    """The default budget: a quarter of the machine's RAM, or half of the memory available
    now if that is less. It is read when a run starts chunking, after its data and model are
    loaded, so it leaves room for what is already resident and for other processes on a
    shared machine (a quarter of RAM alone does neither)."""
    import psutil

    vm = psutil.virtual_memory()
    return int(min(vm.total // 4, vm.available // 2))


def users_per_chunk(n_items: int, memory_budget: int | str | None, sampled: bool = False) -> int:
    """How many users' full-catalog scores fit in `memory_budget` at once (at least one)."""
    per_score = BYTES_PER_SCORE + (BYTES_PER_SAMPLED_SCORE if sampled else 0)
    return max(1, memory_budget_bytes(memory_budget) // (max(n_items, 1) * per_score))


class Scorer(Protocol):
    """What the ranking protocol needs from a model: full-catalog scores by internal index."""

    def score_all(self, user_idx: np.ndarray) -> np.ndarray: ...


class RatingPredictor(Protocol):
    """What the rating protocol needs from a model: a rating per (user, item) index pair."""

    def predict_idx(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray: ...


@dataclass
class RankingResult:
    """Per-user metric arrays (aligned with `users`), their means, and how they were made."""

    protocol: str
    ks: tuple[int, ...]
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    summary: dict[str, float]
    n_items: int
    n_skipped: int
    score_seconds: float
    metadata: dict[str, Any] = field(default_factory=dict)
    #: Aligned with `users`: True for cold users (ranked by the popularity fallback).
    cold: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.cold is None:  # a result made without cold flags: every user is warm
            self.cold = np.zeros(len(self.users), dtype=bool)

    def group_summary(self, cold: bool) -> dict[str, float]:
        """Means of the per-user metrics over the cold (or the warm) users only (empty when
        there are none)."""
        sel = self.cold if cold else ~self.cold
        if not sel.any():
            return {}
        return {key: float(v[sel].mean()) for key, v in self.per_user.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (per-user arrays left out), cold and warm users also apart."""
        n_cold = int(self.cold.sum())
        return {
            "protocol": self.protocol,
            "ks": list(self.ks),
            "n_users": int(len(self.users)),
            "n_skipped": self.n_skipped,
            "n_items": self.n_items,
            "score_seconds": self.score_seconds,
            "metrics": self.summary,
            "cold_users": {"n_users": n_cold, "metrics": self.group_summary(True)},
            "warm_users": {
                "n_users": int(len(self.users)) - n_cold,
                "metrics": self.group_summary(False),
            },
            **self.metadata,
        }


@dataclass
class RatingResult:
    """Global rating errors plus per-user squared/absolute error means for paired tests
    (`per_user["mse"]`, `per_user["mae"]`, aligned with `users`)."""

    rmse: float
    mse: float
    mae: float
    users: np.ndarray
    per_user: dict[str, np.ndarray]
    counts: np.ndarray  # test ratings per user, the weights for a per-user bootstrap
    n_ratings: int
    n_unscored: int
    predict_seconds: float
    protocol: str = "rating prediction"

    @property
    def summary(self) -> dict[str, float]:
        return {"rmse": self.rmse, "mse": self.mse, "mae": self.mae}

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "n_ratings": self.n_ratings,
            "n_unscored": self.n_unscored,
            "n_users": int(len(self.users)),
            "predict_seconds": self.predict_seconds,
            "metrics": self.summary,
        }


def protocol_label(sampled_negatives: int | None) -> str:
    """The label every output carries: "full ranking" or "sampled (N negatives)"."""
    return (
        "full ranking" if sampled_negatives is None else f"sampled ({sampled_negatives} negatives)"
    )


def _check_ks(ks: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(k) for k in ks}))
    if not out or out[0] < 1:
        raise InputError(f"ks: expected positive cut-offs such as 10, 20, not {list(ks)}")
    return out


@dataclass
class RankingPairs:
    """What `evaluate_ranking` derives from (train, test) whatever the model: the binary train
    and test pair matrices and the per-item train counts. An experiment computes it once and
    passes it to every model's evaluation (at 100M events each derivation costs gigabytes of
    temporaries and tens of seconds). With it, an evaluation reads no event of the split, so
    the caller may release them."""

    seen: sp.csr_matrix  # users x items, 1 where the user has a train event for the item
    truth: sp.csr_matrix  # the test pairs, without the train pairs when exclude_seen
    item_counts: np.ndarray  # distinct train users per item (float64)
    exclude_seen: bool
    test_users: np.ndarray  # the users with a test event, sorted


def ranking_pairs(
    train: Interactions, test: Interactions, exclude_seen: bool = True
) -> RankingPairs:
    """The `RankingPairs` of a train/test split (one id space)."""
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise InputError("train and test must share one id space (use recsight.data.splits)")
    shape = (train.n_users, train.n_items)
    seen = pair_matrix(train, shape)
    truth = pair_matrix(test, shape)
    test_users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if exclude_seen:
        truth = truth - truth.multiply(seen)
        truth.eliminate_zeros()
    # entries per column of a canonical CSR, without its CSC copy
    item_counts = np.bincount(seen.indices, minlength=train.n_items).astype(np.float64)
    return RankingPairs(seen, truth, item_counts, exclude_seen, test_users)


#: Users whose metrics are computed at once (their top-k lists and hits are small).
_METRIC_ROWS = 65_536


def evaluate_ranking(
    model: Scorer,
    train: Interactions,
    test: Interactions,
    ks: tuple[int, ...] | list[int] = (10, 20),
    exclude_seen: bool = True,
    batch_users: int | None = None,
    sampled_negatives: int | None = None,
    seed: int = 0,
    metrics: tuple[str, ...] | list[str] | None = None,
    users: np.ndarray | None = None,
    item_vectors: np.ndarray | sp.spmatrix | None = None,
    tie_seed: int = TIE_SEED,
    memory_budget: int | str | None = None,
    max_test_users: int | None = None,
    pairs: RankingPairs | None = None,
) -> RankingResult:
    """Top-K evaluation of `model` on `test`, chunked over users.

    `metrics` picks from `RANKING_METRICS` (default: all). Beyond-accuracy metrics use item
    popularity from `train`; intra-list diversity uses `item_vectors` (one row per item, e.g.
    genre indicators) or, by default, each item's column of the binary train matrix, i.e.
    1 - cosine similarity of who interacted with the items. `users` restricts evaluation to
    those user indices. With `sampled_negatives=N`, each user's test items are ranked among N
    items drawn uniformly (seeded) from those the user has in neither train nor test.
    Ranking uses the shared top-k and tie rule (`recsight.models.topk`, keyed by `tie_seed`):
    equal scores are ordered by a hash of (seed, user, item), NaN/inf scores rank last.

    Users are scored `batch_users` at a time, by default as many as `memory_budget` allows
    (`users_per_chunk`; default `default_memory_budget()`). `max_test_users` evaluates a sample of
    that many of the evaluable users, drawn with `seed` (the same users for every model).
    Users ranked by scores shared by everyone (cold users' popularity fallback; a model
    whose `shared_scores()` is not None, such as popularity) take their lists from one
    global order (`top_k_shared`, the same lists) and need no chunk. `pairs`: the split's
    `ranking_pairs`, when the caller evaluates several models on it.
    """
    ks = _check_ks(ks)
    wanted = tuple(RANKING_METRICS if metrics is None else metrics)
    unknown = sorted(set(wanted) - set(RANKING_METRICS))
    if unknown:
        raise InputError(
            f"metrics: unknown ranking metric(s) {', '.join(unknown)}; expected some of "
            f"{', '.join(RANKING_METRICS)}"
        )
    if sampled_negatives is not None and sampled_negatives < 1:
        raise InputError(f"sampled_negatives: expected a positive count, not {sampled_negatives}")
    if batch_users is not None and batch_users < 1:
        raise InputError(f"batch_users: expected a positive count, not {batch_users}")
    if max_test_users is not None and max_test_users < 1:
        raise InputError(f"max_test_users: expected a positive count, not {max_test_users}")
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise InputError("train and test must share one id space (use recsight.data.splits)")

    n_items = train.n_items
    if pairs is None:
        pairs = ranking_pairs(train, test, exclude_seen)
    elif pairs.exclude_seen != exclude_seen or pairs.seen.shape != (train.n_users, n_items):
        raise ValueError("pairs: made for another split or exclude_seen setting")
    seen, truth, item_counts = pairs.seen, pairs.truth, pairs.item_counts
    n_rel_all = np.diff(truth.indptr)
    candidates = np.flatnonzero(n_rel_all > 0)
    test_users = pairs.test_users
    if users is not None:
        keep = np.isin(candidates, np.asarray(users))
        test_users = test_users[np.isin(test_users, np.asarray(users))]
        candidates = candidates[keep]
    n_skipped = int(len(test_users) - len(candidates))
    protocol = protocol_label(sampled_negatives)
    metadata: dict[str, Any] = {"exclude_seen": exclude_seen}
    if max_test_users is not None and len(candidates) > max_test_users:
        # its own generator, so the sampled negatives do not depend on the user sample
        pick = np.random.default_rng([seed, 1]).choice(len(candidates), max_test_users, False)
        metadata["sampled_users"] = {
            "n": max_test_users,
            "of": int(len(candidates)),
            "seed": seed,
        }
        protocol += f"; {max_test_users:,} of {len(candidates):,} test users sampled (seed {seed})"
        candidates = candidates[np.sort(pick)]
    if batch_users is None:
        batch_users = users_per_chunk(train.n_items, memory_budget, sampled_negatives is not None)
    metadata["batch_users"] = int(batch_users)

    can_score, fallback = _fallback(model, seen, item_counts)
    n_train_users = int((np.diff(seen.indptr) > 0).sum())
    tail = M.long_tail_items(item_counts)
    need_div = "diversity" in wanted
    unit = None
    if need_div:
        vec = seen.T if item_vectors is None else item_vectors
        if vec.shape[0] != n_items:
            raise InputError(f"item_vectors: expected {n_items} rows (one per item)")
        unit = M.normalize_rows(vec)

    kmax = ks[-1]
    rng = np.random.default_rng(seed)
    item_keys = id_keys(train.items.ids)
    acc_keys = [m for m in ACCURACY_METRICS if m in wanted]
    beyond_keys = [m for m in BEYOND_METRICS if m in wanted]
    parts: dict[str, list[np.ndarray]] = {
        f"{m}@{k}": [] for m in acc_keys + beyond_keys for k in ks
    }
    score_seconds = 0.0
    topk_all = np.empty((len(candidates), kmax), dtype=np.int64)
    cold = ~can_score[candidates]
    shared = _shared_scores(model, n_items)
    # sampled negatives draw per chunk from one generator: every user stays in the chunked
    # path so the draws (and metrics) do not depend on which users share scores
    by_order = np.zeros(len(candidates), dtype=bool)
    if sampled_negatives is None:
        by_order = np.ones(len(candidates), dtype=bool) if shared is not None else cold
        t0 = time.perf_counter()
        for rows, vec in ((cold, fallback), (~cold & by_order, shared)):
            rows = np.flatnonzero(rows)
            if len(rows):
                chunk = candidates[rows]
                topk_all[rows], _ = top_k_shared(
                    vec,
                    kmax,
                    seen[chunk] if exclude_seen else None,
                    id_keys(train.users.ids[chunk]),
                    item_keys,
                    tie_seed,
                )
        score_seconds += time.perf_counter() - t0
    dense = np.flatnonzero(~by_order)
    for start in range(0, len(dense), batch_users):
        rows = dense[start : start + batch_users]
        chunk = candidates[rows]
        warm = can_score[chunk]
        scores = np.empty((len(chunk), n_items), dtype=np.float32)
        scores[~warm] = fallback
        t0 = time.perf_counter()
        if warm.any():
            block = np.asarray(model.score_all(chunk[warm]), dtype=np.float32)
            if block.shape != (int(warm.sum()), n_items):
                raise ValueError(
                    f"score_all returned shape {block.shape}, expected {(int(warm.sum()), n_items)}"
                )
            scores[warm] = block
        score_seconds += time.perf_counter() - t0
        seen_rows = seen[chunk]
        if exclude_seen:
            r, c = seen_rows.nonzero()
            scores[r, c] = -np.inf
        if sampled_negatives is not None:
            keep_mask = _sample_candidates(seen_rows, truth[chunk], sampled_negatives, rng)
            scores[~keep_mask] = -np.inf
        t0 = time.perf_counter()
        topk_all[rows], _ = top_k(
            scores, kmax, id_keys(train.users.ids[chunk]), item_keys, tie_seed
        )
        score_seconds += time.perf_counter() - t0
        del scores

    pop = _Popularity(item_counts, n_train_users, tail)
    for start in range(0, len(candidates), _METRIC_ROWS):
        chunk = candidates[start : start + _METRIC_ROWS]
        topk = topk_all[start : start + _METRIC_ROWS]
        hits = M.hits_matrix(topk, truth[chunk])
        n_rel = n_rel_all[chunk]
        for k in ks:
            for m in acc_keys + beyond_keys:
                parts[f"{m}@{k}"].append(_user_metric(m, k, hits, n_rel, topk, pop, unit))

    per_user = {key: (np.concatenate(v) if v else np.zeros(0)) for key, v in parts.items()}
    summary = {key: float(v.mean()) if len(v) else float("nan") for key, v in per_user.items()}
    if "coverage" in wanted:
        for k in ks:
            summary[f"coverage@{k}"] = M.catalog_coverage(topk_all[:, :k], n_items)
    return RankingResult(
        protocol=protocol,
        ks=ks,
        users=candidates,
        per_user=per_user,
        summary=summary,
        n_items=n_items,
        n_skipped=n_skipped,
        score_seconds=score_seconds,
        metadata=metadata,
        cold=~can_score[candidates],
    )


def _shared_scores(model: Scorer, n_items: int) -> np.ndarray | None:
    """The model's scores when they are the same for every user (`shared_scores()`), as the
    float32 row `score_all` would repeat; None for a personalised model."""
    get = getattr(model, "shared_scores", None)
    vec = get() if callable(get) else None
    if vec is None or np.shape(vec) != (n_items,):
        return None  # the chunked path checks (and reports) a mismatched shape
    return np.asarray(vec, dtype=np.float32)


def _fallback(
    model: Scorer, seen: sp.csr_matrix, item_counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(which users the model can score, the popularity scores the others get), as
    `Recommender.recommend` decides: a user whose training row is empty, in the evaluator's
    train matrix or in the model's own (events of types the model weighs 0 do not count), is
    ranked by the model's training popularity."""
    can_score = np.diff(seen.indptr) > 0
    own = getattr(model, "seen_", None)
    if sp.issparse(own) and own.shape == seen.shape:
        can_score &= np.diff(own.tocsr().indptr) > 0
    pop = getattr(model, "item_popularity_", None)
    if pop is None or np.shape(pop) != item_counts.shape:
        pop = item_counts
    return can_score, np.asarray(pop, dtype=np.float32)


@dataclass
class _Popularity:
    item_counts: np.ndarray
    n_users: int
    tail: np.ndarray


def _user_metric(
    metric: str,
    k: int,
    hits: np.ndarray,
    n_rel: np.ndarray,
    topk: np.ndarray,
    pop: _Popularity,
    unit: sp.csr_matrix | None,
) -> np.ndarray:
    """One per-user metric at cut-off k for a chunk of users."""
    if metric == "precision":
        return M.precision_at_k(hits, k)
    if metric == "recall":
        return M.recall_at_k(hits, n_rel, k)
    if metric == "hr":
        return M.hit_rate_at_k(hits, k)
    if metric == "ndcg":
        return M.ndcg_at_k(hits, n_rel, k)
    if metric == "mrr":
        return M.mrr_at_k(hits, k)
    if metric == "map":
        return M.map_at_k(hits, n_rel, k)
    if metric == "novelty":
        return M.novelty(topk[:, :k], pop.item_counts, pop.n_users)
    if metric == "diversity":
        assert unit is not None
        return M.intra_list_diversity(topk[:, :k], unit)
    if metric == "popularity":
        return M.average_popularity(topk[:, :k], pop.item_counts)
    if metric == "long_tail":
        return M.long_tail_share(topk[:, :k], pop.tail)
    raise ValueError(f"unknown per-user metric {metric!r}")


def _sample_candidates(
    seen_rows: sp.csr_matrix, truth_rows: sp.csr_matrix, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Boolean (users x items): each user's test items plus n distinct random negatives
    (fewer when the user has fewer unseen items)."""
    n_users, n_items = truth_rows.shape
    positives = (seen_rows + truth_rows).toarray() > 0
    keys = rng.random((n_users, n_items))
    keys[positives] = np.inf  # never drawn as negatives
    n_eff = min(n, n_items)
    chosen = np.argpartition(keys, n_eff - 1, axis=1)[:, :n_eff]
    mask = np.zeros((n_users, n_items), dtype=bool)
    valid = np.isfinite(np.take_along_axis(keys, chosen, axis=1))
    rows = np.repeat(np.arange(n_users), n_eff).reshape(n_users, n_eff)
    mask[rows[valid], chosen[valid]] = True
    mask |= truth_rows.toarray() > 0
    return mask


def evaluate_rating(
    model: RatingPredictor, test: Interactions, batch_size: int = 262_144
) -> RatingResult:
    """RMSE, MSE and MAE of `model.predict_idx` on the test events that carry a value
    (ratings), plus per-user MSE and MAE arrays (users sorted) for paired tests. Only real
    ratings count: one ingested without a value stays missing (``--fill-rating`` fills it
    for training only), so it is never scored against a fill.

    Predictions that come back NaN (a model that cannot score a pair) are counted in
    `n_unscored` and left out, so a model cannot improve its error by abstaining silently:
    callers should check that count.
    """
    has = ~np.isnan(test.value)
    if not has.any():
        raise InputError("test: rating evaluation needs events with a value (ratings)")
    u = test.user_idx[has].astype(np.int64)
    i = test.item_idx[has].astype(np.int64)
    y = test.value[has].astype(np.float64)
    preds = np.empty(len(u), dtype=np.float64)
    t0 = time.perf_counter()
    for s in range(0, len(u), batch_size):
        preds[s : s + batch_size] = np.asarray(
            model.predict_idx(u[s : s + batch_size], i[s : s + batch_size])
        )
    elapsed = time.perf_counter() - t0
    ok = ~np.isnan(preds)
    if not ok.any():
        raise ValueError("the model predicted no rating (all NaN) for the test pairs")
    u, y, preds = u[ok], y[ok], preds[ok]
    err = preds - y
    users, per_mse = M.group_means(err**2, u)
    _, per_mae = M.group_means(np.abs(err), u)
    counts = np.bincount(np.unique(u, return_inverse=True)[1])
    mse_value = float(np.mean(err**2))
    return RatingResult(
        rmse=float(np.sqrt(mse_value)),
        mse=mse_value,
        mae=float(np.mean(np.abs(err))),
        users=users,
        per_user={"mse": per_mse, "mae": per_mae},
        counts=counts,
        n_ratings=int(len(y)),
        n_unscored=int((~ok).sum()),
        predict_seconds=elapsed,
    )
