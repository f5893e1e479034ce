"""Most-popular baseline, optionally time-decayed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.models.base import Recommender

_DAY = 86400.0


class MostPopular(Recommender):
    """Scores every item by how many distinct users interacted with it.

    With `half_life_days`, each (user, item) pair counts ``0.5 ** (age / half_life)`` instead
    of 1, its age taken from its latest event relative to the latest event in training (pairs
    without a timestamp count fully). `weights` selects the event types that count (types
    weighted 0 are ignored) and gives the matrix used for ``exclude_seen``.
    """

    name: ClassVar[str] = "popular"
    _state = ("popularity_",)

    def __init__(
        self,
        half_life_days: float | None = None,
        weights: Mapping[str, float | str] | None = None,
    ):
        self.half_life_days = half_life_days
        self.weights = weights

    def fit(self, train: Interactions) -> MostPopular:
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        if self.half_life_days is None or not train.has_timestamps:
            self.popularity_ = self.item_popularity_.copy()
            return self
        keep = train.weights(self.weights) != 0
        ts = train.timestamp[keep]  # type: ignore[index]
        age_days = (np.nanmax(ts) - np.nan_to_num(ts, nan=np.nanmax(ts))) / _DAY
        # the latest event of each pair decides its age
        pair = sp.coo_matrix(
            (0.5 ** (age_days / float(self.half_life_days)),
             (train.user_idx[keep], train.item_idx[keep])),
            shape=x.shape,
        )  # fmt: skip
        self.popularity_ = _pair_max(pair, x.shape)
        return self

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.popularity_, (len(user_idx), self.n_items)).astype(np.float32)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return self.score_all(np.zeros(histories.shape[0], np.int64))

    def shared_scores(self) -> np.ndarray:
        return np.asarray(self.popularity_, dtype=np.float32)

    def _item_similarities(self, i: int) -> np.ndarray:
        return self.popularity_.astype(np.float32)

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        return np.zeros(len(hist_items))


def _pair_max(pairs: sp.coo_matrix, shape: tuple[int, int]) -> np.ndarray:
    """Per item, the sum over users of the largest value among each (user, item)'s entries."""
    key = pairs.row.astype(np.int64) * shape[1] + pairs.col
    order = np.lexsort((pairs.data, key))
    key, data = key[order], pairs.data[order]
    last = np.r_[key[1:] != key[:-1], True]
    return np.bincount(key[last] % shape[1], weights=data[last], minlength=shape[1]).astype(
        np.float32
    )
