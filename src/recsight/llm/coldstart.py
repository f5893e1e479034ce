"""Hybrid recommender: collaborative factors, a learned projection from item text into the
collaborative space, and the content model's text similarity, blended per user with weights
fitted on validation data carved from the training data.

Collaborative part: PureSVD on the binary user x item matrix X of training (X ~ U S V^T); a
user's (or an ad-hoc history's) scores are ``x V V^T``, so any history folds in with one
product. Items never seen in training have no collaborative factors; a ridge regression learned
on the warm items maps an item's text embedding e to its factor row (``v = e W``), so a new item
with text gets factors at once (cold-start for new items). The same map turns a free-text
interest into a pseudo-item whose factors score the catalog (cold start for text-only users).
Text part: the content model's cosine (`ContentRecommender`).

Blend: ``(1 - w) * z(collaborative) + w * z(text)``, where z standardises a user's scores over
the items the user has not seen (`recsight.models.blend.normalised`, the `blend` model's
normalisation). Why per-user z-scores over the unseen items: a per-user affine map changes
neither part's own ranking, so w = 0 and w = 1 rank exactly as the collaborative and the text
part do (the pure parts are points of the weight grid, so the fitted blend can always fall back
to the better one); unlike ranks, it keeps each part's margins (a part sure of a few items keeps
them ahead, where ranks would make its 1st and 2nd items as far apart as its 1000th and
1001st); and the seen items, which cannot be recommended and which the collaborative part
scores highest, do not inflate its spread.

The weight w depends on the user's history length and on whether the item is new (no training
event); new items' blended scores also get an offset, because their collaborative scores come
from text-projected factors, on another scale than learned ones. All three are fitted on
validation data carved from the training data only:

1. `valid_share` of the items with events are held out entirely (`cold_item_split`), and of
   the rest every user with at least two items has `valid_share` of them (at least one) held
   out; both parts are fitted on what remains (the item embeddings are shared: text does not
   depend on the split). Items without events there are the validation's *new* items: the
   held-out items, made new at random, and the *naturally new* ones whose every event was
   held out with a user's items (rarely bought items, as new items in a real log are);
2. candidate values are scored by the mean NDCG@`VALID_K` of the validation users (the
   evaluator's protocol: training items masked) and a value moves away from a reference only
   for a significant gain (`significant_choice`: paired Wilcoxon test, p < `ALPHA`), so a
   choice never chases validation noise:
   a. the text weight of items with events, on the grid 0, 1/`grid`, ..., 1, ranking only
      them against the held-out events on them: overall, starting from the better pure part
      (0 or 1); then for each of up to `buckets` history-length buckets (quantiles of the
      training users' distinct-item counts) with at least `MIN_BUCKET_USERS` validation
      users, starting from the overall weight (smaller buckets keep it);
   b. the new items' weight, on the same grid, ranking only the held-out items against their
      events, starting from the overall weight;
   c. the new items' offset, on `OFFSETS` (standard deviations of the users' scores), ranking
      all items but the held-out ones (so the new items are the naturally new ones) against
      the held-out events on them, starting from 0;
3. both parts are refitted on all the training data.

Where the two pure parts tie on validation, the collaborative one is the reference. The
weights are deterministic for a `seed` (which also seeds the SVD). A number for
`content_weight` fixes one weight for every user and item instead, with no offset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.data.splits import concat, random_item_ranks
from recsight.errors import InputError
from recsight.llm.content import ContentRecommender, catalog_texts, rank_text_scores
from recsight.llm.encoders import DEFAULT_ENCODER
from recsight.models.base import Recommender
from recsight.models.blend import normalised, row_stats

#: Validation metric cut-off (NDCG@VALID_K), as for the `blend` model's weights.
VALID_K = 20
#: Significance level for a weight to move away from the better pure part (or, in a bucket,
#: from the overall weight).
ALPHA = 0.05
#: Offsets tried for the new items' scores, in units of a user's score standard deviation.
OFFSETS = np.arange(-3.0, 3.01, 0.5)
#: A history-length bucket with fewer validation users than this takes the overall weight.
MIN_BUCKET_USERS = 50
#: Memory for the validation users' standardised scores (two float32 rows of n_items each):
#: bounds how many validation users are scored (MAX_VALID_USERS below 26,000 items).
VALID_MEMORY_BYTES = 1 << 30
#: The most validation users scored (a seeded sample beyond).
MAX_VALID_USERS = 5000


def ridge_projection(x: np.ndarray, y: np.ndarray, reg: float) -> np.ndarray:
    """W minimising ``||x W - y||^2 + reg ||W||^2`` (x: n x d, y: n x f) -> d x f."""
    x = x.astype(np.float64)
    gram = x.T @ x + reg * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ y.astype(np.float64)).astype(np.float32)


def history_bucket_edges(counts: np.ndarray, buckets: int) -> np.ndarray:
    """Upper history lengths of the first ``buckets - 1`` buckets: quantiles of the non-zero
    `counts` (users' distinct training items), duplicates merged, so buckets hold about equal
    numbers of users (none is empty). A history of length n falls in bucket
    ``searchsorted(edges, n)``."""
    counts = np.asarray(counts)
    counts = counts[counts > 0]
    if buckets < 2 or not len(counts):
        return np.zeros(0)
    q = np.unique(np.quantile(counts, np.arange(1, buckets) / buckets, method="lower"))
    return q[q < counts.max()].astype(np.float64)  # no empty bucket above the longest


def holdout_per_user(data: Interactions, share: float, seed: int) -> np.ndarray:
    """Event mask: for every user with at least two distinct items, ``round(share * n)`` of
    them (at least one, at most n - 1), chosen at random, all events of a chosen pair.

    Not `recsight.data.splits`'s ``user_random``, which rounds a short history's share down to
    nothing: the users with short histories are the ones whose weight matters most."""
    rank, n, inverse = random_item_ranks(data, seed)
    n_out = np.where(n >= 2, np.clip(np.round(share * n), 1, n - 1), 0)
    return (rank < n_out)[inverse]


def significant_choice(per_user: np.ndarray, prefer: int, alpha: float = ALPHA) -> int:
    """Row index of the candidate to keep, from per-user validation values (candidates x
    users, higher is better): the best candidate by mean if it beats `prefer` significantly
    (paired Wilcoxon test, `recsight.evaluation.significance.paired_pvalue`, p < `alpha`),
    else `prefer`: a gain within the validation noise does not move the choice."""
    from recsight.evaluation.significance import paired_pvalue

    means = per_user.mean(axis=1)
    best = int(np.argmax(means))  # the first of equal means: the smaller text weight
    if means[best] > means[prefer] and paired_pvalue(per_user[best], per_user[prefer]) < alpha:
        return best
    return prefer


@dataclass
class BlendWeights:
    """The text weight per history-length bucket, for new items, and overall, and the new
    items' offset, with the validation NDCG@`VALID_K` of every candidate (`valid_ndcg`: rows
    are buckets, columns grid weights; empty for a fixed weight)."""

    edges: np.ndarray
    buckets: np.ndarray
    cold: float
    overall: float
    offset: float
    valid_ndcg: np.ndarray
    valid_users: np.ndarray  # validation users per bucket
    cold_valid_ndcg: np.ndarray
    offset_valid_ndcg: np.ndarray

    @classmethod
    def fixed(cls, w: float) -> BlendWeights:
        """One weight for everyone, no offset, nothing validated."""
        return cls(np.zeros(0), np.array([w]), w, w, 0.0, np.zeros((1, 0)),
                   np.zeros(1, np.int64), np.zeros(0), np.zeros(0))  # fmt: skip


class _FixedMix:
    """Scores ``z_cf + w (z_text - z_cf)`` of precomputed standardised parts, with weight
    `new_w` and `offset` added on the `new` items, -inf outside `allowed`: a scorer for
    `evaluate_ranking` while the weights are searched. `w` is a number or one per row."""

    def __init__(self, z_cf: np.ndarray, z_text: np.ndarray, row_of: np.ndarray,
                 new: np.ndarray):  # fmt: skip
        self.z_cf, self.z_text, self.row_of, self.new = z_cf, z_text, row_of, new
        self.allowed = np.ones(len(new), dtype=bool)
        self.w: float | np.ndarray = 0.0
        self.new_w = 0.0
        self.offset = 0.0

    def score_all(self, users: np.ndarray) -> np.ndarray:
        r = self.row_of[np.asarray(users)]
        w = np.broadcast_to(np.asarray(self.w, dtype=np.float32), (len(self.z_cf),))[r]
        weight = np.where(self.new[None, :], np.float32(self.new_w), w[:, None])
        s = self.z_cf[r] + weight * (self.z_text[r] - self.z_cf[r])
        s[:, self.new] += np.float32(self.offset)
        s[:, ~self.allowed] = -np.inf
        return s


class HybridRecommender(ContentRecommender):
    """PureSVD collaborative scores blended with text similarity, per user with weights fitted
    on validation data (see the module docstring); text-projected factors for items without
    interactions.

    Parameters (besides `ContentRecommender`'s):
        factors: number of singular vectors.
        reg: ridge penalty of the text -> factors projection.
        content_weight: ``"auto"`` (fit the weights) or a fixed text weight in [0, 1].
        buckets: most history-length buckets with their own weight.
        grid: the candidate weights are multiples of ``1 / grid``.
        valid_share: share of items, and of each user's items, held out to fit the weights.
        seed: seed of the validation split and of the randomized SVD.
    """

    name: ClassVar[str] = "hybrid"
    _state = ContentRecommender._state + (
        "item_factors_", "projection_", "bucket_edges_", "bucket_weights_", "cold_weight_",
        "cold_offset_", "content_weight_", "valid_ndcg_", "bucket_valid_users_",
        "cold_valid_ndcg_", "offset_valid_ndcg_",
    )  # fmt: skip
    # defaults for models saved before the weights were fitted (see `load`)
    bucket_edges_: np.ndarray | None = None
    bucket_weights_: np.ndarray | None = None
    cold_weight_: float | None = None
    cold_offset_: float | None = None
    content_weight_: float | None = None
    valid_ndcg_: np.ndarray | None = None
    bucket_valid_users_: np.ndarray | None = None
    cold_valid_ndcg_: np.ndarray | None = None
    offset_valid_ndcg_: np.ndarray | None = None

    def __init__(
        self,
        factors: int = 64,
        reg: float = 1.0,
        content_weight: float | Literal["auto"] = "auto",
        encoder: str = DEFAULT_ENCODER,
        encoder_url: str | None = None,
        half_life_days: float | None = 30.0,
        weights: Mapping[str, float | str] | None = None,
        ann_threshold: int = 100_000,
        cache_db: str | None = None,
        buckets: int = 3,
        grid: int = 10,
        valid_share: float = 0.1,
        seed: int = 0,
    ):
        super().__init__(encoder, encoder_url, half_life_days, weights, ann_threshold, cache_db)
        self.factors = factors
        self.reg = reg
        self.content_weight = content_weight
        self.buckets = buckets
        self.grid = grid
        self.valid_share = valid_share
        self.seed = seed

    # -- learning -----------------------------------------------------------------------------
    def _check_params(self) -> None:
        w = self.content_weight
        if w != "auto" and not (isinstance(w, int | float) and 0.0 <= float(w) <= 1.0):
            raise InputError(f"content_weight: expected 'auto' or a number in [0, 1], got {w!r}")
        if float(self.reg) <= 0:
            raise InputError(f"reg: expected a positive number, got {self.reg}")
        for key in ("buckets", "grid"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{key}: expected a positive integer, got {value!r}")
        if not 0.0 < float(self.valid_share) < 1.0:
            raise InputError(f"valid_share: expected a share in (0, 1), got {self.valid_share}")

    def fit(self, train: Interactions, progress: bool = False) -> HybridRecommender:
        """Embed the catalog's text (cached), fit the blend weights on a validation split of
        `train` (``content_weight="auto"``), then fit both parts on all of `train`."""
        self._check_params()
        embeddings = self.embed(catalog_texts(train), progress=progress)
        key = self.text_encoder().key
        if self.content_weight == "auto":
            fitted = self._fit_weights(train, embeddings, key)
        else:
            fitted = BlendWeights.fixed(float(self.content_weight))
        self._fit_embedded(train, embeddings, key)
        self._set_weights(fitted)
        return self

    def _set_weights(self, fitted: BlendWeights) -> None:
        self.bucket_edges_ = fitted.edges
        self.bucket_weights_ = fitted.buckets
        self.cold_weight_ = fitted.cold
        self.cold_offset_ = fitted.offset
        self.content_weight_ = fitted.overall
        self.valid_ndcg_ = fitted.valid_ndcg
        self.bucket_valid_users_ = fitted.valid_users
        self.cold_valid_ndcg_ = fitted.cold_valid_ndcg
        self.offset_valid_ndcg_ = fitted.offset_valid_ndcg

    def _fit_embedded(
        self, train: Interactions, embeddings: np.ndarray, encoder_key: str
    ) -> HybridRecommender:
        """Both parts on `train` (the content profiles, the SVD and the text projection)."""
        super()._fit_embedded(train, embeddings, encoder_key)
        x = self.seen_.copy()
        x.data[:] = 1.0
        warm = self.item_popularity_ > 0
        k = min(int(self.factors), min(x.shape) - 1)
        if k < 1 or warm.sum() < 2:
            raise InputError(
                f"factors: the training data ({x.shape[0]} users x {int(warm.sum())} items with "
                "events) is too small for a factor model"
            )
        # imported here: sklearn's import costs seconds, and serving imports this module
        from sklearn.utils.extmath import randomized_svd

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

    def _fit_weights(
        self, train: Interactions, embeddings: np.ndarray, encoder_key: str
    ) -> BlendWeights:
        """The blend weights from a validation split of `train` (module docstring, 1-3)."""
        from recsight.evaluation.protocol import evaluate_ranking

        seed = int(self.seed)
        share = float(self.valid_share)
        cold_parts = cold_item_split(train, cold_share=share, warm_test_share=0.0, seed=seed)
        held = holdout_per_user(cold_parts.train, share, seed)
        inner_train = cold_parts.train.subset(~held)
        warm_valid = cold_parts.train.subset(held)
        if not len(warm_valid):
            raise InputError(
                "training data: no user has two items to hold one out for the hybrid's blend "
                "weights; set content_weight to a number in [0, 1]"
            )
        inner = HybridRecommender(**{**self.get_params(), "content_weight": 0.0})
        inner._fit_embedded(inner_train, embeddings, encoder_key)
        counts = np.diff(train.to_csr(self.weights).indptr)
        edges = history_bucket_edges(counts, int(self.buckets))
        grid = np.arange(int(self.grid) + 1) / int(self.grid)
        rng = np.random.default_rng(seed)
        # two float32 score rows per validation user
        cap = max(1, min(MAX_VALID_USERS, VALID_MEMORY_BYTES // (8 * train.n_items)))

        def sample(users: np.ndarray) -> np.ndarray:
            return np.sort(rng.choice(users, cap, replace=False)) if len(users) > cap else users

        valid = concat(warm_valid, cold_parts.test_cold)
        users = sample(np.unique(valid.user_idx))
        z_cf, z_text = inner._standardised_parts(users)
        row_of = np.full(train.n_users, -1, dtype=np.int64)
        row_of[users] = np.arange(len(users))
        new = inner.item_popularity_ == 0
        held_items = np.zeros(train.n_items, dtype=bool)
        held_items[cold_parts.cold_items] = True
        mix = _FixedMix(z_cf, z_text, row_of, new)

        def curve(attr: str, values: np.ndarray, on: np.ndarray):
            """Per-user NDCG (values x users) as `mix.<attr>` takes each value, ranking the
            `on` items against the held-out events on them."""
            mix.allowed = on
            test = valid.subset(on[valid.item_idx])
            per_value = []
            for v in values:
                setattr(mix, attr, v)
                res = evaluate_ranking(
                    mix, inner_train, test, ks=(VALID_K,), metrics=("ndcg",), users=users,
                    batch_users=1024,
                )  # fmt: skip
                per_value.append(res.per_user[f"ndcg@{VALID_K}"])
            return res.users, np.array(per_value).reshape(len(values), len(res.users))

        # a. the text weight of items with events, overall then per history-length bucket
        evaluated, ndcg = curve("w", grid, ~new)
        means = ndcg.mean(axis=1)
        best = significant_choice(ndcg, 0 if means[0] >= means[-1] else len(grid) - 1)
        overall = float(grid[best])
        bucket_of = np.searchsorted(edges, counts[evaluated])
        n_buckets = len(edges) + 1
        weights = np.full(n_buckets, overall)
        valid_ndcg = np.full((n_buckets, len(grid)), np.nan)
        valid_users = np.bincount(bucket_of, minlength=n_buckets)
        for b in range(n_buckets):
            sel = bucket_of == b
            if sel.any():
                valid_ndcg[b] = ndcg[:, sel].mean(axis=1)
            if valid_users[b] >= MIN_BUCKET_USERS:
                weights[b] = grid[significant_choice(ndcg[:, sel], best)]
        mix.w = weights[np.searchsorted(edges, counts[users])]  # one per row of z_cf
        # b. the new items' weight, ranking the held-out items among themselves
        cold_w, cold_ndcg = overall, np.zeros(0)
        _, per_user = curve("new_w", grid, held_items)
        if per_user.shape[1]:
            cold_ndcg = per_user.mean(axis=1)
            cold_w = float(grid[significant_choice(per_user, best)])
        mix.new_w = cold_w
        # c. new items' offset, ranking all but the held-out items: those were made new at
        # random, so they would tell how relevant a random item is, not a new one
        _, per_user = curve("offset", OFFSETS, ~held_items)
        zero = int(np.argmin(np.abs(OFFSETS)))
        offset = float(OFFSETS[significant_choice(per_user, zero)]) if per_user.shape[1] else 0.0
        offset_ndcg = per_user.mean(axis=1) if per_user.shape[1] else np.zeros(0)
        return BlendWeights(edges, weights, cold_w, overall, offset, valid_ndcg, valid_users,
                            cold_ndcg, offset_ndcg)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> HybridRecommender:
        model = super().load(path)
        assert isinstance(model, HybridRecommender)
        if model.bucket_weights_ is None:  # saved before weights were fitted: one fixed weight
            model._set_weights(BlendWeights.fixed(float(model.content_weight)))
        return model

    @property
    def uses_ann(self) -> bool:
        """Always False: the blend needs every item's score, so top-k is exact."""
        return False

    # -- scoring ------------------------------------------------------------------------------
    def _standardised_parts(self, user_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both parts' scores for known users, each standardised over the user's unseen items
        (computed in chunks: the standardisation's temporaries are float64)."""
        z_cf = np.empty((len(user_idx), self.n_items), dtype=np.float32)
        z_text = np.empty_like(z_cf)
        for start in range(0, len(user_idx), 1024):
            rows = np.asarray(user_idx[start : start + 1024])
            seen = self.seen_[rows]
            z_cf[start : start + len(rows)] = normalised(self._cf_scores(seen), seen)
            text = ContentRecommender.score_all(self, rows)
            z_text[start : start + len(rows)] = normalised(text, seen)
        return z_cf, z_text

    def user_weights(self, history_lengths: np.ndarray) -> np.ndarray:
        """Text weight of every (history, item): the history's bucket weight, or the new-item
        weight for items without training events, ``(len(history_lengths), n_items)``."""
        b = np.searchsorted(self.bucket_edges_, np.asarray(history_lengths))
        w = np.asarray(self.bucket_weights_, dtype=np.float32)[b]
        cold = self.item_popularity_ == 0
        return np.where(cold[None, :], np.float32(self.cold_weight_), w[:, None])

    def _blend(
        self, cf: np.ndarray, text: np.ndarray, seen: sp.csr_matrix, offset: bool = True
    ) -> np.ndarray:
        z_cf, z_text = normalised(cf, seen), normalised(text, seen)
        s = z_cf + self.user_weights(np.diff(seen.indptr)) * (z_text - z_cf)
        if offset and self.cold_offset_:
            s[:, self.item_popularity_ == 0] += np.float32(self.cold_offset_)
        return s

    def _cf_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        binary = rows.copy()
        binary.data[:] = 1.0
        return np.asarray(binary @ self.item_factors_) @ self.item_factors_.T

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        user_idx = np.asarray(user_idx)
        seen = self.seen_[user_idx]
        return self._blend(self._cf_scores(seen), super().score_all(user_idx), seen)

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        h = histories.tocsr()
        return self._blend(self._cf_scores(h), super().score_history(h), h)

    def text_scores(self, texts: Sequence[str]) -> np.ndarray:
        """A text query is an empty history: the shortest-history bucket's weight, and no
        new-item offset (it was fitted on users' histories)."""
        q = self.text_vectors(texts)
        cf = (q @ self.projection_) @ self.item_factors_.T
        empty = sp.csr_matrix((len(q), self.n_items), dtype=np.float32)
        return self._blend(cf, q @ self.item_embeddings_.T, empty, offset=False)

    def _item_similarities(self, i: int) -> np.ndarray:
        """Both parts' similarities to item i, standardised over the other items and mixed by
        the overall weight."""
        cf = self.item_factors_ @ self.item_factors_[i]
        itself = sp.csr_matrix(([1.0], ([0], [i])), shape=(1, self.n_items))
        z_cf = normalised(cf[None, :], itself)[0]
        z_text = normalised(super()._item_similarities(i)[None, :], itself)[0]
        return z_cf + np.float32(self.content_weight_) * (z_text - z_cf)

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # both parts are linear in the history items before standardisation; each part's
        # contributions are divided by its row's standard deviation, as in the blend
        h = self._history_row(hist_items, hist_weights)
        w = float(self.user_weights(np.array([len(hist_items)]))[0, item])
        f = self.item_factors_
        _, cf_std = row_stats(self._cf_scores(h), h)
        _, text_std = row_stats(super().score_history(h), h)
        cf_c = (f[hist_items] @ f[item]) / cf_std[0, 0]
        text_c = super()._contributions(hist_items, hist_weights, item) / text_std[0, 0]
        return (1.0 - w) * cf_c + w * text_c

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
