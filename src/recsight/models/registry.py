"""Model names -> classes, creation by name and loading of saved models."""

from __future__ import annotations

import functools
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recsight.errors import InputError
from recsight.models.als import ALS, BPR
from recsight.models.base import Recommender, read_config
from recsight.models.blend import Blend
from recsight.models.ease import EASE
from recsight.models.knn import ItemKNN, UserKNN
from recsight.models.mf import BiasedMF
from recsight.models.neural import BERT4Rec, DeepFM, MultVAE, NeuMF, RecVAE, SASRec, SeedMLP
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
        MultVAE,
        RecVAE,
        Blend,
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
    return cls(**check_params(cls, params))


@functools.cache
def _param_types(cls: type[Recommender]) -> dict[str, tuple[str, TypeAdapter]]:
    """Per hyperparameter: its annotation, shown, and a validator (where one can be built)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that cannot be resolved: nothing to check against
        return {}
    out = {}
    for key, hint in hints.items():
        try:
            adapter = TypeAdapter(hint)
        except Exception:  # e.g. an arbitrary class: left to the model's own checks
            continue
        shown = hint.__name__ if isinstance(hint, type) else str(hint)
        shown = shown.replace("collections.abc.", "")
        out[key] = (shown, adapter)
    return out


def check_params(cls: type[Recommender], params: dict[str, Any]) -> dict[str, Any]:
    """`params` converted to the types that ``cls.__init__`` declares (so YAML's ``1e3``, a
    string, becomes 1000.0), or an `InputError` naming the parameter and the expected type,
    before any data is read or any model trained."""
    types = _param_types(cls)
    out = dict(params)
    for key, value in params.items():
        if key not in types:
            continue
        shown, adapter = types[key]
        try:
            out[key] = adapter.validate_python(value)
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            raise InputError(
                f"model {cls.name!r}: parameter {key}={value!r}: expected {shown} ({why})"
            ) from None
    return out


def load_model(path: str | Path) -> Recommender:
    """Load any saved model, dispatching on the name in its ``config.json``."""
    return model_class(read_config(path)["name"]).load(path)
