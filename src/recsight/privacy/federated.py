"""Federated matrix factorization on Flower: one client per user, item factors by FedAvg.

The design is FCF (Ammad-ud-din et al. 2019, "Federated Collaborative Filtering for
Privacy-Preserving Personalized Recommendation"), the implicit-ALS objective of
`recsight.models.als.ALS` trained without collecting anyone's events:

- every client holds one user's events and nothing else;
- in a round, each sampled client solves its own user vector in closed form from the
  current item factors (the same equation ALS folds histories in with), takes
  `local_epochs` gradient steps on the item factors, and sends back only the updated item
  factors. The user vector is recomputed on the client each round and never leaves it;
- the server averages the returned item factors with Flower's `FedAvg`, every client
  weighing the same (each reports ``num-examples`` = 1, so the server learns nothing of
  history sizes and one user is one unit, as in user-level DP);
- optionally (``dp_noise`` > 0) each client clips its update with Flower's
  `fixedclipping_mod` and the server adds Gaussian noise to the average
  (`DifferentialPrivacyClientSideFixedClipping`): central DP with client-side clipping.
  The ε reported is the RDP bound (Opacus' accountant) *without* credit for client
  subsampling, since Flower samples a fixed number of clients, not Poisson.

What the updates still reveal: without DP an item-factor update is a rank-one matrix
``r x_u^T`` from which a curious server can read the direction of ``x_u`` and which items
the client has (the gradient-leakage weakness of FCF/FedRec). Clipping plus noise bounds it.

The trained model (`FederatedMF`, registered as ``fedmf``) keeps only the item factors:
a user's vector is folded in from their history when they are scored, exactly as a client
computes it, so serving needs no per-user state. Flower's simulation engine runs on Ray (the
``federated`` extra plus ``pip install --no-deps flwr==1.42.0``, see pyproject.toml), started
with the CPUs and object-store memory given by `ray_cpus` / `ray_object_store_mb`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsight.data.dataset import Interactions
from recsight.errors import InputError
from recsight.models.als import _FactorModel

#: Key of the item-factor array in every Flower message.
ITEM_FACTORS = "item_factors"


def client_user_vector(
    item_factors: np.ndarray, items: np.ndarray, weights: np.ndarray, reg: float, alpha: float
) -> np.ndarray:
    """A client's own user vector: the exact implicit-ALS solve
    ``(Y^T Y + reg I + sum_j (c_j - 1) y_j y_j^T) x = sum_j c_j y_j``, ``c_j = alpha w_j``."""
    y = item_factors.astype(np.float64)
    c = alpha * np.asarray(weights, np.float64)
    yh = y[items]
    a = y.T @ y + reg * np.eye(y.shape[1]) + yh.T @ ((c - 1.0)[:, None] * yh)
    return np.linalg.solve(a, yh.T @ c)


def client_update(
    item_factors: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    *,
    reg: float,
    alpha: float,
    lr: float,
    item_reg: float,
    local_epochs: int = 1,
) -> np.ndarray:
    """One client's training round: new item factors after `local_epochs` gradient steps on
    its own loss ``sum_i c_i (p_i - x . y_i)^2 + item_reg |Y|^2`` (p = 1, c = alpha w on the
    client's items; p = 0, c = 1 elsewhere), its user vector x re-solved before each step.
    Only the returned item factors leave the client."""
    y = item_factors.astype(np.float64, copy=True)
    c = np.ones(len(y))
    p = np.zeros(len(y))
    c[items] = alpha * np.asarray(weights, np.float64)
    p[items] = 1.0
    for _ in range(local_epochs):
        x = client_user_vector(y, items, weights, reg, alpha)
        residual = c * (p - y @ x)
        y -= lr * (-2.0 * residual[:, None] * x[None, :] + 2.0 * item_reg * y)
    return y.astype(np.float32)


@dataclass
class RoundRecord:
    """One federated round: clients that answered, bytes sent down and up (array payload),
    seconds, and the evaluation metrics when the round was evaluated."""

    round: int
    clients: int
    bytes_down: int
    bytes_up: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class FederatedHistory:
    """What a federated fit did, round by round, and the privacy spent (None without DP)."""

    rounds: list[RoundRecord] = field(default_factory=list)
    epsilon: float | None = None
    delta: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_flower() -> None:
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        raise InputError(
            "fedmf: federated training needs Flower's simulation engine; install it with "
            "pip install 'recsight[federated]' && pip install --no-deps flwr==1.42.0"
        ) from None


def payload_bytes(arrays: Any) -> int:
    """Bytes of the serialized arrays (npy: values plus header) in a Flower `ArrayRecord`:
    what travels, less the message framing."""
    return int(sum(len(a.data) for a in arrays.values()))


def make_client_app(histories: sp.csr_matrix, dp: bool = False) -> Any:
    """The Flower `ClientApp`: the node with partition id u is user u and reads row u of
    `histories` only. With `dp`, Flower's `fixedclipping_mod` clips each update."""
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.clientapp.mod import fixedclipping_mod

    app = ClientApp(mods=[fixedclipping_mod] if dp else [])

    @app.train()
    def train(msg: Any, context: Any) -> Any:
        u = int(context.node_config["partition-id"])
        row = histories[u]
        cfg = msg.content["config"]
        y = msg.content["arrays"][ITEM_FACTORS].numpy()
        new = client_update(
            y,
            row.indices,
            row.data,
            reg=float(cfg["reg"]),
            alpha=float(cfg["alpha"]),
            lr=float(cfg["lr"]),
            item_reg=float(cfg["item_reg"]),
            local_epochs=int(cfg["local_epochs"]),
        )
        content = RecordDict({
            "arrays": ArrayRecord({ITEM_FACTORS: Array(new)}),
            "metrics": MetricRecord({"num-examples": 1}),
        })  # fmt: skip
        return Message(content=content, reply_to=msg)

    return app


def make_fedavg(
    n_clients: int, per_round: int, history: FederatedHistory, clock: list[float]
) -> Any:
    """Flower's FedAvg sampling `per_round` of `n_clients` nodes per round, recording the
    clients and array bytes of every round into `history` (nothing else is changed)."""
    from flwr.serverapp.strategy import FedAvg

    class RecordingFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):  # type: ignore[no-untyped-def]
            messages = list(super().configure_train(server_round, arrays, config, grid))
            clock[0] = time.perf_counter()
            down = payload_bytes(arrays) * len(messages)
            history.rounds.append(RoundRecord(server_round, 0, down, 0, 0.0))
            return messages

        def aggregate_train(self, server_round, replies):  # type: ignore[no-untyped-def]
            replies = list(replies)
            rec = history.rounds[-1]
            ok = [m for m in replies if not m.has_error()]
            rec.clients = len(ok)
            rec.bytes_up = sum(payload_bytes(m.content["arrays"]) for m in ok)
            out = super().aggregate_train(server_round, replies)
            rec.seconds = time.perf_counter() - clock[0]
            return out

    return RecordingFedAvg(
        fraction_train=per_round / n_clients,
        fraction_evaluate=0.0,
        min_train_nodes=per_round,
        min_available_nodes=n_clients,
    )


