"""The one training loop every neural model uses, and the torch plumbing around it.

`train_loop` runs mini-batch AdamW epochs over batches a model supplies, evaluates a
validation metric after each epoch, keeps the best weights (early stopping with `patience`)
and restores them at the end, shows loss and metric per epoch with Rich, and treats Ctrl-C as
"stop now": the best model so far is restored and training returns normally. Seeds are set
from the model's `seed` and torch's thread count from its `threads`, for the duration of the
call only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from recsight.errors import InputError, TrainingDiverged
from recsight.models.topk import non_finite_count, target_ranks


@dataclass
class EpochRecord:
    """One epoch: mean training loss, validation metric (None without validation), seconds."""

    epoch: int
    loss: float
    metric: float | None
    seconds: float


@dataclass
class TrainHistory:
    """What `train_loop` did: per-epoch records, the restored epoch and why it stopped
    ("epochs", "early_stopping", "time_budget" or "interrupted")."""

    metric_name: str | None
    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    stopped_by: str = "epochs"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Thread counts fixed by `fixed_torch_threads` blocks, innermost last.
_FIXED_THREADS: list[int] = []


def _check_threads(n: int) -> None:
    if int(n) < 1:
        raise InputError(f"threads: expected a positive thread count, not {n}")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run torch with `n` intra-op threads inside the block (None = leave as is). Inside a
    `fixed_torch_threads` block it leaves the setting alone."""
    if n is None or _FIXED_THREADS:
        yield
        return
    _check_threads(n)
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def fixed_torch_threads(n: int) -> Iterator[None]:
    """Set torch's intra-op thread count to `n` once for the block, and keep models'
    `torch_threads` from changing it meanwhile. For a service: the setting is process-wide
    (threads started later take it up), so changing and restoring it per request races
    between concurrent requests (one request's restore undoes another's setting) and costs a
    thread-pool resize each time. Restored at the end."""
    _check_threads(n)
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    _FIXED_THREADS.append(int(n))
    try:
        yield
    finally:
        _FIXED_THREADS.pop()
        torch.set_num_threads(_FIXED_THREADS[-1] if _FIXED_THREADS else before)


def _state_groups(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state_dict`` with tied tensors listed once, and each repeated key -> its first key
    (a tied output layer shares its weight with the embedding: saved once, loaded into both)."""
    unique: dict[str, torch.Tensor] = {}
    alias: dict[str, str] = {}
    first: dict[tuple[int, tuple[int, ...], tuple[int, ...]], str] = {}
    for key, t in module.state_dict().items():
        ident = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and ident in first:
            alias[key] = first[ident]
            continue
        first.setdefault(ident, key)
        unique[key] = t
    return unique, alias


def flatten_state(module: torch.nn.Module) -> np.ndarray:
    """All tensors of ``module.state_dict()``, in its order, tied ones once, as one float32
    vector (what the model saves in its ``.npz``; the architecture is rebuilt from the
    hyperparameters)."""
    unique, _ = _state_groups(module)
    parts = [t.detach().cpu().reshape(-1).to(torch.float32) for t in unique.values()]
    if not parts:
        return np.zeros(0, np.float32)
    return torch.cat(parts).numpy().copy()


def load_flat_state(module: torch.nn.Module, flat: np.ndarray) -> None:
    """Inverse of `flatten_state`; a length mismatch means the saved model does not match
    its hyperparameters."""
    unique, alias = _state_groups(module)
    total = sum(t.numel() for t in unique.values())
    if flat.size != total:
        raise InputError(
            f"saved weights hold {flat.size} values but the architecture needs {total}; "
            "the model files do not match their config.json"
        )
    vec = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.float32))
    out, pos = {}, 0
    for key, t in unique.items():
        out[key] = vec[pos : pos + t.numel()].view_as(t).to(t.dtype).clone()
        pos += t.numel()
    for key, source in alias.items():
        out[key] = out[source]
    module.load_state_dict(out)


def resolve_device(spec: str | torch.device = "cpu") -> torch.device:
    """The torch device for a model's ``device`` parameter: "cpu", "cuda" (fails clearly when
    no GPU is visible), "auto" (cuda when available, else cpu) or any torch device string."""
    if isinstance(spec, torch.device):
        return spec
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device: {spec!r} was asked for but torch sees no CUDA GPU; use cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise InputError(f"device: expected cpu, cuda, cuda:N or auto, not {spec!r}") from None


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return the numpy generator a fit draws its batches from."""
    torch.manual_seed(int(seed))
    return np.random.default_rng(int(seed))


