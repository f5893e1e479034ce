"""Text-enhanced SASRec: the text side input carries signal that sparse ids cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsight.llm.text_sasrec import TextSASRec
from recsight.models.neural.sasrec import SASRec
from tests.models.neural.data import events

COLOURS = ["red", "green", "blue", "yellow"]
NOUNS = ["lamp", "vase", "mug", "scarf", "kite", "chair", "pillow", "bowl", "clock", "rug"]
PARAMS = {
    "dim": 16,
    "layers": 1,
    "heads": 1,
    "max_len": 8,
    "epochs": 6,
    "batch_size": 64,
    "early_stopping": False,
    "verbose": False,
    "dropout": 0.1,
    "attn_dropout": 0.1,
}


@pytest.fixture(scope="module")
def colour_data():
    """Each user browses items of one colour in random order; 400 items seen by few users
    each, so ids alone barely generalise, while the titles name the colour."""
    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 200, 400, 8
    u_colour = rng.integers(0, 4, n_users)
    i_colour = rng.integers(0, 4, n_items)
    users, items = [], []
    for u in range(n_users):
        pool = np.flatnonzero(i_colour == u_colour[u])
        items += list(rng.choice(pool, per_user, replace=False))
        users += [u] * per_user
    data = events(np.array(users), np.array(items), n_users, n_items)
    titles = [f"{COLOURS[c]} {NOUNS[i % len(NOUNS)]}" for i, c in enumerate(i_colour)]
    data.item_features = pd.DataFrame({"title": titles}, index=pd.RangeIndex(n_items))
    return data, u_colour, i_colour


def colour_precision(model, data, u_colour, i_colour) -> float:
    users = np.arange(data.n_users)
    scores = model.score_all(users)
    top = np.argsort(-scores, axis=1)[:, :10]
    return float((i_colour[top] == u_colour[users][:, None]).mean())


def test_text_side_input_beats_ids_alone(colour_data):
    data, u_colour, i_colour = colour_data
    plain = SASRec(**PARAMS).fit(data)
    text = TextSASRec(**PARAMS).fit(data)
    p_plain = colour_precision(plain, data, u_colour, i_colour)
    p_text = colour_precision(text, data, u_colour, i_colour)
    assert text.text_.shape == (400, 512)
    assert p_text > p_plain + 0.15, (p_text, p_plain)


def test_save_load_round_trip(colour_data, tmp_path):
    data, *_ = colour_data
    model = TextSASRec(**{**PARAMS, "epochs": 1}).fit(data)
    model.save(tmp_path / "m")
    again = TextSASRec.load(tmp_path / "m")
    np.testing.assert_array_equal(again.text_, model.text_)
    np.testing.assert_allclose(again.score_all(np.arange(5)), model.score_all(np.arange(5)))
    ids, _ = again.recommend_for_history(["i1", "i2"], k=3)
    assert len(ids) == 3
