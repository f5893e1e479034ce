"""DeepFM over user and item embeddings plus side features (Guo et al. 2017).

Fields: the user id, every usable column of ``train.user_features`` (e.g. age, gender,
occupation), the hour and weekday of the event (when timestamps exist), the item id and every
usable column of ``train.item_features`` (category, tags as multi-hot, bucketed price...);
see `recsight.models.neural.features` for the generic encoding. The output is
``bias + first-order weights + FM pairwise interactions + MLP(concatenated field
embeddings)``. Both FM and the MLP's first layer split exactly into a user-side and an
item-side part, so `score_all` computes the item side once and combines it with a block of
users by broadcasting instead of scoring pairs one by one.

At scoring time the event context is unknown; a user is scored in the context of their last
training event (its hour and weekday), an ad-hoc history with "unknown" context codes (which
training sees too: each event's context is hidden with probability `CONTEXT_DROPOUT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsight.data.dataset import Interactions
from recsight.models.neural.features import (
    TIME_FIELDS,
    FieldTable,
    encode_entities,
    time_codes,
    time_vocab,
)
from recsight.models.neural.pointwise import PairRecommender

#: Probability that a training event's time context is replaced by "unknown".
CONTEXT_DROPOUT = 0.1
#: Floats of the (users x items x hidden) block `score_all` materialises at once.
_BLOCK_FLOATS = 1 << 24


class _DeepFMNet(nn.Module):
    def __init__(self, vocab: int, dim: int, n_user_fields: int, n_item_fields: int,
                 hidden: Sequence[int], dropout: float):  # fmt: skip
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.lin = nn.Embedding(vocab, 1)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.emb.weight, std=0.01)
        nn.init.zeros_(self.lin.weight)
        h = list(hidden)
        self.user_in = nn.Linear(n_user_fields * dim, h[0])
        self.item_in = nn.Linear(n_item_fields * dim, h[0], bias=False)
        layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for a, b in zip(h[:-1], h[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(h[-1], 1))
        self.deep = nn.Sequential(*layers)

    def fields(self, codes: torch.Tensor, weights: torch.Tensor, slot_field: torch.Tensor,
               n_fields: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Field embeddings ``(n, n_fields, dim)`` and first-order sums ``(n,)``."""
        e = self.emb(codes) * weights[..., None]
        out = torch.zeros(len(codes), n_fields, e.shape[-1]).index_add_(1, slot_field, e)
        return out, (self.lin(codes).squeeze(-1) * weights).sum(1)


