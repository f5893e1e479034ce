"""The hybrid model against its parts: does the fitted blend ever lose to content-only or to its
own collaborative part, and are new items served as well as before?

Datasets: ML-100K, ML-1M (users 1-2,999), a generated shop (5,000 users, 1,000 items, seed 0;
`recsight generate`) and the Taobao UserBehavior slice of 814 whole users, whose items' only
attribute is a category id (their "text"): a product log where the text part beats the
collaborative one. Models, all with the default text encoder:
``content`` (text only), ``cf`` (the hybrid's collaborative part: ``content_weight=0``),
``hybrid`` (weights fitted on a validation split of the training data, the default), ``ease``
(a strong collaborative reference) and ``today`` (the hybrid before the fitted weights: one
fixed weight of 0.2, run from the code before this change, see --today-src).

Protocols (full ranking, training items masked, `recsight.evaluation.evaluate_ranking`):
- ``leave_last:1`` (leave-one-out: each user's last event is the test item; the second-last,
  the split's validation part, is trained on) and ``user_random:0.8`` (per-user 80/20), seed
  42; warm users (at least one training event); NDCG@10, Recall@20. The hybrid is tested
  against the better of content and cf with `compare_to_best` (paired Wilcoxon, Holm).
- ``cold items``: `cold_item_split` (20% of the items held out entirely, seed 42), ranking only
  the held-out items (`CandidateScorer`); Recall@20, NDCG@20.

Resumable: each (dataset, protocol, model) cell keeps its per-user metrics in
``WORK/cells/*.npz`` and is skipped when present. Writes benchmarks/results/hybrid.json.

    nohup nice -n 10 .venv/bin/python benchmarks/bench_hybrid.py --work /tmp/bench_hybrid &
    # the "today" cells, from the code before the fitted weights:
    git archive 074107b src | tar -x -C /tmp/hybrid_base
    PYTHONPATH=/tmp/hybrid_base/src .venv/bin/python benchmarks/bench_hybrid.py \\
        --work /tmp/bench_hybrid --models today
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import recsight  # noqa: E402
from recsight.data.dataset import Interactions  # noqa: E402
from recsight.data.generate import generate_shop  # noqa: E402
from recsight.data.ingest import ingest  # noqa: E402
from recsight.data.splits import split  # noqa: E402
from recsight.data.store import Store  # noqa: E402
from recsight.datasets import data_dir  # noqa: E402
from recsight.evaluation.protocol import evaluate_ranking  # noqa: E402
from recsight.evaluation.significance import compare_to_best  # noqa: E402
from recsight.llm.coldstart import CandidateScorer, HybridRecommender, cold_item_split  # noqa: E402
from recsight.llm.content import ContentRecommender  # noqa: E402
from recsight.models.base import Recommender  # noqa: E402
from recsight.models.ease import EASE  # noqa: E402

OUT = Path(__file__).parent / "results" / "hybrid.json"
SHOP = "generated shop (5,000 users, 1,000 items)"
DATASETS = {
    "ML-100K": "ml-100k",
    "ML-1M (users 1-2,999)": "ml-1m/ratings_users_0001-2999.dat",
    SHOP: "shop",
    "Taobao (814 users)": "taobao-userbehavior/UserBehavior_users_head.csv",
}
PROTOCOLS = ("leave_last:1", "user_random:0.8", "cold items")
MODELS = ("content", "cf", "hybrid", "ease", "today")
SEED = 42


def old_hybrid() -> bool:
    """Whether the imported HybridRecommender is the one before the fitted weights."""
    default = inspect.signature(HybridRecommender).parameters["content_weight"].default
    return not isinstance(default, str)


def make_model(name: str, cache_db: str) -> Recommender:
    if name == "today":
        if not old_hybrid():
            raise SystemExit(
                "'today' is the hybrid before the fitted weights: run it with that code on "
                "PYTHONPATH (see this script's docstring)"
            )
        return HybridRecommender(cache_db=cache_db)
    if old_hybrid():
        raise SystemExit(f"{name!r} needs this checkout's code, not the old hybrid")
    factories: dict[str, Callable[[], Recommender]] = {
        "content": lambda: ContentRecommender(cache_db=cache_db),
        "cf": lambda: HybridRecommender(content_weight=0.0, cache_db=cache_db),
        "hybrid": lambda: HybridRecommender(cache_db=cache_db),
        "ease": lambda: EASE(),
    }
    return factories[name]()


def load(work: Path, name: str, root: Path) -> Interactions:
    folder = DATASETS[name].split("/")[0]
    source = root / DATASETS[name]
    if name == SHOP:
        source = work / "shop"
        if not (source / "events.parquet").exists():
            generate_shop(source, n_users=5000, n_items=1000, seed=0)
    with Store(work / f"{folder}.duckdb") as s:
        if not s.count("events"):
            ingest(s, source)
        return s.interactions()


def cell_path(work: Path, dataset: str, protocol: str, model: str) -> Path:
    slug = "_".join(x.replace(" ", "-").replace(":", "-").replace(",", "") for x in
                    (dataset.split(" (")[0], protocol, model))  # fmt: skip
    return work / "cells" / f"{slug}.npz"


def run_cell(data: Interactions, protocol: str, model_name: str, cache_db: str) -> dict:
    """Fit and evaluate one model under one protocol: per-user arrays and a summary."""
    model = make_model(model_name, cache_db)
    if protocol == "cold items":
        parts = cold_item_split(data, cold_share=0.2, warm_test_share=0.2, seed=SEED)
        train, test = parts.train, parts.test_cold
    else:
        parts = split(data, protocol, seed=SEED)
        train, test = parts.fit_part, parts.test
    t0 = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - t0
    if protocol == "cold items":
        scorer = CandidateScorer(model, parts.cold_items)
        res = evaluate_ranking(scorer, train, test, ks=(20,), metrics=("recall", "ndcg"))
    else:
        res = evaluate_ranking(model, train, test, ks=(10, 20), metrics=("recall", "ndcg"))
    warm = ~res.cold
    out = {"users": res.users[warm], "fit_s": np.array(fit_s)}
    for key, values in res.per_user.items():
        out[key] = values[warm]
    if isinstance(model, HybridRecommender) and hasattr(model, "bucket_weights_"):
        out["bucket_edges"] = np.asarray(model.bucket_edges_)
        out["bucket_weights"] = np.asarray(model.bucket_weights_)
        out["cold_weight"] = np.asarray(model.cold_weight_)
        out["cold_offset"] = np.asarray(model.cold_offset_)
    return out


def summarise(cells: dict[str, dict[str, np.ndarray]], protocol: str) -> dict:
    """Means per model and, where the parts and the hybrid are there, the paired test."""
    metric = "recall@20" if protocol == "cold items" else "ndcg@10"
    rows = {}
    for name, c in cells.items():
        row = {k: round(float(v.mean()), 4) for k, v in c.items()
               if "@" in k and len(v)}  # fmt: skip
        row["users"] = int(len(c["users"]))
        row["fit_s"] = round(float(c["fit_s"]), 1)
        if "bucket_weights" in c:
            row["bucket_edges"] = c["bucket_edges"].tolist()
            row["bucket_weights"] = c["bucket_weights"].tolist()
            row["cold_weight"] = float(c["cold_weight"])
            if "cold_offset" in c:
                row["cold_offset"] = float(c["cold_offset"])
        rows[name] = row
    out: dict = {"models": rows}
    group = ["hybrid", "content", "cf"] if protocol != "cold items" else ["hybrid", "today"]
    if all(g in cells for g in group):
        best, comp = compare_to_best(
            {g: cells[g][metric] for g in group}, users={g: cells[g]["users"] for g in group}
        )
        out["test"] = {
            "metric": metric,
            "best": best,
            "compared": {
                g: {
                    "mean": round(c.mean, 4),
                    "p": round(c.p_value, 4),
                    "p_holm": round(c.p_adjusted, 4),
                    "significantly_worse": c.worse,
                }
                for g, c in comp.items()
            },  # fmt: skip
            "hybrid_not_significantly_worse": not comp["hybrid"].worse,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_hybrid"))
    ap.add_argument("--models", nargs="+", default=[m for m in MODELS if m != "today"],
                    choices=MODELS)  # fmt: skip
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    args = ap.parse_args()
    root = data_dir()
    if root is None:
        raise SystemExit("shared data folder not found: set RECSIGHT_DATA_DIR")
    args.work.mkdir(parents=True, exist_ok=True)
    cache_db = str(args.work / "embeddings.duckdb")
    console = Console()
    code = str(Path(recsight.__file__).resolve().parent)
    for dataset in args.datasets:
        data = load(args.work, dataset, root)
        for protocol in args.protocols:
            for model in args.models:
                if model == "cf" and protocol == "cold items":
                    continue  # the collaborative part alone has no signal for new items
                if model == "ease" and data.n_items > 20_000:
                    continue  # its dense item x item matrices do not fit (Taobao: 55k items)
                path = cell_path(args.work, dataset, protocol, model)
                if path.exists():
                    continue
                console.log(f"{dataset} / {protocol} / {model} (code: {code})")
                cell = run_cell(data, protocol, model, cache_db)
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **cell)  # atomic enough: written once, read on the next run
    result: dict = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": 1,
            "note": "fit times under load from other jobs",
        },  # fmt: skip
        "seed": SEED,
        "results": {},
    }
    for dataset in DATASETS:
        for protocol in PROTOCOLS:
            cells = {}
            for model in MODELS:
                path = cell_path(args.work, dataset, protocol, model)
                if path.exists():
                    with np.load(path) as npz:
                        cells[model] = {k: npz[k] for k in npz.files}
            if not cells:
                continue
            summary = summarise(cells, protocol)
            result["results"].setdefault(dataset, {})[protocol] = summary
            table = Table(title=f"{dataset}, {protocol} (warm users)")
            keys = ["recall@20", "ndcg@20"] if protocol == "cold items" else [
                "ndcg@10", "recall@20"]  # fmt: skip
            for col in ("model", *keys, "users", "weights"):
                table.add_column(col)
            for name, row in summary["models"].items():
                w = ""
                if "bucket_weights" in row:
                    w = (
                        f"{row['bucket_weights']} (edges {row['bucket_edges']}), "
                        f"new items {row['cold_weight']}, offset {row.get('cold_offset', '?')}"
                    )
                cells = [f"{row.get(k, float('nan')):.4f}" for k in keys]
                table.add_row(name, *cells, str(row["users"]), w)
            console.print(table)
            if "test" in summary:
                console.print(summary["test"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