def run_federated(
    histories: sp.csr_matrix,
    initial: np.ndarray,
    *,
    rounds: int,
    clients_per_round: int,
    train_config: Mapping[str, float | int],
    dp_noise: float = 0.0,
    dp_clip: float = 1.0,
    evaluate: Callable[[int, np.ndarray], dict[str, float] | None] | None = None,
    ray_cpus: int = 1,
    ray_object_store_mb: int = 256,
    verbose: bool = False,
    history: FederatedHistory | None = None,
) -> tuple[np.ndarray, FederatedHistory]:
    """Run Flower's simulation engine: one virtual node per row of `histories`, `rounds`
    rounds of `clients_per_round` sampled clients, FedAvg of the item factors starting from
    `initial`. `evaluate(round, item_factors)` (server side; it sees only item factors) is
    called after every round and its metrics are recorded. Returns the final item factors
    and the round-by-round history (`history`, filled as rounds finish, when given)."""
    _require_flower()
    from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import DifferentialPrivacyClientSideFixedClipping
    from flwr.simulation import run_simulation

    n = histories.shape[0]
    if not 1 <= clients_per_round <= n:
        raise InputError(f"clients_per_round: expected 1..{n} (the number of users), not "
                         f"{clients_per_round}")  # fmt: skip
    history = FederatedHistory() if history is None else history
    out: dict[str, np.ndarray] = {}
    clock = [0.0]
    dp = dp_noise > 0

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = make_fedavg(n, clients_per_round, history, clock)
        if dp:
            strategy = DifferentialPrivacyClientSideFixedClipping(
                strategy, dp_noise, dp_clip, clients_per_round
            )

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            if evaluate is None or server_round == 0:
                return None
            metrics = evaluate(server_round, arrays[ITEM_FACTORS].numpy())
            if not metrics:
                return None
            history.rounds[-1].metrics = {k: float(v) for k, v in metrics.items()}
            return MetricRecord(history.rounds[-1].metrics)

        result = strategy.start(
            grid,
            initial_arrays=ArrayRecord({ITEM_FACTORS: Array(initial.astype(np.float32))}),
            num_rounds=rounds,
            train_config=ConfigRecord(dict(train_config)),
            evaluate_fn=evaluate_fn,
        )
        out["y"] = result.arrays[ITEM_FACTORS].numpy()

    backend = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": int(ray_cpus),
            "object_store_memory": int(ray_object_store_mb) * 1024 * 1024,
            "include_dashboard": False,
            "log_to_driver": verbose,
        },
    }
    started = time.perf_counter()
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        run_simulation(
            server_app=server,
            client_app=make_client_app(histories, dp),
            num_supernodes=n,
            backend_config=backend,
            verbose_logging=verbose,
        )
    finally:
        flwr_logger.setLevel(level)
    if "y" not in out:
        raise RuntimeError("fedmf: the Flower simulation ended without a result (see its log)")
    history.seconds = time.perf_counter() - started
    if dp:
        history.epsilon, history.delta = federated_epsilon(dp_noise, rounds, n)
    return out["y"], history


