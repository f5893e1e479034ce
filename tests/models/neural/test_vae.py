"""Mult-VAE and RecVAE: they learn a planted block structure, fold-in reproduces known users,
validation is the evaluator's protocol, persistence, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsight.data.splits import split
from recsight.errors import InputError
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.neural.vae import (
    VALID_K,
    VALID_SHARE,
    MultVAE,
    RecVAE,
    Rows,
    SparseInput,
    _Alternating,
    _log_norm_pdf,
)
from recsight.models.registry import create_model, load_model

TINY = dict(hidden=32, latent=8, batch_size=8, verbose=False)


@pytest.fixture(scope="module")
def fitted(blocks):
    return {
        "multvae": MultVAE(epochs=60, lr=1e-2, early_stopping=False, **TINY).fit(blocks),
        "recvae": RecVAE(epochs=15, lr=5e-3, early_stopping=False, **TINY).fit(blocks),
    }


@pytest.mark.parametrize("name", ["multvae", "recvae"])
def test_learns_the_planted_blocks(fitted, blocks, name):
    model = fitted[name]
    ids, _ = model.recommend(blocks.users.ids, k=3)
    block_of_item = {f"i{i}": i // 15 for i in range(30)}
    own = np.array([[block_of_item[i] == (u >= 20) for i in row] for u, row in enumerate(ids)])
    assert own.mean() == 1.0


@pytest.mark.parametrize("name", ["multvae", "recvae"])
def test_fold_in_of_a_known_history_reproduces_its_scores(fitted, name):
    model = fitted[name]
    users = np.arange(5)
    np.testing.assert_allclose(
        model.score_history(model.seen_[users]), model.score_all(users), rtol=1e-5, atol=1e-5
    )
    # a new history: its own block comes first
    ids, _ = model.recommend_for_history(["i16", "i17", "i18"], k=3)
    assert all(int(i[1:]) >= 15 for i in ids)


@pytest.mark.parametrize("name", ["multvae", "recvae"])
def test_save_load_round_trip(fitted, name, tmp_path):
    model = fitted[name]
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.get_params() == model.get_params()
    users = np.arange(model.seen_.shape[0])
    np.testing.assert_array_equal(loaded.score_all(users), model.score_all(users))


@pytest.mark.parametrize("cls", [MultVAE, RecVAE])
def test_validation_is_the_evaluators_protocol_on_a_user_random_holdout(cls, blocks):
    model = cls(epochs=6, lr=1e-2, patience=None, **TINY).fit(blocks)
    h = model.history_
    assert h.metric_name == f"ndcg@{VALID_K}" and len(h.epochs) == 6
    assert h.best_metric == max(e.metric for e in h.epochs)
    # the kept weights score the validation split exactly as evaluate_ranking does
    parts = split(blocks, f"user_random:{1 - VALID_SHARE}", seed=model.seed)
    fit_rows = parts.train.to_csr(binary=True)

    class Scorer:
        def score_all(self, u):
            return model.score_history(fit_rows[u])

    res = evaluate_ranking(Scorer(), parts.train, parts.test, ks=(VALID_K,), metrics=["ndcg"])
    assert res.summary[f"ndcg@{VALID_K}"] == pytest.approx(h.best_metric, abs=1e-12)


def test_recvae_alternation_steps_one_side_per_phase():
    model = RecVAE(**TINY)
    model.dims_ = np.array([10])
    net = model._build_net()
    opt = _Alternating(net, 0.1, 0.0)
    enc0 = [p.detach().clone() for p in net.encoder.parameters()]
    dec0 = [p.detach().clone() for p in net.decoder.parameters()]
    opt.phase = "dec"
    opt.zero_grad()
    net.score(
        Rows.of(sp.csr_matrix(np.ones((2, 10), np.float32)), np.arange(2), torch.device("cpu"))
    ).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(enc0, net.encoder.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(dec0, net.decoder.parameters(), strict=True))


def test_empty_history_gets_popularity_and_no_nan(fitted):
    model = fitted["recvae"]
    s = model.score_history(sp.csr_matrix((1, model.n_items), dtype=np.float32))
    assert np.isfinite(s).all()
    _, scores = model.recommend_for_history([], k=3)
    assert scores.tolist() == sorted(model.item_popularity_, reverse=True)[:3]


def test_bad_parameters_raise_input_error(blocks):
    with pytest.raises(InputError, match="dropout"):
        create_model("multvae", dropout=1.0, verbose=False).fit(blocks)
    with pytest.raises(InputError, match="gamma"):
        create_model("recvae", gamma=0, verbose=False).fit(blocks)
    with pytest.raises(InputError, match="hidden"):
        create_model("recvae", hidden=0, verbose=False).fit(blocks)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            create_model("multvae", device="cuda", verbose=False).fit(blocks)


def test_sparse_input_layer_equals_the_dense_normalised_product():
    m = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    layer = SparseInput(4, 3)
    got = Rows.of(m, np.arange(3), torch.device("cpu")).input_layer(layer, 0.5, training=False)
    x = torch.from_numpy(m.toarray())
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(got, x @ layer.weight + layer.bias)


class _PaperLossRecVAE(RecVAE):
    """RecVAE with the loss of the paper's code: the whole negative ELBO back-propagated in
    both phases (only the phase's optimizer steps)."""

    def _loss(self, net, batch):
        phase, x = batch
        self._opt.phase = phase
        mu, logvar = net.encoder(x, float(self.dropout) if phase == "enc" else 0.0)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        mll = x.log_likelihood(net.decoder(z))
        kld = (_log_norm_pdf(z, mu, logvar) - self._prior(x, z)).sum(1)
        return (kld * float(self.gamma) * x.counts - mll).mean()


def _one_batch(model: RecVAE, blocks):
    model.dims_ = np.array([blocks.n_items])
    net = model._build_net()
    model._optimizer(net)
    model._epoch_batches(net, blocks.to_csr(binary=True), np.arange(4), torch.device("cpu"))
    rows = Rows.of(blocks.to_csr(binary=True).astype(np.float32), np.arange(4), torch.device("cpu"))
    return net, rows


def test_recvae_computes_only_the_stepping_sides_gradient(blocks, monkeypatch):
    model = RecVAE(**TINY)
    net, rows = _one_batch(model, blocks)
    model._loss(net, ("enc", rows)).backward()
    assert all(p.grad is not None for p in net.encoder.parameters())
    assert all(p.grad is None for p in net.decoder.parameters())
    net.zero_grad(set_to_none=True)

    def no_prior(*args):
        raise AssertionError("the decoder phase does not need the prior")

    monkeypatch.setattr(model._prior, "forward", no_prior)
    model._loss(net, ("dec", rows)).backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    assert all(p.grad is not None for p in net.decoder.parameters())


def test_recvae_trains_exactly_as_the_papers_loss(blocks):
    args = dict(epochs=3, lr=5e-3, early_stopping=False, **TINY)
    ours, paper = RecVAE(**args).fit(blocks), _PaperLossRecVAE(**args).fit(blocks)
    for (name, a), b in zip(ours.net.state_dict().items(), paper.net.state_dict().values(),
                            strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
