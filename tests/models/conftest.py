"""Small planted datasets for model tests, built in memory (no store needed)."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.data.dataset import IdIndex, Interactions


def make_interactions(
    users: np.ndarray,
    items: np.ndarray,
    values: np.ndarray | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
    event_type: str = "click",
) -> Interactions:
    """Events of one type over ids ``u0..`` and ``i0..``, timestamps in event order."""
    n_users = int(users.max()) + 1 if n_users is None else n_users
    n_items = int(items.max()) + 1 if n_items is None else n_items
    n = len(users)
    return Interactions(
        user_idx=np.asarray(users, np.int32),
        item_idx=np.asarray(items, np.int32),
        value=np.full(n, np.nan, np.float32) if values is None else np.asarray(values, np.float32),
        event_type=np.zeros(n, np.int8),
        event_types=(event_type,),
        seq=np.arange(n, dtype=np.int64),
        users=IdIndex([f"u{i}" for i in range(n_users)]),
        items=IdIndex([f"i{i}" for i in range(n_items)]),
        timestamp=np.arange(n, dtype=np.float64) * 3600.0,
    )


@pytest.fixture(scope="session")
def blocks() -> Interactions:
    """40 users x 30 items in two blocks: users 0-19 only touch items 0-14 (each ~60% of
    them), users 20-39 only items 15-29; a few items per block are much more popular."""
    rng = np.random.default_rng(0)
    us, its = [], []
    for u in range(40):
        lo = 0 if u < 20 else 15
        p = np.where(np.arange(15) < 4, 0.9, 0.5)
        chosen = lo + np.flatnonzero(rng.random(15) < p)
        us += [u] * len(chosen)
        its += list(chosen)
    return make_interactions(np.array(us), np.array(its), n_users=40, n_items=30)


@pytest.fixture(scope="session")
def low_rank_ratings() -> tuple[Interactions, Interactions]:
    """Ratings from a planted rank-2 model with biases plus small noise, split 80/20:
    (train, test), both rating events."""
    rng = np.random.default_rng(1)
    n_users, n_items = 150, 80
    p = rng.normal(0, 0.8, (n_users, 2))
    q = rng.normal(0, 0.8, (n_items, 2))
    bu, bi = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
    mask = rng.random((n_users, n_items)) < 0.5
    u, i = np.nonzero(mask)
    r = 3.5 + bu[u] + bi[i] + np.einsum("nk,nk->n", p[u], q[i]) + rng.normal(0, 0.1, len(u))
    data = make_interactions(u, i, r.astype(np.float32), n_users, n_items, "rating")
    test = rng.random(len(u)) < 0.2
    return data.subset(~test), data.subset(test)
