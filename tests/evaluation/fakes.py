"""Small fake models and interaction builders for evaluation tests (no real models needed)."""

from __future__ import annotations

import numpy as np

from recsight.data.dataset import IdIndex, Interactions


def interactions(
    users: list[int],
    items: list[int],
    n_users: int,
    n_items: int,
    values: list[float] | None = None,
) -> Interactions:
    """Rating (or unit-valued) events over ids "u0".. and "i0"..."""
    n = len(users)
    return Interactions(
        user_idx=np.asarray(users, dtype=np.int32),
        item_idx=np.asarray(items, dtype=np.int32),
        value=np.asarray(values if values is not None else [1.0] * n, dtype=np.float32),
        event_type=np.zeros(n, dtype=np.int8),
        event_types=("rating",),
        seq=np.arange(n, dtype=np.int64),
        users=IdIndex([f"u{i}" for i in range(n_users)]),
        items=IdIndex([f"i{i}" for i in range(n_items)]),
        timestamp=np.arange(n, dtype=np.float64),
    )


class FixedScores:
    """Scores every user from a fixed (users x items) matrix."""

    name = "fixed"
    explicit = False

    def __init__(self, scores: np.ndarray):
        self.scores = np.asarray(scores, dtype=np.float32)
        self.calls: list[int] = []

    def fit(self, train: Interactions) -> FixedScores:
        return self

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        self.calls.append(len(user_idx))
        return self.scores[np.asarray(user_idx)]


class FixedRatings:
    """Predicts ratings from a fixed (users x items) matrix (NaN = cannot predict)."""

    name = "fixed_ratings"
    explicit = True

    def __init__(self, ratings: np.ndarray):
        self.ratings = np.asarray(ratings, dtype=np.float64)

    def predict_idx(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return self.ratings[np.asarray(user_idx), np.asarray(item_idx)]


class NoisyPopular:
    """Item popularity from train plus seeded uniform noise scaled by `noise` (a tunable
    hyperparameter whose best value is 0)."""

    name = "noisy_popular"
    explicit = False

    def __init__(self, noise: float = 0.0, seed: int = 0):
        self.noise = noise
        self.seed = seed

    def fit(self, train: Interactions) -> NoisyPopular:
        self.seen_ = train.to_csr(binary=True)
        self.counts_ = np.asarray(self.seen_.sum(axis=0)).ravel().astype(np.float32)
        return self

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        noise = rng.random((len(user_idx), len(self.counts_))) * self.noise
        return (self.counts_ / max(self.counts_.max(), 1) + noise).astype(np.float32)


class ShrunkItemMean:
    """Explicit model: global mean + item offset shrunk by `shrink` pseudo-ratings."""

    name = "shrunk_item_mean"
    explicit = True

    def __init__(self, shrink: float = 0.0):
        self.shrink = shrink

    def fit(self, train: Interactions) -> ShrunkItemMean:
        self.mu_ = float(np.mean(train.value))
        n = np.bincount(train.item_idx, minlength=train.n_items)
        s = np.bincount(train.item_idx, weights=train.value - self.mu_, minlength=train.n_items)
        self.bias_ = s / (n + self.shrink + 1e-9)
        return self

    def predict_idx(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        return self.mu_ + self.bias_[np.asarray(item_idx)]

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return np.tile(self.mu_ + self.bias_, (len(user_idx), 1)).astype(np.float32)


FAKE_MODELS = {"noisy_popular": NoisyPopular, "shrunk_item_mean": ShrunkItemMean}


def fake_factory(name: str, **params: object) -> object:
    return FAKE_MODELS[name](**params)


def write_ratings_csv(path, n_users: int = 80, n_items: int = 50, seed: int = 0) -> None:
    """Synthetic ratings where popularity is predictive (Zipf-like item draws)."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_items + 1) ** 1.1
    p /= p.sum()
    quality = rng.normal(0, 1, n_items)
    rows = ["user_id,item_id,rating,timestamp"]
    t = 1_000_000_000
    for u in range(n_users):
        items = rng.choice(n_items, size=rng.integers(8, 20), replace=False, p=p)
        for i in items:
            r = int(np.clip(np.round(3.5 + quality[i] + rng.normal(0, 0.7)), 1, 5))
            t += int(rng.integers(1, 1000))
            rows.append(f"U{u},I{i},{r},{t}")
    path.write_text("\n".join(rows) + "\n")
