"""SASRec: causal self-attention over each user's time-ordered history (Kang & McAuley 2018),
trained with full softmax cross-entropy over all items at every position, the recipe that
replication studies found strongest (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold
Loss: is BERT4Rec really better than SASRec?").

Training cuts each user's sequence into consecutive windows of `max_len` + 1 events from its
end and predicts every next item of every window at once (one forward pass per window, not one
per prefix). The transformer blocks are pre-LayerNorm and call
``torch.nn.functional.scaled_dot_product_attention`` with a causal + padding mask; the output
layer is tied to the item embeddings.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.neural.base import (
    MAX_VALID_USERS,
    SequenceRecommender,
    check_int,
    holdout_last,
    last_window,
    sequence_windows,
)
from recsight.models.neural.training import (
    minibatches,
    ranking_ndcg,
    seed_everything,
    torch_threads,
    train_loop,
)
from recsight.models.topk import id_keys


class TransformerBlock(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(
            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SequenceEncoder(nn.Module):
    """Item + learned position embeddings and transformer blocks over left-padded sequences
    of token ids (0 = padding). `causal` limits each position to itself and earlier ones.

    `side` (optional, ``(n_tokens, d)``, row 0 for padding) holds frozen per-item features,
    e.g. text embeddings: an item's vector is then its id embedding plus a learned projection
    of its side row, for inputs and outputs alike.
    """

    def __init__(
        self,
        n_tokens: int,
        max_len: int,
        dim: int,
        layers: int,
        heads: int,
        dropout: float,
        attn_dropout: float,
        causal: bool,
        side: torch.Tensor | None = None,
    ):
        super().__init__()
        self.causal = causal
        self.item_emb = nn.Embedding(n_tokens, dim, padding_idx=0)
        self.side_proj: nn.Linear | None = None
        if side is not None:
            # frozen and saved with the model's own arrays, so not part of the state dict
            self.register_buffer("side", side.to(torch.float32), persistent=False)
            self.side_proj = nn.Linear(side.shape[1], dim, bias=False)
            nn.init.normal_(self.side_proj.weight, std=0.02)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, dropout, attn_dropout) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)``."""
        length = tokens.shape[1]
        pos = torch.arange(self.pos_emb.num_embeddings - length, self.pos_emb.num_embeddings)
        x = self.drop(self.item_vectors(tokens) + self.pos_emb(pos)[None])
        keep = tokens > 0
        mask = keep[:, None, None, :]
        if self.causal:
            mask = mask & torch.ones(length, length, dtype=torch.bool).tril()
        # every position may see itself, so fully padded rows stay finite (they are ignored)
        mask = mask | torch.eye(length, dtype=torch.bool)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def item_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """The vector of each token: id embedding (+ projected side features)."""
        x = self.item_emb(tokens)
        if self.side_proj is not None:
            x = x + self.side_proj(self.side[tokens])
        return x


