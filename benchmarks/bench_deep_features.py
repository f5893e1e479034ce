"""DeepFM with side features vs the seed's two-number MLP (`seed_mlp`) on ML-100K.

ML-100K is ingested with u.user (age, gender, occupation, zip) and u.item (genres as tags,
release date...), split randomly 80/20 by (user, item) pair (seed 42), and both models are
trained on the same 80% (each carves its own leave-one-out validation from it for early
stopping):
- rating regression: RMSE and MAE on the test ratings (`evaluate_rating`);
- click prediction: every rating is a click; each test click is paired with `--negatives`
  items the user has in neither train nor test (seeded, the same for both models); AUC and
  logloss of the predicted click probability.

    .venv/bin/python benchmarks/bench_deep_features.py [--data DIR] [--threads 1]

Prints a table and writes benchmarks/results/deep_features.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from recsight.data.ingest import ingest
from recsight.data.splits import split
from recsight.data.store import Store
from recsight.datasets import data_dir
from recsight.evaluation import metrics as M
from recsight.evaluation.protocol import evaluate_rating
from recsight.models.neural.deepfm import DeepFM
from recsight.models.neural.seed_mlp import SeedMLP


def click_test(train, test, negatives: int, seed: int) -> tuple[np.ndarray, ...]:
    """(users, items, labels): test pairs as positives plus sampled unseen negatives."""
    seen = set(
        (train.user_idx.astype(np.int64) * train.n_items + train.item_idx).tolist()
        + (test.user_idx.astype(np.int64) * test.n_items + test.item_idx).tolist()
    )
    rng = np.random.default_rng(seed)
    pos_u, pos_i = test.user_idx.astype(np.int64), test.item_idx.astype(np.int64)
    neg_u = np.repeat(pos_u, negatives)
    neg_i = rng.integers(0, train.n_items, len(neg_u))
    clash = np.array([k in seen for k in (neg_u * train.n_items + neg_i).tolist()])
    while clash.any():  # redraw negatives that the user did interact with
        neg_i[clash] = rng.integers(0, train.n_items, int(clash.sum()))
        clash = np.array([k in seen for k in (neg_u * train.n_items + neg_i).tolist()])
    users = np.concatenate([pos_u, neg_u])
    items = np.concatenate([pos_i, neg_i])
    labels = np.r_[np.ones(len(pos_u)), np.zeros(len(neg_u))]
    return users, items, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="shared data folder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/deep_features.json"))
    args = ap.parse_args()
    root = args.data or data_dir()
    if root is None:
        raise SystemExit("shared data folder not found: pass --data or set RECSIGHT_DATA_DIR")
    torch.set_num_threads(args.threads)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "ml100k.duckdb") as store:
        ingest(store, root / "ml-100k")
        data = store.interactions()
    parts = split(data, "random:0.8", seed=42)
    train, test = parts.train, parts.test
    common = {"threads": args.threads, "verbose": True}
    rows = []
    for task in ("regression", "binary"):
        models = [DeepFM(task=task, **common), SeedMLP(task=task, **common)]
        if task == "binary":
            users, items, labels = click_test(train, test, args.negatives, seed=42)
        for model in models:
            t0 = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - t0
            row = {
                "task": task,
                "model": model.name,
                "fit_seconds": round(fit_s, 1),
                "epochs": len(model.history_.epochs),
                "best_epoch": model.history_.best_epoch,
                "params": model.get_params(),
            }
            if task == "regression":
                res = evaluate_rating(model, test)
                row.update(rmse=res.rmse, mae=res.mae, n_test=res.n_ratings)
            else:
                p = model.predict_idx(users, items)
                row.update(auc=M.auc(labels, p), logloss=M.logloss(labels, p), n_test=len(labels))
            rows.append(row)
            console.print(row)
    table = Table(title="ML-100K, random 80/20 (seed 42): deepfm vs seed_mlp")
    for col in ("task", "model", "RMSE", "MAE", "AUC", "logloss", "fit s", "epochs"):
        table.add_column(col)
    for r in rows:

        def fmt(key: str, r: dict = r) -> str:
            return f"{r[key]:.4f}" if key in r else "–"

        table.add_row(r["task"], r["model"], fmt("rmse"), fmt("mae"), fmt("auc"),
                      fmt("logloss"), str(r["fit_seconds"]), str(r["epochs"]))  # fmt: skip
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": "ML-100K (u.data + u.user + u.item)",
        "split": "random:0.8, seed 42",
        "click_protocol": f"test ratings as clicks + {args.negatives} unseen negatives each",
        "machine": platform.platform(),
        "threads": args.threads,
        "torch": torch.__version__,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
