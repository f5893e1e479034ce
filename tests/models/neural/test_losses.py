"""SASRec/BERT4Rec output losses (full, sampled softmax with logQ correction, gBCE, auto),
the tied ``nn.Linear`` output layer, and the `device` parameter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models.neural.data import cycles, events
from torch import nn

from recsight.errors import InputError
from recsight.models.neural import sasrec as S
from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.sasrec import (
    AUTO_FULL_MAX_ITEMS,
    SASRec,
    gbce_beta,
    gbce_loss,
    sampled_softmax_loss,
)

SMALL = dict(dim=16, layers=1, heads=2, dropout=0.0, attn_dropout=0.0, verbose=False)


def test_sampled_softmax_with_every_other_item_once_is_the_full_softmax():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    targets = torch.tensor([0, 3, 6, 2, 3])
    negs = torch.arange(7)
    pos = logits[torch.arange(5), targets]
    hit = negs[None, :] == targets[:, None]
    full = F.cross_entropy(logits, targets)
    assert sampled_softmax_loss(pos, logits, hit).item() == pytest.approx(full.item(), rel=1e-6)
    # a uniform proposal's correction is a constant: no change
    log_q = torch.full((7,), math.log(1 / 7))
    corrected = sampled_softmax_loss(pos, logits, hit, log_q[targets], log_q)
    assert corrected.item() == pytest.approx(full.item(), rel=1e-6)


def test_logq_correction_by_hand():
    # one row: positive logit 1 (q=0.5), negatives 2 (q=0.25) and 0 (q=0.25)
    pos, neg = torch.tensor([1.0]), torch.tensor([[2.0, 0.0]])
    q_pos, q_neg = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25, 0.25]))
    z = [1 - math.log(0.5), 2 - math.log(0.25), 0 - math.log(0.25)]
    expected = -(z[0] - math.log(sum(math.exp(v) for v in z)))
    got = sampled_softmax_loss(pos, neg, torch.zeros(1, 2, dtype=torch.bool), q_pos, q_neg)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def _gsasrec_reference(pos: torch.Tensor, neg: torch.Tensor, beta: float) -> torch.Tensor:
    """gSASRec's published formulation (float64 clamps, transformed positive logit, BCE)."""
    logits = torch.cat([pos[:, None], neg], 1).to(torch.float64)
    eps = 1e-10
    p = torch.clamp(torch.sigmoid(logits[:, :1]), eps, 1 - eps)
    adj = torch.clamp(p.pow(-beta), 1 + eps, torch.finfo(torch.float64).max)
    to_log = torch.clamp(1.0 / (adj - 1), eps, torch.finfo(torch.float64).max)
    logits = torch.cat([to_log.log(), logits[:, 1:]], 1)
    gt = torch.zeros_like(logits)
    gt[:, 0] = 1
    return F.binary_cross_entropy_with_logits(logits, gt)


def test_gbce_by_hand_starts_at_the_constant_score_optimum():
    # beta 0.5, k = 2 negatives: every logit is shifted by log(beta / k) = log(1/4), so raw
    # scores of 0 give softplus(-log 1/4) = log 5 for the positive and softplus(log 1/4) =
    # log 1.25 per negative, averaged over the 3 entries
    zeros = torch.zeros(1, 2)
    got = gbce_loss(torch.zeros(1), zeros, torch.zeros(1, 2, dtype=torch.bool), 0.5)
    assert got.item() == pytest.approx((0.5 * math.log(5) + 2 * math.log(1.25)) / 3, rel=1e-6)
    # an accidental hit of the positive among the negatives is dropped, not counted
    hit = torch.tensor([[True, False]])
    got = gbce_loss(torch.zeros(1), zeros, hit, 0.5)
    assert got.item() == pytest.approx((0.5 * math.log(5) + math.log(1.25)) / 3, rel=1e-6)
    # and raw scores of 0 are where a constant score minimises the loss: no gradient
    s = torch.zeros(1, requires_grad=True)
    gbce_loss(s, s.expand(1, 2), torch.zeros(1, 2, dtype=torch.bool), 0.5).backward()
    assert s.grad.item() == pytest.approx(0.0, abs=1e-7)


def test_gbce_matches_gsasrec_reference_formulation():
    torch.manual_seed(1)
    pos, neg = torch.randn(6) * 2, torch.randn(6, 4) * 2
    beta = gbce_beta(4, 101, 0.75)
    alpha = 4 / 100
    assert beta == pytest.approx(alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha))
    got = gbce_loss(pos, neg, torch.zeros(6, 4, dtype=torch.bool), beta)
    # gSASRec's loss of the logits with the output bias log(beta / k)
    shift = math.log(beta / 4)
    expected = _gsasrec_reference(pos + shift, neg + shift, beta)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert gbce_beta(4, 101, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(4, 101, 1.0) == pytest.approx(alpha)  # t = 1: fully calibrated


def _successors(n_users: int, n_items: int, length: int, p: float, seed: int = 0):
    """Each user's next item is the current item's fixed successor (a seeded permutation)
    with probability `p`, else uniform."""
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items)
    items = np.empty((n_users, length), np.int64)
    items[:, 0] = rng.integers(0, n_items, n_users)
    for t in range(1, length):
        jump = rng.random(n_users) >= p
        items[:, t] = np.where(jump, rng.integers(0, n_items, n_users), succ[items[:, t - 1]])
    return events(np.repeat(np.arange(n_users), length), items.ravel(), n_users, n_items)


