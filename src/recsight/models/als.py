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

from recsight.data.dataset import IdIndex, Interactions
from recsight.errors import InputError
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
        h = histories.tocsr().astype(np.float32, copy=False)
        reg, alpha = self._fold_in_params()
        c = alpha * h.data
        k = self.item_factors_.shape[1]
        regs = np.broadcast_to(np.full(k, reg), (h.shape[0], k))  # one row, not one per user
        return solve_rows(h, c, c - 1.0, self.item_factors_, regs, gram=self._gram)

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        u = self.user_factors_[np.asarray(user_idx, dtype=np.int64)]
        # float32 already: no second users x items copy (750 MB a chunk at 1M items)
        return (u @ self.item_factors_.T).astype(np.float32, copy=False)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return (self.fold_in(histories) @ self.item_factors_.T).astype(np.float32)

    def _item_vectors(self) -> np.ndarray:
        return self.item_factors_

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
        return self.fit_matrix(train.to_csr(self.weights), train.users, train.items)

    def fit_matrix(self, x: sp.csr_matrix, users: IdIndex, items: IdIndex) -> ALS:
        """`fit` from the user x item matrix of summed event weights (``to_csr(weights)``,
        or `Store.weighted_matrix`, which never holds the events) over the ids `users` x
        `items`."""
        from implicit.cpu.als import AlternatingLeastSquares

        self._set_matrix(users, items, x)
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
        del model  # its user factors (750 MB at 3M users) are recomputed just below
        self._derive()
        self.user_factors_ = self.fold_in(self.seen_)
        return self


BPR_BACKENDS = ("implicit", "torch")


class BPR(_FactorModel):
    """Bayesian personalized ranking (Rendle et al. 2009) with an item bias (kept as an extra
    factor). ``backend="implicit"`` (default) wraps implicit's CPU BPR (Hogwild SGD);
    ``backend="torch"`` is recsight's own PyTorch BPR: every epoch visits each training pair
    once in shuffled mini-batches of `batch_size`, draws one negative per pair uniformly among
    the user's unseen items, and minimises ``-log sigmoid(x_ui - x_uj)`` plus `reg` x the
    squared norms of the factors and biases involved, with Adam at `learning_rate`
    (`iterations` epochs). `learning_rate` None means the backend's default (0.05 for
    implicit's SGD, 0.005 for Adam)."""

    name: ClassVar[str] = "bpr"

    def __init__(
        self,
        factors: int = 64,
        learning_rate: float | None = None,
        reg: float = 0.01,
        iterations: int = 100,
        weights: Mapping[str, float | str] | None = None,
        seed: int = 42,
        num_threads: int = 0,
        backend: str = "implicit",
        batch_size: int = 4096,
    ):
        self.factors = factors
        self.learning_rate = learning_rate
        self.reg = reg
        self.iterations = iterations
        self.weights = weights
        self.seed = seed
        self.num_threads = num_threads
        self.backend = backend
        self.batch_size = batch_size

    def _fold_in_params(self) -> tuple[float, float]:
        return 1.0, 1.0

    def fit(self, train: Interactions) -> BPR:
        return self.fit_matrix(train.to_csr(self.weights), train.users, train.items)

    def fit_matrix(self, x: sp.csr_matrix, users: IdIndex, items: IdIndex) -> BPR:
        """`fit` from the user x item matrix of summed event weights (see `ALS.fit_matrix`)."""
        if self.backend not in BPR_BACKENDS:
            raise InputError(
                f"backend: expected one of {', '.join(BPR_BACKENDS)}, not {self.backend!r}"
            )
        self._set_matrix(users, items, x)
        if self.backend == "torch":
            self._fit_torch()
        else:
            self._fit_implicit()
        self._derive()
        return self

    def _fit_implicit(self) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        lr = 0.05 if self.learning_rate is None else float(self.learning_rate)
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=int(self.factors), learning_rate=lr,
                regularization=float(self.reg), iterations=int(self.iterations),
                random_state=self.seed, num_threads=int(self.num_threads),
            )  # fmt: skip
            model.fit(self.seen_, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _fit_torch(self) -> None:
        import torch
        import torch.nn.functional as F

        from recsight.models.neural.training import (
            minibatches,
            seed_everything,
            torch_threads,
            train_loop,
        )

        seen = self.seen_.tocsr()
        n_users, n_items = seen.shape
        users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(seen.indptr))
        items = seen.indices.astype(np.int64)
        if len(users) == 0 or n_items < 2:
            raise InputError("training data: BPR needs interactions and at least two items")
        keys = np.sort(users * n_items + items)  # seen (user, item) pairs, for rejection
        k = int(self.factors)
        rng = seed_everything(self.seed)
        threads = None if int(self.num_threads) == 0 else int(self.num_threads)
        with torch_threads(threads):
            net = torch.nn.ModuleDict({
                "user": torch.nn.Embedding(n_users, k),
                "item": torch.nn.Embedding(n_items, k),
                "bias": torch.nn.Embedding(n_items, 1),
            })  # fmt: skip
            for name in ("user", "item"):
                torch.nn.init.normal_(net[name].weight, std=0.1)
            torch.nn.init.zeros_(net["bias"].weight)

            def batches(g: np.random.Generator):
                for b in minibatches(len(users), int(self.batch_size), g):
                    u, i = users[b], items[b]
                    j = g.integers(0, n_items, len(b))
                    # redraw negatives that are seen items (a few rounds; a user who has
                    # seen nearly everything may keep one, a negligible bias)
                    for _ in range(10):
                        pos = np.searchsorted(keys, u * n_items + j)
                        hit = keys[np.minimum(pos, len(keys) - 1)] == u * n_items + j
                        if not hit.any():
                            break
                        j[hit] = g.integers(0, n_items, int(hit.sum()))
                    yield tuple(torch.from_numpy(a) for a in (u, i, j))

            def loss_fn(batch):
                u, i, j = batch
                pu, qi, qj = net["user"](u), net["item"](i), net["item"](j)
                bi, bj = net["bias"](i)[:, 0], net["bias"](j)[:, 0]
                diff = (pu * (qi - qj)).sum(1) + bi - bj
                norms = pu.pow(2).sum(1) + qi.pow(2).sum(1) + qj.pow(2).sum(1) + bi**2 + bj**2
                return (-F.logsigmoid(diff) + float(self.reg) * norms).mean()

            self.history_ = train_loop(
                net, batches, loss_fn, epochs=int(self.iterations),
                lr=0.005 if self.learning_rate is None else float(self.learning_rate),
                weight_decay=0.0, rng=rng, description="bpr (torch)",
            )  # fmt: skip
        with torch.no_grad():
            p = net["user"].weight.detach().numpy()
            q = net["item"].weight.detach().numpy()
            b = net["bias"].weight.detach().numpy()
        self.user_factors_ = np.hstack([p, np.ones((n_users, 1), np.float32)]).astype(np.float32)
        self.item_factors_ = np.hstack([q, b]).astype(np.float32)
