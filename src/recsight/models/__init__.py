"""Recommendation models with one scikit-learn-style contract (`Recommender`).

Registered names: ``popular``, ``userknn``, ``itemknn``, ``biased_mf``, ``als``, ``bpr``,
``ease``. Create with `create_model(name, **params)`, fit on `Interactions`, and use
`recommend`, `recommend_for_history`, `score_all`, `explain`, `save`; reload with
`load_model(dir)`.
"""

from recsight.models.als import ALS, BPR
from recsight.models.base import FORMAT_VERSION, Recommender
from recsight.models.ease import EASE
from recsight.models.knn import ItemKNN, UserKNN
from recsight.models.mf import BiasedMF
from recsight.models.popular import MostPopular
from recsight.models.registry import MODELS, create_model, load_model, model_class

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
    "create_model",
    "load_model",
    "model_class",
]
