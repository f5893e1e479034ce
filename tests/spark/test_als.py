"""MLlib ALS trained on Spark and saved as recsight's own ALS model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.data.dataset import IdIndex, Interactions
from recsight.data.layout import open_store
from recsight.data.splits import split
from recsight.evaluation.protocol import evaluate_ranking
from recsight.evaluation.significance import paired_pvalue
from recsight.models import ALS, load_model
from recsight.serving.pipeline import History, Pipeline
from recsight.spark.als import SparkALS, ensure_checkpoint_dir, mllib_reg_param


def test_reg_param_mapping_matches_total_regularisation():
    # implicit regularises every user and item row by reg; MLlib each row by regParam x its
    # count, and the counts over users (and over items) each sum to nnz
    n_users, n_items, nnz, reg = 10, 30, 200, 2.0
    lam = mllib_reg_param(reg, n_users, n_items, nnz)
    assert lam * nnz * 2 == pytest.approx(reg * (n_users + n_items))


def test_spark_als_ndcg_not_different_from_implicit_and_serves(spark, ml100k_layout, tmp_path):
    with open_store(ml100k_layout) as store:
        parts = split(store.interactions(), "user_random:0.8", seed=42)
    # MLlib needs about as many sweeps as implicit to converge: at 5 it is still behind
    params = {"factors": 64, "reg": 1.0, "alpha": 10.0, "iterations": 15, "seed": 7}
    local = ALS(**params).fit(parts.train)
    on_spark = SparkALS(**params).fit(parts.train)
    a = evaluate_ranking(local, parts.train, parts.test, ks=(10,))
    b = evaluate_ranking(on_spark, parts.train, parts.test, ks=(10,))
    assert np.array_equal(a.users, b.users)
    p = paired_pvalue(a.per_user["ndcg@10"], b.per_user["ndcg@10"], "wilcoxon")
    assert p > 0.05, (a.summary, b.summary, p)
    # and it is a real model, far above popularity-free chance (~0.006 at 1,682 items)
    assert b.summary["ndcg@10"] > 0.2

    # saved as a plain ALS: load_model and the serving pipeline take it unchanged
    on_spark.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is ALS and loaded.get_params() == on_spark.get_params()
    np.testing.assert_array_equal(loaded.item_factors_, on_spark.item_factors_)
    user = str(parts.train.users.ids[0])
    ids, _ = loaded.recommend([user], k=10)
    want, _ = on_spark.recommend([user], k=10)
    assert list(ids[0]) == list(want[0])
    # user factors are ALS's exact fold-in: the user's history folded in gives the same list
    row = loaded.seen_[0]
    hist = list(loaded.items_.ids_of(row.indices))
    pipe = Pipeline.load(tmp_path / "m")
    # (ML-100K holds one rating per pair, so the summed weights are the ratings)
    history = History(user, hist, ["rating"] * len(hist), row.data.tolist())
    recs = pipe.recommend(history, k=10)
    assert [r.item_id for r in recs.items] == list(want[0])


def _interactions(ev: pd.DataFrame, types: tuple[str, ...], **kw) -> Interactions:
    """`Interactions` over users u0..u3 and items a, b, c from an event frame."""
    return Interactions(
        user_idx=ev.user_idx.to_numpy(np.int32),
        item_idx=ev.item_idx.to_numpy(np.int32),
        value=ev.value.to_numpy(np.float64),
        event_type=ev.event_type.to_numpy(np.int8),
        event_types=types,
        seq=np.arange(len(ev), dtype=np.int64),
        users=IdIndex(["u0", "u1", "u2", "u3"]),
        items=IdIndex(["a", "b", "c"]),
        **kw,
    )


def test_fit_log_weights_and_sums_like_interactions(spark):
    # every event type, a repeated pair, a NaN value (weighs 1 under "value"), an unknown type
    # (weighs 0) and a user whose only event weighs 0 (kept in the id space, empty row)
    types = ("view", "click", "cart", "fav", "purchase", "rating", "share")
    ev = pd.DataFrame(
        {
            "user_idx": [0, 0, 0, 1, 1, 1, 2, 2, 3],
            "item_idx": [0, 0, 1, 1, 2, 0, 2, 1, 2],
            "event_type": [0, 1, 2, 3, 4, 5, 5, 0, 6],
            "value": [np.nan, np.nan, 1.0, np.nan, 2.0, 4.0, np.nan, np.nan, 1.0],
        }
    )
    data = _interactions(ev, types)
    log = ev.assign(event_type=[types[t] for t in ev.event_type])
    weights = {
        "view": 1.0,
        "click": 2.0,
        "cart": 3.0,
        "fav": 0.5,
        "purchase": 5.0,
        "rating": "value",
    }
    model = SparkALS(factors=2, iterations=2, weights=weights)
    model.fit_log(spark.createDataFrame(log), data.users.ids, data.items.ids)
    want = data.to_csr(weights)
    assert (model.seen_ != want).nnz == 0
    np.testing.assert_array_equal(model.seen_.toarray()[0], [3.0, 3.0, 0.0])
    assert model.seen_[3].nnz == 0 and model.user_factors_.shape == (4, 2)
    assert list(model.users_.ids) == ["u0", "u1", "u2", "u3"]


@pytest.mark.parametrize("policy", ["item-mean", "user-mean", "global-mean"])
def test_fit_log_fills_missing_ratings_like_interactions(spark, policy):
    # ratings with values missing: item 1 has real ratings (3, 5), item 2 none (global mean
    # fallback), user 2 has no real rating; a view with no value is not a rating to fill
    ev = pd.DataFrame(
        {
            "user_idx": [0, 0, 1, 1, 2, 2, 2, 3],
            "item_idx": [0, 1, 1, 2, 1, 2, 0, 0],
            "event_type": [0, 0, 0, 0, 0, 0, 1, 0],
            "value": [4.0, 3.0, 5.0, np.nan, np.nan, np.nan, np.nan, 1.0],
        }
    )
    types = ("rating", "view")
    data = _interactions(ev, types, fill_rating=policy)
    weights = {"view": 1.0, "rating": "value"}
    model = SparkALS(factors=2, iterations=2, weights=weights)
    log = spark.createDataFrame(ev.assign(event_type=[types[t] for t in ev.event_type]))
    model.fit_log(log, data.users.ids, data.items.ids, fill_rating=policy)
    want = data.to_csr(weights)
    np.testing.assert_allclose(model.seen_.toarray(), want.toarray(), rtol=1e-6)
    if policy != "item-mean":
        return
    # by hand: the missing rating of (u2, b) under item-mean is b's mean (3 + 5) / 2
    assert model.seen_[2, 1] == pytest.approx(4.0)
    # without a policy a missing value weighs 1 (checked once: it does not depend on policy)
    unfilled = SparkALS(factors=2, iterations=2, weights=weights)
    unfilled.fit_log(log, data.users.ids, data.items.ids)
    assert unfilled.seen_[2, 1] == pytest.approx(1.0)


def test_many_iterations_keep_the_lineage_short(spark):
    # MLlib ALS cuts its RDD lineage only where the SparkContext has a checkpoint directory:
    # without one the lineage grows with every iteration, and at 20 iterations serializing a
    # task overflowed the stack (with C1-only JIT flags, at 15 on ML-100K, in the executor's
    # threads, which ended the tests' JVM)
    rng = np.random.default_rng(0)
    ev = pd.DataFrame(
        {
            "user_idx": rng.integers(4, size=30),
            "item_idx": rng.integers(3, size=30),
            "event_type": np.zeros(30, dtype=np.int8),
            "value": np.ones(30),
        }
    )
    data = _interactions(ev, ("view",))
    model = SparkALS(factors=2, iterations=20, weights={"view": 1.0}).fit(data)
    assert np.isfinite(model.item_factors_).all()
    assert ensure_checkpoint_dir(spark) == spark.sparkContext.getCheckpointDir() is not None
