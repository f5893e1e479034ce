"""What privacy costs in accuracy and time: federated MF by rounds vs centralized ALS, and
DP-SGD SASRec by ε, each next to popularity, on ML-100K (and ML-1M users 1-2,999).

Protocol: time-ordered leave-one-out (``split(data, "leave_last:1")``); every model trains
on train + validation (the neural ones hold each user's last training event out themselves
for early stopping) and is ranked on the test item over all items, the user's history masked,
by recsight's evaluator (HR@10, NDCG@10).

- ``--part federated``: `fedmf` (Flower simulation, one client per user, 100 clients per
  round) evaluated after each checkpoint round (``--rounds 10,25,...``), its time and bytes per
  round; the centralized peer is `als` with the same objective and size (factors, reg, alpha).
- ``--part dp``: SASRec trained with user-level DP-SGD (Opacus) for each ``--epsilons``
  value (``inf`` = the same user-sampled training without clipping or noise), the ε spent.
- ``--part forget``: time to forget one user (store erasure, exact unlearning of EASE and
  item-kNN) against a full retrain, on ML-1M pairs (`bench_forget.forget_rows`).

Runs are small (2 CPU cores shared here) and resumable: every finished configuration is
written to benchmarks/results/privacy.json at once, and a rerun skips what is there.

    .venv/bin/python benchmarks/bench_privacy.py --part federated --rounds 10,25,50,100,200,300
    .venv/bin/python benchmarks/bench_privacy.py --part dp --epsilons 8,3,1,inf
    .venv/bin/python benchmarks/bench_privacy.py --part dp --dataset ml-1m --epsilons inf,8
    .venv/bin/python benchmarks/bench_privacy.py --part forget [--forget-dataset ml-100k]
    .venv/bin/python benchmarks/bench_privacy.py            # the table of what is there
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from recsight.data.dataset import Interactions
from recsight.data.ingest import ingest
from recsight.data.splits import concat, split
from recsight.data.store import Store
from recsight.datasets import data_dir
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models import create_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "privacy.json"
console = Console()


def load(dataset: str) -> Interactions:
    root = data_dir()
    if root is None:
        raise SystemExit("set RECSIGHT_DATA_DIR to the shared data folder")
    if dataset == "ml-100k":
        path = root / "ml-100k" / "u.data"
    else:
        path = root / "ml-1m" / "ratings_users_0001-2999.dat"
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "b.duckdb") as store:
        ingest(store, path)
        return store.interactions()


def parts(dataset: str) -> tuple[Interactions, Interactions]:
    s = split(load(dataset), "leave_last:1")
    return concat(s.train, s.valid), s.test


def metrics(model: Any, train: Interactions, test: Interactions) -> dict[str, float]:
    r = evaluate_ranking(model, train, test, ks=(10,), metrics=("hr", "ndcg"))
    return {"hr@10": r.summary["hr@10"], "ndcg@10": r.summary["ndcg@10"]}


def machine() -> dict[str, Any]:
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load1": load1}


def read_results() -> dict[str, Any]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def save_result(key: str, value: dict[str, Any]) -> None:
    """Write one finished configuration at once (the file is the resume point); a lock file
    keeps two benchmark processes from losing each other's entries."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read_results()
        data[key] = {**value, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def baseline(dataset: str, name: str, train, test, **params: Any) -> None:
    key = f"{dataset}/{name}" + "".join(f"/{k}={v}" for k, v in sorted(params.items()))
    if key in read_results():
        return
    t0 = time.perf_counter()
    model = create_model(name, **params).fit(train)
    fit = time.perf_counter() - t0
    save_result(key, {"model": name, "params": params, "fit_seconds": fit,
                      **metrics(model, train, test)})  # fmt: skip
    console.print(f"{key}: {read_results()[key]}")


def run_federated(args: argparse.Namespace) -> None:
    dataset = args.dataset
    train, test = parts(dataset)
    size = {"factors": args.factors, "reg": 1.0, "alpha": 10.0}
    baseline(dataset, "popular", train, test)
    baseline(dataset, "als", train, test, iterations=15, **size)
    checkpoints = sorted(int(r) for r in args.rounds.split(","))
    key = f"{dataset}/fedmf/factors={args.factors}/clients={args.clients}/lr={args.lr}"
    done = read_results().get(key, {})
    if done.get("complete") and done.get("rounds_planned") == checkpoints[-1]:
        return
    from recsight.privacy.federated import FederatedMF

    model = FederatedMF(
        rounds=checkpoints[-1], clients_per_round=args.clients, lr=args.lr,
        ray_cpus=1, seed=0, **size,
    )  # fmt: skip
    record: dict[str, Any] = {"model": "fedmf", "params": model.get_params(),
                              "rounds_planned": checkpoints[-1], "checkpoints": [],
                              "complete": False}  # fmt: skip
    started = time.perf_counter()

    def evaluate(rnd: int, y: np.ndarray) -> dict[str, float] | None:
        if rnd not in checkpoints:
            return None
        model.item_factors_ = y
        model._derive()
        m = metrics(model, train, test)
        rounds = model.history_.rounds
        record["checkpoints"].append({
            "round": rnd, **m, "elapsed_seconds": time.perf_counter() - started,
            "mean_round_seconds": float(np.mean([r.seconds for r in rounds])),
            "bytes_per_round": int(np.mean([r.bytes_down + r.bytes_up for r in rounds])),
        })  # fmt: skip
        save_result(key, record)
        console.print(f"round {rnd}: {m}")
        return m

    model.fit(train, evaluate=evaluate)
    record["complete"] = True
    record["seconds"] = model.history_.seconds
    save_result(key, record)


def run_dp(args: argparse.Namespace) -> None:
    dataset = args.dataset
    train, test = parts(dataset)
    baseline(dataset, "popular", train, test)
    from recsight.models.neural.sasrec import SASRec

    for eps in [e.strip() for e in args.epsilons.split(",")]:
        size = {"max_len": 50, "dim": args.dim, "layers": args.layers, "heads": 2, "dropout": 0.2,
                "attn_dropout": 0.2, "batch_size": args.batch, "lr": args.dp_lr,
                "epochs": args.epochs, "max_minutes": args.minutes}  # fmt: skip
        key = f"{dataset}/sasrec-dp/eps={eps}/batch={args.batch}/epochs={args.epochs}"
        if (args.dim, args.layers, args.dp_lr) != (64, 2, 2e-3):
            key += f"/dim={args.dim}/layers={args.layers}/lr={args.dp_lr}"
        if key in read_results():
            continue
        model = SASRec(**size, dp_epsilon=float(eps), dp_delta=args.delta,
                       dp_max_grad_norm=args.clip, verbose=True, seed=0)  # fmt: skip
        t0 = time.perf_counter()
        model.fit(train)
        fit = time.perf_counter() - t0
        p = model.privacy_
        save_result(key, {
            "model": "sasrec", "params": {**size, "dp_delta": args.delta,
                                          "dp_max_grad_norm": args.clip},
            "epsilon_target": None if math.isinf(p.epsilon_target) else p.epsilon_target,
            "epsilon_spent": None if math.isinf(p.epsilon_spent) else p.epsilon_spent,
            "noise_multiplier": p.noise_multiplier, "steps": p.steps,
            "epochs_run": len(model.history_.epochs), "stopped_by": model.history_.stopped_by,
            "fit_seconds": fit, **metrics(model, train, test),
        })  # fmt: skip
        console.print(f"{key}: {read_results()[key]}")


def run_forget(args: argparse.Namespace) -> None:
    from bench_forget import forget_rows

    key = f"forget/{args.forget_dataset}"
    if key in read_results():
        return
    t0 = time.perf_counter()
    save_result(key, {"rows": forget_rows(args.forget_dataset),
                      "seconds_total": time.perf_counter() - t0})  # fmt: skip


def table() -> None:
    data = read_results()
    t = Table(title="privacy benchmark (benchmarks/results/privacy.json)")
    for col in ("configuration", "round/ε", "HR@10", "NDCG@10", "notes"):
        t.add_column(col)
    for key, v in data.items():
        if key.startswith("forget/"):
            for r in v["rows"]:
                retrain = "-" if r["retrain_s"] is None else f"retrain {r['retrain_s']:.2f} s"
                t.add_row(key, "", "", "", f"{r['user']} ({r['user_events']} events) "
                          f"{r['what']}: forget {r['forget_s']:.2f} s, {retrain}")  # fmt: skip
            continue
        if "checkpoints" in v:
            for c in v["checkpoints"]:
                t.add_row(key, str(c["round"]), f"{c['hr@10']:.4f}", f"{c['ndcg@10']:.4f}",
                          f"{c['mean_round_seconds']:.2f} s/round, "
                          f"{c['bytes_per_round'] / 1e6:.1f} MB/round")  # fmt: skip
        else:
            eps = v.get("epsilon_spent")
            notes = f"fit {v.get('fit_seconds', 0):.0f} s"
            if "steps" in v:
                notes += (f", sigma {v['noise_multiplier']:.2f}, {v['steps']} steps, "
                          f"{v['epochs_run']} epochs ({v['stopped_by']})")  # fmt: skip
            t.add_row(key, "" if eps is None else f"{eps:.2f}", f"{v['hr@10']:.4f}",
                      f"{v['ndcg@10']:.4f}", notes)  # fmt: skip
    console.print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("federated", "dp", "forget", "table"), default="table")
    ap.add_argument("--forget-dataset", choices=("ml-1m-pairs", "ml-100k"), default="ml-1m-pairs")
    ap.add_argument("--dataset", choices=("ml-100k", "ml-1m"), default="ml-100k")
    ap.add_argument("--rounds", default="10,25,50,100,200,300")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--factors", type=int, default=16)
    ap.add_argument("--epsilons", default="inf,8,3,1")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128, help="expected users per DP-SGD step")
    ap.add_argument(
        "--epochs", type=int, default=10, help="DP-SGD epochs (noise is calibrated for them)"
    )
    ap.add_argument("--dp-lr", type=float, default=2e-3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=25.0, help="training budget per model")
    args = ap.parse_args()
    if args.part == "federated":
        run_federated(args)
    elif args.part == "dp":
        run_dp(args)
    elif args.part == "forget":
        run_forget(args)
    table()


if __name__ == "__main__":
    main()
