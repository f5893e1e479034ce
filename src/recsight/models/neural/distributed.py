"""Data-parallel training with PyTorch DistributedDataParallel (DDP), through the shared loop.

`fit_loop` is what a neural model calls instead of `train_loop` with ``loss(net, batch)``.
Without a ``torch.distributed`` process group (or with a group of one) it is exactly
`train_loop`. Inside a group of N processes (launched by `recsight.spark.distributed` on Spark's
TorchDistributor, or by ``torchrun``) every process runs the same `fit` on the same data and
seed, so all draw the same global batches; each trains on its 1/N slice of every batch, and
DDP averages the gradients, so the global batch size stays as configured.

Exactness: each process scales its slice's mean loss by ``N * n_r / n``, where ``n_r`` and
``n`` count what the loss averages over in the slice and in the whole batch (`weight`, e.g.
predicted positions for SASRec). The averaged gradient is then that of the full batch's mean
loss, so one DDP step equals one single-process step on the whole batch (up to float
rounding), whatever the slices hold. Validation runs on rank 0 and its metric is broadcast,
so every process takes the same early-stopping decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsight.errors import InputError
from recsight.models.neural.training import TrainHistory, train_loop


def world() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _SliceLoss(nn.Module):
    """The model's loss on one slice of a batch as a module, so DDP wraps the whole forward
    (its gradient hooks then see every use of the parameters, tied output layers included)."""

    def __init__(self, net: nn.Module, loss: Callable[[nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.net = net
        self.loss = loss

    def forward(self, part: Any, scale: float) -> torch.Tensor:
        if scale == 0.0:
            # an empty slice (a last batch smaller than the world): contribute zero gradients,
            # but touch every parameter so DDP's all-reduce still runs on this process
            params = list(self.net.parameters())
            return sum((p.sum() * 0.0 for p in params), params[0].new_zeros(()))
        return self.loss(self.net, part) * scale


def fit_loop(
    net: nn.Module,
    batches: Callable[[np.random.Generator], Iterable[torch.Tensor]],
    loss: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    weight: Callable[[torch.Tensor], int] = len,
    lr: float,
    weight_decay: float,
    validate: Callable[[], float] | None = None,
    max_seconds: float | None = None,
    **loop_args: Any,
) -> TrainHistory:
    """`train_loop` over `net` with ``loss(net, batch)`` (the mean loss of a batch whose rows
    are stacked in its first dimension); data-parallel inside a process group (see the module
    docstring). `weight(batch)` counts what `loss` averages over (default: rows)."""
    rank, size = world()
    if size == 1:
        return train_loop(
            net,
            batches,
            lambda b: loss(net, b),
            lr=lr,
            weight_decay=weight_decay,
            validate=validate,
            max_seconds=max_seconds,
            **loop_args,
        )
    if max_seconds is not None:
        # a wall-clock budget would stop the processes after different batches, and DDP
        # needs every process in every step
        raise InputError("max_minutes: not supported when training on several processes")
    from torch.nn.parallel import DistributedDataParallel

    ddp = DistributedDataParallel(_SliceLoss(net, loss))  # broadcasts rank 0's weights
    # same batches everywhere, but each process its own dropout masks
    torch.manual_seed(torch.initial_seed() + rank)

    def sliced(g: np.random.Generator) -> Iterator[tuple[torch.Tensor, float]]:
        for batch in batches(g):
            total = weight(batch)
            part = torch.tensor_split(batch, size)[rank]
            n = weight(part) if len(part) else 0
            yield part, (size * n / total if total else 0.0)

    def validate_on_rank0() -> float:
        value = torch.tensor([validate() if rank == 0 else 0.0], dtype=torch.float64)
        dist.broadcast(value, src=0)
        return float(value.item())

    optimizer = torch.optim.AdamW(ddp.parameters(), lr=lr, weight_decay=weight_decay)
    loop_args["verbose"] = bool(loop_args.get("verbose")) and rank == 0  # one progress display
    return train_loop(
        ddp,
        sliced,
        lambda item: ddp(*item),
        lr=lr,
        weight_decay=weight_decay,
        validate=None if validate is None else validate_on_rank0,
        optimizer=optimizer,
        **loop_args,
    )
