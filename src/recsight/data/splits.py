"""Reproducible train/valid/test splits over one id space, plus k-core and positive filters.

All splits work on `Interactions` arrays and return views in the same id space, so a model
trained on `train` scores `test` users and items without re-mapping. Random splits keep every
(user, item) pair on one side, so a repeated interaction cannot leak from test into train.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from recsight.data.dataset import EVENT_COLUMNS, Interactions
from recsight.errors import InputError

SPLIT_METHODS = ("random", "user_random", "temporal", "leave_last")


@dataclass
class SplitReport:
    """Sizes of each part and how many test users/items training never saw."""

    method: str
    seed: int
    n_train: int
    n_valid: int
    n_test: int
    test_users: int
    cold_test_users: int
    test_items: int
    cold_test_items: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Split:
    train: Interactions
    test: Interactions
    valid: Interactions | None
    report: SplitReport

    @property
    def fit_part(self) -> Interactions:
        """Everything but the test part (train + valid): what a model is fitted on before it
        is tested, once its hyperparameters are chosen."""
        return concat(self.train, self.valid)


@dataclass(frozen=True)
class SplitSpec:
    """A split named like the CLI's ``--split``: ``random:0.8``, ``random:0.8:0.1`` (train,
    valid; test gets the rest), ``user_random:0.8``, ``temporal:0.8``, ``leave_last:1``."""

    method: str
    train: float = 0.8
    valid: float = 0.0
    k: int = 1

    @classmethod
    def parse(cls, spec: str) -> SplitSpec:
        parts = spec.strip().split(":")
        method = parts[0]
        if method not in SPLIT_METHODS:
            raise InputError(
                f"--split {spec!r}: unknown method {method!r}; expected one of "
                f"{', '.join(SPLIT_METHODS)} (e.g. random:0.8, leave_last:1)"
            )
        try:
            nums = [float(p) for p in parts[1:]]
        except ValueError:
            raise InputError(f"--split {spec!r}: expected numbers after the method") from None
        if method == "leave_last":
            k = int(nums[0]) if nums else 1
            if k < 1 or (nums and nums[0] != k):
                raise InputError(f"--split {spec!r}: leave_last needs a whole number k >= 1")
            return cls(method, k=k)
        train = nums[0] if nums else 0.8
        valid = nums[1] if len(nums) > 1 else 0.0
        if not (0 < train < 1) or valid < 0 or train + valid >= 1:
            raise InputError(
                f"--split {spec!r}: ratios must satisfy 0 < train < 1 and train + valid < 1"
            )
        return cls(method, train=train, valid=valid)


def split(
    data: Interactions, spec: str | SplitSpec, seed: int = 42, consume: bool = False
) -> Split:
    """Split `data` by a `SplitSpec` (or its string form), reproducibly for a given seed.

    With `consume`, `data`'s event arrays are released one column at a time as the parts
    are built, so the whole log and whole copies of it never coexist (at 100M events the
    log is ~2.9 GB); `data` is left without events and must not be used afterwards."""
    spec = SplitSpec.parse(spec) if isinstance(spec, str) else spec
    if spec.method == "random":
        side = _random_pairs(data, spec.train, spec.valid, seed)
    elif spec.method == "user_random":
        side = _user_random(data, spec.train, spec.valid, seed)
    elif spec.method == "temporal":
        side = _temporal(data, spec.train, spec.valid)
    else:
        side = _leave_last(data, spec.k)
    return _make(data, side, f"{spec.method}", seed, consume)


# side codes per event: 0 train, 1 valid, 2 test


def _assign(u: np.ndarray, train: float, valid: float) -> np.ndarray:
    side = np.full(len(u), 2, dtype=np.int8)
    side[u < train + valid] = 1
    side[u < train] = 0
    return side


def _pair_keys(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` of the events' (user, item) keys, with about
    half its temporaries (numpy's held ~49 bytes an event at its peak: 4.9 GB at 100M
    events) and a 4-byte inverse where the pairs allow."""
    key = data.user_idx.astype(np.int64) * max(data.n_items, 1) + data.item_idx
    order = np.argsort(key)
    key = key[order]  # sorted; the unsorted copy is released
    first = np.ones(len(key), dtype=bool)
    np.not_equal(key[1:], key[:-1], out=first[1:])
    uniq = key[first]
    del key
    index_type = np.int32 if len(uniq) < 2**31 else np.int64
    inverse = np.empty(len(order), dtype=index_type)
    inverse[order] = np.cumsum(first, dtype=index_type) - 1
    return uniq, inverse


def _random_pairs(data: Interactions, train: float, valid: float, seed: int) -> np.ndarray:
    uniq, inverse = _pair_keys(data)
    rng = np.random.default_rng(seed)
    return _assign(rng.random(len(uniq)), train, valid)[inverse]


def random_item_ranks(data: Interactions, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's distinct items in a random order (seeded): per distinct (user, item) pair,
    its rank in that order (0-based) and the user's number of distinct items, plus the index
    of each event's pair (``rank[inverse]`` is per event)."""
    uniq, inverse = _pair_keys(data)
    users = uniq // max(data.n_items, 1)  # ascending: the pairs are sorted by user first
    del uniq
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))
    counts = np.bincount(users, minlength=data.n_users)
    # the lexsort only permutes within each user's block (users[order] == users), so a
    # pair's block starts where its user's does
    within = np.arange(len(users), dtype=np.int64)
    within -= (np.cumsum(counts) - counts)[users]
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = within
    del order, within
    return rank, counts[users], inverse


