"""The shared training loop: best-epoch restore, early stopping, Ctrl-C, time budget,
determinism and weight flattening."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsight.errors import InputError
from recsight.models.neural.training import flatten_state, load_flat_state, train_loop


def _setup(metrics, interrupt_at=None):
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1)
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    calls = {"epoch": 0}
    snapshots = []

    def batches(rng):
        calls["epoch"] += 1
        if interrupt_at is not None and calls["epoch"] == interrupt_at:
            raise KeyboardInterrupt
        yield x, y

    def validate():
        snapshots.append(flatten_state(net))
        return metrics[len(snapshots) - 1]

    return (
        net,
        batches,
        (lambda b: torch.nn.functional.mse_loss(net(b[0]), b[1])),
        validate,
        snapshots,
    )


def test_best_epoch_is_restored_and_patience_stops():
    metrics = [0.1, 0.5, 0.3, 0.2, 0.4, 0.9]
    net, batches, loss, validate, snaps = _setup(metrics)
    h = train_loop(net, batches, loss, epochs=6, lr=0.1, weight_decay=0.0,
                   rng=np.random.default_rng(0), validate=validate, patience=2)  # fmt: skip
    assert h.stopped_by == "early_stopping" and len(h.epochs) == 4
    assert (h.best_epoch, h.best_metric) == (2, 0.5)
    np.testing.assert_array_equal(flatten_state(net), snaps[1])


def test_lower_is_better_metric():
    net, batches, loss, validate, snaps = _setup([0.9, 0.5, 0.7])
    h = train_loop(net, batches, loss, epochs=3, lr=0.1, weight_decay=0.0,
                   rng=np.random.default_rng(0), validate=validate,
                   higher_is_better=False)  # fmt: skip
    assert h.best_epoch == 2
    np.testing.assert_array_equal(flatten_state(net), snaps[1])


def test_ctrl_c_keeps_the_best_model_so_far():
    net, batches, loss, validate, snaps = _setup([0.2, 0.6, 0.4, 0.1], interrupt_at=4)
    h = train_loop(net, batches, loss, epochs=10, lr=0.1, weight_decay=0.0,
                   rng=np.random.default_rng(0), validate=validate, patience=None)  # fmt: skip
    assert h.stopped_by == "interrupted" and len(h.epochs) == 3
    np.testing.assert_array_equal(flatten_state(net), snaps[1])


def test_time_budget_stops_training():
    net, batches, loss, validate, _ = _setup([0.1] * 50)
    h = train_loop(net, batches, loss, epochs=50, lr=0.1, weight_decay=0.0,
                   rng=np.random.default_rng(0), validate=validate, max_seconds=0.0)  # fmt: skip
    assert h.stopped_by == "time_budget" and len(h.epochs) == 1


def test_same_seed_same_weights():
    def run():
        net, batches, loss, validate, _ = _setup([0.1, 0.2, 0.3])
        train_loop(net, batches, loss, epochs=3, lr=0.1, weight_decay=0.01,
                   rng=np.random.default_rng(0), validate=validate)  # fmt: skip
        return flatten_state(net)

    np.testing.assert_array_equal(run(), run())


def test_flat_state_round_trip_and_size_check():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    load_flat_state(b, flatten_state(a))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    with pytest.raises(InputError, match="8 values"):
        load_flat_state(torch.nn.Linear(3, 3), flatten_state(a))


def test_bad_loop_arguments():
    net, batches, loss, _, _ = _setup([])
    with pytest.raises(InputError, match="epochs"):
        train_loop(net, batches, loss, epochs=0, lr=0.1, weight_decay=0.0,
                   rng=np.random.default_rng(0))  # fmt: skip
