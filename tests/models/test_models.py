"""Models recover planted structure, agree with reference math, and keep the API contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics.pairwise import cosine_similarity

from recsight.errors import InputError
from recsight.models import EASE, BiasedMF, ItemKNN, create_model, load_model, model_class
from recsight.models.base import FORMAT_VERSION

# the classic models; neural and text-aware ones have their own tests (neural/, tests/llm)
CLASSIC = ["popular", "userknn", "itemknn", "biased_mf", "als", "bpr", "ease", "dlae", "edlae"]
IMPLICIT = [n for n in CLASSIC if not model_class(n).explicit]
SMALL = {"als": {"factors": 4, "iterations": 15, "num_threads": 1},
         "bpr": {"factors": 8, "iterations": 50, "num_threads": 1},
         "biased_mf": {"factors": 4, "iterations": 8},
         "ease": {"reg": 10.0}, "dlae": {"dropout": 0.3, "reg": 5.0},
         "edlae": {"dropout": 0.3, "reg": 5.0}}  # fmt: skip


def fitted(name: str, data):
    return create_model(name, **SMALL.get(name, {})).fit(data)


@pytest.mark.parametrize("name", [n for n in IMPLICIT if n != "popular"])
def test_recommends_within_the_users_block(blocks, name):
    m = fitted(name, blocks)
    users = [f"u{u}" for u in range(40)]
    ids, scores = m.recommend(users, k=3)
    idx = m.items_.index_of(ids.ravel()).reshape(ids.shape)
    in_a = idx < 15
    assert in_a[:20].all() and not in_a[20:].any()
    assert ids.shape == scores.shape == (40, 3) and scores.dtype == np.float32
    assert (np.diff(scores, axis=1) <= 0).all()


def test_popular_counts_distinct_users_and_decays(blocks):
    m = fitted("popular", blocks)
    counts = np.bincount(np.unique(blocks.user_idx * 100 + blocks.item_idx) % 100, minlength=30)
    np.testing.assert_array_equal(m.popularity_, counts)
    d = create_model("popular", half_life_days=1.0).fit(blocks)
    # events are an hour apart: the most recent item's latest pair counts fully
    age = (blocks.timestamp.max() - blocks.timestamp) / 86400.0
    i = blocks.item_idx[-1]
    assert d.popularity_[i] == pytest.approx(
        sum(0.5 ** age[(blocks.item_idx == i) & (blocks.user_idx == u)].min()
            for u in np.unique(blocks.user_idx[blocks.item_idx == i])), rel=1e-5)  # fmt: skip


def test_biased_mf_recovers_planted_low_rank_ratings(low_rank_ratings):
    train, test = low_rank_ratings
    m = BiasedMF(factors=4, iterations=10).fit(train)
    rmse = np.sqrt(np.mean((m.predict_idx(test.user_idx, test.item_idx) - test.value) ** 2))
    baseline = np.sqrt(np.mean((train.value.mean() - test.value) ** 2))
    assert rmse < 0.35 * baseline
    users, items = ["u0", "u1"], ["i3", "i5"]
    np.testing.assert_allclose(m.predict(users, items), m.score(users, items))


def test_ease_matches_closed_form():
    rng = np.random.default_rng(3)
    x = (rng.random((30, 12)) < 0.3).astype(np.float64)
    from tests.models.conftest import make_interactions

    u, i = np.nonzero(x)
    m = EASE(reg=5.0).fit(make_interactions(u, i, n_users=30, n_items=12))
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(12))
    b = np.eye(12) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(m.item_weights_, b, atol=1e-6)
    np.testing.assert_allclose(m.score_all(np.arange(30)), x @ b, atol=1e-5)


def test_itemknn_cosine_matches_sklearn(blocks):
    m = ItemKNN(neighbors=30, similarity="cosine").fit(blocks)
    x = m.seen_.toarray()
    ref = cosine_similarity(x.T)
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(m.similarity_.toarray(), ref, atol=1e-6)
    # top-N keeps exactly each row's N largest
    m5 = ItemKNN(neighbors=5).fit(blocks)
    for r in range(30):
        kept = m5.similarity_[r].toarray().ravel()
        assert (kept > 0).sum() == 5
        assert kept[kept > 0].min() >= np.sort(ref[r])[-5] - 1e-6


def test_itemknn_shrinkage_and_pearson(blocks):
    shrunk = ItemKNN(neighbors=30, shrinkage=10.0).fit(blocks).similarity_.toarray()
    plain = ItemKNN(neighbors=30).fit(blocks).similarity_.toarray()
    b = (ItemKNN(neighbors=30).fit(blocks).seen_ > 0).astype(float)
    co = (b.T @ b).toarray()
    np.testing.assert_allclose(shrunk, plain * co / (co + 10.0), atol=1e-6)
    ratings = blocks.subset(np.arange(len(blocks)))
    ratings.value = np.random.default_rng(0).integers(1, 6, len(ratings)).astype(np.float32)
    ratings.event_types = ("rating",)
    m = ItemKNN(neighbors=30, similarity="pearson").fit(ratings)
    x = m.seen_.toarray()
    cent = np.where(x > 0, x - (x.sum(0) / (x > 0).sum(0))[None, :], 0.0)
    ref = cosine_similarity(cent.T)
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(m.similarity_.toarray(), np.clip(ref, 0, None), atol=1e-5)


@pytest.mark.parametrize("name", CLASSIC)
def test_save_load_round_trip(blocks, low_rank_ratings, name, tmp_path):
    data = low_rank_ratings[0] if model_class(name).explicit else blocks
    m = fitted(name, data)
    m.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["name"] == name and cfg["format_version"] == FORMAT_VERSION
    back = load_model(tmp_path / "m")
    assert type(back) is type(m) and back.get_params() == m.get_params()
    users = list(data.users.ids[:10])
    a, b = m.recommend(users, k=5), back.recommend(users, k=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    hist = list(data.items.ids[:4])
    np.testing.assert_array_equal(m.recommend_for_history(hist)[0],
                                  back.recommend_for_history(hist)[0])  # fmt: skip


def test_load_rejects_other_format_version(blocks, tmp_path):
    fitted("popular", blocks).save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="format version"):
        load_model(tmp_path / "m")
    with pytest.raises(InputError, match="not a saved model"):
        load_model(tmp_path)


@pytest.mark.parametrize("name", CLASSIC)
def test_history_fold_in_matches_trained_user(blocks, low_rank_ratings, name):
    """Exact for popular/kNN/EASE/biased MF/ALS (whose final user step is the fold-in);
    BPR's projection only has to agree on most of the top 5."""
    data = low_rank_ratings[0] if model_class(name).explicit else blocks
    m = fitted(name, data)
    for u in range(5):
        row = m.seen_[u]
        hist = list(m.items_.ids[row.indices])
        ids, scores = m.recommend([m.users_.ids[u]], k=5)
        h_ids, h_scores = m.recommend_for_history(
            hist, k=5, weights=row.data, user=m.users_.ids[u]
        )  # the same user keys the same tie order
        if name == "bpr":
            assert len(set(ids[0]) & set(h_ids)) >= 3
        else:
            np.testing.assert_array_equal(ids[0], h_ids)
            np.testing.assert_allclose(scores[0], h_scores, rtol=1e-4, atol=1e-5)
        direct = m.score_history(sp.csr_matrix(row))
        if name != "bpr":
            np.testing.assert_allclose(direct, m.score_all(np.array([u])), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name", CLASSIC)
def test_exclude_seen_candidates_and_unknowns(blocks, low_rank_ratings, name):
    data = low_rank_ratings[0] if model_class(name).explicit else blocks
    m = fitted(name, data)
    seen = set(m.items_.ids[m.seen_[0].indices])
    ids, _ = m.recommend(["u0"], k=5)
    assert not seen & set(ids[0])
    ids, _ = m.recommend(["u0"], k=m.n_items, exclude_seen=False)
    assert set(ids[0]) == set(m.items_.ids)
    cands = ["i1", "i2", "i20", "nope"]
    ids, scores = m.recommend(["u0"], k=4, exclude_seen=False, candidates=cands)
    assert set(ids[0][:3]) == {"i1", "i2", "i20"} and ids[0][3] is None and np.isnan(scores[0][3])
    h_ids, _ = m.recommend_for_history(["i1", "zzz"], k=3, candidates=["i1", "i2", "i20"])
    assert "i1" not in set(h_ids) and set(h_ids[:2]) == {"i2", "i20"}
    with pytest.raises(InputError, match="ghost"):
        m.recommend(["u0", "ghost"])
    # empty history: popularity order
    e_ids, _ = m.recommend_for_history([], k=3)
    pop = m.item_popularity_
    np.testing.assert_array_equal(pop[m.items_.index_of(e_ids)], np.sort(pop)[::-1][:3])


@pytest.mark.parametrize("name", [n for n in IMPLICIT if n != "popular"])
def test_explain_names_history_items_that_sum_to_the_score(blocks, name):
    m = fitted(name, blocks)
    ids, scores = m.recommend(["u3"], k=1)
    parts = m.explain("u3", ids[0][0], top=100)
    hist = set(m.items_.ids[m.seen_[3].indices])
    assert parts and {p[0] for p in parts} <= hist
    assert [p[1] for p in parts] == sorted((p[1] for p in parts), reverse=True)
    if name in ("itemknn", "userknn", "ease", "dlae", "edlae", "als"):
        # contributions decompose the score exactly (no negative terms left out here)
        total = m._contributions(m.seen_[3].indices, m.seen_[3].data,
                                 int(m.items_.index_of(ids[0][0])[0])).sum()  # fmt: skip
        assert total == pytest.approx(scores[0][0], rel=1e-3)


def test_similar_items_stay_in_block(blocks):
    for name in ("itemknn", "ease", "als"):
        ids, _ = fitted(name, blocks).similar_items("i2", k=3)
        assert "i2" not in ids and all(int(i[1:]) < 15 for i in ids)


def test_unknown_model_and_params():
    with pytest.raises(InputError, match="valid: popular"):
        create_model("svd")
    with pytest.raises(InputError, match="valid: .*factors"):
        create_model("als", factorz=3)
    with pytest.raises(InputError, match="neighbors"):
        ItemKNN().set_params(k=3)
    assert ItemKNN(neighbors=7).get_params()["neighbors"] == 7


def test_ease_refuses_a_catalog_that_cannot_fit(monkeypatch):
    import psutil

    from recsight.models.ease import check_memory

    class Mem:
        available = 8 * 2**30

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem())
    check_memory(10_000)  # 4 x 10k^2 x 8 B = 3.2 GB fits in 8 GB
    with pytest.raises(InputError, match=r"EASE needs about 90\.9 GB for 55,233 items"):
        check_memory(55_233)


