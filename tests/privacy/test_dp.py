"""User-level DP-SGD for SASRec: exact per-sample gradients, ε spent within the target,
one unit per user, and clear refusals."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from recsight.errors import InputError
from recsight.models import create_model, load_model
from recsight.models.neural.sasrec import SASRec
from tests.models.conftest import make_interactions

pytest.importorskip("opacus", reason="the private extra is not installed")

from recsight.models.neural.dp import (  # noqa: E402
    per_sample_gradient_error,
    per_user_loss,
    user_windows,
)


def _data(n_users: int = 30, per_user: int = 8, n_items: int = 20):
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(n_users), per_user)
    return make_interactions(u, rng.integers(0, n_items, len(u)), n_users=n_users, n_items=n_items)


def _net(data, **kw):
    m = SASRec(max_len=5, dim=8, layers=2, heads=2, dropout=0.0, attn_dropout=0.0, **kw)
    m.dims_ = np.array([data.n_items])
    return m._build_net()


def test_user_windows_name_their_owner():
    # user 0: 7 events -> windows of 4: [e3..e6], [e0..e2] (left-padded); user 1: 1 event
    # (nothing to predict, dropped); user 2: 2 events
    indptr = np.array([0, 7, 8, 10])
    items = np.array([0, 1, 2, 3, 4, 5, 6, 9, 7, 8])
    windows, owner = user_windows(indptr, items, 4)
    np.testing.assert_array_equal(
        windows, [[4, 5, 6, 7], [0, 1, 2, 3], [0, 0, 8, 9]]
    )  # item index + 1
    np.testing.assert_array_equal(owner, [0, 0, 2])


def test_per_sample_gradients_of_the_dp_model_equal_a_per_example_loop():
    torch.manual_seed(0)
    data = _data()
    net = _net(data)
    windows, _ = user_windows(*data.sequences(), 6)
    assert per_sample_gradient_error(net, per_user_loss, torch.from_numpy(windows[:6])) < 1e-4


def test_the_check_catches_scoring_against_the_raw_embedding_weight():
    """`h @ emb.weight.T` (instead of the tied nn.Linear) trains the same but Opacus then
    misses that use of the weight: the per-sample gradients are silently wrong."""
    torch.manual_seed(0)
    data = _data()
    net = _net(data)

    def raw_logits(self, h, items=None):
        return h @ self.item_emb.weight[1 : self.n_items + 1].T

    net.item_logits = types.MethodType(raw_logits, net)
    windows, _ = user_windows(*data.sequences(), 6)
    assert per_sample_gradient_error(net, per_user_loss, torch.from_numpy(windows[:6])) > 0.1


def test_dp_fit_spends_at_most_the_target_epsilon(tmp_path):
    data = _data()
    model = create_model(
        "sasrec", max_len=5, dim=8, layers=1, heads=1, epochs=3, batch_size=8,
        verbose=False, dp_epsilon=2.0, dp_delta=1e-3, dp_max_grad_norm=0.5,
    )  # fmt: skip
    model.fit(data)
    p = model.privacy_
    assert p.unit == "user"
    # Opacus calibrates the noise for the target over the planned epochs: spent <= target,
    # and not far below it (the noise is not wildly over-provisioned)
    assert 0.9 * 2.0 < p.epsilon_spent <= 2.0
    assert p.noise_multiplier > 0.5 and p.max_grad_norm == 0.5 and p.delta == 1e-3
    # one example per *user* (30 users with windows), batch 8: 4 steps an epoch
    assert p.sample_rate == pytest.approx(1 / 4)
    assert p.steps == 3 * 4
    assert [r.epoch for r in model.history_.epochs] == [1, 2, 3]
    ids, _ = model.recommend(["u0"], k=5)
    assert len(set(ids[0])) == 5
    model.save(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.get_params()["dp_epsilon"] == 2.0
    np.testing.assert_allclose(back.score_all(np.arange(3)), model.score_all(np.arange(3)))


def test_epsilon_inf_is_the_same_training_without_clipping_or_noise():
    data = _data()
    model = SASRec(max_len=5, dim=8, layers=1, heads=1, epochs=2, batch_size=8,
                   verbose=False, dp_epsilon="inf")  # fmt: skip
    model.fit(data)
    assert math.isinf(model.privacy_.epsilon_spent)
    assert model.privacy_.noise_multiplier == 0.0
    assert model.privacy_.to_dict()["epsilon_spent"] == "inf"


def test_models_without_checked_per_sample_gradients_refuse_dp():
    with pytest.raises(InputError, match=r"'ease' has no differentially private.*sasrec"):
        create_model("ease", dp_epsilon=8)
    with pytest.raises(InputError, match=r"'bert4rec' has no differentially private"):
        create_model("bert4rec", dp_epsilon=8, dp_delta=1e-5)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dp_epsilon": 0}, "dp_epsilon: expected a positive number"),
        ({"dp_epsilon": "lots"}, "dp_epsilon: expected a positive number"),
        ({"dp_epsilon": 8, "dp_delta": 1.5}, r"dp_delta: expected a number in \(0, 1\)"),
        ({"dp_epsilon": 8, "dp_max_grad_norm": 0}, "dp_max_grad_norm: expected a positive"),
        ({"dp_epsilon": 8, "loss": "sampled"}, "DP-SGD trains with loss='full'"),
    ],
)
def test_bad_dp_settings_are_refused(params, message):
    with pytest.raises(InputError, match=message):
        SASRec(max_len=5, dim=8, epochs=1, verbose=False, **params).fit(_data())


def test_train_cli_reports_the_epsilon_spent(tmp_path):
    import json

    import typer
    from typer.testing import CliRunner

    from recsight.cli.models import register
    from recsight.data.ingest import ingest
    from recsight.data.store import Store

    app = typer.Typer()
    register(app)
    data = _data()
    rows = ["user_id,item_id,timestamp"] + [
        f"u{u},i{i},{1_600_000_000 + n * 60}"
        for n, (u, i) in enumerate(zip(data.user_idx, data.item_idx, strict=True))
    ]
    (tmp_path / "e.csv").write_text("\n".join(rows) + "\n")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "e.csv")
    out = tmp_path / "m"
    args = ["train", "sasrec", "--db", str(db), "--out", str(out), "--json"]
    params = ["max_len=5", "dim=8", "layers=1", "heads=1", "epochs=2", "batch_size=8",
              "dp_epsilon=4", "dp_delta=1e-3"]  # fmt: skip
    res = CliRunner().invoke(app, args + [a for p in params for a in ("--param", p)])
    assert res.exit_code == 0, res.output
    privacy = json.loads(res.stdout)["privacy"]
    assert privacy["unit"] == "user" and 3.6 < privacy["epsilon_spent"] <= 4.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["privacy"] == privacy
    refused = CliRunner().invoke(
        app, ["train", "ease", "--db", str(db), "--out", str(tmp_path / "e"),
              "--param", "dp_epsilon=8"],
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "no differentially private training" in refused.output
