"""SASRec and BERT4Rec: causality, overfitting a planted sequence, persistence, ordered
histories and the vectorised sequence windows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from models.neural.data import cycles, events

from recsight.errors import InputError
from recsight.models.base import Recommender
from recsight.models.neural.base import holdout_last, last_window, sequence_windows
from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.config import SequenceConfig
from recsight.models.neural.sasrec import SASRec
from recsight.models.registry import create_model, model_class

SMALL = dict(dim=16, layers=1, heads=2, dropout=0.0, attn_dropout=0.0, verbose=False)


@pytest.fixture(scope="module")
def trained_sasrec() -> SASRec:
    return SASRec(max_len=8, epochs=60, lr=1e-2, early_stopping=False, batch_size=32, **SMALL).fit(
        cycles()
    )


@pytest.fixture(scope="module")
def trained_bert() -> BERT4Rec:
    params = {**SMALL, "dim": 32}
    return BERT4Rec(
        max_len=8, epochs=150, lr=1e-2, early_stopping=False, batch_size=16, mask_prob=0.3, **params
    ).fit(cycles())


@pytest.mark.parametrize("piece", [1 << 14, 2])
def test_sequence_windows_cut_from_the_end_and_left_pad(monkeypatch, piece):
    # cut in pieces of `piece` windows (2: the pieces end inside a user's windows)
    monkeypatch.setattr("recsight.models.neural.base._WINDOW_PIECE", piece)
    # user 0: items 0..6 (7 events), user 1: one event (dropped), user 2: items 7, 8
    indptr = np.array([0, 7, 8, 10])
    items = np.array([0, 1, 2, 3, 4, 5, 6, 9, 7, 8])
    w = sequence_windows(indptr, items, 3)
    # user 0 -> [4,5,6], [1,2,3], [0] (single event: dropped); user 2 -> [7,8]; as idx + 1
    assert w.tolist() == [[5, 6, 7], [2, 3, 4], [0, 8, 9]] and w.dtype == np.int64
    assert sequence_windows(np.array([0, 1]), np.array([4]), 3).shape == (0, 3)
    assert last_window(indptr, items, np.array([0, 1, 2]), 4).tolist() == [
        [4, 5, 6, 7], [0, 0, 0, 10], [0, 0, 8, 9]
    ]  # fmt: skip


def test_holdout_last_takes_latest_event_of_users_with_three_or_more():
    data = events(
        np.array([0, 0, 0, 1, 1, 0]),
        np.array([1, 2, 3, 4, 5, 6]),
        2,
        7,
        timestamp=np.array([5.0, 1.0, 9.0, 1.0, 2.0, 3.0]),
    )
    assert np.flatnonzero(holdout_last(data)).tolist() == [2]


def test_sasrec_attention_is_causal():
    model = SASRec(max_len=6, epochs=1, early_stopping=False, **SMALL).fit(cycles())
    net = model.net
    a = torch.tensor([[0, 3, 5, 2, 7, 4]])
    b = a.clone()
    b[0, 4] = 9  # change the item at position t + 1 = 4
    c = torch.tensor([[6, 3, 5, 2, 7, 4]])  # and a padded position made real
    with torch.inference_mode():
        ha, hb, hc = net(a), net(b), net(c)
    assert torch.allclose(ha[0, :4], hb[0, :4], atol=1e-6)
    assert not torch.allclose(ha[0, 4], hb[0, 4])
    # positions after the padding attend to real items only: a padded slot is not item 6
    assert not torch.allclose(ha[0, 1:], hc[0, 1:])


def test_bert4rec_attention_is_bidirectional_but_ignores_padding():
    net = BERT4Rec(max_len=6, epochs=1, early_stopping=False, **SMALL).fit(cycles()).net
    a = torch.tensor([[0, 3, 5, 2, 7, 4]])
    later = a.clone()
    later[0, 4] = 9  # a later item changes earlier outputs
    with torch.inference_mode():
        before = net(a)
        assert not torch.allclose(before[0, 2], net(later)[0, 2])
        # padded keys are masked out: what the padding slot holds cannot leak into real ones
        net.encoder.item_emb.weight[0] = torch.randn(16) * 5
        assert torch.allclose(net(a)[0, 1:], before[0, 1:], atol=1e-5)


def test_sasrec_overfits_a_deterministic_sequence(trained_sasrec):
    assert trained_sasrec.history_.epochs[-1].loss < 0.05
    # after i3, i4, i5 the next item is i6
    ids, _ = trained_sasrec.recommend_for_history(["i3", "i4", "i5"], k=1)
    assert ids.tolist() == ["i6"]
    # every training user's next item is the successor of their last one
    data = cycles()
    indptr, items = data.sequences()
    top = trained_sasrec.score_all(np.arange(data.n_users)).argmax(axis=1)
    assert np.array_equal(top, (items[indptr[1:] - 1] + 1) % data.n_items)


def test_bert4rec_overfits_a_deterministic_sequence(trained_bert):
    # random masking keeps BERT4Rec's training loss noisy (its last epochs range over 0.2-0.8
    # with the seed and the CPU's float kernels); its predictions are exact
    losses = [e.loss for e in trained_bert.history_.epochs]
    assert min(losses[-10:]) < 0.4 * losses[0] and losses[0] > 2.0
    ids, _ = trained_bert.recommend_for_history(["i9", "i10", "i11"], k=1)
    assert ids.tolist() == ["i0"]
    data = cycles()
    indptr, items = data.sequences()
    top = trained_bert.score_all(np.arange(data.n_users)).argmax(axis=1)
    assert np.array_equal(top, (items[indptr[1:] - 1] + 1) % data.n_items)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_last_position_only_pass_equals_the_full_pass(name):
    """Scoring reads the last position only: the last block then computes that row alone, and
    it must equal the full pass's last row (two blocks, padded and full rows)."""
    params = {**SMALL, "layers": 2}
    model = create_model(name, max_len=6, epochs=1, early_stopping=False, **params).fit(cycles())
    tokens = torch.tensor([[0, 0, 3, 5, 2, 7], [6, 3, 5, 2, 7, 4], [0, 0, 0, 0, 0, 1]])
    with torch.inference_mode():
        full, last = model.net(tokens), model.net(tokens, last_only=True)
    assert last.shape == (3, 1, full.shape[-1])
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6)
    assert not torch.allclose(last[:, 0], full[:, -2])  # the row taken is the last one


