"""Training-time validation is the evaluator's protocol, at the level of whole models:
seen items masked, the shared tie rule, NaN scores stop training (SASRec, and BERT4Rec and
TextSASRec, which inherit its fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models.neural.data import cycles

from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.neural.base import holdout_last
from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.sasrec import SASRec

SMALL = dict(dim=8, layers=1, heads=1, max_len=6, dropout=0.0, attn_dropout=0.0, verbose=False)
MODELS = [SASRec, BERT4Rec]


def _random_ndcg10(n_candidates: np.ndarray) -> float:
    """Expected NDCG@10 of one relevant item ranked uniformly among each user's candidates."""
    gains = 1.0 / np.log2(np.arange(10) + 2.0)
    return float(np.mean([gains[: min(10, n)].sum() / n for n in n_candidates]))


@pytest.mark.parametrize("cls", MODELS)
def test_a_collapsed_model_validates_like_random_not_perfect(cls, monkeypatch):
    """Constant scores: before the shared tie rule, validation counted `score > target`, so
    every target ranked first and the model validated as NDCG 1.0."""
    data = cycles(n_users=60, n_items=40, length=8)
    monkeypatch.setattr(
        cls, "_scores_from", lambda self, net, padded: torch.zeros(len(padded), data.n_items)
    )
    model = cls(epochs=1, **SMALL).fit(data)
    held = holdout_last(data)
    fit_part = data.subset(~held)
    seen = fit_part.to_csr(binary=True)
    users = data.user_idx[held]
    n_candidates = data.n_items - np.diff(seen.indptr)[users]
    expected = _random_ndcg10(n_candidates)
    got = model.history_.epochs[0].metric
    # 60 users: well inside 4 standard deviations of the random expectation, far from 1
    assert abs(got - expected) < 0.15 and got < 0.5, (got, expected)


class _ScoreAfter:
    """A scorer that scores each user after a given set of sequences (the fit part)."""

    def __init__(self, model: SASRec, indptr: np.ndarray, items: np.ndarray):
        self.model, self.indptr, self.items = model, indptr, items

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return self.model._score_ranges(self.indptr, self.items, np.asarray(user_idx))


@pytest.mark.parametrize("cls", MODELS)
def test_validation_metric_is_what_the_evaluator_reports(cls):
    """The epoch's validation NDCG@10 equals `evaluate_ranking` on (fit part, held-out last
    events) with the same weights: same masking of seen items, same ties, same users."""
    data = cycles(n_users=50, n_items=30, length=9, seed=3)
    model = cls(epochs=1, seed=1, **SMALL).fit(data)
    held = holdout_last(data)
    fit_part = data.subset(~held)
    scorer = _ScoreAfter(model, *fit_part.sequences())
    res = evaluate_ranking(scorer, fit_part, data.subset(held), ks=(10,), metrics=("ndcg",))
    assert model.history_.epochs[0].metric == pytest.approx(res.summary["ndcg@10"], abs=1e-6)


@pytest.mark.parametrize("cls", MODELS)
def test_nan_scores_stop_training_with_a_clear_message(cls, monkeypatch):
    data = cycles(n_users=20, n_items=12, length=6)
    monkeypatch.setattr(
        cls, "_scores_from", lambda self, net, padded: torch.full((len(padded), 12), np.nan)
    )
    with pytest.raises(FloatingPointError, match="NaN/inf scores"):
        cls(epochs=2, **SMALL).fit(data)


def test_pair_model_validation_stops_on_nan_scores(monkeypatch):
    """A pair model whose outputs go NaN at validation time only (the loss stays finite)
    stops with the same message instead of validating as an AUC of whatever NaNs sort to."""
    from recsight.models.neural.neumf import NeuMF

    real = NeuMF._pair_out

    def nan_when_validating(self, net, rep, items):  # noqa: ANN001, ANN202
        out = real(self, net, rep, items)
        return torch.full_like(out, np.nan) if torch.is_inference_mode_enabled() else out

    monkeypatch.setattr(NeuMF, "_pair_out", nan_when_validating)
    model = NeuMF(dim=4, mlp_dim=4, hidden=(8,), epochs=2, verbose=False)
    with pytest.raises(FloatingPointError, match="NaN/inf scores"):
        model.fit(cycles(n_users=20, n_items=12, length=6))