def minibatches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering ``range(n)`` once."""
    if batch_size < 1:
        raise InputError(f"batch_size: expected a positive integer, not {batch_size}")
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def train_loop(
    module: torch.nn.Module,
    batches: Callable[[np.random.Generator], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    rng: np.random.Generator,
    validate: Callable[[], float] | None = None,
    metric_name: str | None = None,
    higher_is_better: bool = True,
    patience: int | None = 3,
    max_seconds: float | None = None,
    verbose: bool = False,
    description: str = "training",
    optimizer: torch.optim.Optimizer | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
) -> TrainHistory:
    """Train `module` in place with AdamW and return the `TrainHistory`.

    `batches(rng)` yields one epoch of batches; `loss_fn(batch)` returns the mean loss of one.
    With `validate` (called in eval mode after each epoch), the weights of the best epoch are
    restored at the end and training stops after `patience` epochs without improvement
    (None: never early). `max_seconds` is a wall-clock budget checked after every batch.
    Ctrl-C stops training the same way, keeping the best weights so far.

    Hooks for what wraps the loop rather than edits it: `optimizer` replaces the default
    AdamW (e.g. Opacus' DP optimizer, or one over a DistributedDataParallel module's
    parameters; `lr`/`weight_decay` are then the caller's business), `on_epoch_end` sees
    each `EpochRecord` (progress reporting, checkpoints, privacy accounting). Devices are the
    model's business: `batches` yields tensors already on `resolve_device(...)`.
    """
    if epochs < 1:
        raise InputError(f"epochs: expected a positive integer, not {epochs}")
    if lr <= 0:
        raise InputError(f"lr: expected a positive learning rate, not {lr}")
    opt = optimizer or torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    history = TrainHistory(metric_name=metric_name if validate else None)
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    t_start = time.perf_counter()
    console = Console(stderr=True, quiet=not verbose)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("epoch {task.completed:.0f}/{task.total:.0f}"),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not verbose,
        transient=False,
    )

    def out_of_time() -> bool:
        return max_seconds is not None and time.perf_counter() - t_start >= max_seconds

    with progress:
        task = progress.add_task(description, total=epochs, status="")
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                module.train()
                total, count = 0.0, 0
                for batch in batches(rng):
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(batch)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{description}: loss became {loss.item()} in epoch {epoch}; lower lr"
                        )
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    count += 1
                    if out_of_time():
                        break
                metric = None
                if validate is not None:
                    module.eval()
                    with torch.inference_mode():
                        metric = float(validate())
                rec = EpochRecord(epoch, total / max(count, 1), metric, time.perf_counter() - t0)
                history.epochs.append(rec)
                if on_epoch_end is not None:
                    on_epoch_end(rec)
                improved = metric is not None and (
                    history.best_metric is None
                    or (metric > history.best_metric if higher_is_better
                        else metric < history.best_metric)
                )  # fmt: skip
                if improved or validate is None:
                    history.best_epoch, history.best_metric = epoch, metric
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                    bad_epochs = 0
                else:
                    bad_epochs += 1
                shown = "" if metric is None else f" {metric_name}={metric:.4f}"
                progress.update(task, advance=1, status=f"loss={rec.loss:.4f}{shown}")
                console.log(f"epoch {epoch}: loss {rec.loss:.4f}{shown} ({rec.seconds:.1f}s)")
                if out_of_time():
                    history.stopped_by = "time_budget"
                    break
                if patience is not None and validate is not None and bad_epochs >= patience:
                    history.stopped_by = "early_stopping"
                    break
        except KeyboardInterrupt:
            history.stopped_by = "interrupted"
            console.log("interrupted: keeping the best model so far")
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    history.seconds = time.perf_counter() - t_start
    return history


def check_finite(scores: np.ndarray, what: str = "validation") -> None:
    """Raise `TrainingDiverged` (a `FloatingPointError`; training stops with this message)
    when `scores` hold NaN or +inf: a diverged model must not validate as anything."""
    bad = non_finite_count(scores)
    if bad:
        raise TrainingDiverged(
            f"{what}: the model produced {bad} NaN/inf scores (diverged); lower lr"
        )


def ranking_ndcg(
    scores: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    user_keys: np.ndarray,
    item_keys: np.ndarray,
    seen: sp.csr_matrix | None = None,
    k: int = 10,
) -> float:
    """Mean NDCG@k of one held-out item per row under the evaluator's protocol: full ranking,
    the rows' `seen` items masked (rows whose target is itself seen are skipped, as the
    evaluator drops such users), and the shared tie rule of `recsight.models.topk`, so a
    model with constant scores validates like random ranking, not like a perfect one.
    NaN or inf scores raise `FloatingPointError` (training stops with that message)."""
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores
    s = np.array(s, dtype=np.float32, copy=True)
    t = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets, np.int64)
    check_finite(s)
    keep = np.ones(len(t), dtype=bool)
    if seen is not None:
        seen = seen.tocsr()
        keep = np.asarray(seen[np.arange(len(t)), t]).ravel() == 0
        r, c = seen.nonzero()
        s[r, c] = -np.inf
    if not keep.any():
        return math.nan
    rank = target_ranks(s[keep], t[keep], np.asarray(user_keys)[keep], item_keys)
    gain = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
    return float(gain.mean())
