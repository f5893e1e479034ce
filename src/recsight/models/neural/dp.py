"""User-level differentially private training (DP-SGD with Opacus) for sequence models.

A model opts in by taking `dp_epsilon`, `dp_delta` and `dp_max_grad_norm` hyperparameters
(SASRec does; `recsight.models.registry.create_model` refuses them for every other model
with a message naming the ones that have them). With ``dp_epsilon`` set, `fit_dp` trains
instead of the model's usual fit:

- **one user is one example**: Opacus' Poisson sampler draws *users* (each with probability
  ``batch_size / n_users`` per step), and a drawn user contributes one window of their
  history (drawn at random among their windows), so one user's whole history moves one
  clipped per-example gradient per step, whatever its length. The guarantee is user-level
  (ε, δ)-DP for the trained weights, under add/remove-one-user neighbouring.
- per-user gradients are clipped to ``dp_max_grad_norm`` and Gaussian noise is added, with
  the noise multiplier Opacus calibrates (RDP accountant) for ``dp_epsilon`` over `epochs`
  epochs at ``dp_delta``; the ε actually spent (fewer steps under ``max_minutes`` spend less)
  is reported in `model.privacy_` and by ``recsight train``.
- no validation-based early stopping or epoch selection: choosing weights by held-out data
  would spend privacy the accountant does not count. Training runs `epochs` epochs and keeps
  the last weights.
- ``dp_epsilon=inf`` trains the same user-sampled way without clipping or noise: the
  non-private reference point for measuring what privacy costs.
- the noise comes from torch's seeded generator (reproducible), not a cryptographic one
  (Opacus' ``secure_mode`` needs torchcsprng): fine for measuring, a caveat for production.

Per-example gradients must be exact for the guarantee to mean anything, so every module
with parameters must be one Opacus computes per-sample gradients for, and every use of a
parameter must go through its module: SASRec scores through an ``nn.Linear`` that shares the
item-embedding weight (``h @ emb.weight.T`` gives silently wrong per-sample gradients) and
feeds position ids shaped (batch, length). `per_sample_gradient_error` checks a model
against a per-example loop; the tests run it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsight.errors import InputError
from recsight.models.guarantee import PrivacyReport
from recsight.models.neural.base import sequence_windows
from recsight.models.neural.training import (
    EpochRecord,
    resolve_device,
    seed_everything,
    torch_threads,
    train_loop,
)

if TYPE_CHECKING:
    from recsight.data.dataset import Interactions
    from recsight.models.neural.sasrec import SASRec

#: The hyperparameters that switch DP-SGD on and configure it.
DP_PARAMS = ("dp_epsilon", "dp_delta", "dp_max_grad_norm")


def dp_settings(epsilon: Any, delta: Any, max_grad_norm: Any) -> tuple[float, float, float]:
    """Checked (ε, δ, clipping norm); ε may be ``inf`` (or the string "inf")."""
    bad_eps = f"dp_epsilon: expected a positive number or inf, not {epsilon!r}"
    try:
        eps = float(epsilon)
    except (TypeError, ValueError):
        raise InputError(bad_eps) from None
    if not eps > 0:
        raise InputError(bad_eps)
    try:
        d, c = float(delta), float(max_grad_norm)
    except (TypeError, ValueError):
        raise InputError(
            f"dp_delta / dp_max_grad_norm: expected numbers, not {delta!r} / {max_grad_norm!r}"
        ) from None
    if not 0 < d < 1:
        raise InputError(f"dp_delta: expected a number in (0, 1), not {delta!r}")
    if not (c > 0 and math.isfinite(c)):
        raise InputError(f"dp_max_grad_norm: expected a positive number, not {max_grad_norm!r}")
    return eps, d, c


def user_windows(
    indptr: np.ndarray, items: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every user's windows (as `sequence_windows` cuts them) and the user each belongs to:
    ``(windows (n, length) int64, owner (n,) int64)``, grouped by user in ascending order."""
    windows = sequence_windows(indptr, items, length)
    # the same cut over an array holding each event's user: a window's non-padding entries
    # are then its owner + 1
    owner_of_event = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    owners = sequence_windows(indptr, owner_of_event, length).max(axis=1) - 1
    return windows, owners


