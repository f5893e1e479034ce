"""NeuMF: generalized matrix factorization and an MLP over user/item embeddings, fused in
one output layer (He et al. 2017, "Neural Collaborative Filtering"), trained on implicit
feedback with log-loss against `negatives` sampled items per positive.

The MLP's first layer splits into a user part and an item part (it acts on their
concatenation), so `score_all` computes both once and adds them by broadcasting over a block
of users; the GMF part is one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsight.data.dataset import Interactions
from recsight.models.neural.pointwise import PairRecommender

#: Floats of the (users x items x hidden) block `score_all` materialises at once.
_BLOCK_FLOATS = 1 << 24


class _NeuMFNet(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int, mlp_dim: int,
                 hidden: Sequence[int], dropout: float):  # fmt: skip
        super().__init__()
        self.user = nn.Embedding(n_users, dim + mlp_dim)
        self.item = nn.Embedding(n_items, dim + mlp_dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)
        h = list(hidden)
        self.user_in = nn.Linear(mlp_dim, h[0])
        self.item_in = nn.Linear(mlp_dim, h[0], bias=False)
        layers: list[nn.Module] = [nn.ReLU(), nn.Dropout(dropout)]
        for a, b in zip(h[:-1], h[1:], strict=False):
            layers += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        self.mlp = nn.Sequential(*layers)
        self.out_gmf = nn.Linear(dim, 1)
        self.out_mlp = nn.Linear(h[-1], 1, bias=False)


@dataclass(kw_only=True, eq=False, repr=False)
class NeuMF(PairRecommender):
    """NeuMF (GMF + MLP). `dim`: GMF factors; `mlp_dim`: MLP embedding size; `hidden`: MLP
    layer sizes. ``task="regression"`` fits ratings with MSE instead."""

    name: ClassVar[str] = "neumf"
    _user_rows: ClassVar[dict[str, int]] = {"user.weight": 0}

    dim: int = 32
    mlp_dim: int = 32
    hidden: Sequence[int] = (64, 32, 16)
    dropout: float = 0.0

    def _prepare(self, train: Interactions) -> None:
        self.dims_ = np.array([train.n_users, train.n_items], np.int64)

    def _build_net(self) -> nn.Module:
        n_users, n_items = (int(x) for x in self.dims_)
        return _NeuMFNet(n_users, n_items, self.dim, self.mlp_dim, self.hidden, self.dropout)

    def _user_rep(self, net, users, ctx):  # noqa: ANN001, ANN202
        return (net.user(users),)

    def _blank_rep(self, net, n):  # noqa: ANN001, ANN202
        return (torch.zeros(n, self.dim + self.mlp_dim).normal_(0, 0.01).requires_grad_(True),)

    def _pair_out(self, net, rep, items):  # noqa: ANN001, ANN202
        u, v = rep[0], net.item(items)
        d = self.dim
        gmf = net.out_gmf(u[:, :d] * v[:, :d]).squeeze(-1)
        h = net.mlp(net.user_in(u[:, d:]) + net.item_in(v[:, d:]))
        return gmf + net.out_mlp(h).squeeze(-1)

    def _all_out(self, net, rep):  # noqa: ANN001, ANN202
        u, v = rep[0], net.item.weight
        d = self.dim
        out = (u[:, :d] * net.out_gmf.weight[0]) @ v[:, :d].T + net.out_gmf.bias
        hu, hi = net.user_in(u[:, d:]), net.item_in(v[:, d:])
        step = max(1, _BLOCK_FLOATS // max(hi.numel(), 1))
        for s in range(0, len(hu), step):
            h = net.mlp(hu[s : s + step, None, :] + hi[None])
            out[s : s + step] += net.out_mlp(h).squeeze(-1)
        return out

    def _item_vectors(self) -> np.ndarray:
        with torch.inference_mode():
            return self.net.item.weight[:, : self.dim].numpy().copy()
