"""BERT4Rec: a bidirectional transformer trained by masked item prediction (Sun et al. 2019).

Training windows of `max_len` events have each event replaced by a [MASK] token with
probability `mask_prob` (at least one per window) and the model predicts the masked items
with SASRec's `loss` options (full softmax by default on small catalogs, sampled softmax or
gBCE with sampled negatives). To recommend, the history's last
``max_len - 1`` events are followed by one [MASK] whose prediction scores every item. It
shares SASRec's encoder, training loop, validation and scoring; only the attention mask (none
but padding), the inputs and the output head differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from recsight.errors import InputError
from recsight.models.neural.base import sequence_windows
from recsight.models.neural.sasrec import SequenceEncoder, TransformerRecommender

#: Share of training windows that mask only their last event (the paper's extra samples).
LAST_ONLY_SHARE = 0.1


class _BertNet(nn.Module):
    """Encoder plus BERT's output transform (dense, GELU, LayerNorm) and a per-item bias;
    output weights are tied to the item embeddings (the encoder's `out` layer)."""

    def __init__(self, encoder: SequenceEncoder, n_items: int, dim: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(n_items))

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        return self.head(self.encoder(tokens, last_only))


@dataclass(kw_only=True, eq=False, repr=False)
class BERT4Rec(TransformerRecommender):
    """Bidirectional masked-item model; hyperparameters those of `SequenceConfig` plus
    `mask_prob`."""

    name: ClassVar[str] = "bert4rec"

    mask_prob: float = 0.2

    def _check(self) -> None:
        super()._check()
        if not 0 < self.mask_prob < 1:
            raise InputError(f"mask_prob: expected a probability in (0, 1), not {self.mask_prob}")

    def _mask_token(self) -> int:
        return int(self.dims_[0]) + 1

    def _build_net(self) -> nn.Module:
        # padding, the items, then [MASK]
        encoder = self._build_encoder(int(self.dims_[0]) + 2, causal=False)
        return _BertNet(encoder, int(self.dims_[0]), self.dim)

    def _encoder(self, net: nn.Module) -> SequenceEncoder:
        return net.encoder

    def _logits(
        self, net: nn.Module, h: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        bias = net.bias if items is None else net.bias[items]
        return net.encoder.item_logits(h, items) + bias

    def _pair_logits(self, net: nn.Module, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return net.encoder.pair_logits(h, items) + net.bias[items]

    def _scores_from(self, net: nn.Module, padded: torch.Tensor) -> torch.Tensor:
        # the last max_len - 1 events, then [MASK]: its prediction is the next item
        mask = torch.full((padded.shape[0], 1), self._mask_token(), device=padded.device)
        tokens = torch.cat([padded[:, 1:], mask], dim=1)
        return self._logits(net, net(tokens, last_only=True)[:, -1])

    def _train_windows(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        return sequence_windows(indptr, items, self.max_len)

    def _window_loss(self, net: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        real = windows > 0
        masked = (torch.rand(windows.shape, device=windows.device) < self.mask_prob) & real
        # as in the paper, some windows mask only their last event: exactly the inference
        # task; so does any window where nothing else was masked
        last_only = (torch.rand(len(windows), device=windows.device) < LAST_ONLY_SHARE) | ~(
            masked.any(dim=1)
        )
        masked[last_only] = False
        masked[last_only, -1] = True
        tokens = torch.where(masked, self._mask_token(), windows)
        h = net(tokens)[masked]
        return self._output_loss(net, h, windows[masked] - 1)
