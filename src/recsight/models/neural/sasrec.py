"""SASRec: causal self-attention over each user's time-ordered history (Kang & McAuley 2018).

Training cuts each user's sequence into consecutive windows of `max_len` + 1 events from its
end and predicts every next item of every window at once (one forward pass per window, not one
per prefix). The transformer blocks are pre-LayerNorm and call
``torch.nn.functional.scaled_dot_product_attention`` with a causal + padding mask. Items are
scored by an ``nn.Linear`` whose weight *is* the item-embedding table (weight tying in module
form, which per-sample-gradient tools such as Opacus handle correctly).

The `loss` option (shared with BERT4Rec):

- ``"full"``: softmax cross-entropy over the whole catalog at every position, the recipe
  replication studies found strongest (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold
  Loss"); memory per batch grows with positions x catalog.
- ``"sampled"``: sampled softmax over the positive and `n_negatives` items drawn per batch
  (shared by its positions) from `proposal` (``"uniform"`` or ``"popularity"``: training
  counts + 1), every logit corrected by ``- log Q(item)`` (logQ correction, Bengio & Senécal
  2008; Yi et al. 2019) and accidental hits of the positive masked out.
- ``"gbce"``: gSASRec's generalised binary cross-entropy (Petrov & Macdonald 2023) with
  `n_negatives` uniform negatives drawn for every position (the paper's form):
  ``beta * softplus(-s_pos) + sum softplus(s_neg)`` where ``beta = alpha * (gbce_t *
  (1 - 1/alpha) + 1/alpha)`` and ``alpha = n_negatives / (n_items - 1)``; `gbce_t` = 0.75 is
  the paper's calibration (0 = plain BCE, 1 = fully calibrated). Every logit carries the
  output bias ``log(beta / k)`` (see `gbce_loss`): without it training settled at the loss of
  scoring every item alike and ranked at random on a synthetic successor task
  (``benchmarks/bench_gbce_synthetic.py``, BENCHMARKS.md "gSASRec"); with it gBCE learns
  that task nearly as well as ``full``.
- ``"auto"`` (default): ``full`` up to `AUTO_FULL_MAX_ITEMS` items, ``sampled`` above, so
  memory per batch stops growing with the catalog.

`device` (``"cpu"``, ``"cuda"``, ``"auto"``) is where training runs (``"cuda"`` without a
GPU fails with a clear message); scoring uses the same device when it exists, else the CPU
(a model trained on a GPU serves on a CPU-only machine).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
from recsight.models.neural.config import SequenceConfig
from recsight.models.neural.distributed import fit_loop
from recsight.models.neural.training import (
    minibatches,
    ranking_ndcg,
    resolve_device,
    seed_everything,
    torch_threads,
)
from recsight.models.topk import id_keys

LOSSES = ("auto", "full", "sampled", "gbce")
PROPOSALS = ("uniform", "popularity")
#: ``loss="auto"`` uses the full softmax up to this many items and sampled softmax above:
#: full logits of a batch cost positions x items x 4 bytes (x3 with gradients), about
#: 0.5 GB at the default 128 windows x 50 positions and 20,000 items.
AUTO_FULL_MAX_ITEMS = 20_000


def sampled_softmax_loss(
    pos: torch.Tensor,
    neg: torch.Tensor,
    hit: torch.Tensor,
    log_q_pos: torch.Tensor | None = None,
    log_q_neg: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean sampled-softmax cross-entropy of positive logits `pos` ``(n,)`` against shared
    negative logits `neg` ``(n, k)``; `hit` ``(n, k)`` marks negatives equal to the row's
    positive (dropped). With the proposal's log-probabilities every logit is corrected by
    ``- log Q`` (logQ correction; a uniform proposal needs none: it is a constant)."""
    if log_q_pos is not None and log_q_neg is not None:
        pos, neg = pos - log_q_pos, neg - log_q_neg[None, :]
    logits = torch.cat([pos[:, None], neg.masked_fill(hit, -torch.inf)], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=pos.device))


