"""Model names -> classes, creation by name and loading of saved models."""

from __future__ import annotations

import functools
import importlib
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recsight.errors import InputError
from recsight.extras import missing_extra
from recsight.models.base import Recommender, read_config

# name -> "module:Class", resolved on first use so that importing `recsight.models` (or
# running `recsight --help`) loads no torch, implicit or text encoder. The text-aware and
# federated models live in `recsight.llm` and `recsight.privacy`, which import
# `recsight.models`; naming them here as strings keeps that dependency one-way.
MODELS: dict[str, str] = {
    "popular": "recsight.models.popular:MostPopular",
    "userknn": "recsight.models.knn:UserKNN",
    "itemknn": "recsight.models.knn:ItemKNN",
    "biased_mf": "recsight.models.mf:BiasedMF",
    "als": "recsight.models.als:ALS",
    "bpr": "recsight.models.als:BPR",
    "ease": "recsight.models.ease:EASE",
    "dlae": "recsight.models.linear:DLAE",
    "edlae": "recsight.models.linear:EDLAE",
    "seed_mlp": "recsight.models.neural.seed_mlp:SeedMLP",
    "deepfm": "recsight.models.neural.deepfm:DeepFM",
    "neumf": "recsight.models.neural.neumf:NeuMF",
    "sasrec": "recsight.models.neural.sasrec:SASRec",
    "bert4rec": "recsight.models.neural.bert4rec:BERT4Rec",
    "multvae": "recsight.models.neural.vae:MultVAE",
    "recvae": "recsight.models.neural.vae:RecVAE",
    "blend": "recsight.models.blend:Blend",
    "content": "recsight.llm.content:ContentRecommender",
    "hybrid": "recsight.llm.coldstart:HybridRecommender",
    "text_sasrec": "recsight.llm.text_sasrec:TextSASRec",
    "fedmf": "recsight.privacy.federated:FederatedMF",
}


#: Registered models that never read `Interactions.item_features` or `user_features`: an
#: experiment of only these skips reading the item and user tables (at 100M events, a
#: million items' titles and three million users' attributes).
FEATURELESS = frozenset({
    "popular", "userknn", "itemknn", "biased_mf", "als", "bpr", "ease", "dlae", "edlae",
    "seed_mlp", "neumf", "sasrec", "bert4rec", "multvae", "recvae", "fedmf",
})  # fmt: skip


def model_names() -> list[str]:
    """Every registered model name, in the table's order (no model module is imported)."""
    return list(MODELS)


def model_class(name: str) -> type[Recommender]:
    """The class registered under `name`, imported on first use; unknown names raise
    `InputError` listing them, a model whose optional dependency is missing raises
    `MissingExtraError` naming the extra to install."""
    try:
        target = MODELS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = missing_extra(exc, f"model {name!r}")
        if missing is None:
            raise
        raise missing from None
    return getattr(module, attr)


def available_models() -> dict[str, type[Recommender]]:
    """Every registered name -> class whose dependencies are installed (imports them all)."""
    out = {}
    for name in MODELS:
        try:
            out[name] = model_class(name)
        except InputError:
            continue
    return out


def create_model(name: str, **params: Any) -> Recommender:
    """A new, unfitted model; unknown parameters raise `InputError` listing the valid ones."""
    cls = model_class(name)
    valid = cls.param_names()
    unknown = [p for p in params if p not in valid]
    private = [p for p in unknown if p.startswith("dp_")]
    if private:
        # only models whose per-example gradients were checked take DP options
        able = [n for n, c in available_models().items() if "dp_epsilon" in c.param_names()]
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
