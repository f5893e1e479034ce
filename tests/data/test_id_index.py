"""IdIndex: the external id <-> index bijection every model and split uses."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.data.dataset import IdIndex


def test_id_index_checks_uniqueness_unless_known_and_builds_its_lookup_lazily():
    with pytest.raises(ValueError, match="unique"):
        IdIndex(["a", "b", "a"])
    index = IdIndex(["a", "b", "c"], known_unique=True)
    assert index._pd_index is None  # no hashing of the ids until a lookup needs it
    assert index.index_of(["c", "x"] * 200, missing="ignore").tolist() == [2, -1] * 200
    assert "b" in index and index._pd_index is not None


def test_a_loaded_model_does_not_hash_its_user_ids(tmp_path):
    from recsight.models import create_model
    from recsight.models.base import Recommender
    from tests.models.conftest import make_interactions

    data = make_interactions(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    create_model("popular").fit(data).save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.users_._pd_index is None and loaded.users_ == data.users
    assert loaded.recommend(["u1"], k=2)[0].tolist() == [["i0", "i2"]]


def test_a_loaded_pipeline_has_built_its_item_lookup(tmp_path):
    from recsight.models import create_model
    from recsight.serving.pipeline import Pipeline
    from tests.models.conftest import make_interactions

    data = make_interactions(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]))
    create_model("popular").fit(data).save(tmp_path / "m")
    pipe = Pipeline.load(tmp_path / "m")
    assert pipe.main.items_._dict == {"i0": 0, "i1": 1, "i2": 2}  # not left to a request
