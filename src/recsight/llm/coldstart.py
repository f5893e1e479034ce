"""Hybrid recommender for cold start: collaborative factors, a learned projection from item text
into the collaborative space, and the content model's text similarity.

Collaborative part: PureSVD on the binary user x item matrix X of training (X ~ U S V^T); a
user's (or an ad-hoc history's) scores are ``x V V^T``, so any history folds in with one
product. Items never seen in training have no collaborative factors; a ridge regression learned
on the warm items maps an item's text embedding e to its factor row (``v = e W``), so a new item
with text gets factors at once (cold-start for new items). The same map turns a free-text
interest into a pseudo-item whose factors score the catalog (cold start for text-only users).

Both parts are standardised per user over the catalog (z-scores) and blended:
``(1 - content_weight) * z(collaborative) + content_weight * z(content cosine)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.llm.content import ContentRecommender, rank_text_scores
from recsight.llm.encoders import DEFAULT_ENCODER
from recsight.models.base import Recommender


def zscore_rows(s: np.ndarray) -> np.ndarray:
    """Each row standardised to mean 0, standard deviation 1 (constant rows become 0)."""
    s = np.asarray(s, dtype=np.float32)
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    return (s - mean) / np.where(std > 0, std, 1.0)


def ridge_projection(x: np.ndarray, y: np.ndarray, reg: float) -> np.ndarray:
    """W minimising ``||x W - y||^2 + reg ||W||^2`` (x: n x d, y: n x f) -> d x f."""
    x = x.astype(np.float64)
    gram = x.T @ x + reg * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y.astype(np.float64)).astype(np.float32)


class HybridRecommender(ContentRecommender):
    """PureSVD collaborative scores blended with text similarity; text-projected factors for
    items without interactions.

    Parameters (besides `ContentRecommender`'s):
        factors: number of singular vectors.
        reg: ridge penalty of the text -> factors projection.
        content_weight: blend weight of the content part, in [0, 1].
        seed: seed of the randomized SVD.
    """

    name: ClassVar[str] = "hybrid"
    _state = ContentRecommender._state + ("item_factors_", "projection_")

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1.0,
        content_weight: float = 0.2,
        encoder: str = DEFAULT_ENCODER,
        encoder_url: str | None = None,
        half_life_days: float | None = 30.0,
        weights: Mapping[str, float | str] | None = None,
        ann_threshold: int = 100_000,
        cache_db: str | None = None,
        seed: int = 0,
    ):
        super().__init__(encoder, encoder_url, half_life_days, weights, ann_threshold, cache_db)
        self.factors = factors
        self.reg = reg
        self.content_weight = content_weight
        self.seed = seed

    def fit(self, train: Interactions, progress: bool = False) -> HybridRecommender:
        if not 0.0 <= float(self.content_weight) <= 1.0:
            raise InputError(
                f"content_weight: expected a number in [0, 1], got {self.content_weight}"
            )
        if float(self.reg) <= 0:
            raise InputError(f"reg: expected a positive number, got {self.reg}")
        super().fit(train, progress=progress)
        x = self.seen_.copy()
        x.data[:] = 1.0
        warm = self.item_popularity_ > 0
        k = min(int(self.factors), min(x.shape) - 1)
        if k < 1 or warm.sum() < 2:
            raise InputError(
                f"factors: the training data ({x.shape[0]} users x {int(warm.sum())} items with "
                "events) is too small for a factor model"
            )
        _, _, vt = randomized_svd(x, k, random_state=int(self.seed))
        factors = vt.T.astype(np.float32)
        text = self.item_embeddings_
        has_text = text.any(axis=1)
        fit_rows = warm & has_text
        if fit_rows.sum() < 2:
            raise InputError("items: fewer than 2 items have both text and events; cannot learn "
                             "the text -> factors projection")  # fmt: skip
        self.projection_ = ridge_projection(text[fit_rows], factors[fit_rows], float(self.reg))
        cold = ~warm
        factors[cold] = text[cold] @ self.projection_
        self.item_factors_ = factors
        return self

    @property
    def uses_ann(self) -> bool:
        """Always False: the blend needs every item's score, so top-k is exact."""
        return False

    # -- scoring ------------------------------------------------------------------------------
    def _blend(self, cf: np.ndarray, content: np.ndarray) -> np.ndarray:
        w = float(self.content_weight)
        return (1.0 - w) * zscore_rows(cf) + w * zscore_rows(content)

    def _cf_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        binary = rows.copy()
        binary.data[:] = 1.0
        return np.asarray(binary @ self.item_factors_) @ self.item_factors_.T

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.asarray(user_idx)
        return self._blend(self._cf_scores(self.seen_[user_idx]), super().score_all(user_idx))

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return self._blend(self._cf_scores(histories), super().score_history(histories))

    def text_scores(self, texts: Sequence[str]) -> np.ndarray:
        q = self.text_vectors(texts)
        cf = (q @ self.projection_) @ self.item_factors_.T
        return self._blend(cf, q @ self.item_embeddings_.T)

    def _item_similarities(self, i: int) -> np.ndarray:
        cf = self.item_factors_ @ self.item_factors_[i]
        return self._blend(cf[None, :], super()._item_similarities(i)[None, :])[0]

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # both parts are linear in the history items before standardisation; each part's
        # contributions are divided by its row's standard deviation, as in the blend
        w = float(self.content_weight)
        f = self.item_factors_
        cf_row = f[hist_items].sum(axis=0) @ f.T
        content_row = super().score_history(
            sp.csr_matrix(
                (hist_weights, (np.zeros(len(hist_items), int), hist_items)),
                shape=(1, self.n_items),
            )
        )[0]
        cf_c = (f[hist_items] @ f[item]) / (float(cf_row.std()) or 1.0)
        content_c = super()._contributions(hist_items, hist_weights, item) / (
            float(content_row.std()) or 1.0
        )
        return (1.0 - w) * cf_c + w * content_c

    def recommend_text(
        self, text: str, k: int = 10, candidates: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a free-text interest (exact: the blend needs every item's score)."""
        return rank_text_scores(self, self.text_scores([text]), k, candidates)


# -- cold-item evaluation --------------------------------------------------------------------
@dataclass
class ColdItemSplit:
    """Items held out entirely: `train` has no event on a `cold_items` item; `test_cold` holds
    all their events; `test_warm` holds a random share of the other (user, item) pairs."""

    train: Interactions
    test_cold: Interactions
    test_warm: Interactions
    cold_items: np.ndarray  # item indices
    report: dict[str, int] = field(default_factory=dict)


def cold_item_split(
    data: Interactions, cold_share: float = 0.2, warm_test_share: float = 0.2, seed: int = 42
) -> ColdItemSplit:
    """Hold out `cold_share` of the items that have events (all of their events), and a random
    `warm_test_share` of the remaining (user, item) pairs (a pair's events stay together)."""
    if not 0.0 < cold_share < 1.0 or not 0.0 <= warm_test_share < 1.0:
        raise InputError(
            f"cold_share/warm_test_share: expected fractions in (0, 1) and [0, 1), got "
            f"{cold_share}, {warm_test_share}"
        )
    rng = np.random.default_rng(seed)
    active = np.unique(data.item_idx)
    n_cold = max(1, round(cold_share * len(active)))
    cold_items = np.sort(rng.choice(active, n_cold, replace=False))
    is_cold = np.isin(data.item_idx, cold_items)
    pair = data.user_idx.astype(np.int64) * data.n_items + data.item_idx
    uniq, inverse = np.unique(pair, return_inverse=True)
    pair_test = rng.random(len(uniq)) < warm_test_share
    warm_test = ~is_cold & pair_test[inverse]
    train = data.subset(~is_cold & ~warm_test)
    return ColdItemSplit(
        train=train,
        test_cold=data.subset(is_cold),
        test_warm=data.subset(warm_test),
        cold_items=cold_items,
        report={
            "items_with_events": int(len(active)),
            "cold_items": int(n_cold),
            "train_events": int(len(train)),
            "test_cold_events": int(is_cold.sum()),
            "test_warm_events": int(warm_test.sum()),
        },
    )


class CandidateScorer:
    """Wraps a model so that `score_all` ranks only the allowed items (others get -inf): the
    protocol for "recommend among new items" with `recsight.evaluation.evaluate_ranking`."""

    def __init__(self, model: Recommender, allowed_items: np.ndarray):
        self.model = model
        self.mask = np.zeros(model.n_items, dtype=bool)
        self.mask[np.asarray(allowed_items)] = True

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        s = np.array(self.model.score_all(user_idx), dtype=np.float32)
        s[:, ~self.mask] = -np.inf
        return s
