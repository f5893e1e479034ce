"""Content-based recommender on item-text embeddings.

Each item's text (title, category, tags, description, free text: `item_texts`) is embedded once
by a sentence encoder (`recsight.llm.encoders`). A user's vector is the time-decayed weighted
mean of the embeddings of the items they interacted with: an event of weight w and age a days
(before the latest training event) counts ``w * 0.5 ** (a / half_life_days)``. Items are scored
by cosine with that vector, so an item nobody has touched yet is recommended as soon as it has
text: the cold-start path for new items. A free-text interest ("I like cozy mystery novels")
is embedded by the same encoder and scored the same way (`recommend_for_text`).

Scoring is exact (one matrix product) up to ``ann_threshold`` catalog items; larger catalogs
answer `recommend`, `recommend_for_history` and `recommend_for_text` through a faiss HNSW
inner-product index, built on first use. `score_all` (what evaluation uses) stays exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.llm.encoders import (
    DEFAULT_ENCODER,
    EmbeddingCache,
    TextEncoder,
    encode_texts,
    item_texts,
    make_encoder,
)
from recsight.models.base import Recommender, history_user_keys
from recsight.models.topk import id_keys, top_k

_DAY = 86400.0
#: HNSW graph degree: faiss's usual choice for a good recall / memory balance.
_HNSW_M = 32
#: Candidates searched per query beyond what is kept (exclude_seen filters some out).
_ANN_EXTRA = 32


def catalog_texts(train: Interactions) -> list[str]:
    """The text of every item of `train`'s id space ('' for items without text)."""
    feats = train.item_features
    if feats is None or feats.empty:
        raise InputError(
            "items: the content model needs item text; ingest an items file with title, "
            "category, tags, description or text columns"
        )
    texts = item_texts(feats.reindex(pd.RangeIndex(train.n_items)))
    if not any(texts):
        raise InputError(
            "items: no item has any text (title, category, tags, description or text column)"
        )
    return texts


