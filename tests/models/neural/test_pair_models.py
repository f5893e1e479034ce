"""DeepFM, NeuMF and the seed's MLP: side features matter, the broadcast scoring equals pair
scoring, persistence, fold-in of new histories and the regression task."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from models.neural.data import events, feature_clicks

from recsight.errors import InputError
from recsight.models.neural.deepfm import DeepFM
from recsight.models.neural.features import encode_entities, time_codes
from recsight.models.neural.neumf import NeuMF
from recsight.models.neural.seed_mlp import SeedMLP

FAST = dict(batch_size=128, lr=3e-3, epochs=15, verbose=False)


def _shuffled(data):
    out = data.subset(np.arange(len(data)))
    for attr in ("user_features", "item_features"):
        frame = getattr(data, attr)
        setattr(out, attr, frame.sample(frac=1, random_state=0).set_index(frame.index))
    return out


@pytest.fixture(scope="module")
def clicks():
    return feature_clicks(n_users=400, per_user=6)


@pytest.fixture(scope="module")
def deepfm(clicks):
    return DeepFM(**FAST).fit(clicks[0])


def test_deepfm_uses_its_side_features(clicks, deepfm):
    # clicks follow a user colour = item colour rule; with 2-3 events per user only the
    # features generalise, so shuffling them across users and items must hurt validation AUC
    shuffled = DeepFM(**FAST).fit(_shuffled(clicks[0]))
    assert deepfm.history_.metric_name == "auc"
    assert deepfm.history_.best_metric > 0.8
    assert deepfm.history_.best_metric > shuffled.history_.best_metric + 0.2
    assert list(deepfm.field_names_) == [
        "user", "colour", "age", "hour", "weekday", "item", "category", "tags", "price"
    ]  # fmt: skip


@pytest.mark.parametrize("cls", [DeepFM, NeuMF, SeedMLP])
def test_score_all_equals_pair_scores(cls, clicks):
    params = {**FAST, "epochs": 2}
    if cls is SeedMLP:
        params["task"] = "binary"
    model = cls(**params).fit(clicks[0])
    users = np.array([0, 5, 7])
    full = model.score_all(users)
    uu = np.repeat(users, model.n_items)
    ii = np.tile(np.arange(model.n_items), len(users))
    pairs = model.predict_idx(uu, ii).reshape(len(users), -1)
    finish = (
        torch.sigmoid(torch.from_numpy(full)).numpy() if cls is not SeedMLP else full.clip(0, 1)
    )
    np.testing.assert_allclose(finish, pairs, atol=1e-5)


@pytest.mark.parametrize("cls", [DeepFM, NeuMF, SeedMLP])
def test_save_load_round_trip_reproduces_scores(cls, clicks, tmp_path):
    model = (
        cls(**{**FAST, "epochs": 2}).fit(clicks[0])
        if cls is not SeedMLP
        else SeedMLP(task="binary", **{**FAST, "epochs": 2}).fit(clicks[0])
    )
    model.save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m")
    users = np.arange(20)
    np.testing.assert_array_equal(loaded.score_all(users), model.score_all(users))
    np.testing.assert_array_equal(
        loaded.predict_idx(users, users + 3), model.predict_idx(users, users + 3)
    )
    # tuples come back as JSON lists
    assert loaded.get_params() == json.loads(json.dumps(model.get_params()))


def test_fold_in_recommends_from_the_history_s_side(deepfm, clicks):
    train = clicks[0]
    colour = train.item_features["category"].to_numpy()
    red = train.items.ids[colour == "red"][:4].tolist()
    ids, _ = deepfm.recommend_for_history(red, k=10)
    share = np.mean(colour[train.items.index_of(list(ids))] == "red")
    assert share >= 0.8


def test_neumf_learns_planted_blocks():
    # users 0-29 click items 0-19 only, users 30-59 items 20-39: each user's top items
    # (seen ones excluded) must come from their own block
    rng = np.random.default_rng(0)
    us, its = [], []
    for u in range(60):
        lo = 0 if u < 30 else 20
        chosen = lo + rng.choice(20, 8, replace=False)
        us += [u] * 8
        its += list(chosen)
    data = events(np.array(us), np.array(its), 60, 40)
    model = NeuMF(dim=8, mlp_dim=8, hidden=(16, 8), epochs=60, lr=1e-2, batch_size=64,
                  early_stopping=False, verbose=False).fit(data)  # fmt: skip
    assert model.history_.epochs[-1].loss < 0.35
    ids, _ = model.recommend([f"u{u}" for u in range(60)], k=5)
    block = np.array([[int(i[1:]) >= 20 for i in row] for row in ids])
    assert np.mean(block == (np.arange(60) >= 30)[:, None]) > 0.95


def test_regression_task_predicts_ratings_and_is_explicit():
    rng = np.random.default_rng(3)
    n_users, n_items = 80, 40
    bu, bi = rng.normal(0, 0.7, n_users), rng.normal(0, 0.7, n_items)
    u = np.repeat(np.arange(n_users), 15)
    i = np.concatenate([rng.choice(n_items, 15, replace=False) for _ in range(n_users)])
    r = np.clip(np.round(3.5 + bu[u] + bi[i]), 1, 5)
    data = events(u, i, n_users, n_items, values=r, event_type="rating")
    model = DeepFM(task="regression", epochs=40, lr=1e-2, batch_size=128, verbose=False)
    assert model.explicit and not DeepFM().explicit
    model.fit(data)
    assert model.history_.metric_name == "rmse"
    pred = model.predict_idx(u, i)
    assert pred.min() >= 1 and pred.max() <= 5
    assert np.sqrt(np.mean((pred - r) ** 2)) < 0.6 * np.std(r)


def test_seed_mlp_is_the_sketch():
    data = events(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), 3, 3,
                  values=np.array([5.0, 3.0, 4.0, 1.0]), event_type="rating")  # fmt: skip
    model = SeedMLP(epochs=1, early_stopping=False, verbose=False).fit(data)
    layers = list(model.net)
    assert [type(x).__name__ for x in layers] == ["Linear", "ReLU", "Linear"]
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == (2, 128, 1)
    np.testing.assert_array_equal(model.item_numbers_, [0.0, 1.0, 2.0])  # ids "i0".. -> idx


def test_feature_encoding_is_generic_and_hand_checkable():
    frame = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d"],  # unique per row: skipped
            "kind": ["x", "y", None, "x"],
            "tags": [["p", "q"], ["q"], [], None],
            "empty": [None, None, None, None],
        },
        index=[0, 1, 2, 3],
    )
    t = encode_entities(5, frame, "item", offset=10, max_unique_share=0.8)
    assert t.names == ["item", "kind", "tags"]
    # item ids: codes 11..15; kind: unknown 16, x 17, y 18; tags: unknown 19, p 20, q 21
    assert t.codes[:, 0].tolist() == [11, 12, 13, 14, 15]
    assert t.codes[:, 1].tolist() == [17, 18, 16, 17, 16]
    assert t.codes[0, 2:].tolist() == [20, 21] and t.weights[0, 2:].tolist() == [0.5, 0.5]
    assert t.codes[2, 2:].tolist() == [19, 19] and t.weights[2, 2:].tolist() == [1.0, 0.0]
    assert t.slot_field.tolist() == [0, 1, 2, 2] and t.size == 12
    # 2024-01-01 was a Monday; 13:30 UTC
    ts = np.array([1704115800.0, np.nan])
    assert time_codes(ts, 2, 0).tolist() == [[14, 26], [0, 25]]


def test_bad_task_raises_input_error(clicks):
    with pytest.raises(InputError, match="task"):
        DeepFM(task="ranking", verbose=False).fit(clicks[0])
    with pytest.raises(InputError, match="rating"):
        DeepFM(task="regression", verbose=False).fit(clicks[0])