@pytest.mark.parametrize("fixture", ["trained_sasrec", "trained_bert"])
def test_new_event_changes_the_next_recommendation_without_retraining(fixture, request):
    model = request.getfixturevalue(fixture)
    before, _ = model.recommend_for_history(["i1", "i2"], k=1, exclude_seen=False)
    after, _ = model.recommend_for_history(["i1", "i2", "i3"], k=1, exclude_seen=False)
    assert before.tolist() == ["i3"] and after.tolist() == ["i4"]
    # the order of the history is the sequence: the same items reversed score differently
    # (not necessarily with another top-1: a reversed cycle is never seen in training)
    scores, _ = model.score_histories([["i1", "i2", "i3"], ["i3", "i2", "i1"]])
    assert np.abs(scores[0] - scores[1]).max() > 0.1


@pytest.mark.parametrize("fixture", ["trained_sasrec", "trained_bert"])
def test_save_load_round_trip_reproduces_scores(fixture, request, tmp_path):
    model = request.getfixturevalue(fixture)
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    users = np.arange(model.users_.__len__())
    np.testing.assert_array_equal(loaded.score_all(users), model.score_all(users))
    assert loaded.get_params() == model.get_params()
    ids_a, _ = model.recommend(["u0", "u5"], k=3)
    ids_b, _ = loaded.recommend(["u0", "u5"], k=3)
    assert ids_a.tolist() == ids_b.tolist()
    # no pickle anywhere: the arrays load with allow_pickle=False
    with np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False) as npz:
        assert npz["weights_"].dtype == np.float32


def test_score_all_matches_scoring_the_users_own_sequences(trained_sasrec):
    data = cycles()
    indptr, items = data.sequences()
    seqs = [items[indptr[u] : indptr[u + 1]] for u in range(3)]
    np.testing.assert_allclose(
        trained_sasrec.score_all(np.arange(3)), trained_sasrec.score_sequences(seqs), atol=1e-5
    )
    # a CSR history is ordered by its weights (positions here)
    h = trained_sasrec._history_matrix(["i7", "i5", "i6"], weights=[3.0, 1.0, 2.0])
    np.testing.assert_allclose(
        trained_sasrec.score_history(h),
        trained_sasrec.score_sequences([np.array([5, 6, 7])]),
        atol=1e-5,
    )


def test_scores_in_passes_bounded_by_cells_equal_one_pass(trained_sasrec, monkeypatch):
    """Scoring passes hold at most `_SCORE_CELLS` scores (users x items): with room for one
    user per pass the scores are those of one pass over every user."""
    users = np.arange(cycles().n_users)
    whole = trained_sasrec.score_all(users)
    monkeypatch.setattr("recsight.models.neural.base._SCORE_CELLS", trained_sasrec.n_items)
    np.testing.assert_allclose(trained_sasrec.score_all(users), whole, atol=1e-6)