def decayed_matrix(
    train: Interactions, weights: Mapping[str, float | str] | None, half_life_days: float | None
) -> sp.csr_matrix:
    """User x item matrix of event weights, each multiplied by ``0.5 ** (age / half_life)``
    with the age taken from the latest training event (events without a time count fully)."""
    w = train.weights(weights).astype(np.float64)
    if half_life_days is not None and train.has_timestamps:
        if half_life_days <= 0:
            raise InputError(f"half_life_days: expected a positive number, got {half_life_days}")
        ts = train.timestamp
        assert ts is not None
        latest = np.nanmax(ts)
        age = (latest - np.where(np.isnan(ts), latest, ts)) / _DAY
        w = w * 0.5 ** (age / float(half_life_days))
    keep = w != 0
    m = sp.csr_matrix(
        (w[keep], (train.user_idx[keep], train.item_idx[keep])),
        shape=(train.n_users, train.n_items),
        dtype=np.float64,
    )
    m.sum_duplicates()
    m.eliminate_zeros()
    return m.astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class ContentRecommender(Recommender):
    """Cosine between a user's time-decayed mean item embedding and every item's embedding.

    Parameters:
        encoder: text encoder name (``use``, ``minilm``, a sentence-transformers model) or,
            with `encoder_url`, the model name to ask that OpenAI-compatible endpoint for.
        encoder_url: base URL of an OpenAI-compatible embeddings endpoint.
        half_life_days: age at which an event counts half (None: no decay).
        weights: event-type weights (default `recsight.data.dataset.DEFAULT_WEIGHTS`).
        ann_threshold: catalogs with at least this many items are searched through an ANN index.
        cache_db: DuckDB file (normally the store) holding the embedding cache, or None.
    """

    name: ClassVar[str] = "content"
    _state = ("item_embeddings_", "profile_", "encoder_key_")
    _user_state = ("profile_",)

    def __init__(
        self,
        encoder: str = DEFAULT_ENCODER,
        encoder_url: str | None = None,
        half_life_days: float | None = 30.0,
        weights: Mapping[str, float | str] | None = None,
        ann_threshold: int = 100_000,
        cache_db: str | None = None,
    ):
        self.encoder = encoder
        self.encoder_url = encoder_url
        self.half_life_days = half_life_days
        self.weights = weights
        self.ann_threshold = ann_threshold
        self.cache_db = cache_db

    # -- learning -----------------------------------------------------------------------------
    def text_encoder(self) -> TextEncoder:
        """The encoder this model embeds text with (loaded on first use)."""
        return make_encoder(self.encoder, self.encoder_url)

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embeddings of `texts` by this model's encoder, through the cache when configured."""
        cache = EmbeddingCache(self.cache_db) if self.cache_db else None
        return encode_texts(self.text_encoder(), texts, cache=cache, progress=progress)

    def fit(self, train: Interactions, progress: bool = False) -> ContentRecommender:
        """Embed every catalog item's text (cached) and build the users' decayed profiles."""
        texts = catalog_texts(train)
        embeddings = self.embed(texts, progress=progress)
        return self._fit_embedded(train, embeddings, self.text_encoder().key)

    def _fit_embedded(
        self, train: Interactions, embeddings: np.ndarray, encoder_key: str
    ) -> ContentRecommender:
        """Fit on `train` given the catalog's item embeddings (`embeddings`, one row per item
        of `train`'s id space) made by the encoder named `encoder_key`."""
        self._set_training(train, train.to_csr(self.weights))
        self.item_embeddings_ = embeddings
        self.profile_ = decayed_matrix(train, self.weights, self.half_life_days)
        self.encoder_key_ = encoder_key
        return self

    def _derive(self) -> None:
        super()._derive()
        self._ann: Any = None

    # -- scoring ------------------------------------------------------------------------------
    def user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        """Unit-norm profile vectors of known users (zero for users without history)."""
        return unit_rows(np.asarray(self.profile_[user_idx] @ self.item_embeddings_))

    def history_vectors(self, histories: sp.csr_matrix) -> np.ndarray:
        """Unit-norm profile vectors of ad-hoc histories (weights, no decay: no times)."""
        return unit_rows(np.asarray(histories @ self.item_embeddings_))

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_vectors(np.asarray(user_idx)) @ self.item_embeddings_.T

    def score_history(self, histories: sp.csr_matrix) -> np.ndarray:
        return self.history_vectors(histories) @ self.item_embeddings_.T

    def text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of free-text queries, checked against the training encoder."""
        self._check_fitted()
        enc = self.text_encoder()
        if enc.key != str(self.encoder_key_):
            raise InputError(
                f"encoder {enc.key!r} differs from the one the model was trained with "
                f"({self.encoder_key_!r}); retrain or configure the same encoder"
            )
        if any(not str(t).strip() for t in texts):
            raise InputError("text: expected a non-empty description of the user's interests")
        return self.embed(list(texts))

    def text_scores(self, texts: Sequence[str]) -> np.ndarray:
        """Scores of every item for free-text interests, ``(len(texts), n_items)``."""
        return self.text_vectors(texts) @ self.item_embeddings_.T

    def _item_similarities(self, i: int) -> np.ndarray:
        return self.item_embeddings_ @ self.item_embeddings_[i]

    def _contributions(
        self, hist_items: np.ndarray, hist_weights: np.ndarray, item: int
    ) -> np.ndarray:
        # score = <sum_j w_j e_j, e_item> / ||sum_j w_j e_j||: linear in each history item
        e = self.item_embeddings_
        profile = hist_weights @ e[hist_items]
        norm = float(np.linalg.norm(profile)) or 1.0
        return hist_weights * (e[hist_items] @ e[item]) / norm

    def _user_history(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """`explain` reads the user's profile row: history items by their decayed weights."""
        row = self.profile_[u]
        return row.indices, row.data

    # -- ANN path for large catalogs ---------------------------------------------------------
    @property
    def uses_ann(self) -> bool:
        """Whether top-k queries go through the ANN index (catalog >= ann_threshold)."""
        return self.n_items >= int(self.ann_threshold)

    def _index(self) -> Any:
        if self._ann is None:
            try:
                import faiss
            except ImportError:
                raise InputError(
                    f"the catalog has {self.n_items:,} items (ann_threshold "
                    f"{self.ann_threshold:,}): install faiss-cpu for the ANN index, or raise "
                    "ann_threshold to score exactly"
                ) from None
            index = faiss.IndexHNSWFlat(
                self.item_embeddings_.shape[1], _HNSW_M, faiss.METRIC_INNER_PRODUCT
            )
            index.add(np.ascontiguousarray(self.item_embeddings_, dtype=np.float32))
            self._ann = index
        return self._ann

    def _ann_top_k(
        self,
        queries: np.ndarray,
        seen: sp.csr_matrix,
        k: int,
        exclude_seen: bool,
        user_keys: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: the index over-fetches candidates, which are re-scored
        exactly and ranked by the shared top-k rule; rows with an empty query (no history)
        get popularity order, as in the exact path."""
        if k < 1:
            raise InputError(f"k must be a positive integer, got {k}")
        width = min(k, self.n_items)
        n_seen = np.diff(seen.indptr) if exclude_seen else np.zeros(seen.shape[0], int)
        probe = min(self.n_items, width + int(n_seen.max(initial=0)) + _ANN_EXTRA)
        index = self._index()
        index.hnsw.efSearch = max(64, probe)
        _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), probe)
        ids = np.full((len(queries), width), None, dtype=object)
        scores = np.full((len(queries), width), np.nan, dtype=np.float32)
        empty = ~queries.any(axis=1)
        for r in range(len(queries)):
            if empty[r]:
                cand = np.argsort(-self.item_popularity_, kind="stable")[:probe]
            else:
                cand = found[r][found[r] >= 0]
            if exclude_seen:
                cand = cand[~np.isin(cand, seen.indices[seen.indptr[r] : seen.indptr[r + 1]])]
            if not len(cand):
                continue
            vals = (
                self.item_popularity_[cand]
                if empty[r]
                else self.item_embeddings_[cand] @ queries[r]
            )
            cols, top = top_k(vals[None, :], width, user_keys[r : r + 1], self.item_keys_[cand])
            ok = cols[0] >= 0
            ids[r, : ok.sum()] = self.items_.ids[cand[cols[0][ok]]]
            scores[r, : ok.sum()] = top[0][ok]
        return ids, scores

    def recommend(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if not self.uses_ann or candidates is not None:
            return super().recommend(users, k, exclude_seen, candidates)
        users = [users] if isinstance(users, str) else list(users)
        uidx = self._user_idx(users)
        return self._ann_top_k(
            self.user_vectors(uidx), self.seen_[uidx], k, exclude_seen, id_keys(users)
        )

    def recommend_for_history(
        self,
        items: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        candidates: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        user: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        if not self.uses_ann or candidates is not None:
            return super().recommend_for_history(items, k, exclude_seen, candidates, weights, user)
        h = self._history_matrix(items, weights)
        keys = history_user_keys(user)
        ids, scores = self._ann_top_k(self.history_vectors(h), h, k, exclude_seen, keys)
        return ids[0], scores[0]

    def recommend_text(
        self, text: str, k: int = 10, candidates: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for a free-text interest: 1-D (ids, scores)."""
        if self.uses_ann and candidates is None:
            empty = sp.csr_matrix((1, self.n_items), dtype=np.float32)
            keys = history_user_keys(None)
            ids, scores = self._ann_top_k(self.text_vectors([text]), empty, k, False, keys)
            return ids[0], scores[0]
        return rank_text_scores(self, self.text_scores([text]), k, candidates)


def rank_text_scores(
    model: Recommender, scores: np.ndarray, k: int, candidates: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a 1 x n_items text-query score row, restricted to `candidates`."""
    scores = np.array(scores, dtype=np.float32)
    allowed = model._candidate_mask(candidates)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    ids, vals = model._top_k(scores, k, history_user_keys(None))
    return ids[0], vals[0]


def recommend_for_text(
    model: Recommender, text: str, k: int = 10, candidates: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for a free-text interest with any model that has a text encoder
    (``content``, ``hybrid``); other models raise `InputError`. Returns 1-D (ids, scores)."""
    if not hasattr(model, "recommend_text"):
        raise InputError(
            f"model {model.name!r} cannot read free text; train a 'content' or 'hybrid' model "
            "for --text"
        )
    return model.recommend_text(text, k=k, candidates=candidates)
