"""Recommendation models with one scikit-learn-style contract (`Recommender`).

Registered names (`recsight.models.registry.MODELS`): ``popular``, ``userknn``, ``itemknn``,
``biased_mf``, ``als``, ``bpr``, ``ease``, the neural models and the text-aware ones. Create
with `create_model(name, **params)`, fit on `Interactions`, and use `recommend`,
`recommend_for_history`, `score_all`, `explain`, `save`; reload with `load_model(dir)`.

Model classes are imported on first use (``from recsight.models import EASE`` works), so
importing this package loads neither torch nor implicit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsight.models.base import FORMAT_VERSION, Recommender
from recsight.models.registry import (
    MODELS,
    available_models,
    create_model,
    load_model,
    model_class,
    model_names,
)

if TYPE_CHECKING:
    from recsight.models.als import ALS, BPR
    from recsight.models.ease import EASE
    from recsight.models.knn import ItemKNN, UserKNN
    from recsight.models.mf import BiasedMF
    from recsight.models.popular import MostPopular

_LAZY = {
    "ALS": "als",
    "BPR": "bpr",
    "EASE": "ease",
    "ItemKNN": "itemknn",
    "UserKNN": "userknn",
    "BiasedMF": "biased_mf",
    "MostPopular": "popular",
}


def __getattr__(attr: str) -> Any:
    if attr in _LAZY:
        return model_class(_LAZY[attr])
    raise AttributeError(f"module 'recsight.models' has no attribute {attr!r}")


__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "FORMAT_VERSION",
    "MODELS",
    "BiasedMF",
    "ItemKNN",
    "MostPopular",
    "Recommender",
    "UserKNN",
    "available_models",
    "create_model",
    "load_model",
    "model_class",
    "model_names",
]