def _user_random(data: Interactions, train: float, valid: float, seed: int) -> np.ndarray:
    """Each user's distinct items split by ratio (at least one item stays in train)."""
    rank, n, inverse = random_item_ranks(data, seed)
    # the cut-offs as tables by item count (per pair they were five pair-sized temporaries)
    sizes = np.arange(int(n.max(initial=0)) + 1)
    n_train = np.maximum(1, np.round(train * sizes)).astype(np.int64)
    n_valid = np.round(valid * sizes).astype(np.int64)
    side = np.full(len(rank), 2, dtype=np.int8)
    side[rank < (n_train + n_valid)[n]] = 1
    side[rank < n_train[n]] = 0
    del rank, n
    return side[inverse]


def _temporal(data: Interactions, train: float, valid: float) -> np.ndarray:
    """A global time cut: the earliest `train` share of events (by time, then ingest order)."""
    ts = data.require_timestamps("a temporal split")
    order = np.lexsort((data.seq, np.nan_to_num(ts, nan=-np.inf)))
    rank = np.empty(len(order), dtype=np.float64)
    rank[order] = np.arange(len(order)) / max(len(order), 1)
    return _assign(rank, train, valid)


def _leave_last(data: Interactions, k: int) -> np.ndarray:
    """Each user's last k events (by time; ties: later in the file) are test, the k before
    them valid. Users with too few events keep them all in train (test-only if 1 < n <= 2k)."""
    ts = data.require_timestamps("a leave-last-out split")
    order = np.lexsort((data.seq, ts, data.user_idx))
    users = data.user_idx[order]
    counts = np.bincount(data.user_idx, minlength=data.n_users)
    ends = np.cumsum(counts)[users]
    from_end = ends - 1 - np.arange(len(order))  # 0 for a user's last event
    n = counts[users]
    side_sorted = np.zeros(len(order), dtype=np.int8)
    full = n > 2 * k
    side_sorted[full & (from_end < k)] = 2
    side_sorted[full & (from_end >= k) & (from_end < 2 * k)] = 1
    short = (n > k) & ~full
    side_sorted[short & (from_end < k)] = 2
    side = np.empty(len(order), dtype=np.int8)
    side[order] = side_sorted
    return side


def _make(data: Interactions, side: np.ndarray, method: str, seed: int, consume: bool) -> Split:
    masks = [side == code for code in (0, 1, 2)]
    columns: dict[str, list[np.ndarray | None]] = {}
    for name in EVENT_COLUMNS:
        col = getattr(data, name)
        columns[name] = [None if col is None else col[mask] for mask in masks]
        if consume:  # the column's last reference, unless the caller kept one
            setattr(data, name, None)
        del col
    train, valid, test = (
        replace(data, **{name: parts[code] for name, parts in columns.items()}) for code in range(3)
    )
    if not masks[1].any():
        valid = None
    seen_users = np.zeros(data.n_users, dtype=bool)
    seen_users[train.user_idx] = True
    seen_items = np.zeros(data.n_items, dtype=bool)
    seen_items[train.item_idx] = True
    t_users, t_items = np.unique(test.user_idx), np.unique(test.item_idx)
    report = SplitReport(
        method=method,
        seed=seed,
        n_train=len(train),
        n_valid=0 if valid is None else len(valid),
        n_test=len(test),
        test_users=len(t_users),
        cold_test_users=int((~seen_users[t_users]).sum()),
        test_items=len(t_items),
        cold_test_items=int((~seen_items[t_items]).sum()),
    )
    return Split(train=train, test=test, valid=valid, report=report)


def concat(a: Interactions, b: Interactions | None) -> Interactions:
    """Events of `a` and `b` (same id space), in ingest order."""
    if b is None or len(b) == 0:
        return a
    order = np.argsort(np.concatenate([a.seq, b.seq]), kind="stable")

    def cat(x: np.ndarray | None, y: np.ndarray | None) -> np.ndarray | None:
        return None if x is None or y is None else np.concatenate([x, y])[order]

    return replace(
        a,
        user_idx=cat(a.user_idx, b.user_idx),
        item_idx=cat(a.item_idx, b.item_idx),
        value=cat(a.value, b.value),
        event_type=cat(a.event_type, b.event_type),
        seq=cat(a.seq, b.seq),
        timestamp=cat(a.timestamp, b.timestamp),
    )


def filter_kcore(data: Interactions, k: int) -> Interactions:
    """Repeatedly drop users and items with fewer than `k` distinct partners until none remain."""
    mask = np.ones(len(data), dtype=bool)
    while True:
        u, i = data.user_idx[mask], data.item_idx[mask]
        key = np.unique(u.astype(np.int64) * max(data.n_items, 1) + i)
        pu = np.bincount(key // max(data.n_items, 1), minlength=data.n_users)
        pi = np.bincount(key % max(data.n_items, 1), minlength=data.n_items)
        bad = (pu[data.user_idx] < k) | (pi[data.item_idx] < k)
        new = mask & ~bad
        if new.sum() == mask.sum():
            return data.subset(mask)
        mask = new


def filter_min_rating(data: Interactions, threshold: float) -> Interactions:
    """Keep non-rating events and ratings of at least `threshold` (what counts as positive)."""
    is_rating = data.type_mask(["rating"])
    keep = ~is_rating | (np.nan_to_num(data.value, nan=-np.inf) >= threshold)
    return data.subset(keep)