def test_gbce_learns_a_successor_task_far_above_popularity():
    # with 64 of 199 negatives the shared pull on all scores stalled gBCE at random ranking
    # (HR@10 0.05 here) before the shift by log(beta / k); the successor is easy to learn
    from recsight.data.splits import split
    from recsight.models.popular import MostPopular

    data = _successors(n_users=100, n_items=200, length=30, p=0.9)
    test = split(data, "leave_last:1").test
    train = data.subset(~np.isin(data.seq, test.seq))
    model = SASRec(max_len=20, dim=32, layers=1, heads=1, dropout=0.1, attn_dropout=0.1,
                   loss="gbce", n_negatives=64, epochs=15, lr=5e-3, batch_size=16,
                   early_stopping=False, verbose=False).fit(train)  # fmt: skip
    pop = _hr10(MostPopular().fit(train), train, test)
    hr = _hr10(model, train, test)
    assert pop < 0.15 and hr > 0.7, (hr, pop)


def test_auto_loss_threshold():
    m = SASRec(loss="auto")
    assert m.resolved_loss(AUTO_FULL_MAX_ITEMS) == "full"
    assert m.resolved_loss(AUTO_FULL_MAX_ITEMS + 1) == "sampled"
    assert SASRec(loss="gbce").resolved_loss(10) == "gbce"


def test_sampled_losses_never_score_the_whole_catalog(monkeypatch):
    widths = []
    real = S.SequenceEncoder.item_logits

    def spy(self, h, items=None):
        out = real(self, h, items)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(S.SequenceEncoder, "item_logits", spy)
    # 100 items > 5 negatives x 16 dims: gBCE gathers each position's negatives' vectors
    # (pair logits), sampled softmax scores the batch's shared negatives
    data = cycles(n_items=100)
    for loss, expected in (("sampled", {5}), ("gbce", set())):
        widths.clear()
        SASRec(max_len=6, epochs=2, loss=loss, n_negatives=5, early_stopping=False, **SMALL).fit(
            data
        )
        assert set(widths) == expected


def test_output_is_a_linear_layer_tied_to_the_item_embeddings():
    model = SASRec(max_len=6, epochs=1, early_stopping=False, **SMALL).fit(cycles())
    net = model.net
    assert isinstance(net.out, nn.Linear)
    assert net.out.weight is net.item_emb.weight
    # the tied weight is saved once
    unique = {id(p) for p in net.parameters()}
    assert len(unique) == len(list(net.parameters()))
    assert model.weights_.size == sum(p.numel() for p in net.parameters())
    with torch.inference_mode():
        tokens = torch.tensor([[0, 0, 3, 4, 5, 6]])
        h = net(tokens)[:, -1]
        expected = (h @ net.item_emb.weight.T)[:, 1:]
        np.testing.assert_allclose(model._scores_from(net, tokens).numpy(), expected.numpy(),
                                   atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    "loss,extra",
    [
        ("sampled", {"batch_size": 16}),
        ("sampled", {"batch_size": 16, "proposal": "popularity"}),
        ("gbce", {"batch_size": 16}),
    ],
)
def test_sampled_losses_learn_a_deterministic_sequence_and_round_trip(loss, extra, tmp_path):
    data = cycles(n_items=30, n_users=40)
    model = SASRec(
        max_len=8, epochs=60, lr=1e-2, loss=loss, n_negatives=8, early_stopping=False,
        **{**SMALL, "dim": 32}, **extra,
    ).fit(data)  # fmt: skip
    indptr, items = data.sequences()
    users = data.users.ids
    ids, _ = model.recommend(users, k=1)
    expected = data.items.ids[(items[indptr[1:] - 1] + 1) % data.n_items]
    assert (ids[:, 0] == expected).mean() >= 0.9
    model.save(tmp_path / "m")
    loaded = SASRec.load(tmp_path / "m")
    idx = np.arange(data.n_users)
    np.testing.assert_array_equal(loaded.score_all(idx), model.score_all(idx))
    assert loaded.get_params() == model.get_params()


@pytest.mark.parametrize("loss", ["sampled", "gbce"])
def test_bert4rec_trains_with_sampled_losses_and_round_trips(loss, monkeypatch, tmp_path):
    widths = []
    real = S.SequenceEncoder.item_logits

    def spy(self, h, items=None):
        out = real(self, h, items)
        widths.append(out.shape[-1])
        return out

    monkeypatch.setattr(S.SequenceEncoder, "item_logits", spy)
    data = cycles(n_items=120)  # > 6 negatives x 16 dims: gBCE gathers per-position vectors
    model = BERT4Rec(
        max_len=8, epochs=3, loss=loss, n_negatives=6, early_stopping=False, **SMALL
    ).fit(data)
    assert set(widths) == ({6} if loss == "sampled" else set())
    monkeypatch.undo()
    model.save(tmp_path / "m")
    idx = np.arange(data.n_users)
    np.testing.assert_array_equal(
        BERT4Rec.load(tmp_path / "m").score_all(idx), model.score_all(idx)
    )


