"""Hybrid model and the cold-item split: projection math, new items, text-only users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.errors import InputError
from recsight.evaluation.protocol import evaluate_ranking
from recsight.llm.coldstart import (
    CandidateScorer,
    HybridRecommender,
    cold_item_split,
    ridge_projection,
    zscore_rows,
)
from recsight.llm.content import recommend_for_text
from tests.llm.conftest import make_interactions


def test_ridge_projection_matches_closed_form():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 3))
    w = ridge_projection(x, y, 2.0)
    # reference: least squares on the augmented system [x; sqrt(reg) I] w = [y; 0]
    aug_x = np.vstack([x, np.sqrt(2.0) * np.eye(5)])
    aug_y = np.vstack([y, np.zeros((5, 3))])
    assert np.allclose(w, np.linalg.lstsq(aug_x, aug_y, rcond=None)[0], atol=1e-5)


def test_zscore_rows():
    z = zscore_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert np.allclose(z[0], [-1.2247449, 0.0, 1.2247449]) and not z[1].any()


def two_topic_world(stub):
    """Two topics (x: items 0-9, y: items 10-19); users like one topic; items 9 and 19 get
    no events (new items) but have topic text."""
    rng = np.random.default_rng(0)
    titles = [f"x{i}" for i in range(10)] + [f"y{i}" for i in range(10)]
    for t in titles:
        base = np.array([1.0, 0.0]) if t[0] == "x" else np.array([0.0, 1.0])
        stub.vectors[t] = (np.r_[base, 0.1 * rng.normal(size=4)]).tolist()
    stub.vectors["I love y things"] = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    items = pd.DataFrame({"item_id": [str(i) for i in range(20)], "title": titles})
    events = []
    for u in range(40):
        topic = range(0, 9) if u % 2 == 0 else range(10, 19)
        events += [(f"u{u}", str(i), 0.0) for i in rng.choice(list(topic), 4, replace=False)]
    return make_interactions(events, items, [f"u{u}" for u in range(40)])


def test_hybrid_reaches_new_items_and_text_users(stub):
    data = two_topic_world(stub)
    m = HybridRecommender(factors=2, encoder="s", encoder_url=stub.url).fit(data)
    assert m.item_popularity_[[9, 19]].sum() == 0
    # the new items got factors from their text, close to their topic's warm items
    f = m.item_factors_
    assert np.corrcoef(f[9], f[:9].mean(axis=0))[0, 1] > 0.9
    assert np.corrcoef(f[19], f[10:19].mean(axis=0))[0, 1] > 0.9
    # among new items only, a y-user gets the y item first
    ids, _ = m.recommend(["u1"], k=1, candidates=["9", "19"])
    assert ids[0, 0] == "19"
    # a new user with a handful of x events gets x items first
    ids, _ = m.recommend_for_history(["0", "1", "2"], k=5)
    assert all(int(i) < 10 for i in ids)
    # a text-only user
    ids, _ = recommend_for_text(m, "I love y things", k=10)
    assert all(int(i) >= 10 for i in ids)


def test_hybrid_save_load_and_params(stub, tmp_path):
    data = two_topic_world(stub)
    m = HybridRecommender(factors=2, encoder="s", encoder_url=stub.url).fit(data)
    loaded = HybridRecommender.load(m.save(tmp_path / "h"))
    assert np.allclose(loaded.score_all(np.arange(5)), m.score_all(np.arange(5)))
    with pytest.raises(InputError, match="content_weight"):
        HybridRecommender(content_weight=2.0, encoder="s", encoder_url=stub.url).fit(data)


def test_cold_item_split_invariants(stub):
    data = two_topic_world(stub)
    sp = cold_item_split(data, cold_share=0.25, warm_test_share=0.2, seed=3)
    cold = set(sp.cold_items.tolist())
    assert len(cold) == round(0.25 * len(np.unique(data.item_idx)))
    assert not cold & set(sp.train.item_idx.tolist())
    assert set(sp.test_cold.item_idx.tolist()) <= cold
    assert not cold & set(sp.test_warm.item_idx.tolist())
    assert len(sp.train) + len(sp.test_cold) + len(sp.test_warm) == len(data)
    train_pairs = set(zip(sp.train.user_idx, sp.train.item_idx, strict=True))
    assert not train_pairs & set(zip(sp.test_warm.user_idx, sp.test_warm.item_idx, strict=True))


def test_candidate_scorer_ranks_only_cold_items(stub):
    data = two_topic_world(stub)
    sp = cold_item_split(data, cold_share=0.25, warm_test_share=0.0, seed=3)
    m = HybridRecommender(factors=2, encoder="s", encoder_url=stub.url).fit(sp.train)
    scores = CandidateScorer(m, sp.cold_items).score_all(np.arange(4))
    assert np.isfinite(scores[:, sp.cold_items]).all()
    assert np.isneginf(np.delete(scores, sp.cold_items, axis=1)).all()
    r = evaluate_ranking(CandidateScorer(m, sp.cold_items), sp.train, sp.test_cold, ks=(3,))
    assert r.summary["recall@3"] > 0.5  # topic text carries the cold items
