"""What the neural models share: weights saved as one npz array, the internal validation
split, and (for SASRec and BERT4Rec) ordered-sequence scoring.

Validation, the same for every neural model: with ``early_stopping=True`` (the default),
``fit(train)`` holds out each user's last event in time order (users with at least 3 events)
as a leave-one-out validation set, trains on the rest, selects the epoch with the best
validation metric and stops after `patience` epochs without improvement. The held-out events
still count as the user's history when scoring (`score_all`, ``exclude_seen``), exactly like
the validation item of a leave-one-out benchmark. With ``early_stopping=False`` the model
trains on everything for `epochs` epochs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.base import Recommender
from recsight.models.neural.training import (
    TrainHistory,
    flatten_state,
    load_flat_state,
    resolve_device,
    torch_threads,
)

#: Validation users scored per early-stopping check at most (a seeded sample beyond that).
MAX_VALID_USERS = 5000

#: Scores computed per pass in `TorchRecommender._score_ranges` at most (users x items).
_SCORE_CELLS = 1 << 25

#: Windows cut per piece in `sequence_windows`.
_WINDOW_PIECE = 1 << 14


def holdout_last(train: Interactions, min_events: int = 3) -> np.ndarray:
    """Boolean mask of each user's last event by time (ties: ingest order; by ingest order
    alone without timestamps), for users with at least `min_events` events."""
    ts = train.timestamp if train.has_timestamps else None
    keys = (train.seq,) if ts is None else (train.seq, np.nan_to_num(ts, nan=-np.inf))
    order = np.lexsort((*keys, train.user_idx))
    users = train.user_idx[order]
    last = np.r_[users[1:] != users[:-1], True]
    counts = np.bincount(train.user_idx, minlength=train.n_users)
    mask = np.zeros(len(train), dtype=bool)
    pick = order[last]
    mask[pick[counts[train.user_idx[pick]] >= min_events]] = True
    return mask


class TorchRecommender(Recommender):
    """A `Recommender` whose learned state is a torch module (saved as the flat float32 array
    `weights_`) plus `dims_`, the integer sizes the module is rebuilt from."""

    _state: ClassVar[tuple[str, ...]] = ("weights_", "dims_")

    weights_: np.ndarray
    dims_: np.ndarray
    history_: TrainHistory

    def _build_net(self) -> torch.nn.Module:
        """A fresh module for the current hyperparameters and `dims_`."""
        raise NotImplementedError

    def _derive(self) -> None:
        super()._derive()
        self._net: torch.nn.Module | None = None
        self._traced: Any = None  # see `SequenceRecommender.trace_scoring`

    @property
    def net(self) -> torch.nn.Module:
        """The trained module in eval mode (rebuilt from `weights_` after `load`, on
        `scoring_device`)."""
        if getattr(self, "_net", None) is None:
            with torch_threads(self.threads):
                net = self._build_net()
                load_flat_state(net, self.weights_)
            self._net = net.to(self.scoring_device()).eval()
        return self._net  # type: ignore[return-value]

    def scoring_device(self) -> torch.device:
        """Where a loaded model scores: its `device` when that device exists here, else the
        CPU (a model trained on a GPU still serves on a CPU-only machine)."""
        spec = getattr(self, "device", "cpu")
        if str(spec).startswith("cuda") and not torch.cuda.is_available():
            return torch.device("cpu")
        return resolve_device(spec)

    def _set_net(self, net: torch.nn.Module) -> None:
        self.weights_ = flatten_state(net)
        self._net = net.eval()
        self._traced = None

    def _check_common(self) -> None:
        """Checks of the shared training hyperparameters, with clear messages."""
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name}: expected a positive integer, not {v!r}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise InputError(f"max_minutes: expected a positive number, not {self.max_minutes}")

    def _loop_args(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "patience": self.patience,
            "max_seconds": None if self.max_minutes is None else 60.0 * self.max_minutes,
            "verbose": self.verbose,
            "description": self.name,
        }


class SequenceRecommender(TorchRecommender):
    """Models that read each user's time-ordered history (SASRec, BERT4Rec).

    The training sequences are saved with the model (`seq_indptr_`, `seq_items_`), so
    `score_all` runs each user's own last `max_len` items. `recommend_for_history` takes the
    given order as the sequence, so a new event changes the next answer without retraining.
    """

    _state: ClassVar[tuple[str, ...]] = ("weights_", "dims_", "seq_indptr_", "seq_items_")

    seq_indptr_: np.ndarray
    seq_items_: np.ndarray
    max_len: int

    def drop_users(self, keep: np.ndarray) -> None:
        # the training sequences are ragged rows per user: keep the kept users' slices
        lens = np.diff(self.seq_indptr_)
        rows = np.flatnonzero(keep)
        starts = self.seq_indptr_[rows]
        take = np.repeat(starts - np.r_[0, np.cumsum(lens[rows])[:-1]], lens[rows])
        self.seq_items_ = self.seq_items_[take + np.arange(len(take))]
        self.seq_indptr_ = np.r_[0, np.cumsum(lens[rows])].astype(np.int64)
        super().drop_users(keep)

    def _score_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """Scores over all items (n, n_items) from left-padded sequences of item index + 1
        (0 = padding), each row holding at least one item."""
        raise NotImplementedError

    def _input_len(self) -> int:
        """How many history items a scoring sequence keeps (the last ones)."""
        return self.max_len

    def trace_scoring(self) -> bool:
        """Score through a TorchScript trace of `_score_padded` from now on (for a service):
        the pass runs as one C++ call instead of ~60 module and op calls from Python (SASRec
        on ML-1M, one history: 0.8 CPU ms against 1.2, the same scores). Kept only when it
        scores test sequences (padded or not, batches of 1 and 3) as the eager module does;
        returns whether it is used. New weights (`fit`, `load`) drop it.

        `torch.jit.trace` is deprecated in favour of `torch.export`/`torch.compile`, but an
        exported program runs op by op from Python again and `torch.compile` needs a C++
        toolchain and compiles at start-up; the trace needs neither."""
        self._check_fitted()
        if self._traced is not None:
            return True
        n, rng = self._input_len(), np.random.default_rng(0)
        tests = [rng.integers(1, self.n_items + 1, (b, n)) for b in (2, 1, 3)]
        tests[2][0, : n // 2] = 0  # left padding, as `last_window` gives short histories
        tests[2][1, :-1] = 0
        net = self.net
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the deprecation, and tracer notes on sizes
                dev = next(net.parameters()).device
                as_tensor = [torch.from_numpy(t).to(dev) for t in tests]
                traced = torch.jit.trace(_Scoring(self), as_tensor[0], check_trace=False)
                for _ in range(3):  # the profiling executor specialises after a few calls
                    same = all(
                        torch.allclose(traced(t), self._score_padded(t), rtol=1e-5, atol=1e-5)
                        for t in as_tensor
                    )
        except (RuntimeError, AttributeError):  # not traceable (or no torch.jit): stay eager
            return False
        self._traced = traced if same else None
        return same

    def score_sequences(self, sequences: Sequence[np.ndarray], batch: int = 512) -> np.ndarray:
        """Scores of every item after each ordered sequence of item indices (oldest first),
        float32 ``(len(sequences), n_items)``; an empty sequence gets item popularity."""
        self._check_fitted()
        lens = np.array([len(s) for s in sequences], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lens)])
        flat = np.concatenate([np.asarray(s, np.int64) for s in sequences]) if len(lens) else lens
        return self._score_ranges(indptr, flat, np.arange(len(lens)), batch)

    def _score_ranges(
        self, indptr: np.ndarray, items: np.ndarray, rows: np.ndarray, batch: int = 512
    ) -> np.ndarray:
        """Scores after the sequences ``items[indptr[r]:indptr[r+1]]`` of `rows`."""
        padded = last_window(indptr, items, rows, self._input_len())
        out = np.empty((len(rows), self.n_items), dtype=np.float32)
        empty = padded[:, -1] == 0
        out[empty] = self.item_popularity_
        nonempty = np.flatnonzero(~empty)
        # at most ~128 MB of scores per pass: 512 users x 1M items would be 2 GB
        batch = max(1, min(batch, _SCORE_CELLS // max(self.n_items, 1)))
        with torch_threads(self.threads), torch.inference_mode():
            dev = next(self.net.parameters()).device
            score = self._traced if self._traced is not None else self._score_padded
            for start in range(0, len(nonempty), batch):
                sel = nonempty[start : start + batch]
                scores = score(torch.from_numpy(padded[sel]).to(dev))
                out[sel] = scores.cpu().numpy()
        return out

    def _user_sequences(self, user_idx: np.ndarray) -> list[np.ndarray]:
        ptr, items = self.seq_indptr_, self.seq_items_
        return [items[ptr[u] : ptr[u + 1]] for u in np.asarray(user_idx, dtype=np.int64)]

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return self._score_ranges(
            self.seq_indptr_, self.seq_items_, np.asarray(user_idx, dtype=np.int64)
        )

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        """A CSR row carries no order: its items are taken in ascending order of their
        weights (pass positions or timestamps as weights), ties by item index. Use
        `recommend_for_history` or `score_sequences` to give an order directly."""
        h = histories.tocsr()
        seqs = []
        for r in range(h.shape[0]):
            cols, w = (
                h.indices[h.indptr[r] : h.indptr[r + 1]],
                h.data[h.indptr[r] : h.indptr[r + 1]],
            )
            seqs.append(cols[np.lexsort((cols, w))])
        return self.score_sequences(seqs)

    def _ordered(self, items: Sequence[str]) -> np.ndarray:
        items = [items] if isinstance(items, str) else list(items)
        idx = self.items_.index_of(items, missing="ignore") if items else np.zeros(0, np.int64)
        return idx[idx >= 0]

    def _score_history_matrix(
        self, histories: Sequence[Sequence[str]], h: sp.csr_matrix
    ) -> np.ndarray:
        # the ordered histories (oldest first; unknown ids dropped): `h`'s weights only say
        # which items count as seen (all of them do)
        return self.score_sequences([self._ordered(items) for items in histories])

    # `explain` reads the user's last `max_len` training items, `explain_history` the given
    # ones, in order: their weights are the positions, which `_contributions` orders by
    def _user_history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        return _positions(self._user_sequences(np.array([u]))[0][-self._input_len() :])

    def _ad_hoc_history(
        self, items: Sequence[str], weights: Sequence[float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return _positions(self._ordered(items)[-self._input_len() :])

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # leave-one-out: the score drop when one event is removed from the sequence (ordered
        # by weight), all removals in one batch
        seq = hist_items[np.lexsort((hist_items, hist_weights))]
        variants = [seq] + [np.delete(seq, j) for j in range(len(seq))]
        s = self.score_sequences(variants)[:, item]
        back = np.argsort(np.lexsort((hist_items, hist_weights)))
        return (s[0] - s[1:])[back]


class _Scoring(torch.nn.Module):
    """`model._score_padded` as a module over the model's network, so a trace takes the
    network's weights as its parameters."""

    def __init__(self, model: SequenceRecommender):
        super().__init__()
        self.net = model.net
        self.score = model._score_padded

    def forward(self, padded: torch.Tensor) -> torch.Tensor:
        return self.score(padded)


