"""Planted in-memory datasets for the neural model tests (no store needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsight.data.dataset import IdIndex, Interactions


def events(
    users: np.ndarray,
    items: np.ndarray,
    n_users: int,
    n_items: int,
    values: np.ndarray | None = None,
    event_type: str = "click",
    timestamp: np.ndarray | None = None,
) -> Interactions:
    """Events of one type over ids ``u0..``/``i0..``; timestamps default to event order."""
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
        timestamp=np.arange(n, dtype=np.float64) * 60.0 if timestamp is None else timestamp,
    )


def cycles(n_users: int = 24, n_items: int = 12, length: int = 10, seed: int = 0) -> Interactions:
    """Each user walks the cycle i -> i+1 (mod n_items) from a random start: the next item
    is a deterministic function of the last one, and of nothing else."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n_items, n_users)
    users = np.repeat(np.arange(n_users), length)
    items = (starts[:, None] + np.arange(length)[None, :]).ravel() % n_items
    return events(users, items, n_users, n_items)


def feature_clicks(
    n_users: int = 300, n_items: int = 200, per_user: int = 12, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Clicks driven by side features only: each user has a colour and clicks items of the
    same colour; every item is seen by few users, so ids alone generalise poorly. Returns
    (train, test) split per user (last 3 events to test), with user and item feature frames
    (categorical colour, a multi-hot tags list and a numeric price as noise)."""
    rng = np.random.default_rng(seed)
    u_colour = rng.integers(0, 4, n_users)
    i_colour = rng.integers(0, 4, n_items)
    us, its = [], []
    for u in range(n_users):
        pool = np.flatnonzero(i_colour == u_colour[u])
        its += list(rng.choice(pool, per_user, replace=False))
        us += [u] * per_user
    data = events(np.array(us), np.array(its), n_users, n_items)
    names = np.array(["red", "green", "blue", "black"], dtype=object)
    data.user_features = pd.DataFrame(
        {"user_id": data.users.ids, "colour": names[u_colour], "age": rng.integers(18, 70, n_users)}
    )
    data.item_features = pd.DataFrame(
        {
            "item_id": data.items.ids,
            "category": names[i_colour],
            "tags": [[str(names[c]), f"t{rng.integers(0, 3)}"] for c in i_colour],
            "price": rng.gamma(2.0, 10.0, n_items),
        }
    )
    pos = np.arange(len(data)) % per_user
    test = pos >= per_user - 3
    return data.subset(~test), data.subset(test)
