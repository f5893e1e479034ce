"""Time to forget one user vs a full retrain, on ML-1M implicit pairs (6,040 users, 3,706 items).

For a user of median activity and the most active user: the store erasure (delete, renumber,
rewrite of the DuckDB file) and the exact unlearning of EASE (re-solved from the remaining
rows, and downdated by Woodbury when the model kept its inverse) and item-kNN (the lists that
can change recomputed), each next to fitting the same model from scratch without the user.
Every unlearned model is checked against the retrained one (largest absolute difference of
the item-item matrix). `forget_rows()` is what `bench_privacy.py` can call for its table.

    .venv/bin/python benchmarks/bench_forget.py                 # ML-1M pairs
    .venv/bin/python benchmarks/bench_forget.py --dataset ml-100k
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.datasets import data_dir
from recsight.models import create_model
from recsight.privacy.erasure import erase_users
from recsight.privacy.unlearn import forget_in_model

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # forget_<dataset>.json
SOURCES = {"ml-1m-pairs": "ml-1m/ratings_implicit_pairs.dat", "ml-100k": "ml-100k/u.data"}
#: EASE as the README's defaults; item-kNN with its defaults (100 neighbours, cosine)
MODELS = {
    "ease": ("ease", {"keep_inverse": True}),
    "itemknn": ("itemknn", {}),
}


def _diff(a: Any, b: Any) -> float:
    if sp.issparse(a):
        d = abs(a.tocsr() - b.tocsr())
        return float(d.max()) if d.nnz else 0.0
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _state(model: Any) -> Any:
    return model.item_weights_ if model.name == "ease" else model.similarity_


def forget_rows(dataset: str = "ml-1m-pairs") -> list[dict[str, Any]]:
    """One row per (user, what was done): seconds to forget vs seconds to retrain, and the
    largest difference between the unlearned and the retrained model."""
    root = data_dir()
    if root is None:
        raise SystemExit("set RECSIGHT_DATA_DIR to the shared data folder")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.duckdb"
        with Store(base) as store:
            ingest(store, root / SOURCES[dataset])
            data = store.interactions(with_features=False)
        counts = np.bincount(data.user_idx, minlength=data.n_users)
        median_user = int(np.argsort(counts)[len(counts) // 2])
        users = {
            "median user": (str(data.users.ids[median_user]), int(counts[median_user])),
            "most active user": (str(data.users.ids[counts.argmax()]), int(counts.max())),
        }
        fitted = {}
        for key, (name, params) in MODELS.items():
            t0 = time.perf_counter()
            fitted[key] = create_model(name, **params).fit(data)
            fitted[f"{key}_fit_s"] = time.perf_counter() - t0
        for label, (user, n_events) in users.items():
            db = Path(tmp) / "erase.duckdb"
            shutil.copy(base, db)
            with Store(db) as store:
                t0 = time.perf_counter()
                erase_users(store, [user])
                erase_s = time.perf_counter() - t0
                after = store.interactions(with_features=False)
            common = {"dataset": dataset, "user": label, "user_events": n_events}
            rows.append({**common, "what": "store (delete, renumber, rewrite file)",
                         "forget_s": erase_s, "retrain_s": None, "max_abs_diff": None})  # fmt: skip
            for key, (name, params) in MODELS.items():
                t0 = time.perf_counter()
                refit = create_model(name, **params).fit(after)
                retrain_s = time.perf_counter() - t0
                variants = [(key, fitted[key])]
                if key == "ease":  # the same model without its inverse: re-solved instead
                    plain = copy.deepcopy(fitted[key])
                    plain.inverse_ = np.zeros((0, 0))
                    variants = [("ease (Woodbury downdate, keep_inverse)", fitted[key]),
                                ("ease (re-solve)", plain)]  # fmt: skip
                for what, model in variants:
                    model = copy.deepcopy(model)
                    t0 = time.perf_counter()
                    n, exact = forget_in_model(model, [user])
                    forget_s = time.perf_counter() - t0
                    assert n == 1 and exact
                    rows.append({**common, "what": what, "forget_s": forget_s,
                                 "retrain_s": retrain_s,
                                 "max_abs_diff": _diff(_state(model), _state(refit))})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(SOURCES), default="ml-1m-pairs")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = forget_rows(args.dataset)
    table = Table(title=f"Forgetting one user vs retraining ({args.dataset})")
    for col in ("user", "events", "what", "forget s", "retrain s", "speed-up", "max |diff|"):
        table.add_column(col, justify="right" if col not in ("user", "what") else "left")
    for r in rows:
        up = f"{r['retrain_s'] / r['forget_s']:.1f}x" if r["retrain_s"] else "-"
        diff = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        retrain = "-" if r["retrain_s"] is None else f"{r['retrain_s']:.2f}"
        table.add_row(r["user"], str(r["user_events"]), r["what"], f"{r['forget_s']:.2f}",
                      retrain, up, diff)  # fmt: skip
    Console().print(table)
    out = {
        "command": f"benchmarks/bench_forget.py --dataset {args.dataset}",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        "(shared with other jobs while measured)",
        "seconds_total": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    path = RESULTS / f"forget_{args.dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