def _positions(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A sequence as (items, weights 1..n): the weights keep its order."""
    return seq, np.arange(1, len(seq) + 1, dtype=np.float32)


def sequence_windows(
    indptr: np.ndarray, items: np.ndarray, length: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """Every user's sequence cut into consecutive windows of `length` events from its end,
    left-padded, as item index + 1 (0 = padding): ``(n_windows, length)`` int64. Windows
    with a single event are dropped (nothing to predict inside them)."""
    users = np.arange(len(indptr) - 1) if rows is None else rows
    lens = (indptr[users + 1] - indptr[users]).astype(np.int64)
    users, lens = users[lens > 1], lens[lens > 1]
    n_win = -(-lens // length)
    win_user = np.repeat(users, n_win)
    # window w of a user covers events [end - (w+1)*length, end - w*length) clipped at 0
    w = np.arange(n_win.sum()) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    end = indptr[win_user + 1] - w * length
    start = np.maximum(end - length, indptr[win_user])
    size = end - start
    keep = size > 1
    end, size = end[keep], size[keep]
    out = np.empty((len(end), length), np.int64)
    # filled a piece of windows at a time: the index arrays of the whole output at once
    # were four times its size (~6 GB beside the 1.4 GB windows for 100M events)
    for s in range(0, len(end), _WINDOW_PIECE):
        e, z = end[s : s + _WINDOW_PIECE], size[s : s + _WINDOW_PIECE]
        pos = np.arange(length)[None, :] - (length - z)[:, None]
        valid = pos >= 0
        idx = np.where(valid, e[:, None] - z[:, None] + pos, 0)
        out[s : s + _WINDOW_PIECE] = np.where(valid, items[idx].astype(np.int64) + 1, 0)
    return out


def last_window(indptr: np.ndarray, items: np.ndarray, rows: np.ndarray, length: int) -> np.ndarray:
    """The last `length` items of each selected sequence ``items[indptr[r]:indptr[r+1]]``,
    left-padded, as item index + 1 (0 = padding): ``(len(rows), length)`` int64."""
    rows = np.asarray(rows, dtype=np.int64)
    end = indptr[rows + 1]
    size = np.minimum(end - indptr[rows], length)
    pos = np.arange(length)[None, :] - (length - size)[:, None]
    valid = pos >= 0
    idx = np.where(valid, end[:, None] - size[:, None] + pos, 0)
    return (
        np.where(valid, items[idx].astype(np.int64) + 1, 0)
        if len(items)
        else np.zeros((len(rows), length), np.int64)
    )


def check_int(name: str, value: Any, low: int = 1) -> int:
    """A hyperparameter that must be an integer >= `low`, else a clear `InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name}: expected an integer >= {low}, not {value!r}")
    return int(value)