def test_explain_points_at_the_item_that_decides(trained_sasrec):
    top = trained_sasrec.explain_history(["i0", "i8", "i4"], "i5", top=1)
    assert top[0][0] == "i4" and top[0][1] > 0


def test_empty_history_falls_back_to_popularity(trained_sasrec):
    ids, _ = trained_sasrec.recommend_for_history([], k=3)
    order = np.argsort(-trained_sasrec.item_popularity_, kind="stable")[:3]
    assert ids.tolist() == trained_sasrec.items_.ids[order].tolist()


def test_early_stopping_uses_leave_one_out_validation():
    model = SASRec(max_len=8, epochs=40, lr=1e-2, patience=2, batch_size=32, **SMALL)
    model.fit(cycles(n_users=40))
    h = model.history_
    assert h.metric_name == "ndcg@10" and all(e.metric is not None for e in h.epochs)
    assert h.best_metric == max(e.metric for e in h.epochs)
    assert h.best_metric > 0.9  # the planted next item ranks first for nearly every user


def test_bad_hyperparameters_raise_input_error():
    with pytest.raises(InputError, match="dim"):
        SASRec(dim=15, heads=2, verbose=False).fit(cycles())
    with pytest.raises(InputError, match="mask_prob"):
        BERT4Rec(mask_prob=1.5, verbose=False).fit(cycles())


def test_base_load_dispatch_is_by_saved_name(trained_sasrec, tmp_path):
    trained_sasrec.save(tmp_path / "m")
    with pytest.raises(InputError, match="sasrec"):
        BERT4Rec.load(tmp_path / "m")
    assert isinstance(Recommender.load, object)


#: The hyperparameters each sequence model took before the family config (saved
#: ``config.json`` files hold exactly these, so they must all still be accepted).
SHARED = {"max_len", "dim", "layers", "heads", "dropout", "attn_dropout", "loss", "n_negatives",
          "proposal", "gbce_t", "epochs", "lr", "weight_decay", "batch_size", "patience",
          "early_stopping", "max_minutes", "device", "threads", "seed", "verbose"}  # fmt: skip
OWN = {
    "sasrec": {"dp_epsilon", "dp_delta", "dp_max_grad_norm"},
    "bert4rec": {"mask_prob"},
    "text_sasrec": {"encoder", "encoder_url", "cache_db"},
}


@pytest.mark.parametrize("name", sorted(OWN))
def test_sequence_models_take_the_family_config_plus_their_own(name):
    cls = model_class(name)
    assert set(cls.param_names()) == SHARED | OWN[name]
    defaults = {f.name: f.default for f in dataclasses.fields(SequenceConfig)}
    assert {k: v for k, v in cls().get_params().items() if k in SHARED} == defaults
    # --param values are still converted and checked against the declared types
    assert create_model(name, dim="32").dim == 32
    with pytest.raises(InputError, match=f"model '{name}': parameter epochs='many'"):
        create_model(name, epochs="many")


def test_only_sasrec_takes_differential_privacy_options():
    with pytest.raises(InputError, match="DP-SGD is available for: sasrec"):
        create_model("bert4rec", dp_epsilon=1.0)
    with pytest.raises(InputError, match="DP-SGD is available for: sasrec"):
        create_model("text_sasrec", dp_epsilon=1.0)


def test_bert4rec_keeps_the_side_features_its_encoder_is_given():
    # item i's side row: one-hot of i mod 3 (row 0 of the hook's table: padding)
    side = torch.eye(3)[torch.arange(12) % 3]

    class SideBERT4Rec(BERT4Rec):
        def _side_features(self) -> torch.Tensor:
            return torch.cat([torch.zeros(1, 3), side])

    model = SideBERT4Rec(max_len=6, epochs=1, early_stopping=False, **SMALL).fit(cycles())
    enc = model.net.encoder
    assert enc.side_proj is not None
    # every token's vector is its id embedding plus the projected side row; the [MASK]
    # token (after the 12 items) has a zero side row
    tokens = torch.arange(14)
    rows = torch.cat([torch.zeros(1, 3), side, torch.zeros(1, 3)])
    with torch.no_grad():
        expected = enc.item_emb.weight + rows @ enc.side_proj.weight.T
        assert torch.allclose(enc.item_vectors(tokens), expected)
    # and the side part reaches the scores: removing it changes them
    scores = model.score_all(np.arange(3))
    enc.side_proj = None
    assert not np.allclose(model.score_all(np.arange(3)), scores)
