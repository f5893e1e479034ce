"""The registry is a static name -> "module:Class" table: complete, and resolvable."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import recsight
from recsight.errors import InputError
from recsight.extras import MissingExtraError
from recsight.models import Recommender
from recsight.models.registry import MODELS, create_model, model_class


@pytest.mark.parametrize("name", list(MODELS))
def test_every_entry_resolves_to_its_model(name):
    cls = model_class(name)
    assert issubclass(cls, Recommender)
    assert cls.name == name


def _all_recommender_classes() -> set[type]:
    for mod in pkgutil.walk_packages(recsight.__path__, "recsight."):
        if mod.name.endswith("__main__"):  # runs the CLI
            continue
        importlib.import_module(mod.name)
    out, todo = set(), [Recommender]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("recsight.") and "name" in vars(sub):
                out.add(sub)
    return out


def test_every_model_class_is_registered():
    registered = {model_class(n) for n in MODELS}
    missing = {f"{c.__module__}:{c.__qualname__}" for c in _all_recommender_classes()}
    missing -= {f"{c.__module__}:{c.__qualname__}" for c in registered}
    assert not missing, f"model classes missing from the registry: {sorted(missing)}"


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(InputError, match="unknown model 'nope'; valid: popular"):
        create_model("nope")


def test_missing_optional_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(MODELS, "fake_torch_model", "recsight_missing_torch_model:Model")
    real_import = importlib.import_module

    def fake_import(name, *args, **kwargs):
        if name == "recsight_missing_torch_model":
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(
        MissingExtraError, match=r"\[neural\] extra .*pip install 'recsight\[neural\]'"
    ):
        model_class("fake_torch_model")
