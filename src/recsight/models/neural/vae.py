"""Variational autoencoders over each user's item set: Mult-VAE (Liang et al. 2018, "Variational
Autoencoders for Collaborative Filtering") and RecVAE (Shenbin et al. 2020, "RecVAE: a New
Variational Autoencoder for Top-N Recommendations with Implicit Feedback").

Both read a user's binary history row (L2-normalised, dropout on the input while training),
encode it to a Gaussian latent and decode it to a multinomial over the catalog. Scoring a
user, or any new history, is one forward pass through the encoder mean and the decoder:
fold-in needs no retraining, so `score_history` serves new users exactly like known ones.

Validation, the same for both: with ``early_stopping=True`` (the default), `fit` holds out
`VALID_SHARE` of each user's distinct items (the evaluator's ``user_random`` split, seeded),
trains on the rest and, after each epoch, scores NDCG@`VALID_K` with the evaluator's own
protocol (`recsight.models.validation.holdout_ndcg`: training items masked, shared tie rule)
on at most `MAX_VALID_USERS` users; the best epoch's weights are kept. Scoring afterwards reads each
user's whole training history. With ``early_stopping=False`` the model trains on everything
for `epochs` epochs.

The input and output layers are catalog-sized (items x `hidden`), like EASE's item-item
matrix but linear in the catalog: fine to a few hundred thousand items, not beyond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recsight.data.dataset import Interactions
from recsight.data.splits import split
from recsight.errors import InputError
from recsight.models.neural.base import MAX_VALID_USERS, TorchRecommender, check_int
from recsight.models.neural.config import AutoencoderConfig
from recsight.models.neural.training import (
    check_finite,
    minibatches,
    resolve_device,
    seed_everything,
    torch_threads,
    train_loop,
)
from recsight.models.validation import holdout_ndcg

#: Share of each user's items held out for validation, and the validation cut-off.
VALID_SHARE = 0.1
VALID_K = 20
#: Users scored per forward pass in `score_all` / `score_history`.
SCORE_BLOCK = 1024


class SparseInput(nn.Module):
    """The catalog-sized input layer, ``x @ weight + bias``, stored item-major
    (``(n_items, out)``) so a sparse batch is one `F.embedding_bag` over its items: a batch
    costs its items x `out`, not rows x catalog x `out` (and `embedding_bag` is an order of
    magnitude faster here than ``torch.sparse.mm``)."""

    def __init__(self, n_items: int, out: int, init: str = "uniform"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_items, out))
        self.bias = nn.Parameter(torch.empty(out))
        if init == "xavier":  # Mult-VAE's initialisation
            nn.init.xavier_normal_(self.weight)
            nn.init.normal_(self.bias, std=0.001)
        else:  # nn.Linear's default for a layer with n_items inputs
            bound = 1.0 / math.sqrt(n_items)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)


@dataclass
class Rows:
    """A block of binary history rows, kept sparse: each row's items (CSR `offsets` into
    `col`) and item counts."""

    col: torch.Tensor
    offsets: torch.Tensor
    row: torch.Tensor
    counts: torch.Tensor

    @property
    def n(self) -> int:
        return len(self.counts)

    @classmethod
    def of(cls, m: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> Rows:
        sub = m[rows]
        lens = np.diff(sub.indptr)
        return cls(
            torch.from_numpy(sub.indices.astype(np.int64)).to(device),
            torch.from_numpy(sub.indptr[:-1].astype(np.int64)).to(device),
            torch.from_numpy(np.repeat(np.arange(len(rows), dtype=np.int64), lens)).to(device),
            torch.from_numpy(lens.astype(np.float32)).to(device),
        )

    def input_layer(self, layer: SparseInput, dropout: float, training: bool) -> torch.Tensor:
        """``layer(dropout(x / |x|))`` for the binary rows x, computed sparsely."""
        # a binary row of c items has unit L2 norm with entries 1/sqrt(c)
        values = self.counts.clamp_min(1.0).rsqrt()[self.row]
        if training and dropout > 0:
            values = F.dropout(values, dropout, True)
        bags = F.embedding_bag(
            self.col, layer.weight, self.offsets, mode="sum", per_sample_weights=values
        )
        return bags + layer.bias

    def log_likelihood(self, logits: torch.Tensor) -> torch.Tensor:
        """Per row: the multinomial log-likelihood sum of log_softmax(logits) over its items."""
        logp = F.log_softmax(logits, dim=1)[self.row, self.col]
        return torch.zeros(self.n, device=logits.device).index_add_(0, self.row, logp)


class _ValidScorer:
    """What `holdout_ndcg` needs (`score_all`) over the fit part's histories."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]):
        self.fn = fn

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        scores = self.fn(np.asarray(user_idx, dtype=np.int64))
        check_finite(scores)
        return scores


