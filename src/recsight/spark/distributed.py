"""Neural models trained data-parallel on Spark: DDP processes launched by TorchDistributor.

`fit_distributed` runs the model's ordinary `fit` in `num_processes` processes started by
``pyspark.ml.torch.distributor.TorchDistributor`` (gloo on CPU). Each process joins the
process group, and the model's training loop (`recsight.models.neural.distributed.fit_loop`)
then trains data-parallel: same data and seed in every process, each on its slice of every
global batch. Only one process's return value reaches the caller, so rank 0 saves the model
to `out` and the caller loads it from there (`out` must be a path the driver can read: a
local folder in local mode, shared storage on a cluster).

The training data travels to the processes pickled with the function (it must fit in one
process's memory anyway, since every process holds all of it).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models import Recommender, create_model, load_model
from recsight.models.neural.base import TorchRecommender
from recsight.models.neural.training import EpochRecord, TrainHistory

#: Where rank 0 records the training history next to the saved model.
HISTORY_FILE = "train_history.json"


def _rank_main(name: str, params: dict[str, Any], data: Interactions, out: str) -> None:
    """One DDP process: join the group, fit, and (rank 0) save."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        model = create_model(name, **params)
        model.fit(data)
        if dist.get_rank() == 0:
            model.save(out)
            history = getattr(model, "history_", None)
            if history is not None:
                (Path(out) / HISTORY_FILE).write_text(json.dumps(history.to_dict()) + "\n")
        dist.barrier()  # nobody leaves before the model is written
    finally:
        dist.destroy_process_group()


def fit_distributed(
    model: Recommender,
    data: Interactions,
    out: str | Path,
    num_processes: int,
    local_mode: bool = True,
) -> tuple[Recommender, dict[str, Any] | None]:
    """Fit `model` (unfitted, a neural model) on `data` with DDP over `num_processes`
    processes launched by TorchDistributor; returns the model rank 0 saved to `out` and its
    training history (`TrainHistory.to_dict`; also the model's `history_`, as after `fit`).
    `local_mode` runs the processes on the driver; False runs them as Spark tasks."""
    if not isinstance(model, TorchRecommender):
        raise InputError(
            f"num_processes: {model.name!r} is not a neural model; data-parallel training "
            "applies to the PyTorch models (e.g. sasrec)"
        )
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise InputError(f"num_processes: expected a positive integer, not {num_processes!r}")
    from pyspark.ml.torch.distributor import TorchDistributor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    distributor = TorchDistributor(
        num_processes=num_processes, local_mode=local_mode, use_gpu=False
    )
    # TorchDistributor prints its banner and the processes' output on stdout, which belongs
    # to the command's result (`--json`): send them to stderr
    with contextlib.redirect_stdout(sys.stderr):
        distributor.run(_rank_main, model.name, model.get_params(), data, str(out))
    path = out / HISTORY_FILE
    history = json.loads(path.read_text()) if path.is_file() else None
    fitted = load_model(out)
    if history is not None:  # as after a local fit (`--refit` reads the best epoch from it)
        epochs = [EpochRecord(**e) for e in history["epochs"]]
        fitted.history_ = TrainHistory(**{**history, "epochs": epochs})
    return fitted, history
