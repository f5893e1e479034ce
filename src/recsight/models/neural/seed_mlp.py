"""The seed project's sketch of a deep model, kept as a named baseline: the raw user id and
item id fed as two plain numbers into Dense(128, relu) -> Dense(1), trained with MSE.

Ids are used as numbers exactly as the sketch did: their numeric value when every id of a
kind parses as a number (MovieLens: 1..943), else the store's integer index. The network can
only carve the id line into ranges, which is why it belongs on the leaderboard next to
`deepfm`: the gap is the value of embeddings and side features. ``task="binary"`` trains the
same MSE on 0/1 labels (positives vs sampled negatives), as the sketch would on clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsight.data.dataset import IdIndex, Interactions
from recsight.models.neural.pointwise import PairRecommender

#: Floats of the (users x items x 128) block `score_all` materialises at once.
_BLOCK_FLOATS = 1 << 24


def id_numbers(index: IdIndex) -> np.ndarray:
    """Ids as float32 numbers when all of them parse as numbers, else their indices."""
    try:
        return np.asarray(index.ids, dtype=np.float64).astype(np.float32)
    except (TypeError, ValueError):
        return np.arange(len(index), dtype=np.float32)


@dataclass(kw_only=True, eq=False, repr=False)
class SeedMLP(PairRecommender):
    """Two numbers in, Dense(128, relu), Dense(1) out, MSE (see the module docstring)."""

    name: ClassVar[str] = "seed_mlp"
    loss: ClassVar[str] = "mse"
    _state: ClassVar[tuple[str, ...]] = PairRecommender._state + (
        "user_numbers_",
        "item_numbers_",
    )
    _user_state: ClassVar[tuple[str, ...]] = ("user_numbers_",)

    task: str = "regression"
    hidden: int = 128

    def _prepare(self, train: Interactions) -> None:
        self.dims_ = np.array([train.n_users, train.n_items], np.int64)
        self.user_numbers_ = id_numbers(train.users)
        self.item_numbers_ = id_numbers(train.items)

    def _build_net(self) -> nn.Module:
        return nn.Sequential(nn.Linear(2, self.hidden), nn.ReLU(), nn.Linear(self.hidden, 1))

    def _user_rep(self, net, users, ctx):  # noqa: ANN001, ANN202
        return (torch.from_numpy(self.user_numbers_)[users][:, None],)

    def _blank_rep(self, net, n):  # noqa: ANN001, ANN202
        # an unseen user starts at the mean user number; the fold-in moves that number
        start = float(self.user_numbers_.mean()) if len(self.user_numbers_) else 0.0
        return (torch.full((n, 1), start, requires_grad=True),)

    def _pair_out(self, net, rep, items):  # noqa: ANN001, ANN202
        x = torch.cat([rep[0], torch.from_numpy(self.item_numbers_)[items][:, None]], dim=1)
        return net(x).squeeze(-1)

    def _all_out(self, net, rep):  # noqa: ANN001, ANN202
        first, rest = net[0], net[1:]
        # the first layer splits into a user part and an item part added by broadcasting
        hu = rep[0] * first.weight[:, 0] + first.bias
        hi = torch.from_numpy(self.item_numbers_)[:, None] * first.weight[:, 1]
        out = torch.empty(len(hu), len(hi))
        step = max(1, _BLOCK_FLOATS // max(hi.numel(), 1))
        for s in range(0, len(hu), step):
            out[s : s + step] = rest(hu[s : s + step, None, :] + hi[None]).squeeze(-1)
        return out
