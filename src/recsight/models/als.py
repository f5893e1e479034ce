"""Implicit-feedback matrix factorization: ALS (Hu, Koren & Volinsky 2008) and BPR.

Both wrap the `implicit` library's CPU models (Cython, multi-threaded; faster than anything
we would write in numpy) for fitting. Fold-in for new histories is our own batched ridge solve
(`recsight.models.mf.solve_rows`) of implicit's exact user equation

    (Y^T Y + reg I + sum_j (c_j - 1) y_j y_j^T) x = sum_j c_j y_j,   c_j = alpha * weight_j,

and after fitting ALS the user factors are recomputed with that same exact equation (implicit's
default conjugate-gradient steps only approximate it), so a known user's history folded in
reproduces their trained row. BPR has no closed-form fold-in: its histories are projected with
the same equation onto BPR's item factors (`reg` 1, `alpha` 1), an approximation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsight.data.dataset import Interactions
from recsight.models.base import Recommender
from recsight.models.mf import solve_rows


class _FactorModel(Recommender):
    _state = ("user_factors_", "item_factors_")
    _user_state = ("user_factors_",)
    user_factors_: np.ndarray
    item_factors_: np.ndarray

    def _fold_in_params(self) -> tuple[float, float]:
        """(reg, alpha) of the fold-in equation."""
        raise NotImplementedError

    def _derive(self) -> None:
        super()._derive()
        if hasattr(self, "item_factors_"):
            y = self.item_factors_.astype(np.float64)
            self._gram = y.T @ y

    def fold_in(self, histories: sp.csr_matrix) -> np.ndarray:
        """User factors for histories (rows of event weights), item factors held fixed."""
        h = histories.tocsr().astype(np.float32)
        reg, alpha = self._fold_in_params()
        c = alpha * h.data
        k = self.item_factors_.shape[1]
        regs = np.full((h.shape[0], k), reg)
        return solve_rows(h, c, c - 1.0, self.item_factors_, regs, gram=self._gram)

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        u = self.user_factors_[np.asarray(user_idx, dtype=np.int64)]
        return (u @ self.item_factors_.T).astype(np.float32)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return (self.fold_in(histories) @ self.item_factors_.T).astype(np.float32)

    def _item_similarities(self, i: int) -> np.ndarray:
        q = self.item_factors_
        norms = np.linalg.norm(q, axis=1) + 1e-12
        return (q @ q[i]) / (norms * norms[i])

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # as implicit's explain: score = sum_j c_j y_i^T A^-1 y_j for the fold-in equation
        reg, alpha = self._fold_in_params()
        y = self.item_factors_.astype(np.float64)
        c = alpha * hist_weights.astype(np.float64)
        yh = y[hist_items]
        a = self._gram + reg * np.eye(y.shape[1]) + yh.T @ ((c - 1.0)[:, None] * yh)
        return c * (yh @ np.linalg.solve(a, y[item]))


class ALS(_FactorModel):
    """Implicit ALS with confidence ``alpha * weight``; defaults chosen on validation data."""

    name: ClassVar[str] = "als"

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1.0,
        alpha: float = 10.0,
        iterations: int = 15,
        weights: Mapping[str, float | str] | None = None,
        seed: int = 42,
        num_threads: int = 0,
    ):
        self.factors = factors
        self.reg = reg
        self.alpha = alpha
        self.iterations = iterations
        self.weights = weights
        self.seed = seed
        self.num_threads = num_threads

    def _fold_in_params(self) -> tuple[float, float]:
        return float(self.reg), float(self.alpha)

    def fit(self, train: Interactions) -> ALS:
        from implicit.cpu.als import AlternatingLeastSquares

        x = train.to_csr(self.weights)
        self._set_training(train, x)
        # implicit wants a single-threaded BLAS (it parallelises itself)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=int(self.factors), regularization=float(self.reg),
                alpha=float(self.alpha), iterations=int(self.iterations),
                random_state=self.seed, num_threads=int(self.num_threads),
                calculate_training_loss=False,
            )  # fmt: skip
            model.fit(self.seen_, show_progress=False)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._derive()
        self.user_factors_ = self.fold_in(self.seen_)
        return self


class BPR(_FactorModel):
    """Bayesian personalized ranking (implicit's CPU BPR; item bias as an extra factor)."""

    name: ClassVar[str] = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float = 0.05,
        reg: float = 0.01,
        iterations: int = 100,
        weights: Mapping[str, float | str] | None = None,
        seed: int = 42,
        num_threads: int = 0,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.reg = reg
        self.iterations = iterations
        self.weights = weights
        self.seed = seed
        self.num_threads = num_threads

    def _fold_in_params(self) -> tuple[float, float]:
        return 1.0, 1.0

    def fit(self, train: Interactions) -> BPR:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        x = train.to_csr(self.weights)
        self._set_training(train, x)
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=int(self.factors), learning_rate=float(self.learning_rate),
                regularization=float(self.reg), iterations=int(self.iterations),
                random_state=self.seed, num_threads=int(self.num_threads),
            )  # fmt: skip
            model.fit(self.seen_, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        self._derive()
        return self