def per_user_loss(net: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Each window's mean next-item cross-entropy over all items, ``(batch,)``: one user's
    loss, computed from that window alone (what per-example clipping needs)."""
    inputs, targets = windows[:, :-1], windows[:, 1:]
    # Opacus' hooks sit on the submodules, so the wrapped module's own methods are used
    enc = getattr(net, "_module", net)
    logits = enc.item_logits(enc(inputs))  # (batch, length, n_items)
    keep = (targets > 0) & (inputs > 0)
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        (targets - 1).clamp(min=0).reshape(-1),
        reduction="none",
    ).view(targets.shape)
    return (ce * keep).sum(1) / keep.sum(1).clamp(min=1)


def per_sample_gradient_error(
    net: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor], batch: torch.Tensor
) -> float:
    """Largest relative error between Opacus' per-sample gradients of `net` (wrapped in its
    `GradSampleModule`, mean loss over the batch) and gradients from one backward pass per
    example. `loss_fn(net, batch)` returns per-example losses ``(batch,)``. Run it with
    dropout off; near 0 (float rounding) means DP-SGD clips the right thing."""
    from opacus import GradSampleModule

    gsm = GradSampleModule(net, loss_reduction="mean")
    gsm.train()
    gsm.zero_grad(set_to_none=True)
    loss_fn(gsm, batch).mean().backward()
    params = [p for p in net.parameters() if p.requires_grad]
    per_sample = [p.grad_sample.detach().clone() for p in params]
    gsm.zero_grad(set_to_none=True)
    gsm.to_standard_module()
    worst = 0.0
    for i in range(len(batch)):
        net.zero_grad(set_to_none=True)
        loss_fn(net, batch[i : i + 1]).sum().backward()
        for p, gs in zip(params, per_sample, strict=True):
            ref = torch.zeros_like(p) if p.grad is None else p.grad
            err = (gs[i] - ref).norm() / ref.norm().clamp(min=1e-12)
            worst = max(worst, float(err))
    net.zero_grad(set_to_none=True)
    return worst


def fit_dp(model: SASRec, train: Interactions) -> SASRec:
    """Train `model` (a SASRec with ``dp_epsilon`` set) with user-level DP-SGD; sets the
    fitted state as `fit` does, plus `privacy_` (a `PrivacyReport`) and `history_`."""
    model._check()
    eps, delta, clip = dp_settings(model.dp_epsilon, model.dp_delta, model.dp_max_grad_norm)
    n_items = train.n_items
    if model.resolved_loss(n_items) != "full":
        raise InputError(
            f"dp_epsilon: DP-SGD trains with loss='full' (per-user gradients through the tied "
            f"output layer); loss={model.loss!r} resolves to "
            f"{model.resolved_loss(n_items)!r} here"
        )
    device = resolve_device(model.device)
    indptr, items = train.sequences()
    model._set_training(train, train.to_csr(binary=True))
    model.dims_ = np.array([n_items], dtype=np.int64)
    model._prepare_loss(np.asarray(items, np.int64), device)
    windows_np, owners = user_windows(indptr, items, model._input_len() + 1)
    if len(windows_np) == 0:
        raise InputError("training data: SASRec needs users with at least 2 events")
    windows = torch.from_numpy(windows_np)
    users, first, n_win = np.unique(owners, return_index=True, return_counts=True)
    n_users = len(users)
    rng = seed_everything(model.seed)

    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(
        TensorDataset(torch.arange(n_users)),
        batch_size=int(model.batch_size),
        shuffle=True,
        generator=torch.Generator().manual_seed(int(model.seed)),
    )
    with torch_threads(model.threads), warnings.catch_warnings():
        # Opacus warns that its noise is not from a cryptographic RNG (secure_mode, which
        # needs torchcsprng) and that backward hooks fire on the embedding input: expected
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        net = model._build_net().to(device)
        optimizer = torch.optim.AdamW(
            net.parameters(), lr=model.lr, weight_decay=model.weight_decay
        )
        engine = None
        if math.isfinite(eps):
            from opacus import PrivacyEngine

            engine = PrivacyEngine(accountant="rdp")
            net, optimizer, loader = engine.make_private_with_epsilon(
                module=net,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=eps,
                target_delta=delta,
                epochs=int(model.epochs),
                max_grad_norm=clip,
                poisson_sampling=True,
                noise_generator=torch.Generator(device=device).manual_seed(int(model.seed) + 1),
            )
        steps = [0]

        def batches(g: np.random.Generator):
            for (pos,) in loader:
                pos = pos.numpy()
                pick = first[pos] + (g.random(len(pos)) * n_win[pos]).astype(np.int64)
                steps[0] += 1
                yield windows[torch.from_numpy(pick)].to(device)

        def loss_fn(batch: torch.Tensor) -> torch.Tensor:
            losses = per_user_loss(net, batch)
            # Poisson sampling can draw nobody: a zero loss still runs the (noise-only) step
            return losses.mean() if len(losses) else losses.sum()

        spent: list[float] = []

        def on_epoch_end(rec: EpochRecord) -> None:
            if engine is not None:
                spent.append(float(engine.get_epsilon(delta)))

        model.history_ = train_loop(
            net,
            batches,
            loss_fn,
            rng=rng,
            validate=None,
            optimizer=optimizer,
            on_epoch_end=on_epoch_end,
            **{**model._loop_args(), "description": f"{model.name} (DP-SGD, eps={eps:g})"},
        )
        if engine is not None:
            net = net.to_standard_module()
    model._set_net(net)
    model.seq_indptr_, model.seq_items_ = indptr.astype(np.int64), items.astype(np.int32)
    model.privacy_ = PrivacyReport(
        unit="user",
        epsilon_target=eps,
        epsilon_spent=float(engine.get_epsilon(delta)) if engine is not None else math.inf,
        delta=delta,
        noise_multiplier=float(optimizer.noise_multiplier) if engine is not None else 0.0,
        max_grad_norm=clip if engine is not None else math.inf,
        sample_rate=1.0 / len(loader),
        steps=steps[0],
    )
    return model