@dataclass(kw_only=True, eq=False, repr=False)
class AutoencoderRecommender(AutoencoderConfig, TorchRecommender):
    """Shared fit/score plumbing of the user-row autoencoders; subclasses build the net and
    define the loss and the epoch's batches. Hyperparameters: those of `AutoencoderConfig`."""

    # -- what a subclass implements -----------------------------------------------------------
    def _epoch_batches(
        self, net: nn.Module, x: sp.csr_matrix, rows: np.ndarray, device: torch.device
    ) -> Callable[[np.random.Generator], Iterator[Any]]:
        """`train_loop`'s ``batches``: one epoch over the training `rows` of `x`."""
        raise NotImplementedError

    def _loss(self, net: nn.Module, batch: Any) -> torch.Tensor:
        raise NotImplementedError

    def _optimizer(self, net: nn.Module) -> Any:
        """The optimizer for `train_loop` (None: its default AdamW)."""
        return None

    # -- checks -------------------------------------------------------------------------------
    def _check(self) -> None:
        self._check_common()
        check_int("hidden", self.hidden, 1)
        check_int("latent", self.latent, 1)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise InputError(f"dropout: expected a probability in [0, 1), not {self.dropout!r}")
        resolve_device(self.device)

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, train: Interactions) -> AutoencoderRecommender:
        """Learn from the binary user x item matrix of `train`."""
        self._check()
        if len(train) == 0:
            raise InputError(f"training data: {self.name} needs at least one event")
        device = resolve_device(self.device)
        x = train.to_csr(binary=True).astype(np.float32)
        self._set_training(train, x)
        self.dims_ = np.array([train.n_items], dtype=np.int64)
        rng = seed_everything(self.seed)
        fit_x = x
        validate = None
        with torch_threads(self.threads):
            net = self._build_net().to(device)
            if self.early_stopping:
                parts = split(train, f"user_random:{1.0 - VALID_SHARE}", seed=self.seed)
                fit_x = parts.train.to_csr(binary=True).astype(np.float32)
                scorer = _ValidScorer(lambda u: self._scores(net, fit_x, u, device))

                def validate() -> float:
                    value = holdout_ndcg(
                        scorer, parts.train, parts.test, VALID_K, max_users=MAX_VALID_USERS,
                        seed=self.seed, batch_users=SCORE_BLOCK,
                    )  # fmt: skip
                    return 0.0 if math.isnan(value) else value

            rows = np.flatnonzero(np.diff(fit_x.indptr) > 0)
            self.history_ = train_loop(
                net,
                self._epoch_batches(net, fit_x, rows, device),
                lambda batch: self._loss(net, batch),
                rng=rng,
                validate=validate,
                metric_name=f"ndcg@{VALID_K}",
                optimizer=self._optimizer(net),
                **self._loop_args(),
            )
        self._set_net(net)
        return self

    # -- scoring ------------------------------------------------------------------------------
    def _scores(
        self, net: nn.Module, x: sp.csr_matrix, rows: np.ndarray, device: torch.device
    ) -> np.ndarray:
        out = np.empty((len(rows), x.shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for s in range(0, len(rows), SCORE_BLOCK):
                block = Rows.of(x, rows[s : s + SCORE_BLOCK], device)
                out[s : s + SCORE_BLOCK] = net.score(block).cpu().numpy()
        return out

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        with torch_threads(self.threads):
            net = self.net
            dev = next(net.parameters()).device
            return self._scores(net, self.seen_, np.asarray(user_idx, dtype=np.int64), dev)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        """Fold-in: the encoder reads the history's items (weights ignored: binary, as in
        training) and the decoder scores every item."""
        self._check_fitted()
        h = histories.tocsr().astype(np.float32)
        h.data[:] = 1.0
        with torch_threads(self.threads):
            net = self.net
            dev = next(net.parameters()).device
            return self._scores(net, h, np.arange(h.shape[0]), dev)

    def _item_vectors(self) -> np.ndarray:
        """The decoder's output weights, one row per item."""
        with torch.inference_mode():
            return self.net.item_weights().cpu().numpy().copy()

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # leave-one-out: how much the item's score drops without each history item
        n = len(hist_items)
        rows = np.repeat(np.arange(n + 1), n)
        cols = np.tile(hist_items, n + 1)
        keep = np.ones((n + 1, n), dtype=bool)
        keep[np.arange(1, n + 1), np.arange(n)] = False
        h = sp.csr_matrix(
            (np.ones(keep.sum(), np.float32), (rows[keep.ravel()], cols[keep.ravel()])),
            shape=(n + 1, self.n_items),
        )
        s = self.score_history(h)[:, item]
        return s[0] - s[1:]


# -- Mult-VAE ----------------------------------------------------------------------------------
class _MultVAENet(nn.Module):
    """[items -> hidden -> 2 x latent] encoder, [latent -> hidden -> items] decoder, tanh."""

    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float):
        super().__init__()
        self.dropout = dropout
        self.enc = SparseInput(n_items, hidden, init="xavier")
        self.enc_out = nn.Linear(hidden, 2 * latent)
        self.dec = nn.Linear(latent, hidden)
        self.dec_out = nn.Linear(hidden, n_items)
        # the paper's initialisation: Xavier weights, N(0, 0.001) biases
        for layer in (self.enc_out, self.dec, self.dec_out):
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def encode(self, x: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(x.input_layer(self.enc, self.dropout, self.training))
        mu, logvar = self.enc_out(h).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec_out(torch.tanh(self.dec(z)))

    def score(self, x: Rows) -> torch.Tensor:
        return self.decode(self.encode(x)[0])

    def item_weights(self) -> torch.Tensor:
        return self.dec_out.weight


@dataclass(kw_only=True, eq=False, repr=False)
class MultVAE(AutoencoderRecommender):
    """Mult-VAE with the paper's defaults: one hidden layer of 600 (tanh), a 200-d latent,
    input dropout 0.5, batch 500, Adam lr 1e-3, and the KL weight annealed linearly from 0 by
    1/`anneal_steps` per step up to `anneal_cap` (0.2). Other hyperparameters: `epochs`,
    `weight_decay`, `patience`, `early_stopping` (validation NDCG@20, see the module),
    `max_minutes`, `device` (``cpu``, ``cuda``, ``auto``), `threads`, `seed`, `verbose`."""

    name: ClassVar[str] = "multvae"

    anneal_cap: float = 0.2
    anneal_steps: int = 200_000

    def _check(self) -> None:
        super()._check()
        check_int("anneal_steps", self.anneal_steps, 1)
        if not float(self.anneal_cap) >= 0.0:
            raise InputError(f"anneal_cap: expected a number >= 0, not {self.anneal_cap!r}")

    def _build_net(self) -> nn.Module:
        return _MultVAENet(int(self.dims_[0]), self.hidden, self.latent, float(self.dropout))

    def _epoch_batches(self, net, x, rows, device):
        self._step = 0

        def batches(g: np.random.Generator) -> Iterator[Rows]:
            for b in minibatches(len(rows), self.batch_size, g):
                yield Rows.of(x, rows[b], device)

        return batches

    def _loss(self, net: nn.Module, x: Rows) -> torch.Tensor:
        mu, logvar = net.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        nll = -x.log_likelihood(net.decode(z)).mean()
        kl = 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(1).mean()
        beta = min(float(self.anneal_cap), self._step / self.anneal_steps)
        self._step += 1
        return nll + beta * kl


# -- RecVAE ------------------------------------------------------------------------------------
def _log_norm_pdf(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (logvar + math.log(2 * math.pi) + (x - mu).pow(2) / logvar.exp())


class _RecVAEEncoder(nn.Module):
    """RecVAE's encoder: five densely connected layers (swish, LayerNorm with eps 0.1)."""

    def __init__(self, n_items: int, hidden: int, latent: int):
        super().__init__()
        self.fc = nn.ModuleList(
            [SparseInput(n_items, hidden)] + [nn.Linear(hidden, hidden) for _ in range(4)]
        )
        self.ln = nn.ModuleList(nn.LayerNorm(hidden, eps=0.1) for _ in range(5))
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)

    def forward(self, x: Rows, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
        # layer i reads fc_i(h_{i-1}) plus every earlier layer's output (dense connections)
        h = self.ln[0](F.silu(x.input_layer(self.fc[0], dropout, self.training)))
        total = h
        for fc, ln in zip(self.fc[1:], self.ln[1:], strict=True):
            h = ln(F.silu(fc(h) + total))
            total = total + h
        return self.mu(h), self.logvar(h)


class _RecVAENet(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int):
        super().__init__()
        self.encoder = _RecVAEEncoder(n_items, hidden, latent)
        self.decoder = nn.Linear(latent, n_items)

    def score(self, x: Rows) -> torch.Tensor:
        return self.decoder(self.encoder(x, 0.0)[0])

    def item_weights(self) -> torch.Tensor:
        return self.decoder.weight


class _CompositePrior(nn.Module):
    """RecVAE's prior: a mixture of N(0, I), the previous encoder's posterior for the same
    history, and a wide N(0, e^10 I), weighted `weights`."""

    def __init__(self, encoder: _RecVAEEncoder, weights: tuple[float, float, float]):
        super().__init__()
        self.old = encoder
        self.old.requires_grad_(False)
        self.log_w = [math.log(w) for w in weights]

    def forward(self, x: Rows, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            post_mu, post_logvar = self.old(x, 0.0)
        zero = torch.zeros_like(z)
        parts = [
            _log_norm_pdf(z, zero, zero) + self.log_w[0],
            _log_norm_pdf(z, post_mu, post_logvar) + self.log_w[1],
            _log_norm_pdf(z, zero, zero + 10.0) + self.log_w[2],
        ]
        return torch.logsumexp(torch.stack(parts, dim=-1), dim=-1)


class _Alternating:
    """Separate Adam optimizers for RecVAE's encoder and decoder, stepped by phase (the
    paper alternates encoder and decoder epochs); `train_loop` only calls `zero_grad` and
    `step`, so this plugs into its `optimizer` hook."""

    def __init__(self, net: _RecVAENet, lr: float, weight_decay: float):
        self.opts = {
            "enc": torch.optim.Adam(net.encoder.parameters(), lr=lr, weight_decay=weight_decay),
            "dec": torch.optim.Adam(net.decoder.parameters(), lr=lr, weight_decay=weight_decay),
        }
        self.phase = "enc"

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.opts[self.phase].step()


@dataclass(kw_only=True, eq=False, repr=False)
class RecVAE(AutoencoderRecommender):
    """RecVAE with the paper's defaults: hidden 600, latent 200, input dropout 0.5, a
    composite prior (weights 3/20, 3/4, 1/10), KL weight `gamma` x the user's number of items
    (0.005), and each epoch `enc_epochs` (3) passes training the encoder, then the prior's
    copy of the encoder refreshed, then `dec_epochs` (1) passes training the decoder (no
    dropout); Adam lr 5e-4, batch 500, 50 epochs keeping the best on validation NDCG@20
    (`patience` epochs without improvement stop early). Other hyperparameters: `weight_decay`,
    `early_stopping`, `max_minutes`, `device` (``cpu``, ``cuda``, ``auto``), `threads`,
    `seed`, `verbose`."""

    name: ClassVar[str] = "recvae"
    PRIOR_WEIGHTS: ClassVar[tuple[float, float, float]] = (3 / 20, 3 / 4, 1 / 10)

    gamma: float = 0.005
    enc_epochs: int = 3
    dec_epochs: int = 1
    epochs: int = 50
    lr: float = 5e-4
    patience: int | None = 10

    def _check(self) -> None:
        super()._check()
        check_int("enc_epochs", self.enc_epochs, 1)
        check_int("dec_epochs", self.dec_epochs, 1)
        if not float(self.gamma) > 0:
            raise InputError(f"gamma: expected a positive number, not {self.gamma!r}")

    def _build_net(self) -> nn.Module:
        return _RecVAENet(int(self.dims_[0]), self.hidden, self.latent)

    def _optimizer(self, net: nn.Module) -> _Alternating:
        self._opt = _Alternating(net, self.lr, self.weight_decay)
        return self._opt

    def _epoch_batches(self, net, x, rows, device):
        old = _RecVAEEncoder(int(self.dims_[0]), self.hidden, self.latent).to(device)
        self._prior = _CompositePrior(old, self.PRIOR_WEIGHTS)
        self._prior.old.load_state_dict(net.encoder.state_dict())

        def batches(g: np.random.Generator) -> Iterator[tuple[str, Rows]]:
            for phase, passes in (("enc", self.enc_epochs), ("dec", self.dec_epochs)):
                if phase == "dec":
                    # the prior's posterior term follows the encoder just trained
                    self._prior.old.load_state_dict(net.encoder.state_dict())
                for _ in range(passes):
                    for b in minibatches(len(rows), self.batch_size, g):
                        yield phase, Rows.of(x, rows[b], device)

        return batches

    def _loss(self, net: nn.Module, batch: tuple[str, Rows]) -> torch.Tensor:
        """The negative ELBO whose gradient the phase's optimizer steps on. Only one side
        steps per phase, so only its gradient is computed: in the encoder phase the decoder's
        weights enter as constants; in the decoder phase the KL term (which does not depend
        on the decoder) and the prior are skipped and the encoder runs without autograd. The
        updates are the paper's (whose code back-propagates the whole ELBO in both phases) for
        78% of its floating-point operations per epoch (ML-1M's 3,706 items, batch 500, torch's
        FlopCounterMode); the decoder phase's loss is its negative log-likelihood alone."""
        phase, x = batch
        self._opt.phase = phase
        if phase == "dec":
            with torch.no_grad():
                mu, logvar = net.encoder(x, 0.0)
                z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            return -x.log_likelihood(net.decoder(z)).mean()
        mu, logvar = net.encoder(x, float(self.dropout))
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = F.linear(z, net.decoder.weight.detach(), net.decoder.bias.detach())
        mll = x.log_likelihood(logits)
        kl_weight = float(self.gamma) * x.counts
        kld = (_log_norm_pdf(z, mu, logvar) - self._prior(x, z)).sum(1) * kl_weight
        return (kld - mll).mean()
