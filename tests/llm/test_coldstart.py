"""Hybrid model and the cold-item split: projection math, new items, text-only users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.data.splits import split
from recsight.errors import InputError
from recsight.evaluation.protocol import evaluate_ranking
from recsight.llm.coldstart import (
    CandidateScorer,
    HybridRecommender,
    cold_item_split,
    history_bucket_edges,
    holdout_per_user,
    ridge_projection,
)
from recsight.llm.content import ContentRecommender, recommend_for_text
from tests.llm.conftest import make_interactions


def test_ridge_projection_matches_closed_form():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 3))
    w = ridge_projection(x, y, 2.0)
    # reference: least squares on the augmented system [x; sqrt(reg) I] w = [y; 0]
    aug_x = np.vstack([x, np.sqrt(2.0) * np.eye(5)])
    aug_y = np.vstack([y, np.zeros((5, 3))])
    assert np.allclose(w, np.linalg.lstsq(aug_x, aug_y, rcond=None)[0], atol=1e-5)


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


# -- fitted blend weights -----------------------------------------------------------------------
def topic_world(stub, n_topics, items_per_topic, n_users, lengths, text_noise, zipf=True):
    """Users each like one topic and have `lengths(u)` distinct items of it (one event each,
    drawn with Zipf-like popularity within the topic, or uniformly); item text is its topic's
    direction plus `text_noise`-scaled noise (a large noise makes the text carry nothing)."""
    rng = np.random.default_rng(0)
    stub.dim = n_topics + 4
    ids = [f"t{t}i{i}" for t in range(n_topics) for i in range(items_per_topic)]
    for n, item in enumerate(ids):
        topic = np.eye(stub.dim)[n // items_per_topic]
        stub.vectors[item] = (topic + text_noise * rng.normal(size=stub.dim)).tolist()
    items = pd.DataFrame({"item_id": ids, "title": ids})
    events = []
    for u in range(n_users):
        t = u % n_topics
        pool = ids[t * items_per_topic : (t + 1) * items_per_topic]
        p = 1.0 / np.arange(1, items_per_topic + 1) ** float(zipf)
        chosen = rng.choice(pool, lengths(u), replace=False, p=p / p.sum())
        events += [(f"u{u}", str(i), float(d)) for d, i in enumerate(chosen)]
    return make_interactions(events, items, [f"u{u}" for u in range(n_users)])


def test_noise_text_gets_weight_zero(stub):
    # co-occurrence carries the topics, the text is pure noise: every weight goes to the
    # collaborative part, in each of the three history-length buckets
    data = topic_world(stub, 4, 15, 240, lambda u: 4 + u % 9, text_noise=100.0)
    m = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url).fit(data)
    assert len(m.bucket_edges_) == 2 and (m.bucket_valid_users_ >= 50).all()
    assert m.bucket_weights_.tolist() == [0.0, 0.0, 0.0] and m.content_weight_ == 0.0
    # and the fitted model ranks exactly as its collaborative part
    cf = HybridRecommender(factors=8, content_weight=0.0, encoder="s", encoder_url=stub.url)
    users = data.users.ids[:30].tolist()
    assert (m.recommend(users, k=10)[0] == cf.fit(data).recommend(users, k=10)[0]).all()


def test_noise_collaborative_part_gets_weight_one(stub):
    # 600 equally popular items for 120 users with 5 items each: items rarely co-occur, so the
    # collaborative part is noise, while the text names each item's topic: the weight goes to
    # the text
    data = topic_world(stub, 3, 200, 120, lambda u: 5, text_noise=0.05, zipf=False)
    m = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url).fit(data)
    assert m.content_weight_ == 1.0 and m.bucket_weights_.tolist() == [1.0]


def test_weights_deterministic_for_a_seed(stub):
    data = topic_world(stub, 4, 15, 240, lambda u: 4 + u % 9, text_noise=1.0)
    a = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url, seed=5).fit(data)
    b = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url, seed=5).fit(data)
    for key in ("bucket_edges_", "bucket_weights_", "valid_ndcg_", "cold_valid_ndcg_"):
        assert np.array_equal(getattr(a, key), getattr(b, key), equal_nan=True), key
    assert a.cold_weight_ == b.cold_weight_
    assert np.array_equal(a.score_all(np.arange(20)), b.score_all(np.arange(20)))


def test_cold_items_scored_with_their_fitted_weight(stub):
    # 4 items per topic never occur in training: they still get finite scores, mixed by the
    # new-item weight, and a user's own topic comes first among them
    data = topic_world(stub, 4, 15, 240, lambda u: 4 + u % 7, text_noise=0.3)
    cold_ids = [f"t{t}i{i}" for t in range(4) for i in range(11, 15)]
    cold = data.items.index_of(cold_ids)
    train = data.subset(~np.isin(data.item_idx, cold))
    m = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url).fit(train)
    assert m.cold_valid_ndcg_.shape == (11,) and 0.0 <= m.cold_weight_ <= 1.0
    scores = m.score_all(np.arange(40))
    assert np.isfinite(scores[:, cold]).all()
    ids, _ = m.recommend([f"u{u}" for u in range(8)], k=1, candidates=cold_ids)
    assert [i[:2] for i in ids[:, 0]] == [f"t{u % 4}" for u in range(8)]


def test_bucket_weights_apply_by_history_length(stub):
    # weights set by hand: short histories rank by the collaborative part alone, long ones by
    # the text alone, exactly as the pure parts do
    data = topic_world(stub, 4, 15, 80, lambda u: 3 if u < 40 else 10, text_noise=1.0)
    m = HybridRecommender(factors=8, content_weight=0.5, encoder="s", encoder_url=stub.url)
    m.fit(data)
    m.bucket_edges_, m.bucket_weights_ = np.array([5.0]), np.array([0.0, 1.0])
    cf = HybridRecommender(factors=8, content_weight=0.0, encoder="s", encoder_url=stub.url)
    content = ContentRecommender(encoder="s", encoder_url=stub.url)
    short, long = ["u0", "u1", "u2"], ["u40", "u41", "u42"]
    assert (m.recommend(short, k=15)[0] == cf.fit(data).recommend(short, k=15)[0]).all()
    assert (m.recommend(long, k=15)[0] == content.fit(data).recommend(long, k=15)[0]).all()


def test_history_bucket_edges_and_holdout(stub):
    assert history_bucket_edges(np.array([0, 1, 2, 3, 4, 5, 6]), 3).tolist() == [2.0, 4.0]
    assert history_bucket_edges(np.array([5, 5, 5]), 3).tolist() == []
    assert history_bucket_edges(np.array([1, 1, 1, 7]), 2).tolist() == [1.0]
    assert history_bucket_edges(np.array([1, 9]), 1).tolist() == []
    data = topic_world(stub, 2, 30, 40, lambda u: 1 + u % 20, text_noise=1.0)
    held = holdout_per_user(data, 0.1, seed=0)
    n = np.bincount(data.user_idx, minlength=40)
    out = np.bincount(data.user_idx[held], minlength=40)
    expected = np.where(n >= 2, np.clip(np.round(0.1 * n), 1, n - 1), 0)
    assert np.array_equal(out, expected)
    assert np.array_equal(held, holdout_per_user(data, 0.1, seed=0))


def test_load_model_saved_before_fitted_weights(stub, tmp_path):
    data = two_topic_world(stub)
    m = HybridRecommender(factors=2, content_weight=0.2, encoder="s", encoder_url=stub.url)
    path = m.fit(data).save(tmp_path / "h")
    with np.load(path / "arrays.npz") as npz:
        old = {k: npz[k] for k in npz.files if not k.startswith(("bucket", "cold_", "valid_",
                                                                  "content_weight_"))}  # fmt: skip
    np.savez(path / "arrays.npz", **old)
    loaded = HybridRecommender.load(path)
    assert loaded.bucket_weights_.tolist() == [0.2] and loaded.cold_weight_ == 0.2
    assert np.allclose(loaded.score_all(np.arange(5)), m.score_all(np.arange(5)))


def test_new_items_offset_fitted_where_held_out_items_are_new(stub):
    # a product log where most items are bought once: each user has 3 items of a popular topic
    # pool and 4 items nobody else has (with the topic's text), so most held-out items (in
    # validation as in the test) have no training event; the new items' scores need lifting
    # against the learned ones, and the fitted offset does it
    rng = np.random.default_rng(0)
    n_topics, pool, n_users = 4, 30, 240
    stub.dim = n_topics + 4
    shared = [f"t{t}i{i}" for t in range(n_topics) for i in range(pool)]
    own = {u: [f"u{u}own{k}" for k in range(4)] for u in range(n_users)}
    for n, item in enumerate(shared + [i for u in range(n_users) for i in own[u]]):
        topic = n // pool if n < len(shared) else int(item[1:].split("own")[0]) % n_topics
        stub.vectors[item] = (np.eye(stub.dim)[topic] + 0.5 * rng.normal(size=stub.dim)).tolist()
    ids = shared + [i for u in range(n_users) for i in own[u]]
    p = 1.0 / np.arange(1, pool + 1)
    events = []
    for u in range(n_users):
        t = u % n_topics
        popular = rng.choice(shared[t * pool : (t + 1) * pool], 3, replace=False, p=p / p.sum())
        order = rng.permutation(list(popular) + own[u])
        events += [(f"u{u}", str(i), float(d)) for d, i in enumerate(order)]
    items = pd.DataFrame({"item_id": ids, "title": ids})
    data = make_interactions(events, items, [f"u{u}" for u in range(n_users)])
    parts = split(data, "leave_last:1")
    m = HybridRecommender(factors=8, encoder="s", encoder_url=stub.url).fit(parts.fit_part)
    assert m.cold_offset_ > 0
    fitted = evaluate_ranking(m, parts.fit_part, parts.test, ks=(10,), metrics=("ndcg",))
    m.cold_offset_ = 0.0
    without = evaluate_ranking(m, parts.fit_part, parts.test, ks=(10,), metrics=("ndcg",))
    assert fitted.summary["ndcg@10"] > without.summary["ndcg@10"]