class SASRec(SequenceRecommender):
    """Self-attentive sequential recommendation with full cross-entropy.

    Hyperparameters: `max_len` (history length read), `dim`, `layers`, `heads`, `dropout`,
    `attn_dropout`; training: `epochs`, `lr`, `weight_decay`, `batch_size` (windows per
    step), `patience`, `early_stopping` (leave-one-out validation on NDCG@10, see
    `recsight.models.neural.base`), `max_minutes` (wall-clock budget), `threads`, `seed`,
    `verbose` (Rich progress per epoch).
    """

    name: ClassVar[str] = "sasrec"

    def __init__(
        self,
        max_len: int = 50,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        attn_dropout: float = 0.2,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        patience: int | None = 5,
        early_stopping: bool = True,
        max_minutes: float | None = None,
        threads: int | None = 1,
        seed: int = 42,
        verbose: bool = True,
    ):
        self.max_len = max_len
        self.dim = dim
        self.layers = layers
        self.heads = heads
        self.dropout = dropout
        self.attn_dropout = attn_dropout
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.early_stopping = early_stopping
        self.max_minutes = max_minutes
        self.threads = threads
        self.seed = seed
        self.verbose = verbose

    # -- architecture -------------------------------------------------------------------------
    def _check(self) -> None:
        self._check_common()
        check_int("max_len", self.max_len, 2)
        check_int("layers", self.layers, 1)
        heads = check_int("heads", self.heads, 1)
        if check_int("dim", self.dim, 1) % heads:
            raise InputError(f"dim: {self.dim} must be divisible by heads ({heads})")

    def _n_tokens(self) -> int:
        return int(self.dims_[0]) + 1

    def _build_net(self) -> nn.Module:
        return SequenceEncoder(
            self._n_tokens(),
            self._input_len(),
            self.dim,
            self.layers,
            self.heads,
            self.dropout,
            self.attn_dropout,
            causal=True,
            side=self._side_features(),
        )

    def _side_features(self) -> torch.Tensor | None:
        """Frozen per-token features added to the item vectors (row 0: padding); none here."""
        return None

    def _item_weights(self, net: nn.Module) -> torch.Tensor:
        if net.side_proj is None:
            return net.item_emb.weight[1 : int(self.dims_[0]) + 1]
        return net.item_vectors(torch.arange(1, int(self.dims_[0]) + 1))

    def _score_padded(self, padded: torch.Tensor) -> torch.Tensor:
        return self._scores_from(self.net, padded)

    def _scores_from(self, net: nn.Module, padded: torch.Tensor) -> torch.Tensor:
        """All-item scores after left-padded sequences (the last hidden state's dot products
        with the item embeddings)."""
        return net(padded)[:, -1] @ self._item_weights(net).T

    def _item_vectors(self) -> np.ndarray:
        with torch.inference_mode():
            return self._item_weights(self.net).numpy().copy()

    # -- training -----------------------------------------------------------------------------
    def _window_loss(self, net: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        inputs, targets = windows[:, :-1], windows[:, 1:]
        h = net(inputs)
        keep = (targets > 0) & (inputs > 0)
        logits = h[keep] @ self._item_weights(net).T
        return F.cross_entropy(logits, targets[keep] - 1)

    def _train_windows(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        # windows of max_len + 1 events give max_len (input, next item) pairs each
        return sequence_windows(indptr, items, self._input_len() + 1)

    def fit(self, train: Interactions) -> SASRec:
        """Learn from the time-ordered sequences of `train` (timestamps required)."""
        self._check()
        indptr, items = train.sequences()
        self._set_training(train, train.to_csr(binary=True))
        self.dims_ = np.array([train.n_items], dtype=np.int64)
        rng = seed_everything(self.seed)
        valid_users = valid_items = None
        if self.early_stopping:
            held = holdout_last(train)
            fit_part = train.subset(~held)
            t_indptr, t_items = fit_part.sequences()
            valid_users = train.user_idx[held].astype(np.int64)
            valid_items = train.item_idx[held].astype(np.int64)
            if len(valid_users) > MAX_VALID_USERS:
                pick = np.sort(rng.choice(len(valid_users), MAX_VALID_USERS, replace=False))
                valid_users, valid_items = valid_users[pick], valid_items[pick]
        else:
            t_indptr, t_items = indptr, items
        windows = torch.from_numpy(self._train_windows(t_indptr, t_items))
        if len(windows) == 0:
            raise InputError("training data: SASRec needs users with at least 2 events")

        with torch_threads(self.threads):
            net = self._build_net()

            def batches(g: np.random.Generator):
                for b in minibatches(len(windows), self.batch_size, g):
                    yield windows[torch.from_numpy(b)]

            validate = None
            if valid_users is not None and len(valid_users):
                v_inputs = torch.from_numpy(
                    last_window(t_indptr, t_items, valid_users, self._input_len())
                )
                v_targets = valid_items
                v_seen = fit_part.to_csr(binary=True)[valid_users]
                v_keys = id_keys(train.users.ids[valid_users])

                def validate() -> float:
                    scores = torch.cat([
                        self._scores_from(net, v_inputs[s : s + 512])
                        for s in range(0, len(v_inputs), 512)
                    ])  # fmt: skip
                    return ranking_ndcg(scores, v_targets, v_keys, self.item_keys_, v_seen, 10)

            self.history_ = train_loop(
                net,
                batches,
                lambda w: self._window_loss(net, w),
                rng=rng,
                validate=validate,
                metric_name="ndcg@10",
                **self._loop_args(),
            )
        self._set_net(net)
        self.seq_indptr_, self.seq_items_ = indptr.astype(np.int64), items.astype(np.int32)
        return self
