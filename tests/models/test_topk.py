"""The shared top-k routine and tie rule: known answers, invariants, and agreement between
every path that ranks (recommend, the evaluator, training validation)."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import need

from recsight.data.ingest import ingest
from recsight.data.splits import split
from recsight.data.store import Store
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.neural.training import ranking_ndcg
from recsight.models.topk import id_keys, target_ranks, tie_keys, top_k


def _full_sort(scores, ukeys, ikeys):
    """Reference: sort the whole row by (-score, tie key)."""
    out = []
    for r in range(scores.shape[0]):
        keys = tie_keys(ukeys[r], ikeys)
        out.append(np.lexsort((keys, -scores[r])))
    return np.array(out)


def test_id_keys_are_stable_and_string_based():
    a = id_keys([42, "x", "42"])
    assert a[0] == a[2] and a[0] != a[1]
    # a fixed value: the same in every process and version (Spark executors rely on it)
    assert id_keys(["item-1"])[0] == id_keys(np.array(["item-1"], dtype=object))[0]
    np.testing.assert_array_equal(id_keys(["u1", "u2"]), id_keys(["u1", "u2"]))


def test_top_k_matches_full_sort_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # heavy ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    ukeys = id_keys([f"u{i}" for i in range(50)])
    ikeys = id_keys([f"i{j}" for j in range(40)])
    cols, vals = top_k(scores, 7, ukeys, ikeys)
    ref = _full_sort(scores, ukeys, ikeys)[:, :7]
    np.testing.assert_array_equal(cols, ref)
    np.testing.assert_array_equal(vals, np.take_along_axis(scores, ref, axis=1))


def test_prefiltered_top_k_of_a_large_catalog_equals_the_full_sort(monkeypatch):
    """Catalogs from 32,768 columns take the threshold prefilter; the lists must be the
    full sort's, with ties, masks, NaN, rows with fewer than k finite scores, a row where
    everything ties (too many candidates: the full path) and per-row item keys."""
    from recsight.models import topk

    monkeypatch.setattr(topk, "_MAX_CANDIDATES", 20_000)
    rng = np.random.default_rng(3)
    n, m, k = 12, topk.PREFILTER_MIN_COLUMNS + 5, 10
    scores = rng.integers(0, 50_000, size=(n, m)).astype(np.float32)
    scores[0] = rng.integers(0, 3, size=m)  # huge ties at the threshold
    scores[1] = 7.0  # everything tied: more candidates than the prefilter takes
    scores[2, :] = -np.inf
    scores[2, [5, 900, 30_000]] = [1.0, 2.0, 2.0]  # fewer than k finite scores
    scores[3, rng.random(m) < 0.5] = -np.inf
    scores[4, rng.random(m) < 0.01] = np.nan
    scores[5, : m // 2] = -np.inf  # the best items all outside the first half
    scores[6, ::16] = 0.0  # the strided sample sees only low scores
    stride = m // topk._SAMPLE_COLUMNS
    scores[7, ::stride] += 1e6  # the whole top k lies in the sample: threshold = k-th best
    scores[8] = 0.0  # the k-th best is tied with unsampled columns
    scores[8, 1:300] = 5.0
    scores[8, ::stride][:9] = 10.0
    scores[8, ::stride][9:40] = 5.0
    ukeys = id_keys([f"u{i}" for i in range(n)])
    ikeys = id_keys([f"i{j}" for j in range(m)])
    cols, vals = top_k(scores, k, ukeys, ikeys)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    ref = _full_sort(clean, ukeys, ikeys)[:, :k]
    ref_vals = np.take_along_axis(clean, ref, axis=1)
    finite = np.isfinite(ref_vals)
    np.testing.assert_array_equal(cols[finite], ref[finite])
    np.testing.assert_array_equal(vals[finite], ref_vals[finite])
    assert (cols[~finite] == -1).all() and np.isnan(vals[~finite]).all()
    assert finite[2].sum() == 3
    # the same rows through the full path, and with per-row item keys
    full = topk._top_k_rows(clean, k, k, ukeys, ikeys, topk.TIE_SEED)
    np.testing.assert_array_equal(cols, full[0])
    per_row = np.broadcast_to(ikeys, (n, m))
    np.testing.assert_array_equal(top_k(scores, k, ukeys, per_row)[0], cols)


def test_ties_do_not_follow_item_index_order():
    scores = np.zeros((200, 30), dtype=np.float32)  # everything tied
    cols, _ = top_k(scores, 1, id_keys(range(200)), id_keys(range(30)))
    # index order would always pick column 0; the hash spreads the picks over the catalog
    assert len(np.unique(cols)) > 15


def test_order_is_independent_of_chunking_and_column_order():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 3, size=(20, 25)).astype(np.float32)
    ukeys = id_keys([f"u{i}" for i in range(20)])
    ikeys = id_keys([f"i{j}" for j in range(25)])
    whole, _ = top_k(scores, 5, ukeys, ikeys)
    parts = np.vstack([top_k(scores[s : s + 3], 5, ukeys[s : s + 3], ikeys)[0]
                       for s in range(0, 20, 3)])  # fmt: skip
    np.testing.assert_array_equal(whole, parts)
    perm = rng.permutation(25)
    permuted, _ = top_k(scores[:, perm], 5, ukeys, ikeys[perm])
    np.testing.assert_array_equal(perm[permuted], whole)


def test_non_finite_scores_rank_last_and_pad():
    s = np.array([[1.0, np.nan, np.inf, 0.5, -np.inf]], dtype=np.float32)
    cols, vals = top_k(s, 4, id_keys(["u"]), id_keys(list("abcde")))
    np.testing.assert_array_equal(cols, [[0, 3, -1, -1]])
    assert np.isnan(vals[0, 2:]).all()
    wide, _ = top_k(s, 8, id_keys(["u"]), id_keys(list("abcde")))
    assert wide.shape == (1, 8) and (wide[0, 2:] == -1).all()


def test_target_ranks_agree_with_top_k():
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 3, size=(40, 30)).astype(np.float32)
    ukeys = id_keys(range(40))
    ikeys = id_keys(range(30))
    full, _ = top_k(scores, 30, ukeys, ikeys)
    targets = rng.integers(0, 30, size=40)
    ranks = target_ranks(scores, targets, ukeys, ikeys)
    expected = np.array([np.flatnonzero(full[r] == targets[r])[0] for r in range(40)])
    np.testing.assert_array_equal(ranks, expected)
    scores[0, targets[0]] = np.nan
    assert target_ranks(scores, targets, ukeys, ikeys)[0] == 30


def test_training_validation_of_a_collapsed_model_is_random_not_perfect():
    n_users, n_items = 400, 100
    scores = np.zeros((n_users, n_items), dtype=np.float32)
    targets = np.random.default_rng(3).integers(0, n_items, n_users)
    ndcg = ranking_ndcg(scores, targets, id_keys(range(n_users)), id_keys(range(n_items)))
    expected = sum(1 / np.log2(r + 2) for r in range(10)) / n_items  # 0.045
    assert ndcg == pytest.approx(expected, abs=0.03)  # was 1.0 when ties ranked optimistically


def test_training_validation_masks_seen_and_stops_on_nan():
    scores = np.array([[5.0, 4.0, 1.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    seen = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0]], dtype=np.float32))
    # row 0: item 0 is seen and masked, so target 1 is ranked first
    ndcg = ranking_ndcg(scores, np.array([1, 2]), id_keys(["a", "b"]), id_keys("xyz"), seen)
    assert ndcg == pytest.approx(1.0)
    scores[1, 0] = np.nan
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        ranking_ndcg(scores, np.array([1, 2]), id_keys(["a", "b"]), id_keys("xyz"))


class _Constant:
    def __init__(self, n_items):
        self.n_items = n_items

    def score_all(self, user_idx):
        return np.zeros((len(user_idx), self.n_items), dtype=np.float32)


def test_constant_scores_evaluate_like_random_ranking_on_ml100k(tmp_path, data_dir):
    need(data_dir / "ml-100k" / "u.data")
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, data_dir / "ml-100k")
        data = store.interactions(with_features=False)
    parts = split(data, "leave_last:1")
    res = evaluate_ranking(_Constant(data.n_items), parts.train, parts.test, ks=(10,))
    seen = parts.train.to_csr(binary=True)
    m_u = data.n_items - np.diff(seen.indptr)[res.users]  # items a user can be shown
    p = 10 / m_u  # one relevant item per user under leave-one-out
    expected, se = p.mean(), np.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(res.summary["hr@10"] - expected) < 1.96 * se


def test_recommend_uses_the_shared_rule():
    from recsight.models.popular import MostPopular
    from tests.models.conftest import make_interactions

    inter = make_interactions(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), n_items=6)
    model = MostPopular().fit(inter)
    ids, _ = model.recommend(["u0", "u1"], k=6, exclude_seen=False)
    pop = model.item_popularity_
    ref = _full_sort(pop[None, :].repeat(2, 0), id_keys(["u0", "u1"]), model.item_keys_)
    np.testing.assert_array_equal(ids, model.items_.ids[ref])
