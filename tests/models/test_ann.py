"""ANN retrieval: exact when exhaustive, high recall by default, filters honoured."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.errors import InputError
from recsight.models import ann
from recsight.models.als import ALS
from recsight.models.ann import AnnIndex, ann_top_k, build_for, supports_ann
from recsight.models.knn import ItemKNN
from recsight.models.topk import id_keys, top_k
from tests.conftest import need
from tests.models.conftest import make_interactions


@pytest.fixture(scope="module")
def als_ml100k(data_dir):
    raw = np.loadtxt(need(data_dir / "ml-100k" / "u.data"), dtype=np.int64)
    data = make_interactions(raw[:, 0] - 1, raw[:, 1] - 1, event_type="view")
    model = ALS(factors=32, iterations=8, num_threads=1).fit(data)
    return model, build_for(model)


def test_search_orders_by_inner_product():
    rng = np.random.default_rng(0)
    # very unequal norms: an L2 search would favour items near the query, not long ones
    v = rng.normal(size=(300, 8)) * rng.uniform(0.1, 5.0, size=(300, 1))
    q = rng.normal(size=(5, 8))
    index = AnnIndex.build(v)
    found = index.search(q, 300)  # the whole catalog: the order is exact
    expected = np.argsort(-(q @ v.T), axis=1, kind="stable")
    assert np.array_equal(found[:, :20], expected[:, :20])


def test_exhaustive_index_gives_exact_results(als_ml100k):
    model, index = als_ml100k
    users = [f"u{u}" for u in range(0, 943, 5)]
    exact_ids, exact_scores = model.recommend(users, k=20)
    uidx = model.users_.index_of(users)
    ids, scores = ann_top_k(
        model,
        index,
        model.user_factors_[uidx],
        model.seen_[uidx],
        20,
        id_keys(users),
        min_candidates=model.n_items,
    )
    assert np.array_equal(ids, exact_ids)
    assert np.allclose(scores, exact_scores, rtol=1e-5, atol=1e-6)


def test_default_retrieval_recall_at_100(als_ml100k):
    model, index = als_ml100k
    users = [f"u{u}" for u in range(943)]
    uidx = model.users_.index_of(users)
    exact, _ = model.recommend(users, k=100)
    got, _ = ann_top_k(
        model, index, model.user_factors_[uidx], model.seen_[uidx], 100, id_keys(users)
    )
    recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(got, exact, strict=True)])
    assert recall >= 0.95


def test_filters_overfetch_until_k_items_remain(als_ml100k):
    model, index = als_ml100k
    allowed = np.zeros(model.n_items, dtype=bool)
    allowed[::97] = True  # 18 items allowed: the first search finds too few of them
    ids, scores = ann_top_k(
        model, index, model.user_factors_[:3], None, 10, id_keys(["a", "b", "c"]), allowed
    )
    assert all(i is not None for i in ids.ravel())
    for r in range(3):
        exact = model.item_factors_[allowed] @ model.user_factors_[r]
        assert np.allclose(scores[r], np.sort(exact)[::-1][:10], rtol=1e-5)


def row_by_row(model, index, queries, seen, k, user_keys, allowed=None):
    """Reference: each row searched, filtered and re-scored on its own, widening x4 until
    k candidates remain (what `ann_top_k` computes in blocks)."""
    n, width = len(queries), min(k, model.n_items)
    ids = np.full((n, width), None, dtype=object)
    scores = np.full((n, width), np.nan, dtype=np.float32)
    for r in range(n):
        row_seen = seen.indices[seen.indptr[r] : seen.indptr[r + 1]]
        wide = min(model.n_items, 4 * width + len(row_seen))
        while True:
            cand = index.search(queries[r : r + 1], wide)[0]
            cand = cand[(cand >= 0) & ~np.isin(cand, row_seen)]
            if allowed is not None:
                cand = cand[allowed[cand]]
            if len(cand) >= width or wide >= model.n_items:
                break
            wide = min(model.n_items, wide * 4)
        exact = (model.item_factors_[cand] @ queries[r]).astype(np.float32)
        cols, vals = top_k(exact[None], width, user_keys[r : r + 1], model.item_keys_[cand])
        ok = cols[0] >= 0
        ids[r, : ok.sum()] = model.items_.ids[cand[cols[0][ok]]]
        scores[r, : ok.sum()] = vals[0][ok]
    return ids, scores


def test_blocks_give_what_row_by_row_retrieval_gives(als_ml100k, monkeypatch):
    model, index = als_ml100k
    # small blocks, so rows of different history lengths are split across many searches
    monkeypatch.setattr(ann, "BLOCK_CANDIDATES", 2000)
    users = [f"u{u}" for u in range(0, 943, 3)]
    uidx = model.users_.index_of(users)
    allowed = np.ones(model.n_items, dtype=bool)
    allowed[::3] = False
    args = (model.user_factors_[uidx], model.seen_[uidx], 20, id_keys(users))
    for mask in (None, allowed):
        ids, scores = ann_top_k(model, index, *args, allowed=mask)
        ref_ids, ref_scores = row_by_row(model, index, *args, allowed=mask)
        assert np.array_equal(ids, ref_ids)
        assert np.allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_save_load_and_refusals(als_ml100k, tmp_path, blocks):
    model, index = als_ml100k
    index.save(tmp_path)
    again = AnnIndex.load(tmp_path)
    assert again.n_items == model.n_items
    assert np.array_equal(
        again.search(model.user_factors_[:5], 50), index.search(model.user_factors_[:5], 50)
    )
    assert AnnIndex.load(tmp_path / "nothing-here") is None
    knn = ItemKNN().fit(blocks)
    assert supports_ann(model) and not supports_ann(knn)
    with pytest.raises(InputError, match="als and bpr"):
        build_for(knn)
    small = ALS(factors=4, iterations=2).fit(blocks)
    with pytest.raises(InputError, match="rebuild"):
        ann_top_k(small, index, small.user_factors_[:1], None, 5, id_keys(["x"]))


def test_filter_reads_any_rows_of_the_seen_matrix():
    # `_filter` gathers the rows' seen items from the CSR arrays itself: the same as
    # filtering by scipy's row slice, for rows in any order, repeated, empty or not
    import scipy.sparse as sp

    rng = np.random.default_rng(3)
    seen = sp.random(40, 500, density=0.05, format="csr", random_state=4, dtype=np.float32)
    seen[7] = 0  # an empty row
    seen.eliminate_zeros()
    rows = np.array([7, 3, 39, 3, 0, 21])
    found = rng.integers(-1, 500, size=(len(rows), 60))
    found[:, :5] = seen[rows].toarray().argmax(axis=1)[:, None]  # seen items among the found
    allowed = rng.random(500) < 0.8
    cand, keep = ann._filter(found, rows, seen, allowed)
    dense = seen[rows].toarray() > 0
    expected = (found >= 0) & ~np.take_along_axis(dense, np.maximum(found, 0), axis=1)
    expected &= allowed[np.maximum(found, 0)]
    assert np.array_equal(cand, np.maximum(found, 0))
    assert np.array_equal(keep, expected)
    assert not keep[1:, :5].any()  # each non-empty row's seen item, dropped