def test_recommend_chunks_bound_scores_held_and_change_nothing(blocks, monkeypatch):
    import recsight.models.base as base

    assert base.recommend_chunk_rows(1_000_000) == 67  # 2^26 scores: 256 MB of float32
    assert base.recommend_chunk_rows(100) == base.RECOMMEND_MAX_ROWS
    assert base.recommend_chunk_rows(10**9) == 1
    m = fitted("ease", blocks)
    users = [f"u{u}" for u in range(40)]
    whole = m.recommend(users, k=5)
    pairs = m.score(users, ["i0"] * 40)
    held = []
    score_all = m.score_all

    def spy(idx):
        held.append(len(idx))
        return score_all(idx)

    monkeypatch.setattr(base, "RECOMMEND_SCORES", 7 * len(m.items_))
    monkeypatch.setattr(m, "score_all", spy)
    chunked = m.recommend(users, k=5)
    assert max(held) == 7 and sum(held) == 40
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])
    np.testing.assert_array_equal(m.score(users, ["i0"] * 40), pairs)


def test_histories_matrix_is_one_row_per_history(blocks):
    """Batched histories: unknown ids dropped, repeats summed, empty histories empty rows;
    equal to the rows built one by one, and the batch scores equal single scores."""
    m = fitted("als", blocks)
    histories = [["i1", "i2", "i1", "nope"], [], ["nope"], ["i20"], ["i3"]]
    weights = [[1.0, 2.0, 0.5, 9.0], [], [1.0], None, [3.0]]
    h = m._histories_matrix(histories, weights)
    assert h.shape == (5, m.n_items) and h.has_canonical_format
    i1, i2, i3, i20 = m.items_.index_of(["i1", "i2", "i3", "i20"])
    expected = sp.lil_matrix((5, m.n_items), dtype=np.float32)
    expected[0, i1], expected[0, i2], expected[4, i3] = 1.5, 2.0, 3.0
    expected[3, i20] = m._history_default_weight()
    np.testing.assert_array_equal(h.toarray(), expected.toarray())
    singles = sp.vstack([m._history_matrix(i, w) for i, w in zip(histories, weights, strict=True)])
    np.testing.assert_array_equal(h.toarray(), singles.toarray())
    scores, seen = m.score_histories(histories, weights)
    for row, (items, w) in enumerate(zip(histories, weights, strict=True)):
        one, _ = m.score_histories([items], [w])
        np.testing.assert_allclose(scores[row], one[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="weights: expected 2 values"):
        m._histories_matrix([["i1", "i2"]], [[1.0]])