def gbce_beta(n_negatives: int, n_items: int, t: float) -> float:
    """gSASRec's positive-term exponent ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)``
    with sampling rate ``alpha = n_negatives / (n_items - 1)`` (capped at 1)."""
    alpha = min(1.0, n_negatives / max(n_items - 1, 1))
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(pos: torch.Tensor, neg: torch.Tensor, hit: torch.Tensor, beta: float) -> torch.Tensor:
    """gBCE (Petrov & Macdonald 2023) of positive logits `pos` ``(n,)`` and negative logits
    `neg` ``(n, k)`` (`hit`: negatives equal to the row's positive, dropped), averaged like
    gSASRec's ``BCEWithLogits`` over the ``1 + k`` entries of each row. Its positive term,
    BCE of ``log(1 / (sigma(s)^-beta - 1))``, equals ``beta * softplus(-s)``: the closed form,
    stable without float64 clamps.

    Every logit is first shifted by ``log(beta / k)``, the score at which the loss is lowest
    when all items score alike: an output bias that ranking ignores (all items move together)
    and that the tied, bias-free output layer cannot learn cheaply. Without it the ``k``
    negatives first drag every score down to that level by giving all item embeddings, which
    are also the inputs, one shared component that swamps what tells items apart, and
    training stalls at the constant-score optimum with random ranking (see
    ``benchmarks/bench_gbce_synthetic.py``)."""
    shift = math.log(beta / neg.shape[1])
    pos, neg = pos + shift, neg + shift
    per_row = beta * F.softplus(-pos) + F.softplus(neg).masked_fill(hit, 0.0).sum(1)
    return per_row.mean() / (1 + neg.shape[1])


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

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)``; with `last_only`, of the last position
        only ``(batch, 1, dim)``: its query alone attends to every key, and the feed-forward
        runs on that one row."""
        b, length, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, length, 3, self.heads, d // self.heads).unbind(2)
        if last_only:
            q, x, mask = q[:, -1:], x[:, -1:], mask[..., -1:, :]
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, x.shape[1], d)))
        return x + self.drop(self.ff(self.ln2(x)))


class SequenceEncoder(nn.Module):
    """Item + learned position embeddings and transformer blocks over left-padded sequences
    of token ids (0 = padding). `causal` limits each position to itself and earlier ones.

    `side` (optional, ``(n_tokens, d)``, row 0 for padding) holds frozen per-item features,
    e.g. text embeddings: an item's vector is then its id embedding plus a learned projection
    of its side row, for inputs and outputs alike.

    Tokens ``1..n_items`` are the items; `out` is an ``nn.Linear`` sharing `item_emb`'s weight
    (tied output layer), whose columns ``1..n_items`` are the item scores.
    """

    def __init__(
        self,
        n_tokens: int,
        n_items: int,
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
        self.n_items = n_items
        self.item_emb = nn.Embedding(n_tokens, dim, padding_idx=0)
        # built on "meta" (no init, no draw from the RNG), then given the embedding's weight
        self.out = nn.Linear(dim, n_tokens, bias=False, device="meta")
        self.out.weight = self.item_emb.weight
        self.side_proj: nn.Linear | None = None
        if side is not None:
            # frozen and saved with the model's own arrays, so not part of the state dict
            self.register_buffer("side", side.to(torch.float32), persistent=False)
            self.side_proj = nn.Linear(side.shape[1], dim, bias=False)
            nn.init.normal_(self.side_proj.weight, std=0.02)
        self.pos_emb = nn.Embedding(max_len, dim)
        # the fixed parts of the attention mask, built once rather than by ops in every pass
        # (a length-L pass uses their bottom-right L x L blocks: triangular and identity too)
        eye = torch.eye(max_len, dtype=torch.bool)
        tri = torch.ones(max_len, max_len, dtype=torch.bool).tril() if causal else None
        self.register_buffer("eye", eye, persistent=False)
        self.register_buffer("tri", tri, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, dropout, attn_dropout) for _ in range(layers)
        )
        self.ln = nn.LayerNorm(dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(self, tokens: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states ``(batch, length, dim)``; with `last_only` those of the last position
        ``(batch, 1, dim)``, the same values for less work: scoring reads only that row, so
        the last block computes nothing for the others (at max_len 50, ~40% of a pass)."""
        length, dev = tokens.shape[1], tokens.device
        n_pos = self.pos_emb.num_embeddings
        pos = torch.arange(n_pos - length, n_pos, device=dev)
        # position ids shaped (batch, length) like the tokens: per-sample gradient tools
        # (Opacus, for DP-SGD) need every embedding input to carry the batch dimension
        x = self.drop(self.item_vectors(tokens) + self.pos_emb(pos.expand(tokens.shape[0], -1)))
        keep = tokens > 0
        mask = keep[:, None, None, :]
        if self.tri is not None:
            mask = mask & self.tri[-length:, -length:]
        # every position may see itself, so fully padded rows stay finite (they are ignored)
        mask = mask | self.eye[-length:, -length:]
        for i, block in enumerate(self.blocks):
            x = block(x, mask, last_only and i == len(self.blocks) - 1)
        return self.ln(x)

    def item_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """The vector of each token: id embedding (+ projected side features)."""
        x = self.item_emb(tokens)
        if self.side_proj is not None:
            x = x + self.side_proj(self.side[tokens])
        return x

    def item_logits(self, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``h . item vector``: of every item ``(..., n_items)`` when `items` is None,
        else of the given item indices (0-based) ``(..., len(items))``."""
        if items is None:
            logits = self.out(h)[..., 1 : self.n_items + 1]
            side = None if self.side_proj is None else self.side[1 : self.n_items + 1]
        else:
            logits = F.linear(h, self.item_emb.weight[items + 1])
            side = None if self.side_proj is None else self.side[items + 1]
        if side is not None:
            # h . (P s) = (h P) . s: the side part without projecting the whole catalog
            logits = logits + (h @ self.side_proj.weight) @ side.T
        return logits

    def pair_logits(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Row-wise scores ``h[r] . vector(items[r])`` (0-based item indices)."""
        return (h * self.item_vectors(items + 1)).sum(-1)


@dataclass(kw_only=True, eq=False, repr=False)
class TransformerRecommender(SequenceConfig, SequenceRecommender):
    """What the sequential-transformer family shares: the encoder, the output losses, the
    training loop with leave-one-out validation and the scoring. Hyperparameters: those of
    `SequenceConfig`. The concrete models are `SASRec` (causal, this class's behaviour),
    `BERT4Rec` and the text-enhanced SASRec."""

    # -- architecture -------------------------------------------------------------------------
    def _check(self) -> None:
        self._check_common()
        check_int("max_len", self.max_len, 2)
        check_int("layers", self.layers, 1)
        heads = check_int("heads", self.heads, 1)
        if check_int("dim", self.dim, 1) % heads:
            raise InputError(f"dim: {self.dim} must be divisible by heads ({heads})")
        if self.loss not in LOSSES:
            raise InputError(f"loss: expected one of {', '.join(LOSSES)}, not {self.loss!r}")
        if self.proposal not in PROPOSALS:
            raise InputError(
                f"proposal: expected one of {', '.join(PROPOSALS)}, not {self.proposal!r}"
            )
        if self.loss == "gbce" and self.proposal != "uniform":
            raise InputError(
                "proposal: loss='gbce' draws uniform negatives (its calibration assumes them); "
                "use proposal='popularity' with loss='sampled'"
            )
        check_int("n_negatives", self.n_negatives, 1)
        if not 0.0 <= float(self.gbce_t) <= 1.0:
            raise InputError(f"gbce_t: expected a number in [0, 1], not {self.gbce_t!r}")
        resolve_device(self.device)

    def resolved_loss(self, n_items: int) -> str:
        """The loss trained with on a catalog of `n_items` (``auto`` resolved)."""
        if self.loss != "auto":
            return self.loss
        return "full" if n_items <= AUTO_FULL_MAX_ITEMS else "sampled"

    def _n_tokens(self) -> int:
        return int(self.dims_[0]) + 1

    def _build_net(self) -> nn.Module:
        return self._build_encoder(self._n_tokens(), causal=True)

    def _build_encoder(self, n_tokens: int, causal: bool) -> SequenceEncoder:
        """The encoder over `n_tokens` tokens (padding, the items, then any special tokens
        such as BERT4Rec's [MASK]) with the model's side features, whose missing rows (the
        special tokens) are zero."""
        side = self._side_features()
        if side is not None and len(side) < n_tokens:
            side = torch.cat([side, side.new_zeros(n_tokens - len(side), side.shape[1])])
        return SequenceEncoder(
            n_tokens,
            int(self.dims_[0]),
            self._input_len(),
            self.dim,
            self.layers,
            self.heads,
            self.dropout,
            self.attn_dropout,
            causal=causal,
            side=side,
        )

    def _side_features(self) -> torch.Tensor | None:
        """Frozen per-item features added to the item vectors, ``(n_items + 1, d)`` with row
        0 for padding; none here (the text-enhanced SASRec gives its text embeddings)."""
        return None

    def _encoder(self, net: nn.Module) -> SequenceEncoder:
        return net

    def _logits(
        self, net: nn.Module, h: torch.Tensor, items: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Item scores from hidden states: all items, or the item indices `items`."""
        return self._encoder(net).item_logits(h, items)

    def _pair_logits(self, net: nn.Module, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Row-wise scores of ``(h[r], items[r])``."""
        return self._encoder(net).pair_logits(h, items)

    def _score_padded(self, padded: torch.Tensor) -> torch.Tensor:
        return self._scores_from(self.net, padded)

    def _scores_from(self, net: nn.Module, padded: torch.Tensor) -> torch.Tensor:
        """All-item scores after left-padded sequences (the last hidden state through the
        tied output layer)."""
        return self._logits(net, net(padded, last_only=True)[:, -1])

    def _item_vectors(self) -> np.ndarray:
        enc = self._encoder(self.net)
        with torch.inference_mode():
            tokens = torch.arange(1, int(self.dims_[0]) + 1, device=enc.item_emb.weight.device)
            return enc.item_vectors(tokens).cpu().numpy().copy()

    # -- training -----------------------------------------------------------------------------
    def _output_loss(self, net: nn.Module, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of hidden states `h` ``(n, dim)`` predicting item indices `targets`."""
        if self._loss_kind == "full":
            return F.cross_entropy(self._logits(net, h), targets)
        n_items = int(self.dims_[0])
        pos = self._pair_logits(net, h, targets)
        if self._loss_kind == "gbce":
            # each position draws its own negatives, as gSASRec's code does
            negs = torch.randint(0, n_items, (len(h), self.n_negatives), device=h.device)
            if n_items <= self.n_negatives * h.shape[1]:
                # a small catalog: every score costs less than gathering k vectors per position
                neg = self._logits(net, h).gather(1, negs)
            else:
                neg = self._pair_logits(net, h[:, None, :], negs)
            hit = negs == targets[:, None]  # accidental hits are not negatives
            return gbce_loss(
                pos, neg, hit, gbce_beta(self.n_negatives, n_items, float(self.gbce_t))
            )
        if self._log_q is None:
            negs = torch.randint(0, n_items, (self.n_negatives,), device=h.device)
        else:
            negs = torch.multinomial(self._q, self.n_negatives, replacement=True)
        neg = self._logits(net, h, negs)
        hit = negs[None, :] == targets[:, None]
        if self._log_q is None:
            return sampled_softmax_loss(pos, neg, hit)
        return sampled_softmax_loss(pos, neg, hit, self._log_q[targets], self._log_q[negs])

    def _prepare_loss(self, train_items: np.ndarray, device: torch.device) -> None:
        """Resolve the loss and the proposal distribution for this fit."""
        n_items = int(self.dims_[0])
        self._loss_kind = self.resolved_loss(n_items)
        self._q = self._log_q = None
        if self._loss_kind == "sampled" and self.proposal == "popularity":
            counts = np.bincount(train_items, minlength=n_items).astype(np.float64) + 1.0
            q = torch.from_numpy(counts / counts.sum()).to(torch.float32).to(device)
            self._q, self._log_q = q, q.log()

    def _window_loss(self, net: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        inputs, targets = windows[:, :-1], windows[:, 1:]
        h = net(inputs)
        keep = (targets > 0) & (inputs > 0)
        return self._output_loss(net, h[keep], targets[keep] - 1)

    @staticmethod
    def _window_count(windows: torch.Tensor) -> int:
        """How many predictions `_window_loss` averages over in these windows."""
        return int(((windows[:, 1:] > 0) & (windows[:, :-1] > 0)).sum())

    def _train_windows(self, indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
        # windows of max_len + 1 events give max_len (input, next item) pairs each
        return sequence_windows(indptr, items, self._input_len() + 1)

    def fit(self, train: Interactions) -> TransformerRecommender:
        """Learn from the time-ordered sequences of `train` (timestamps required)."""
        self._check()
        device = resolve_device(self.device)
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
            raise InputError(f"training data: {self.name} needs users with at least 2 events")
        self._prepare_loss(np.asarray(t_items, np.int64), device)

        with torch_threads(self.threads):
            net = self._build_net().to(device)

            def batches(g: np.random.Generator):
                for b in minibatches(len(windows), self.batch_size, g):
                    yield windows[torch.from_numpy(b)].to(device)

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
                        self._scores_from(net, v_inputs[s : s + 512].to(device)).cpu()
                        for s in range(0, len(v_inputs), 512)
                    ])  # fmt: skip
                    return ranking_ndcg(scores, v_targets, v_keys, self.item_keys_, v_seen, 10)

            self.history_ = fit_loop(
                net,
                batches,
                self._window_loss,
                weight=self._window_count,  # data-parallel slices average like one batch
                rng=rng,
                validate=validate,
                metric_name="ndcg@10",
                **self._loop_args(),
            )
        self._set_net(net)
        self.seq_indptr_, self.seq_items_ = indptr.astype(np.int64), items.astype(np.int32)
        return self


@dataclass(kw_only=True, eq=False, repr=False)
class SASRec(TransformerRecommender):
    """Self-attentive sequential recommendation.

    Hyperparameters: those of `SequenceConfig`; privacy: `dp_epsilon` (None: off; a number
    or ``inf``: user-level DP-SGD, see `recsight.models.neural.dp`), `dp_delta`,
    `dp_max_grad_norm` (SASRec only: its per-example gradients were checked).
    """

    name: ClassVar[str] = "sasrec"

    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_max_grad_norm: float = 1.0

    def fit(self, train: Interactions) -> SASRec:
        """Learn from the time-ordered sequences of `train` (timestamps required); with
        `dp_epsilon` set, by user-level DP-SGD (`recsight.models.neural.dp.fit_dp`)."""
        if self.dp_epsilon is not None:
            from recsight.models.neural.dp import fit_dp

            return fit_dp(self, train)
        super().fit(train)
        return self
