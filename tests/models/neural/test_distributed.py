"""Data-parallel training (DDP over gloo): one step on slices equals one full-batch step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recsight.errors import InputError
from recsight.models.neural.distributed import fit_loop, world
from recsight.models.neural.sasrec import SASRec
from recsight.models.neural.training import minibatches
from tests.models.neural.data import events

#: One batch holding every training window, no dropout: a single deterministic step.
ONE_STEP = {
    "max_len": 4,
    "dim": 8,
    "layers": 1,
    "heads": 2,
    "dropout": 0.0,
    "attn_dropout": 0.0,
    "epochs": 1,
    "lr": 0.01,
    "batch_size": 1000,
    "early_stopping": False,
    "verbose": False,
    "seed": 3,
}


def uneven_sequences():
    """Users with 2..11 events: windows of max_len + 1 = 5 are full or padded to different
    degrees, so the two halves of the batch hold different numbers of predictions."""
    rng = np.random.default_rng(5)
    lengths = [2, 11, 3, 9, 2, 7, 4, 10, 2, 6, 3, 8]
    users = np.repeat(np.arange(len(lengths)), lengths)
    items = rng.integers(0, 15, len(users))
    return events(users, items, len(lengths), 15)


def params_and_grads(model: SASRec) -> tuple[np.ndarray, np.ndarray]:
    ps = list(model.net.parameters())
    flat = [torch.cat([getattr(p, a).reshape(-1) for p in ps]) for a in ("data", "grad")]
    return flat[0].numpy().copy(), flat[1].numpy().copy()


def _ddp_worker(rank: int, size: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        model = SASRec(**ONE_STEP).fit(uneven_sequences())
        if rank == 0:
            params, grads = params_and_grads(model)
            np.savez(out, params=params, grads=grads)
        # a wall-clock budget would stop the processes after different batches: refused
        with pytest.raises(InputError, match="max_minutes"):
            SASRec(**{**ONE_STEP, "max_minutes": 1.0}).fit(uneven_sequences())
    finally:
        dist.destroy_process_group()


def test_two_process_step_equals_full_batch_step(tmp_path):
    data = uneven_sequences()
    one = SASRec(**ONE_STEP).fit(data)
    # the step's batch, as the loop draws it: its two slices hold different numbers of
    # predictions, so averaging the slices' mean losses would not give the batch's mean
    windows = torch.from_numpy(one._train_windows(*data.sequences()))
    (batch,) = minibatches(len(windows), ONE_STEP["batch_size"], np.random.default_rng(3))
    counts = [SASRec._window_count(h) for h in torch.tensor_split(windows[batch], 2)]
    assert counts[0] != counts[1]

    out = str(tmp_path / "ddp.npz")
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    ddp = np.load(out)
    params, grads = params_and_grads(one)
    # the all-reduced gradient is the full batch's gradient
    np.testing.assert_allclose(ddp["grads"], grads, rtol=0, atol=1e-6)
    # and so is the step. Adam's first step is lr * g / (|g| + eps): where the gradient is
    # zero in exact arithmetic (the attention key bias: softmax ignores a shift shared by all
    # keys) it holds float noise of order 1e-9, which Adam scales up to about lr either way
    real = np.abs(grads) > 1e-6
    assert real.mean() > 0.9
    np.testing.assert_allclose(ddp["params"][real], params[real], rtol=0, atol=1e-6)
    np.testing.assert_array_less(np.abs(ddp["params"] - params), ONE_STEP["lr"] * 1.01)


def test_single_process_is_the_plain_loop():
    # without a process group fit_loop is train_loop: same weights as before the hook
    assert world() == (0, 1)
    net = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    hist = fit_loop(
        net,
        lambda g: [x],
        lambda n, b: n(b).pow(2).mean(),
        lr=0.1,
        weight_decay=0.0,
        epochs=2,
        rng=np.random.default_rng(0),
    )
    assert len(hist.epochs) == 2 and hist.epochs[1].loss < hist.epochs[0].loss
