"""Model names -> classes, creation by name and loading of saved models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsight.errors import InputError
from recsight.models.als import ALS, BPR
from recsight.models.base import Recommender, read_config
from recsight.models.ease import EASE
from recsight.models.knn import ItemKNN, UserKNN
from recsight.models.mf import BiasedMF
from recsight.models.neural import BERT4Rec, DeepFM, NeuMF, SASRec, SeedMLP
from recsight.models.popular import MostPopular

MODELS: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        MostPopular,
        UserKNN,
        ItemKNN,
        BiasedMF,
        ALS,
        BPR,
        EASE,
        SeedMLP,
        DeepFM,
        NeuMF,
        SASRec,
        BERT4Rec,
    )
}


def _register_extras() -> None:
    """Add the text-aware and federated models: `recsight.llm` and `recsight.privacy` import
    `recsight.models`, so importing them here at module load would be circular."""
    if "content" in MODELS:
        return
    from recsight.llm.coldstart import HybridRecommender
    from recsight.llm.content import ContentRecommender
    from recsight.llm.text_sasrec import TextSASRec
    from recsight.privacy.federated import FederatedMF

    for cls in (ContentRecommender, HybridRecommender, TextSASRec, FederatedMF):
        MODELS[cls.name] = cls


def available_models() -> dict[str, type[Recommender]]:
    """Every registered name -> class, including the text-aware models."""
    _register_extras()
    return MODELS


def model_class(name: str) -> type[Recommender]:
    """The class registered under `name`; unknown names raise `InputError` listing them."""
    _register_extras()
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model; unknown parameters raise `InputError` listing the valid ones."""
    cls = model_class(name)
    valid = cls.param_names()
    unknown = [p for p in params if p not in valid]
    private = [p for p in unknown if p.startswith("dp_")]
    if private:
        # only models whose per-example gradients were checked take DP options
        able = [n for n, c in MODELS.items() if "dp_epsilon" in c.param_names()]
        raise InputError(
            f"model {name!r} has no differentially private training ({', '.join(private)}); "
            f"DP-SGD is available for: {', '.join(able)} (and fedmf has dp_noise/dp_clip)"
        )
    if unknown:
        raise InputError(
            f"model {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    return cls(**params)


def load_model(path: str | Path) -> Recommender:
    """Load any saved model, dispatching on the name in its ``config.json``."""
    return model_class(read_config(path)["name"]).load(path)
