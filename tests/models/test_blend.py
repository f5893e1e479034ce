"""The learned blend: weights fitted on a validation split of the training data by the
evaluator's protocol, per-user score normalisation, persistence and serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.data.splits import split
from recsight.errors import InputError
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.blend import Blend, normalised, simplex_grid
from recsight.models.registry import create_model, load_model
from recsight.serving.pipeline import History, Pipeline

MEMBERS = ["popular", {"name": "ease", "params": {"reg": 10.0}}]


@pytest.fixture(scope="module")
def blend(blocks):
    return Blend(models=MEMBERS, grid=4, verbose=False).fit(blocks)


def test_normalised_is_a_z_score_over_unseen_items():
    s = np.array([[1.0, 2.0, 3.0, 100.0], [5.0, 5.0, 5.0, 5.0]])
    seen = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 0, 0]]))
    z = normalised(s, seen)
    mu, sd = 2.0, np.sqrt(2 / 3)
    np.testing.assert_allclose(z[0], (s[0] - mu) / sd, rtol=1e-6)  # 100 is seen: not in stats
    assert z[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # a constant row carries no preference


def test_simplex_grid():
    g = simplex_grid(3, 2)
    assert len(g) == 6 and np.allclose(g.sum(1), 1.0) and (g >= 0).all()
    assert g[0].tolist() == [1.0, 0.0, 0.0]


def test_weights_are_the_best_on_the_validation_split_of_the_training_data(blend, blocks):
    # recompute every grid point's validation NDCG@20 from the members fitted on the
    # weight-fitting split: the blend kept the argmax
    parts = split(blocks, "user_random:0.9", seed=42)
    seen = parts.train.to_csr(binary=True)
    users = np.unique(parts.test.user_idx)
    pop = create_model("popular").fit(parts.train).score_all(users)
    ease = create_model("ease", reg=10.0).fit(parts.train).score_all(users)
    zs = [normalised(pop, seen[users]), normalised(ease, seen[users])]
    row = {u: r for r, u in enumerate(users)}

    class Mix:
        def __init__(self, w):
            self.w = w

        def score_all(self, u):
            rows = [row[x] for x in u]
            return self.w[0] * zs[0][rows] + self.w[1] * zs[1][rows]

    ndcg = [
        evaluate_ranking(Mix(w), parts.train, parts.test, ks=(20,), metrics=["ndcg"]).summary[
            "ndcg@20"
        ]
        for w in simplex_grid(2, 4)
    ]
    assert blend.valid_ndcg_ == pytest.approx(max(ndcg))
    assert blend.weights_.tolist() == simplex_grid(2, 4)[int(np.argmax(ndcg))].tolist()
    # EASE learns the planted blocks; popularity mixes them: EASE carries the blend
    assert blend.weights_[1] > blend.weights_[0]


def test_scores_are_the_weighted_normalised_member_scores(blend, blocks):
    users = np.arange(10)
    seen = blend.seen_[users]
    expected = sum(
        w * normalised(m.score_all(users), seen)
        for w, m in zip(blend.weights_, blend.models_, strict=True)
    )
    np.testing.assert_allclose(blend.score_all(users), expected, rtol=1e-5, atol=1e-6)
    # members are refitted on all the training data
    assert all(m.seen_.nnz == blocks.to_csr(binary=True).nnz for m in blend.models_)
    # fold-in of a known history gives the known user's scores
    np.testing.assert_allclose(
        blend.score_history(seen[:3]), blend.score_all(users[:3]), rtol=1e-5, atol=1e-5
    )


def test_save_load_serve(blend, tmp_path):
    blend.save(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["name"] == "blend"
    assert (tmp_path / "b" / "0-popular" / "config.json").is_file()
    assert (tmp_path / "b" / "1-ease" / "config.json").is_file()
    loaded = load_model(tmp_path / "b")
    users = np.arange(blend.seen_.shape[0])
    np.testing.assert_array_equal(loaded.score_all(users), blend.score_all(users))
    assert loaded.weights_.tolist() == blend.weights_.tolist()
    pipe = Pipeline.load(tmp_path / "b")
    history = History(None, ["i16", "i17"], ["click"] * 2, [None, None])
    got = pipe.recommend(history, k=3)
    ids, _ = blend.recommend_for_history(["i16", "i17"], k=3, weights=history.weights())
    assert [r.item_id for r in got.items] == ids.tolist()
    assert loaded.explain_history(["i16", "i17"], "i18")  # members' contributions, scaled


def test_bad_blends_raise_input_error(blocks):
    with pytest.raises(InputError, match="at least two"):
        Blend(models=["ease"], verbose=False).fit(blocks)
    with pytest.raises(InputError, match="unknown model"):
        Blend(models=["ease", "eaze"], verbose=False).fit(blocks)
    with pytest.raises(InputError, match="no parameter"):
        Blend(models=["ease", {"name": "popular", "params": {"x": 1}}], verbose=False).fit(blocks)
    with pytest.raises(InputError, match="another blend"):
        Blend(models=["ease", "blend"], verbose=False).fit(blocks)
    with pytest.raises(InputError, match="ratings"):
        Blend(models=["ease", "biased_mf"], verbose=False).fit(blocks)
    with pytest.raises(InputError, match="entry"):
        Blend(models=["ease", {"model": "popular"}], verbose=False).fit(blocks)
