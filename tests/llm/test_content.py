"""Content recommender on a tiny catalog with known embeddings (served by a local
OpenAI-compatible endpoint), cold-start paths, the ANN path and persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.errors import InputError
from recsight.llm.content import ContentRecommender, recommend_for_text
from recsight.models.base import Recommender
from recsight.models.popular import MostPopular
from tests.llm.conftest import make_interactions

VECTORS = {
    "alpha": [1.0, 0.0, 0.0],
    "beta": [0.8, 0.6, 0.0],
    "gamma": [0.0, 1.0, 0.0],
    "delta": [0.0, 0.0, 1.0],
    "epsilon": [0.6, 0.0, 0.8],  # a new item: text, no events
    "spooky stories": [0.0, 0.0, 1.0],
}


@pytest.fixture
def tiny(stub):
    stub.vectors = VECTORS
    items = pd.DataFrame({"item_id": list("abcde"),
                          "title": ["alpha", "beta", "gamma", "delta", "epsilon"]})  # fmt: skip
    data = make_interactions(
        [("u1", "a", 0.0), ("u2", "a", 0.0), ("u2", "c", 30.0), ("u3", "d", 30.0)],
        items,
        ["u1", "u2", "u3"],
    )
    return stub, data


def fit(stub, data, **kw) -> ContentRecommender:
    return ContentRecommender(encoder="stub", encoder_url=stub.url, **kw).fit(data)


def test_known_nearest_neighbours(tiny):
    stub, data = tiny
    m = fit(stub, data, half_life_days=30.0)
    ids, scores = m.recommend(["u1"], k=4)
    # u1 has only "alpha": cosines beta 0.8, epsilon 0.6, gamma 0, delta 0
    assert list(ids[0][:2]) == ["b", "e"]
    assert np.allclose(scores[0], [0.8, 0.6, 0.0, 0.0], atol=1e-6)
    # u2: alpha 30 days before gamma with a 30-day half-life -> weights 0.5 and 1
    ids, scores = m.recommend(["u2"], k=3)
    norm = np.sqrt(0.5**2 + 1.0)
    assert list(ids[0]) == ["b", "e", "d"]
    assert np.allclose(scores[0], [(0.4 + 0.6) / norm, 0.3 / norm, 0.0], atol=1e-6)
    assert m.explain("u2", "b") == [("c", pytest.approx(0.6 / norm)),
                                    ("a", pytest.approx(0.4 / norm))]  # fmt: skip


def test_without_decay_weights_are_equal(tiny):
    stub, data = tiny
    m = fit(stub, data, half_life_days=None)
    _, scores = m.recommend(["u2"], k=1)
    assert scores[0, 0] == pytest.approx((0.8 + 0.6) / np.sqrt(2), abs=1e-6)


def test_cold_item_and_new_user_history(tiny):
    stub, data = tiny
    m = fit(stub, data)
    assert m.item_popularity_[4] == 0  # "e" has no events, yet it is recommended by its text
    ids, scores = m.recommend(["u3"], k=1)
    assert ids[0, 0] == "e" and scores[0, 0] == pytest.approx(0.8)
    ids, _ = m.recommend_for_history(["c", "unknown-id"], k=2)
    assert list(ids) == ["b", "a"]  # gamma: beta 0.6, alpha 0
    # the popularity baseline cannot reach the new item
    pop_ids, _ = MostPopular().fit(data).recommend(["u3"], k=3)
    assert "e" not in set(pop_ids[0][:2])


def test_free_text_user(tiny):
    stub, data = tiny
    m = fit(stub, data)
    ids, scores = recommend_for_text(m, "spooky stories", k=2)
    assert list(ids) == ["d", "e"] and np.allclose(scores, [1.0, 0.8])
    ids, _ = recommend_for_text(m, "spooky stories", k=2, candidates=["a", "e"])
    assert list(ids) == ["e", "a"]
    with pytest.raises(InputError, match="non-empty"):
        recommend_for_text(m, "  ", k=2)
    with pytest.raises(InputError, match="cannot read free text"):
        recommend_for_text(MostPopular().fit(data), "spooky", k=2)


def test_similar_items_and_save_load(tiny, tmp_path):
    stub, data = tiny
    m = fit(stub, data)
    ids, sims = m.similar_items("a", k=2)
    assert list(ids) == ["b", "e"] and np.allclose(sims, [0.8, 0.6])
    loaded = ContentRecommender.load(m.save(tmp_path / "m"))
    assert np.array_equal(loaded.score_all(np.arange(3)), m.score_all(np.arange(3)))
    assert loaded.encoder_key_ == "openai:stub"
    assert list(loaded.recommend_text("spooky stories", k=1)[0]) == ["d"]


def test_model_uses_the_store_cache(tiny, tmp_path):
    stub, data = tiny
    db = str(tmp_path / "store.duckdb")
    fit(stub, data, cache_db=db)
    n = len(stub.requests)
    fit(stub, data, cache_db=db)
    assert len(stub.requests) == n  # second fit: all five item texts from the cache


def test_no_item_text_is_an_input_error(tiny):
    stub, data = tiny
    data.item_features = data.item_features[[]]
    with pytest.raises(InputError, match="item text"):
        fit(stub, data)


def test_ann_path_matches_exact_ranking(stub):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    n = 1500
    titles = [f"w{i}" for i in range(n)]
    stub.vectors = {t: rng.normal(size=16).tolist() for t in titles}
    items = pd.DataFrame({"item_id": [str(i) for i in range(n)], "title": titles})
    events = [(f"u{u}", str(i), 0.0) for u in range(20) for i in rng.choice(n, 5, replace=False)]
    data = make_interactions(events, items, [f"u{u}" for u in range(20)])
    m = ContentRecommender(encoder="s", encoder_url=stub.url, ann_threshold=1000).fit(data)
    assert m.uses_ann
    users = [f"u{u}" for u in range(20)]
    ann_ids, ann_scores = m.recommend(users, k=10)
    exact_ids, exact_scores = Recommender.recommend(m, users, k=10)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ann_ids, exact_ids, strict=True)])
    assert overlap >= 0.95
    assert np.all(np.diff(ann_scores, axis=1) <= 1e-6)  # sorted
    seen = {(e[0], e[1]) for e in events}
    assert not any((u, i) in seen for u, row in zip(users, ann_ids, strict=True) for i in row)
