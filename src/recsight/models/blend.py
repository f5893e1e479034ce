"""A learned blend: score-level stacking of registered models, itself a registered model.

``Blend(models=["ease", {"name": "recvae", "params": {"epochs": 30}}])`` fits each model,
normalises each one's scores per user (z-score over the items the user has not seen, so
models on different scales mix), and ranks by the weighted sum. The weights are fitted on
validation data carved from the training data only:

1. a seeded ``user_random`` holdout of `valid_share` of each user's items (the evaluator's
   split) is set aside; every model is fitted on the rest;
2. every non-negative weight vector on the simplex grid with step ``1 / grid`` is scored by
   `holdout_ndcg` (NDCG@`VALID_K`, the evaluator's protocol: training items masked,
   shared tie rule) on at most `max_valid_users` validation users, and the best is kept
   (ties: the earlier grid point, i.e. more weight on earlier models);
3. every model is refitted on all of the training data with its own hyperparameters.

The test data are never seen. A saved blend holds its weights in its own files and each model
in a subfolder (``0-ease/``, ``1-recvae/``), so it loads, serves and explains like any model.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from rich.console import Console

from recsight.data.dataset import Interactions
from recsight.data.splits import split
from recsight.errors import InputError
from recsight.models.base import Recommender
from recsight.models.validation import holdout_ndcg

#: Validation metric cut-off and the default most validation users scored.
VALID_K = 20
MAX_VALID_USERS = 5000


def _spec(entry: str | dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A blend member as (name, params) from ``"ease"`` or ``{"name": ..., "params": ...}``."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        extra = set(entry) - {"name", "params"}
        params = entry.get("params") or {}
        if not extra and isinstance(params, dict):
            return entry["name"], dict(params)
    raise InputError(
        f"models: each entry must be a model name or {{'name': ..., 'params': {{...}}}}, "
        f"not {entry!r}"
    )


def row_stats(scores: np.ndarray, seen: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the mean and standard deviation of the scores of the items not in `seen`
    (non-finite scores count as the row's lowest finite score; a constant row gets std 1)."""
    s = np.array(scores, dtype=np.float64, copy=True)
    finite = np.isfinite(s)
    if not finite.all():
        low = np.where(finite, s, np.inf).min(axis=1, keepdims=True)
        s = np.where(finite, s, np.where(np.isfinite(low), low, 0.0))
    mask = np.ones(s.shape, dtype=bool)
    seen = seen.tocsr()
    mask[np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr)), seen.indices] = False
    count = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    mean = np.where(mask, s, 0.0).sum(axis=1, keepdims=True) / count
    std = np.sqrt(np.where(mask, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / count)
    return mean, np.where(std > 0, std, 1.0)


def normalised(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """Each row z-scored by `row_stats` (seen items are transformed too but do not move the
    statistics; non-finite scores become the row's lowest)."""
    mean, std = row_stats(scores, seen)
    s = np.asarray(scores, dtype=np.float64)
    z = (np.where(np.isfinite(s), s, np.nan) - mean) / std
    return np.nan_to_num(z, nan=np.nanmin(z) if np.isfinite(z).any() else 0.0).astype(np.float32)


def simplex_grid(n: int, grid: int) -> np.ndarray:
    """Every weight vector of `n` non-negative multiples of ``1 / grid`` summing to 1."""
    points = [c for c in itertools.product(range(grid + 1), repeat=n) if sum(c) == grid]
    return np.array(sorted(points, reverse=True), dtype=np.float64) / grid


def search_weights(
    zs: list[np.ndarray],
    users: np.ndarray,
    fit_part: Interactions,
    valid_part: Interactions,
    grid: int,
) -> tuple[np.ndarray, float]:
    """The simplex-grid weight vector (step ``1 / grid``) whose mix of the normalised member
    scores `zs` (rows = `users`, sorted) scores the best NDCG@`VALID_K` on `valid_part` by the
    evaluator's protocol (items of `fit_part` masked, shared tie rule), and that NDCG; ties go
    to the earlier grid point (more weight on earlier members)."""
    row_of = np.full(fit_part.n_users, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))

    class _Mix:
        def __init__(self, w: np.ndarray):
            self.w = w

        def score_all(self, user_idx: np.ndarray) -> np.ndarray:
            rows = row_of[np.asarray(user_idx)]
            return sum(w * z[rows] for w, z in zip(self.w, zs, strict=True) if w)

    candidates = simplex_grid(len(zs), grid)
    ndcg = np.empty(len(candidates))
    for c, w in enumerate(candidates):
        ndcg[c] = holdout_ndcg(_Mix(w), fit_part, valid_part, VALID_K, users=users)
    best = int(np.argmax(ndcg))
    return candidates[best].astype(np.float64), float(ndcg[best])


class Blend(Recommender):
    """Score-level stacking of registered models with weights fitted on a validation split
    of the training data (see the module docstring).

    Hyperparameters: `models` (names, or ``{"name": ..., "params": {...}}`` entries; at least
    two), `valid_share` (share of each user's items held out to fit the weights), `grid`
    (weights are multiples of ``1 / grid``), `seed` (the holdout), `max_valid_users` (the most
    validation users scored, sampled with `seed`; None: all), `verbose`.
    """

    name: ClassVar[str] = "blend"
    _state: ClassVar[tuple[str, ...]] = ("weights_", "valid_ndcg_")

    weights_: np.ndarray
    valid_ndcg_: np.ndarray
    models_: list[Recommender]

    def __init__(
        self,
        models: list[str | dict[str, Any]] | None = None,
        valid_share: float = 0.1,
        grid: int = 10,
        seed: int = 42,
        max_valid_users: int | None = MAX_VALID_USERS,
        verbose: bool = True,
    ):
        self.models = models
        self.valid_share = valid_share
        self.grid = grid
        self.seed = seed
        self.max_valid_users = max_valid_users
        self.verbose = verbose

    # -- checks -------------------------------------------------------------------------------
    def _members(self) -> list[tuple[str, dict[str, Any]]]:
        from recsight.models.registry import check_params, model_class

        if not isinstance(self.models, (list, tuple)) or len(self.models) < 2:
            raise InputError(
                "models: a blend needs a list of at least two models, e.g. "
                '["ease", "recvae"] or [{"name": "ease", "params": {"reg": 500}}, "recvae"]'
            )
        out = []
        for entry in self.models:
            name, params = _spec(entry)
            cls = model_class(name)
            if cls is Blend:
                raise InputError("models: a blend cannot contain another blend")
            if cls.explicit:
                raise InputError(f"models: {name!r} predicts ratings; a blend ranks items")
            unknown = sorted(set(params) - set(cls.param_names()))
            if unknown:
                raise InputError(
                    f"models: {name!r} has no parameter(s) {', '.join(unknown)}; valid: "
                    f"{', '.join(cls.param_names())}"
                )
            out.append((name, check_params(cls, params)))
        return out

    def _check(self) -> list[tuple[str, dict[str, Any]]]:
        members = self._members()
        if not 0.0 < float(self.valid_share) < 1.0:
            raise InputError(f"valid_share: expected a share in (0, 1), not {self.valid_share!r}")
        if isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 1:
            raise InputError(f"grid: expected a positive integer, not {self.grid!r}")
        cap = self.max_valid_users
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise InputError(f"max_valid_users: expected a positive integer or None, not {cap!r}")
        if _grid_size(len(members), self.grid) > 5000:
            raise InputError(
                f"grid: {self.grid} steps over {len(members)} models is "
                f"{_grid_size(len(members), self.grid)} weight vectors; lower grid"
            )
        return members

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, train: Interactions) -> Blend:
        """Fit the members on a holdout split, the weights on its validation part, then refit
        the members on all of `train`."""
        from recsight.models.registry import create_model, model_class

        members = self._check()
        if not self.verbose:  # a quiet blend keeps its members quiet too
            members = [
                (n, {**p, "verbose": False} if "verbose" in model_class(n).param_names() else p)
                for n, p in members
            ]
        console = Console(stderr=True, quiet=not self.verbose)
        parts = split(train, f"user_random:{1.0 - float(self.valid_share)}", seed=self.seed)
        inner_seen = parts.train.to_csr(binary=True)
        truth_users = np.unique(parts.test.user_idx)
        rng = np.random.default_rng(self.seed)
        cap = self.max_valid_users
        if cap is not None and len(truth_users) > cap:
            truth_users = np.sort(rng.choice(truth_users, cap, replace=False))
        if len(truth_users) == 0:
            raise InputError(
                "training data: too few items per user to hold any out for the blend's weights"
            )
        zs = []
        for name, params in members:
            console.log(f"blend: fitting {name} on the weight-fitting split")
            model = create_model(name, **params).fit(parts.train)
            zs.append(normalised(model.score_all(truth_users), inner_seen[truth_users]))
        self.weights_, self.valid_ndcg_ = search_weights(
            zs, truth_users, parts.train, parts.test, self.grid
        )
        shown = ", ".join(f"{n} {w:.2f}" for (n, _), w in zip(members, self.weights_, strict=True))
        console.log(f"blend: weights {shown} (validation ndcg@{VALID_K} {self.valid_ndcg_:.4f})")
        self.models_ = []
        for name, params in members:
            console.log(f"blend: refitting {name} on all training data")
            self.models_.append(create_model(name, **params).fit(train))
        self._set_training(train, train.to_csr(binary=True))
        return self

    # -- scoring ------------------------------------------------------------------------------
    def _mix(self, score: Any, seen: sp.csr_matrix) -> np.ndarray:
        """Weighted sum of the members' normalised scores; ``score(model)`` gives a member's
        raw scores (members with weight 0 are not scored)."""
        out = np.zeros((seen.shape[0], self.n_items), dtype=np.float32)
        for w, m in zip(self.weights_, self.models_, strict=True):
            if w:
                out += np.float32(w) * normalised(score(m), seen)
        return out

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        users = np.asarray(user_idx, dtype=np.int64)
        return self._mix(lambda m: m.score_all(users), self.seen_[users])

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        """Each member's `score_history` (sequence members read the order from the weights,
        see theirs), normalised and mixed."""
        h = histories.tocsr()
        return self._mix(lambda m: m.score_history(h), h)

    def _item_similarities(self, i: int) -> np.ndarray:
        """The similarities of the member with the largest weight."""
        return self.models_[int(np.argmax(self.weights_))]._item_similarities(i)

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # each member's contributions, scaled as its scores are in the blend (1 / row std)
        h = self._history_row(hist_items, hist_weights)
        total = np.zeros(len(hist_items))
        for w, m in zip(self.weights_, self.models_, strict=True):
            if w:
                _, std = row_stats(m.score_history(h), h)
                total += w * m._contributions(hist_items, hist_weights, item) / std[0, 0]
        return total

    # -- persistence --------------------------------------------------------------------------
    def drop_users(self, keep: np.ndarray) -> None:
        for m in self.models_:
            m.drop_users(keep)
        super().drop_users(keep)

    def save(self, path: str | Path) -> Path:
        """The blend's weights in its own files, each member in subfolder ``i-name``."""
        out = super().save(path)
        for i, (m, (name, _)) in enumerate(zip(self.models_, self._members(), strict=True)):
            m.save(out / f"{i}-{name}")
        return out

    @classmethod
    def load(cls, path: str | Path) -> Blend:
        from recsight.models.registry import load_model

        model = super().load(path)
        assert isinstance(model, Blend)
        model.models_ = []
        for i, (name, _) in enumerate(model._members()):
            sub = Path(path) / f"{i}-{name}"
            if not sub.is_dir():
                raise InputError(f"{path}: the blend's member {name!r} is missing ({sub})")
            model.models_.append(load_model(sub))
        return model


def _grid_size(n: int, grid: int) -> int:
    """Number of points of the simplex grid, C(grid + n - 1, n - 1)."""
    from math import comb

    return comb(grid + n - 1, n - 1)
