"""Shared base of the (user, item) pair models: `seed_mlp`, `deepfm` and `neumf`.

``task="binary"``: every event (of `positive_types`, default all) is a positive; each epoch
draws `negatives` fresh uniformly random items per positive, and events of `impression_types`
on pairs that never got a positive are kept as fixed negatives (shown, not taken). The loss is
the model's own (log-loss for deepfm/neumf, MSE on 0/1 labels for the seed's sketch);
validation metric AUC. ``task="regression"``: rating events, MSE around the global mean,
validation metric RMSE; the model is then explicit (`predict_idx` returns ratings).

Each model turns a user into a *representation* (a tuple of tensors) and scores items from
it, pairwise for training or against the whole catalog for `score_all`. `score_history`
folds a new history in by fitting a fresh representation's free part (the user-id parts) to
the history for `FOLD_IN_STEPS` Adam steps with the item side frozen, all rows at once.

Erasure (`drop_users`) removes a user's rows from every per-user parameter of the network
(`_user_rows`) and from the per-user arrays (`_user_state`); the shared layers and item side,
which the user helped train, stay until a retrain (`recsight.privacy.unlearn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, root_mean_squared_error

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.neural.base import TorchRecommender, holdout_last
from recsight.models.neural.config import PairConfig
from recsight.models.neural.training import (
    check_finite,
    flatten_state,
    minibatches,
    seed_everything,
    torch_threads,
    train_loop,
)

TASKS = ("binary", "regression")
#: Adam steps and learning rate of the history fold-in.
FOLD_IN_STEPS = 100
FOLD_IN_LR = 0.05
#: Users scored per block in `score_all` (bounds memory at block x items x hidden).
SCORE_BLOCK = 256


@dataclass(kw_only=True, eq=False, repr=False)
class PairRecommender(PairConfig, TorchRecommender):
    """Base of pair models; subclasses implement the representation methods below.
    Hyperparameters: those of `PairConfig` plus each model's architecture."""

    #: "bce" (log-loss on logits) or "mse" (squared error on the raw output).
    loss: ClassVar[str] = "bce"
    _state: ClassVar[tuple[str, ...]] = ("weights_", "dims_", "global_mean_", "rating_range_")
    #: network parameters holding one row per user: state-dict key -> row of user 0
    _user_rows: ClassVar[dict[str, int]] = {}

    @property  # type: ignore[override]
    def explicit(self) -> bool:
        """True when trained as rating regression (then `predict_idx` returns ratings)."""
        return self.task == "regression"

    # -- what a subclass implements -----------------------------------------------------------
    def _prepare(self, train: Interactions) -> None:
        """Set `dims_` and any encoded tables before the net is built."""
        raise NotImplementedError

    def _user_rep(self, net: torch.nn.Module, users: torch.Tensor, ctx: torch.Tensor | None
                  ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Representation of known users (`ctx`: event context rows, None = at scoring)."""
        raise NotImplementedError

    def _blank_rep(self, net: torch.nn.Module, n: int) -> tuple[torch.Tensor, ...]:
        """Representation of `n` unknown users whose leading tensor is the free part a
        fold-in fits (returned as a leaf that requires grad)."""
        raise NotImplementedError

    def _pair_out(self, net: torch.nn.Module, rep: tuple[torch.Tensor, ...], items: torch.Tensor
                  ) -> torch.Tensor:  # fmt: skip
        """Raw outputs ``(n,)`` for aligned (representation row, item) pairs."""
        raise NotImplementedError

    def _all_out(self, net: torch.nn.Module, rep: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Raw outputs ``(n, n_items)`` against every item."""
        raise NotImplementedError

    def _event_context(self, train: Interactions) -> np.ndarray | None:
        """Per-event context rows passed to `_user_rep` while training (None: no context)."""
        return None

    def _shift_user_codes(self, gone: np.ndarray) -> None:
        """After `drop_users`: renumber whatever indexes the parameters' rows past the
        removed users' rows (`gone`: their old user indices)."""

    # -- erasure ------------------------------------------------------------------------------
    def drop_users(self, keep: np.ndarray) -> None:
        """Remove the users whose `keep` entry is False, their rows of the network's per-user
        parameters included; every other weight is kept as it was, so the remaining users
        score exactly as before."""
        self._check_fitted()
        gone = np.flatnonzero(~np.asarray(keep, dtype=bool))
        state = {k: v.detach().cpu() for k, v in self.net.state_dict().items()}
        for key, first in self._user_rows.items():
            rows = np.delete(np.arange(len(state[key])), first + gone)
            state[key] = state[key][torch.from_numpy(rows)]
        super().drop_users(keep)
        self.dims_ = self.dims_.copy()
        self.dims_[0] = len(self.users_)
        self._shift_user_codes(gone)
        with torch_threads(self.threads):
            net = self._build_net()
            net.load_state_dict(state)
        self.weights_ = flatten_state(net)
        self._net = None  # rebuilt from `weights_` on the scoring device when next used

    # -- checks and data ----------------------------------------------------------------------
    def _check_pair(self) -> None:
        self._check_common()
        if self.task not in TASKS:
            raise InputError(f"task: expected one of {', '.join(TASKS)}, not {self.task!r}")
        if not isinstance(self.negatives, (int, np.integer)) or self.negatives < 1:
            raise InputError(f"negatives: expected a positive integer, not {self.negatives!r}")

    def _targets(self, train: Interactions) -> tuple[np.ndarray, np.ndarray | None]:
        """(events used, fixed labels or None for sampled-negative training)."""
        if self.task == "regression":
            values = train.rating_values()  # missing ones filled from train (--fill-rating)
            keep = train.type_mask(["rating"]) & ~np.isnan(values)
            if not keep.any():
                raise InputError("training data: task='regression' needs rating events")
            return np.flatnonzero(keep), values[keep].astype(np.float32)
        pos = (
            np.ones(len(train), bool)
            if self.positive_types is None
            else train.type_mask(self.positive_types)
        )
        if not pos.any():
            raise InputError(
                f"training data: no positive events of types {list(self.positive_types or [])}"
            )
        if not self.impression_types:
            return np.flatnonzero(pos), None
        key = train.user_idx.astype(np.int64) * train.n_items + train.item_idx
        imp = train.type_mask(self.impression_types) & ~np.isin(key, key[pos])
        idx = np.concatenate([np.flatnonzero(pos), np.flatnonzero(imp)])
        labels = np.concatenate([np.ones(pos.sum()), np.zeros(imp.sum())]).astype(np.float32)
        return idx, labels

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, train: Interactions) -> PairRecommender:
        """Learn from `train` (see the module docstring for the task and validation)."""
        self._check_pair()
        rng = seed_everything(self.seed)
        idx, labels = self._targets(train)
        seen = train.subset(idx).to_csr(binary=True) if self.task == "binary" else None
        if self.task == "regression":
            r = train.subset(idx).to_csr({"rating": "value"}, aggregate="last")
            seen = r
        self._set_training(train, seen)
        self.global_mean_ = float(labels.mean()) if self.task == "regression" else 0.0
        lo_hi = [labels.min(), labels.max()] if self.task == "regression" else [0.0, 1.0]
        self.rating_range_ = np.asarray(lo_hi, dtype=np.float32)
        self._prepare(train)
        ctx_all = self._event_context(train)

        users = train.user_idx[idx].astype(np.int64)
        items = train.item_idx[idx].astype(np.int64)
        ctx = None if ctx_all is None else ctx_all[idx]
        valid = None
        held = np.zeros(len(idx), bool)
        if self.early_stopping:
            held = holdout_last(train.subset(idx))
            if labels is not None and self.task == "binary":
                held &= labels > 0
        if self.early_stopping and held.any():
            valid = self._valid_set(users[held], items[held], rng,
                                    None if labels is None else labels[held],
                                    None if ctx is None else ctx[held])  # fmt: skip
            users, items = users[~held], items[~held]
            ctx = None if ctx is None else ctx[~held]
            labels = None if labels is None else labels[~held]

        t_users, t_items = torch.from_numpy(users), torch.from_numpy(items)
        t_ctx = None if ctx is None else torch.from_numpy(ctx)
        t_labels = None if labels is None else torch.from_numpy(labels)
        n_items = train.n_items

        with torch_threads(self.threads):
            net = self._build_net()

            def batches(g: np.random.Generator):
                for b in minibatches(len(t_users), self.batch_size, g):
                    tb = torch.from_numpy(b)
                    u, i = t_users[tb], t_items[tb]
                    c = None if t_ctx is None else t_ctx[tb]
                    y = None if t_labels is None else t_labels[tb]
                    if self.task == "regression":
                        yield u, i, c, y
                    else:  # sampled negatives, on top of any impression negatives
                        pos = None if y is None else y > 0
                        yield self._add_negatives(u, i, c, pos, n_items, g, y)

            def loss_fn(batch: Any) -> torch.Tensor:
                u, i, c, y = batch
                out = self._pair_out(net, self._user_rep(net, u, c), i)
                return self._loss(out, y)

            validate = None
            if valid is not None:
                v_u, v_i, v_c, v_y = valid

                def validate() -> float:
                    out = self._pair_out(net, self._user_rep(net, v_u, v_c), v_i).numpy()
                    check_finite(out)
                    if self.task == "regression":
                        pred = np.clip(out + self.global_mean_, *self.rating_range_)
                        return float(root_mean_squared_error(v_y.numpy(), pred))
                    return float(roc_auc_score(v_y.numpy(), out))

            self.history_ = train_loop(
                net,
                batches,
                loss_fn,
                rng=rng,
                validate=validate,
                metric_name="rmse" if self.task == "regression" else "auc",
                higher_is_better=self.task != "regression",
                **self._loop_args(),
            )
        self._set_net(net)
        return self

    def _loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(out + self.global_mean_, y)
        if self.loss == "mse":
            return F.mse_loss(out, y)
        return F.binary_cross_entropy_with_logits(out, y)

    def _add_negatives(self, u, i, c, pos_mask, n_items, g, y):  # noqa: ANN001, ANN202
        """Append `negatives` random items per positive (same user and context)."""
        pos = torch.ones(len(u), dtype=torch.bool) if pos_mask is None else pos_mask
        pu = u[pos].repeat(self.negatives)
        pc = None if c is None else c[pos].repeat(self.negatives, 1)
        neg = torch.from_numpy(g.integers(0, n_items, len(pu)))
        base_y = torch.ones(len(u)) if y is None else y
        return (
            torch.cat([u, pu]),
            torch.cat([i, neg]),
            None if c is None else torch.cat([c, pc]),
            torch.cat([base_y, torch.zeros(len(pu))]),
        )

    def _valid_set(self, users, items, rng, labels, ctx):  # noqa: ANN001, ANN202
        """Held-out events as tensors; for binary without fixed labels, each held-out
        positive gets `negatives` fixed random negatives (so AUC is defined)."""
        u, i, c, y = users, items, ctx, labels
        if self.task == "binary":
            n = len(users)
            neg = rng.integers(0, self.n_items, n * self.negatives)
            u = np.concatenate([users, np.tile(users, self.negatives)])
            i = np.concatenate([items, neg])
            c = None if ctx is None else np.concatenate([ctx, np.tile(ctx, (self.negatives, 1))])
            y = np.r_[np.ones(n), np.zeros(len(neg))].astype(np.float32)
        return (torch.from_numpy(u), torch.from_numpy(i),
                None if c is None else torch.from_numpy(c), torch.from_numpy(y))  # fmt: skip

    # -- scoring ------------------------------------------------------------------------------
    def _finish(self, out: torch.Tensor) -> np.ndarray:
        """Raw outputs to the model's score scale: ratings (regression) or probabilities."""
        if self.task == "regression":
            return np.clip(out.numpy() + self.global_mean_, *self.rating_range_)
        if self.loss == "mse":
            return np.clip(out.numpy(), 0.0, 1.0)
        return torch.sigmoid(out).numpy()

    def predict_idx(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Predicted rating (regression) or click probability (binary) of index pairs."""
        self._check_fitted()
        u = torch.as_tensor(np.asarray(user_idx, dtype=np.int64))
        i = torch.as_tensor(np.asarray(item_idx, dtype=np.int64))
        with torch_threads(self.threads), torch.inference_mode():
            net = self.net
            out = torch.cat([
                self._pair_out(net, self._user_rep(net, u[s : s + 65536], None),
                               i[s : s + 65536])
                for s in range(0, max(len(u), 1), 65536)
            ]) if len(u) else torch.zeros(0)  # fmt: skip
        return self._finish(out).astype(np.float32)

    def _score_pairs(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return self.predict_idx(user_idx, item_idx)

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        u = torch.as_tensor(np.asarray(user_idx, dtype=np.int64))
        out = np.empty((len(u), self.n_items), dtype=np.float32)
        with torch_threads(self.threads), torch.inference_mode():
            net = self.net
            for s in range(0, len(u), SCORE_BLOCK):
                rep = self._user_rep(net, u[s : s + SCORE_BLOCK], None)
                out[s : s + SCORE_BLOCK] = self._all_out(net, rep).numpy()
        return out

    def _history_default_weight(self) -> float:
        # a history without ratings is taken as items rated at the top of the scale
        return float(self.rating_range_[1]) if self.task == "regression" else 1.0

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        """Fold-in: a fresh user representation fitted to each history row (positives vs
        random negatives, or the given ratings for regression), item side frozen."""
        self._check_fitted()
        h = histories.tocsr()
        n = h.shape[0]
        rows = torch.from_numpy(np.repeat(np.arange(n), np.diff(h.indptr)))
        items = torch.from_numpy(h.indices.astype(np.int64))
        target = torch.from_numpy(h.data.astype(np.float32))
        g = np.random.default_rng(self.seed)
        with torch_threads(self.threads):
            net = self.net
            for p in net.parameters():
                p.requires_grad_(False)
            try:
                rep = self._blank_rep(net, n)
                opt = torch.optim.Adam([rep[0]], lr=FOLD_IN_LR)
                for _ in range(FOLD_IN_STEPS if len(rows) else 0):
                    opt.zero_grad()
                    r, i, y = rows, items, target
                    if self.task == "binary":
                        n_neg = len(rows) * self.negatives
                        neg = torch.from_numpy(g.integers(0, self.n_items, n_neg))
                        r = torch.cat([rows, rows.repeat(self.negatives)])
                        i = torch.cat([items, neg])
                        y = torch.cat([torch.ones(len(rows)), torch.zeros(len(neg))])
                    sub = tuple(t[r] for t in rep)
                    self._loss(self._pair_out(net, sub, i), y).backward()
                    opt.step()
                with torch.inference_mode():
                    rep = tuple(t.detach() for t in rep)
                    out = np.concatenate([
                        self._all_out(net, tuple(t[s : s + SCORE_BLOCK] for t in rep)).numpy()
                        for s in range(0, n, SCORE_BLOCK)
                    ]) if n else np.zeros((0, self.n_items), np.float32)  # fmt: skip
            finally:
                for p in net.parameters():
                    p.requires_grad_(True)
        return out.astype(np.float32)

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        """Score drop of `item` when each history event is left out of the fold-in."""
        n = len(hist_items)
        rows = [np.delete(np.arange(n), j) for j in range(n)] + [np.arange(n)]
        m = sp.csr_matrix(
            (np.concatenate([hist_weights[r] for r in rows]),
             np.concatenate([hist_items[r] for r in rows]),
             np.r_[0, np.cumsum([len(r) for r in rows])]),
            shape=(n + 1, self.n_items),
        )  # fmt: skip
        s = self.score_history(m)[:, item]
        return s[n] - s[:n]