def test_bad_loss_options_raise_input_error():
    with pytest.raises(InputError, match="loss"):
        SASRec(loss="softmax", **SMALL).fit(cycles())
    with pytest.raises(InputError, match="proposal"):
        SASRec(loss="sampled", proposal="zipf", **SMALL).fit(cycles())
    with pytest.raises(InputError, match="uniform"):
        SASRec(loss="gbce", proposal="popularity", **SMALL).fit(cycles())
    with pytest.raises(InputError, match="n_negatives"):
        SASRec(loss="sampled", n_negatives=0, **SMALL).fit(cycles())
    with pytest.raises(InputError, match="gbce_t"):
        SASRec(loss="gbce", gbce_t=1.5, **SMALL).fit(cycles())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InputError, match="device: 'cuda'.*no CUDA GPU"):
        SASRec(device="cuda", epochs=1, early_stopping=False, **SMALL).fit(cycles())
    with pytest.raises(InputError, match="device"):
        BERT4Rec(device="tpu", epochs=1, early_stopping=False, **SMALL).fit(cycles())


def test_auto_device_trains_on_the_cpu_here_and_a_gpu_model_serves_on_cpu(tmp_path):
    model = SASRec(device="auto", max_len=6, epochs=1, early_stopping=False, **SMALL)
    model.fit(cycles())
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.net.parameters()).device.type == expected
    model.save(tmp_path / "m")
    loaded = SASRec.load(tmp_path / "m").set_params(device="cuda")
    # a model saved with device="cuda" still scores where no GPU exists
    if not torch.cuda.is_available():
        assert loaded.scoring_device().type == "cpu"
        np.testing.assert_allclose(loaded.score_all(np.arange(3)), model.score_all(np.arange(3)),
                                   atol=1e-6)  # fmt: skip


@pytest.fixture(scope="module")
def ml100k_leave_last(data_dir, tmp_path_factory):
    from conftest import need

    from recsight.data.ingest import ingest
    from recsight.data.splits import split
    from recsight.data.store import Store

    need(data_dir / "ml-100k" / "u.data")
    with Store(tmp_path_factory.mktemp("ml") / "s.duckdb") as store:
        ingest(store, data_dir / "ml-100k")
        data = store.interactions(with_features=False)
    parts = split(data, "leave_last:1")
    # the test part is each user's last event; train on everything before it
    return data.subset(~np.isin(data.seq, parts.test.seq)), parts.test


def _hr10(model, train, test) -> float:
    from recsight.evaluation.protocol import evaluate_ranking

    return evaluate_ranking(model, train, test, ks=(10,), metrics=["hr"]).summary["hr@10"]


@pytest.mark.slow
@pytest.mark.parametrize("loss,extra", [("sampled", {"proposal": "popularity"})])
def test_sampled_losses_beat_popularity_on_ml100k(ml100k_leave_last, loss, extra):
    from recsight.models.popular import MostPopular

    train, test = ml100k_leave_last
    pop = _hr10(MostPopular().fit(train), train, test)
    model = SASRec(
        max_len=30, dim=32, layers=1, epochs=5, lr=5e-3, batch_size=64, loss=loss,
        early_stopping=False, verbose=False, **extra,
    ).fit(train)  # fmt: skip
    hr = _hr10(model, train, test)
    assert hr > 1.2 * pop, (hr, pop)


def test_gbce_draws_every_positions_own_negatives(monkeypatch):
    # gSASRec samples negatives per position; a batch-shared draw gives identical negative
    # logits to identical hidden states
    seen = {}

    def spy(pos, neg, hit, beta):
        seen["neg"], seen["hit"] = neg.detach(), hit
        return neg.sum()

    monkeypatch.setattr(S, "gbce_loss", spy)
    data = cycles(n_items=300)
    for dim in (16, 2):  # 300 items <= 32 x 16 (scores gathered) and > 32 x 2 (vectors gathered)
        model = SASRec(max_len=6, epochs=1, loss="gbce", n_negatives=32, early_stopping=False,
                       **{**SMALL, "dim": dim, "heads": 1}).fit(data)  # fmt: skip
        h = torch.ones(50, dim)
        targets = torch.zeros(50, dtype=torch.long)
        torch.manual_seed(0)
        model._output_loss(model.net, h, targets)
        neg = seen["neg"]
        assert neg.shape == (50, 32) and seen["hit"].shape == (50, 32)
        # identical rows of h: only different negative items make the rows differ
        assert len({tuple(r) for r in neg.numpy().round(6)}) > 45
