"""Text-enhanced SASRec: each item is its learned id embedding plus a learned projection of
its frozen pretrained text embedding.

Rare items get few gradient updates to their id embedding; the text part lets them borrow
from items with similar text, which is where the gain shows (the long tail).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from recsight.data.dataset import Interactions
from recsight.llm.content import catalog_texts
from recsight.llm.encoders import DEFAULT_ENCODER, EmbeddingCache, encode_texts, make_encoder
from recsight.models.neural.sasrec import SASRec


class TextSASRec(SASRec):
    """SASRec whose item vectors add a projection of frozen text embeddings.

    Hyperparameters: those of `SASRec`, plus `encoder` (a `make_encoder` name, default the
    multilingual USE), `encoder_url` (an OpenAI-compatible embeddings endpoint instead) and
    `cache_db` (a store whose embedding cache to use).
    """

    name: ClassVar[str] = "text_sasrec"
    _state: ClassVar[tuple[str, ...]] = (*SASRec._state, "text_")

    text_: np.ndarray

    def __init__(
        self,
        max_len: int = 50,
        dim: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        attn_dropout: float = 0.2,
        loss: str = "auto",
        n_negatives: int = 256,
        proposal: str = "uniform",
        gbce_t: float = 0.75,
        epochs: int = 200,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 128,
        patience: int | None = 5,
        early_stopping: bool = True,
        max_minutes: float | None = None,
        device: str = "cpu",
        threads: int | None = 1,
        seed: int = 42,
        verbose: bool = True,
        encoder: str = DEFAULT_ENCODER,
        encoder_url: str | None = None,
        cache_db: str | None = None,
    ):
        super().__init__(
            max_len=max_len,
            dim=dim,
            layers=layers,
            heads=heads,
            dropout=dropout,
            attn_dropout=attn_dropout,
            loss=loss,
            n_negatives=n_negatives,
            proposal=proposal,
            gbce_t=gbce_t,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            batch_size=batch_size,
            patience=patience,
            early_stopping=early_stopping,
            max_minutes=max_minutes,
            device=device,
            threads=threads,
            seed=seed,
            verbose=verbose,
        )
        self.encoder = encoder
        self.encoder_url = encoder_url
        self.cache_db = cache_db

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
