"""Federated MF on Flower: what a client sends, FedAvg by hand, a 2-round simulation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsight.errors import InputError
from tests.models.conftest import make_interactions

flwr = pytest.importorskip("flwr", reason="the federated extra is not installed")

from flwr.app import (  # noqa: E402
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    Metadata,
    RecordDict,
)

from recsight.privacy.federated import (  # noqa: E402
    ITEM_FACTORS,
    FederatedMF,
    RoundRecord,
    client_user_vector,
    federated_epsilon,
    make_client_app,
    make_fedavg,
)

CFG = {"reg": 0.5, "alpha": 4.0, "lr": 0.05, "item_reg": 0.01, "local_epochs": 1}


def _histories() -> sp.csr_matrix:
    rows = [[0, 2], [1, 2, 3], [4], [0, 5, 3]]
    u = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    return sp.csr_matrix(
        (np.ones(len(u), np.float32), (u, np.concatenate(rows))), shape=(len(rows), 6)
    )


def _ask(app, y: np.ndarray, user: int, extra: dict | None = None) -> Message:
    """Send one train message with item factors `y` to the client of `user`."""
    cfg = ConfigRecord({**CFG, **(extra or {})})
    # what the SuperLink would stamp on a server instruction
    meta = Metadata(
        run_id=1,
        message_id=f"m{user}",
        src_node_id=0,
        dst_node_id=user + 1,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=3600.0,
        message_type=MessageType.TRAIN,
    )
    content = RecordDict({"arrays": ArrayRecord({ITEM_FACTORS: Array(y)}), "config": cfg})
    msg = Message(content, metadata=meta)
    ctx = Context(
        run_id=1,
        node_id=user + 1,
        node_config={"partition-id": user, "num-partitions": 4},
        state=RecordDict(),
        run_config={},
    )
    return app(msg, ctx)


def _hand_update(y: np.ndarray, items: list[int], cfg: dict) -> np.ndarray:
    """The FCF client step written out the textbook way: C_u and p_u as full vectors, the
    user's ridge solve with them, then the item gradient item by item."""
    n, k = y.shape
    c = np.ones(n)
    p = np.zeros(n)
    c[items] = cfg["alpha"]
    p[items] = 1.0
    x = np.linalg.solve(y.T @ np.diag(c) @ y + cfg["reg"] * np.eye(k), y.T @ (c * p))
    new = y.astype(np.float64).copy()
    for i in range(n):
        grad = -2.0 * c[i] * (p[i] - x @ y[i]) * x + 2.0 * cfg["item_reg"] * y[i]
        new[i] = y[i] - cfg["lr"] * grad
    return new


def test_client_sends_only_item_factors_never_its_user_vector():
    h = _histories()
    y = np.random.default_rng(0).normal(0, 0.3, (6, 3)).astype(np.float32)
    reply = _ask(make_client_app(h), y, 1)
    assert not reply.has_error()
    content = reply.content
    assert list(content.array_records) == ["arrays"]
    arrays = content.array_records["arrays"]
    assert list(arrays) == [ITEM_FACTORS]
    assert tuple(arrays[ITEM_FACTORS].shape) == (6, 3)
    assert dict(content.metric_records["metrics"]) == {"num-examples": 1}
    assert not content.config_records
    # the user's vector (what the client solved) appears nowhere in what it sends
    x = client_user_vector(y, h[1].indices, h[1].data, CFG["reg"], CFG["alpha"])
    sent = np.concatenate([a.numpy().ravel() for a in arrays.values()])
    for v in x:
        assert not np.isclose(sent, v, rtol=0, atol=1e-7).any()


def test_client_update_and_fedavg_equal_the_hand_computed_mean():
    h = _histories()
    y = np.random.default_rng(1).normal(0, 0.3, (6, 3)).astype(np.float32)
    app = make_client_app(h)
    replies = [_ask(app, y, u) for u in range(4)]
    for u, reply in enumerate(replies):
        expected = _hand_update(y, list(h[u].indices), CFG)
        got = reply.content["arrays"][ITEM_FACTORS].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    history = make_history_stub()
    strategy = make_fedavg(4, 4, history, [0.0])
    arrays, _ = strategy.aggregate_train(1, replies)
    by_hand = np.mean([_hand_update(y, list(h[u].indices), CFG) for u in range(4)], axis=0)
    np.testing.assert_allclose(arrays[ITEM_FACTORS].numpy(), by_hand, rtol=1e-4, atol=1e-6)
    assert history.rounds[-1].clients == 4
    one = len(Array(y).data)  # serialized: the float32 values plus the npy header
    assert 6 * 3 * 4 < one < 6 * 3 * 4 + 256
    assert history.rounds[-1].bytes_up == 4 * one


def make_history_stub():
    from recsight.privacy.federated import FederatedHistory

    history = FederatedHistory()
    history.rounds.append(RoundRecord(1, 0, 0, 0, 0.0))
    return history


