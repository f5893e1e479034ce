"""Text-enhanced SASRec: each item is its learned id embedding plus a learned projection of
its frozen pretrained text embedding.

Rare items get few gradient updates to their id embedding; the text part lets them borrow
from items with similar text, which is where the gain shows (the long tail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from recsight.data.dataset import Interactions
from recsight.llm.content import catalog_texts
from recsight.llm.encoders import DEFAULT_ENCODER, EmbeddingCache, encode_texts, make_encoder
from recsight.models.neural.sasrec import TransformerRecommender


@dataclass(kw_only=True, eq=False, repr=False)
class TextSASRec(TransformerRecommender):
    """SASRec whose item vectors add a projection of frozen text embeddings.

    Hyperparameters: those of `SequenceConfig`, plus `encoder` (a `make_encoder` name,
    default the multilingual USE), `encoder_url` (an OpenAI-compatible embeddings endpoint
    instead) and `cache_db` (a store whose embedding cache to use). Learned besides the
    family's state: `text_`, the items' text embeddings ``(n_items, d)``.
    """

    name: ClassVar[str] = "text_sasrec"
    _state: ClassVar[tuple[str, ...]] = (*TransformerRecommender._state, "text_")

    encoder: str = DEFAULT_ENCODER
    encoder_url: str | None = None
    cache_db: str | None = None

    def fit(self, train: Interactions) -> TextSASRec:
        """Encode every item's text (cached), then train SASRec with the text side input."""
        texts = catalog_texts(train)
        cache = EmbeddingCache(self.cache_db) if self.cache_db else None
        emb = encode_texts(make_encoder(self.encoder, self.encoder_url), texts, cache=cache)
        emb = np.asarray(emb, dtype=np.float32)
        emb[[not t for t in texts]] = 0.0  # no text: the id embedding alone
        self.text_ = emb
        super().fit(train)
        return self

    def _side_features(self) -> torch.Tensor:
        pad = np.zeros((1, self.text_.shape[1]), np.float32)
        return torch.from_numpy(np.vstack([pad, self.text_]))
