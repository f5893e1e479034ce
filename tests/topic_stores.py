"""Helpers for the topic tests: a fast stand-in encoder and a shop without categories."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.store import Store


class BagOfWordsEncoder:
    """A deterministic stand-in for a sentence encoder: hashed bag of words (ideographs one
    by one), L2-normalised. Fast, and enough to separate texts by their vocabulary."""

    key = "test-bow"

    def encode(self, texts):
        out = np.zeros((len(texts), 256), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[\u4e00-\u9fff]|[a-z]+", t.lower()):
                out[i, zlib.crc32(w.encode()) % 256] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def shop_without_categories(
    folder: Path, n_users: int = 150, n_items: int = 120, seed: int = 3, **kw
) -> tuple[Path, pd.Series]:
    """A generated shop ingested into `folder/s.duckdb` without its category column (titles
    and descriptions only); returns the store path and the true category per item id."""
    shop = generate_shop(folder / "shop", n_users=n_users, n_items=n_items, n_days=20,
                         seed=seed, **kw)  # fmt: skip
    items = pd.read_parquet(shop.files["items"])
    items.drop(columns=["category"]).to_parquet(folder / "items.parquet")
    db = folder / "s.duckdb"
    with Store(db) as store:
        ingest(store, shop.files["events"], items=folder / "items.parquet")
    return db, items.set_index("item_id").category