def test_client_side_clipping_bounds_the_update():
    h = _histories()
    y = np.random.default_rng(2).normal(0, 0.3, (6, 3)).astype(np.float32)
    loud = {"lr": 5.0}
    free = _ask(make_client_app(h), y, 3, loud).content["arrays"][ITEM_FACTORS].numpy()
    assert np.linalg.norm(free - y) > 0.1
    clipped = _ask(make_client_app(h, dp=True), y, 3, {**loud, "clipping_norm": 0.1})
    upd = clipped.content["arrays"][ITEM_FACTORS].numpy() - y
    np.testing.assert_allclose(np.linalg.norm(upd), 0.1, rtol=1e-4)
    # clipping scales the update, it does not change its direction
    np.testing.assert_allclose(upd / 0.1, (free - y) / np.linalg.norm(free - y), atol=1e-5)


def test_federated_epsilon_is_the_gaussian_rdp_bound():
    eps, delta = federated_epsilon(4.0, 10, 1000)
    assert delta < 1 / 1000
    # RDP of T Gaussian releases: T a / (2 s^2); Opacus converts with a bound at least as
    # tight as the classic eps <= min_a RDP(a) + log(1/delta) / (a - 1)
    orders = np.linspace(1.5, 200, 4000)
    classic = np.min(10 * orders / (2 * 16.0) + np.log(1 / delta) / (orders - 1))
    assert 0 < eps <= classic + 1e-6
    assert eps > 0.5 * classic
    assert federated_epsilon(8.0, 10, 1000)[0] < eps < federated_epsilon(4.0, 40, 1000)[0]


def test_forgetting_a_user_keeps_item_factors_and_asks_for_a_retrain():
    from recsight.privacy.unlearn import forget_in_model

    data = make_interactions(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 2]))
    model = FederatedMF(factors=3)
    model._set_training(data, data.to_csr())
    model.item_factors_ = np.random.default_rng(0).normal(0, 0.3, (3, 3)).astype(np.float32)
    model._derive()
    before = model.recommend(["u0"], k=2)
    # the item factors still carry the user's updates: removed, but not exact unlearning
    assert forget_in_model(model, ["u1"]) == (1, False)
    assert list(model.users_.ids) == ["u0", "u2"]
    after = model.recommend(["u0"], k=2)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1])


def test_bad_hyperparameters_are_refused():
    data = make_interactions(np.array([0, 0, 1]), np.array([0, 1, 1]))
    with pytest.raises(InputError, match="clients_per_round"):
        FederatedMF(clients_per_round=0).fit(data)
    with pytest.raises(InputError, match="lr"):
        FederatedMF(lr=0).fit(data)


@pytest.mark.slow  # ~45 s here, most of it starting Ray
def test_flower_simulation_two_rounds_five_clients(tmp_path):
    """The whole path through Flower's simulation engine (Ray), kept small: 5 users, 2
    rounds, every client each round."""
    rng = np.random.default_rng(3)
    u = np.repeat(np.arange(5), 4)
    i = np.concatenate([rng.choice(12, 4, replace=False) for _ in range(5)])
    data = make_interactions(u, i, n_users=5, n_items=12)
    seen_rounds = []

    def evaluate(rnd: int, y: np.ndarray) -> dict[str, float]:
        seen_rounds.append(rnd)
        return {"norm": float(np.linalg.norm(y))}

    # with Flower's client-side clipping and server noise on, both negligible here, so the
    # result still matches the hand-computed rounds
    model = FederatedMF(
        factors=4, rounds=2, clients_per_round=5, lr=0.1, seed=0, dp_noise=1e-6, dp_clip=100.0
    )
    model.fit(data, evaluate=evaluate)
    hist = model.history_
    assert [r.round for r in hist.rounds] == [1, 2] == seen_rounds
    assert all(r.clients == 5 for r in hist.rounds)
    one = len(Array(model.item_factors_).data)
    assert all(r.bytes_up == r.bytes_down == 5 * one for r in hist.rounds)
    assert hist.rounds[-1].metrics["norm"] == pytest.approx(np.linalg.norm(model.item_factors_))
    # the result is two FedAvg rounds of the clients' own updates, recomputed here
    from recsight.privacy.federated import client_update

    y = np.random.default_rng(0).normal(0.0, 0.1, (12, 4)).astype(np.float32)
    for _ in range(2):
        ups = [
            client_update(y, model.seen_[v].indices, model.seen_[v].data, **{
                k: model.train_config()[k] for k in ("reg", "alpha", "lr", "item_reg")
            }) for v in range(5)
        ]  # fmt: skip
        y = np.mean(ups, axis=0).astype(np.float32)
    np.testing.assert_allclose(model.item_factors_, y, rtol=1e-4, atol=1e-4)
    assert not np.allclose(model.item_factors_, y, rtol=0, atol=1e-9)  # the noise is there
    assert model.privacy_.steps == 2 and model.privacy_.noise_multiplier == 1e-6
    assert model.privacy_.epsilon_spent > 1e6  # next to no noise: next to no privacy
    # servable: saved with item factors only; a user is folded in from their history
    model.save(tmp_path / "fed")
    with np.load(tmp_path / "fed" / "arrays.npz") as npz:
        assert "user_factors_" not in npz.files and "item_factors_" in npz.files
    from recsight.models import load_model

    back = load_model(tmp_path / "fed")
    ids, _ = back.recommend(["u0"], k=3)
    hist_ids = [f"i{j}" for j in i[:4]]
    ids2, _ = back.recommend_for_history(hist_ids, k=3, user="u0")
    assert list(ids[0]) == list(ids2)
    assert not set(ids[0]) & set(hist_ids)