@dataclass(kw_only=True, eq=False, repr=False)
class DeepFM(PairRecommender):
    """DeepFM with generic side features; ``task="binary"`` (log-loss, AUC) or
    ``"regression"`` (ratings, RMSE). Training hyperparameters as in the other neural models;
    `time_features` adds hour and weekday fields when timestamps exist."""

    name: ClassVar[str] = "deepfm"
    _state: ClassVar[tuple[str, ...]] = PairRecommender._state + (
        "user_codes_", "user_weights_", "user_slot_field_", "user_unknown_",
        "item_codes_", "item_weights_", "item_slot_field_", "user_context_", "field_names_",
    )  # fmt: skip
    _user_state: ClassVar[tuple[str, ...]] = ("user_codes_", "user_weights_", "user_context_")
    # the user-id field's codes are 1..n_users (code 0: unknown user) in both tables
    _user_rows: ClassVar[dict[str, int]] = {"emb.weight": 1, "lin.weight": 1}

    dim: int = 16
    hidden: Sequence[int] = (128, 64)
    dropout: float = 0.1
    time_features: bool = True
    weight_decay: float = 1e-4

    # -- features -----------------------------------------------------------------------------
    def _prepare(self, train: Interactions) -> None:
        users = encode_entities(train.n_users, train.user_features, "user", 0)
        items = encode_entities(train.n_items, train.item_features, "item", users.size)
        ctx_offset = users.size + items.size
        self._use_time = bool(self.time_features and train.has_timestamps)
        n_ctx = len(TIME_FIELDS) if self._use_time else 0
        vocab = ctx_offset + (time_vocab() if self._use_time else 0)
        self.dims_ = np.array(
            [train.n_users, train.n_items, vocab, users.n_fields, items.n_fields, n_ctx], np.int64
        )
        self._store_table("user", users)
        self._store_table("item", items)
        self.user_unknown_ = np.asarray(users.offsets, np.int64)
        self.field_names_ = np.asarray(
            users.names + [f for f, _ in TIME_FIELDS][:n_ctx] + items.names, dtype=str
        )
        if self._use_time:
            codes = time_codes(train.timestamp, len(train), ctx_offset)
            last = np.zeros(train.n_users, np.int64) - 1
            order = np.lexsort((train.seq, np.nan_to_num(train.timestamp, nan=-np.inf)))
            last[train.user_idx[order]] = order  # the latest event of each user wins
            self.user_context_ = np.where(
                (last >= 0)[:, None], codes[np.maximum(last, 0)], self._unknown_context()
            )
        else:
            self.user_context_ = np.zeros((train.n_users, 0), np.int64)

    def _shift_user_codes(self, gone: np.ndarray) -> None:
        # every code past a removed user-id code moves down by the removed codes before it
        removed = 1 + gone
        for key in ("user_codes_", "item_codes_", "user_unknown_", "user_context_"):
            codes = getattr(self, key)
            setattr(self, key, codes - np.searchsorted(removed, codes))
        self.dims_[2] -= len(gone)

    def _store_table(self, side: str, t: FieldTable) -> None:
        setattr(self, f"{side}_codes_", t.codes)
        setattr(self, f"{side}_weights_", t.weights)
        setattr(self, f"{side}_slot_field_", t.slot_field)

    def _unknown_context(self) -> np.ndarray:
        """The "unknown" code of each time field (they are the last codes of the vocab)."""
        start = int(self.dims_[2]) - time_vocab()
        sizes = [size + 1 for _, size in TIME_FIELDS]
        return start + np.r_[0, np.cumsum(sizes)[:-1]]

    def _event_context(self, train: Interactions) -> np.ndarray | None:
        if not self._use_time:
            return None
        codes = time_codes(train.timestamp, len(train), int(self.dims_[2]) - time_vocab())
        hide = np.random.default_rng(self.seed + 1).random(len(codes)) < CONTEXT_DROPOUT
        codes[hide] = self._unknown_context()
        return codes

    def _build_net(self) -> nn.Module:
        _, _, vocab, n_uf, n_if, n_ctx = (int(x) for x in self.dims_)
        return _DeepFMNet(vocab, self.dim, n_uf + n_ctx, n_if, self.hidden, self.dropout)

    # -- representations ----------------------------------------------------------------------
    def _tensors(self, side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (
            torch.from_numpy(getattr(self, f"{side}_codes_")),
            torch.from_numpy(getattr(self, f"{side}_weights_")),
            torch.from_numpy(getattr(self, f"{side}_slot_field_")),
        )

    def _user_rep(self, net, users, ctx):  # noqa: ANN001, ANN202
        codes, weights, slot_field = self._tensors("user")
        f, lin = net.fields(codes[users], weights[users], slot_field, int(self.dims_[3]))
        if ctx is None:
            ctx = torch.from_numpy(self.user_context_)[users]
        return self._with_context(net, f, lin, ctx)

    def _with_context(self, net, f, lin, ctx):  # noqa: ANN001, ANN202
        if ctx.shape[1]:
            c = net.emb(ctx)
            f = torch.cat([f, c], dim=1)
            lin = lin + net.lin(ctx).squeeze(-1).sum(1)
        # free part first: the user-id field embedding and its first-order weight
        id_part = torch.cat([f[:, 0], f.new_zeros(len(f), 1)], dim=1)
        return id_part, f[:, 1:], lin

    def _blank_rep(self, net, n):  # noqa: ANN001, ANN202
        codes = torch.from_numpy(self.user_unknown_)[None].expand(n, -1)
        slot = torch.arange(codes.shape[1])
        f, lin = net.fields(codes, torch.ones(codes.shape), slot, codes.shape[1])
        ctx = torch.from_numpy(self._unknown_context())[None].expand(n, -1)
        ctx = ctx[:, : int(self.dims_[5])]
        id_part, rest, lin = self._with_context(net, f.detach(), lin.detach(), ctx)
        return id_part.detach().clone().requires_grad_(True), rest.detach(), lin.detach()

    def _user_side(self, net, rep):  # noqa: ANN001, ANN202
        id_part, rest, lin = rep
        f = torch.cat([id_part[:, None, : self.dim], rest], dim=1)
        s = f.sum(1)
        first = lin + id_part[:, self.dim] + 0.5 * ((s * s).sum(1) - (f * f).sum((1, 2)))
        return s, first, net.user_in(f.flatten(1))

    def _item_side(self, net, items):  # noqa: ANN001, ANN202
        codes, weights, slot_field = self._tensors("item")
        f, lin = net.fields(codes[items], weights[items], slot_field, int(self.dims_[4]))
        s = f.sum(1)
        first = lin + 0.5 * ((s * s).sum(1) - (f * f).sum((1, 2)))
        return s, first, net.item_in(f.flatten(1))

    def _pair_out(self, net, rep, items):  # noqa: ANN001, ANN202
        su, fu, hu = self._user_side(net, rep)
        si, fi, hi = self._item_side(net, items)
        deep = net.deep(hu + hi).squeeze(-1)
        return net.bias + fu + fi + (su * si).sum(1) + deep

    def _all_out(self, net, rep):  # noqa: ANN001, ANN202
        su, fu, hu = self._user_side(net, rep)
        si, fi, hi = self._item_side(net, torch.arange(int(self.dims_[1])))
        out = net.bias + fu[:, None] + fi[None, :] + su @ si.T
        step = max(1, _BLOCK_FLOATS // max(hi.numel(), 1))
        for s in range(0, len(hu), step):
            out[s : s + step] += net.deep(hu[s : s + step, None, :] + hi[None]).squeeze(-1)
        return out

    def _item_vectors(self) -> np.ndarray:
        with torch.inference_mode():
            codes, weights, slot_field = self._tensors("item")
            f, _ = self.net.fields(codes, weights, slot_field, int(self.dims_[4]))
            return f.sum(1).numpy()