def federated_epsilon(noise: float, rounds: int, n_users: int) -> tuple[float, float]:
    """(ε, δ) of `rounds` Gaussian releases with noise multiplier `noise`, by Opacus' RDP
    accountant, with no credit for subsampling; δ = 1 / n_users^1.1 (below 1/n)."""
    from opacus.accountants import RDPAccountant

    delta = float(n_users) ** -1.1
    acc = RDPAccountant()
    acc.history = [(noise, 1.0, rounds)]
    return float(acc.get_epsilon(delta)), delta


class FederatedMF(_FactorModel):
    """Implicit matrix factorization trained federated with Flower (FCF; see the module
    docstring). Hyperparameters: `factors`, `reg` and `alpha` (the user-side solve, as in
    `als`), `lr`, `item_reg` and `local_epochs` (each client's item steps), `rounds`,
    `clients_per_round`, `dp_noise` (0 = no DP; else the Gaussian noise multiplier) and
    `dp_clip` (client update clipping norm), `ray_cpus` / `ray_object_store_mb` (caps for
    Ray), `seed`, `verbose`. Learned state: `item_factors_` only; `history_` records the
    rounds (clients, bytes, seconds) and the ε spent under DP.
    """

    name: ClassVar[str] = "fedmf"
    _state: ClassVar[tuple[str, ...]] = ("item_factors_",)
    _user_state: ClassVar[tuple[str, ...]] = ()  # no per-user state to erase

    def __init__(
        self,
        factors: int = 16,
        reg: float = 1.0,
        alpha: float = 10.0,
        lr: float = 0.2,
        item_reg: float = 0.01,
        local_epochs: int = 1,
        rounds: int = 100,
        clients_per_round: int = 100,
        dp_noise: float = 0.0,
        dp_clip: float = 1.0,
        weights: Mapping[str, float | str] | None = None,
        ray_cpus: int = 1,
        ray_object_store_mb: int = 256,
        seed: int = 42,
        verbose: bool = False,
    ):
        self.factors = factors
        self.reg = reg
        self.alpha = alpha
        self.lr = lr
        self.item_reg = item_reg
        self.local_epochs = local_epochs
        self.rounds = rounds
        self.clients_per_round = clients_per_round
        self.dp_noise = dp_noise
        self.dp_clip = dp_clip
        self.weights = weights
        self.ray_cpus = ray_cpus
        self.ray_object_store_mb = ray_object_store_mb
        self.seed = seed
        self.verbose = verbose

    def _fold_in_params(self) -> tuple[float, float]:
        return float(self.reg), float(self.alpha)

    def _check(self) -> None:
        for name in ("factors", "rounds", "clients_per_round", "local_epochs", "ray_cpus"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name}: expected a positive integer, not {v!r}")
        for name in ("lr", "alpha", "dp_clip"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name}: expected a positive number, not {getattr(self, name)}")
        for name in ("reg", "item_reg", "dp_noise"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name}: expected a number >= 0, not {getattr(self, name)}")

    def train_config(self) -> dict[str, float | int]:
        """What the server sends each client with the item factors."""
        return {
            "reg": float(self.reg),
            "alpha": float(self.alpha),
            "lr": float(self.lr),
            "item_reg": float(self.item_reg),
            "local_epochs": int(self.local_epochs),
        }

    def fit(
        self,
        train: Interactions,
        evaluate: Callable[[int, np.ndarray], dict[str, float] | None] | None = None,
    ) -> FederatedMF:
        """Train by simulated federated rounds, one client per user of `train`.
        `evaluate(round, item_factors)` (optional) is called after every round; `history_`
        fills as rounds finish."""
        self._check()
        _require_flower()
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        rng = np.random.default_rng(self.seed)
        initial = rng.normal(0.0, 0.1, (train.n_items, int(self.factors))).astype(np.float32)
        self.history_ = FederatedHistory()
        y, _ = run_federated(
            self.seen_,
            initial,
            rounds=int(self.rounds),
            clients_per_round=min(int(self.clients_per_round), train.n_users),
            train_config=self.train_config(),
            dp_noise=float(self.dp_noise),
            dp_clip=float(self.dp_clip),
            evaluate=evaluate,
            ray_cpus=int(self.ray_cpus),
            ray_object_store_mb=int(self.ray_object_store_mb),
            verbose=bool(self.verbose),
            history=self.history_,
        )
        self.item_factors_ = np.ascontiguousarray(y, dtype=np.float32)
        self._derive()
        if self.dp_noise > 0:
            from recsight.models.guarantee import PrivacyReport

            self.privacy_ = PrivacyReport(
                unit="user",
                epsilon_target=None,
                epsilon_spent=float(self.history_.epsilon),
                delta=float(self.history_.delta),
                noise_multiplier=float(self.dp_noise),
                max_grad_norm=float(self.dp_clip),
                sample_rate=min(int(self.clients_per_round), train.n_users) / train.n_users,
                steps=len(self.history_.rounds),
                accountant="rdp, no credit for client sampling",
            )
        return self

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        # no user factors are kept: fold each user's history in, as their client would
        rows = self.seen_[np.asarray(user_idx, dtype=np.int64)]
        return self.score_history(rows)
