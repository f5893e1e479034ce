"""Sequential recommendation: recsight's sequence models against RecBole's SASRec, under one
protocol, in two comparisons with their own commands.

``converge`` (the headline): ML-100K (or ``--dataset ml-1m-2999``), every model trained to
convergence. recsight's SASRec picks its dropout on the validation item (seed 42), then
trains with three seeds; other recsight sequence variants (gSASRec's ``loss="gbce"`` when the
installed SASRec has it) are tuned the same way, and the best variant is chosen on
validation, not on test. RecBole's SASRec runs once (seed 2020) in its own venv
(``benchmarks/peers/recbole/run_sasrec.py``, resumable, usually started in the background
first because it is slow) at the same max length, hidden size, layers and heads, with
RecBole's own recommended dropout (0.5). Both keep their best-validation epoch under the same
rule: NDCG@10 of each user's second-last event, full ranking, training items masked, ties by
recsight's shared rule, stop after 5 epochs in a row without a strictly better value. Each
recsight fit runs in a fresh process so its peak RSS is its own; finished runs are kept in
the output JSON and not redone.

``throughput``: ML-1M (users 1-2,999), every transformer gets the same wall-clock training
budget (``--budget-minutes``): a throughput comparison (how far each gets in equal time),
not a converged one.

Protocol of both: time-ordered leave-one-out (``split(data, "leave_last:1")``: each user's
last event is test, the one before it validation; timestamp ties broken by ingest order and
RecBole given exactly that order); models train on everything but the test event (the neural
ones hold each user's last training event out themselves for early stopping, the same item
RecBole validates on); full ranking over all items, NDCG@10 and HR@10 of the test item,
computed by recsight's evaluator for every model, RecBole included (its scores are written
by its own process and ranked here with the shared top-k, so ties break identically).
"masked" figures exclude the user's training items; unmasked ones are RecBole's convention
for sequential models. Max length 50, 2 layers, 2 heads, 64-d for every transformer; one
thread per process.

    .venv/bin/python benchmarks/bench_sequential.py converge                      # ML-100K
    .venv/bin/python benchmarks/bench_sequential.py converge --recbole-partial    # RecBole not done
    .venv/bin/python benchmarks/bench_sequential.py converge --dataset ml-1m-2999 --no-recbole
    .venv/bin/python benchmarks/bench_sequential.py throughput --budget-minutes 15
    .venv/bin/python benchmarks/bench_sequential.py throughput --quick             # smoke test

Writes benchmarks/results/sequential_converge_<dataset>.json and sequential.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import multiprocessing
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from recsight.data.dataset import Interactions
from recsight.data.ingest import ingest
from recsight.data.splits import split
from recsight.data.store import Store
from recsight.datasets import data_dir
from recsight.evaluation.protocol import evaluate_ranking
from recsight.evaluation.significance import holm, paired_pvalue
from recsight.llm.text_sasrec import TextSASRec
from recsight.models.ease import EASE
from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.sasrec import SASRec

HERE = Path(__file__).resolve().parent
RECBOLE_PY = HERE / ".peers-recbole-venv" / "bin" / "python"
RECBOLE_RUNNER = HERE / "peers" / "recbole" / "run_sasrec.py"
ALL_MODELS = ("sasrec", "bert4rec", "recbole_sasrec", "text_sasrec", "ease")
SIZE = {"max_len": 50, "dim": 64, "layers": 2, "heads": 2}
DATASETS = {
    "ml-100k": ("ml-100k", None, "ML-100K"),
    "ml-1m-2999": ("ml-1m/ratings_users_0001-2999.dat", None, "ML-1M (users 1–2,999)"),
}
RECBOLE_SETTINGS = (
    "RecBole 1.2.1 SASRec, its sasrec.yaml defaults: CE loss over all items, dropout 0.5 "
    "(hidden and attention), inner size 256, post-LN, batch 2048, Adam lr 0.001, one sample "
    "per prefix; seed 2020"
)


class FixedScorer:
    """Scores from a precomputed (users x items) matrix, for users given by index."""

    def __init__(self, rows: dict[int, np.ndarray], n_items: int):
        self.rows, self.n_items = rows, n_items

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        out = np.full((len(user_idx), self.n_items), -np.inf, np.float32)
        for r, u in enumerate(user_idx):  # assembling a peer's saved scores, not scoring
            if int(u) in self.rows:
                out[r] = self.rows[int(u)]
        return out


def load_data(path: Path, n_users: int | None) -> Interactions:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "seq.duckdb") as store:
        ingest(store, path)
        data = store.interactions()
    if n_users is not None:
        keep = np.isin(data.users.ids[data.user_idx], [str(u) for u in range(1, n_users + 1)])
        data = data.subset(keep)
    return data


def prepare(path: Path, n_users: int | None) -> tuple[Interactions, Interactions, Interactions]:
    """(all events, everything but each user's last event, the last events)."""
    data = load_data(path, n_users)
    test = split(data, "leave_last:1").test
    return data, data.subset(~np.isin(data.seq, test.seq)), test


def tail_items(fit_data: Interactions) -> np.ndarray:
    """Boolean mask of long-tail items: the less popular half of the items seen in training
    (by event count; ties by index), plus items never seen in training."""
    counts = np.bincount(fit_data.item_idx, minlength=fit_data.n_items)
    seen = np.flatnonzero(counts > 0)
    order = seen[np.lexsort((seen, counts[seen]))]
    tail = counts == 0
    tail[order[: len(order) // 2]] = True
    return tail


def evaluate(model, fit_data: Interactions, test: Interactions) -> tuple[dict, dict]:
    """Summary metrics, and per-user NDCG@10 (keyed by protocol, with the users' ids)."""
    out: dict[str, Any] = {}
    per_user: dict[str, Any] = {}
    test_item = np.full(fit_data.n_users, -1, np.int64)
    test_item[test.user_idx] = test.item_idx
    tail = tail_items(fit_data)
    for masked in (True, False):
        res = evaluate_ranking(
            model, fit_data, test, ks=(10,), exclude_seen=masked, metrics=("ndcg", "hr")
        )
        tag = "" if masked else "_unmasked"
        out[f"ndcg@10{tag}"] = res.summary["ndcg@10"]
        out[f"hr@10{tag}"] = res.summary["hr@10"]
        on_tail = tail[test_item[res.users]]
        out[f"ndcg@10_tail{tag}"] = float(res.per_user["ndcg@10"][on_tail].mean())
        out["n_tail_users"] = int(on_tail.sum())
        out["n_users"] = len(res.users)
        per_user[f"ndcg@10{tag}"] = {
            "users": fit_data.users.ids[res.users].tolist(),
            "values": res.per_user["ndcg@10"].tolist(),
        }
    return out, per_user


def write_recbole_inter(data: Interactions, work: Path) -> Path:
    """Write ``work/ml/ml.inter`` for RecBole's runner. RecBole's own sort may break timestamp
    ties differently from recsight (ties by ingest order); it gets each event's rank in
    recsight's order as its time, so both libraries hold out exactly the same validation and
    test events."""
    (work / "ml").mkdir(parents=True, exist_ok=True)
    order = np.lexsort((data.seq, data.timestamp))
    frame = pd.DataFrame(
        {
            "user_id:token": data.users.ids[data.user_idx[order]],
            "item_id:token": data.items.ids[data.item_idx[order]],
            "timestamp:float": np.arange(len(order), dtype=np.float64),
        }
    )
    path = work / "ml" / "ml.inter"
    frame.to_csv(path, sep="\t", index=False)
    return path


def recbole_scorer(work: Path, data: Interactions) -> FixedScorer:
    """RecBole's saved test scores, re-indexed into recsight's item order."""
    scores = np.load(work / "scores.npy")
    users = (work / "users.txt").read_text().split()
    items = (work / "items.txt").read_text().split()
    cols = data.items.index_of(items[1:], missing="ignore")  # column 0 is RecBole's [PAD]
    ok = cols >= 0
    uidx = data.users.index_of(users)
    rows = {}
    for r, u in enumerate(uidx):  # re-indexing a peer's output into recsight's item order
        row = np.full(data.n_items, -np.inf, np.float32)
        row[cols[ok]] = scores[r, 1:][ok]
        rows[int(u)] = row
    return FixedScorer(rows, data.n_items)


def run_recbole(work: Path, extra: list[str], console: Console) -> dict:
    """Run RecBole's runner on `work` (which holds ml/ml.inter) and return its result.json."""
    if not RECBOLE_PY.exists():
        raise SystemExit(f"{RECBOLE_PY} missing: run benchmarks/peers/recbole/setup.sh first")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(RECBOLE_PY), str(RECBOLE_RUNNER), str(work), *extra], capture_output=True, text=True
    )
    if proc.returncode:
        console.print(proc.stdout[-3000:], proc.stderr[-3000:], markup=False)
        raise SystemExit("RecBole run failed")
    meta = json.loads((work / "result.json").read_text())
    meta["wall_seconds"] = time.perf_counter() - t0
    return meta


# --- converge ----------------------------------------------------------------------------------


def _fit_child(job: dict) -> dict:
    """Fit and evaluate one recsight model in a fresh process (peak RSS is its own)."""
    torch.set_num_threads(job["threads"])
    _, fit_data, test = prepare(Path(job["source"]), job["n_users"])
    cls = {"SASRec": SASRec, "BERT4Rec": BERT4Rec}[job["cls"]]
    model = cls(**SIZE, **job["params"], seed=job["seed"], threads=job["threads"],
                epochs=job["epochs"], patience=job["patience"],
                max_minutes=job["max_minutes"])  # fmt: skip
    t0 = time.perf_counter()
    model.fit(fit_data)
    fit_s = time.perf_counter() - t0
    metrics, per_user = evaluate(model, fit_data, test)
    h = model.history_
    epochs = [
        {"epoch": e.epoch, "loss": e.loss, "valid_ndcg10": e.metric, "seconds": e.seconds}
        for e in h.epochs
    ]
    return {
        "fit_seconds": fit_s,
        "epochs": len(epochs),
        "best_epoch": h.best_epoch,
        "best_valid_ndcg10": h.best_metric,
        "stopped_by": h.stopped_by,
        "seconds_per_epoch": float(np.mean([e["seconds"] for e in epochs])),
        "seconds_to_best": float(sum(e["seconds"] for e in epochs if e["epoch"] <= h.best_epoch)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "history": epochs,
        "metrics": metrics,
        "per_user": per_user,
    }


def _commit() -> str:
    """The checked-out commit (runs are cached across code changes: each says which code)."""
    proc = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(HERE), "diff", "--quiet", "HEAD", "--", "../src"])
    return proc.stdout.strip() + ("+dirty" if dirty.returncode else "")


def _variants(args: argparse.Namespace) -> dict[str, tuple[str, str, dict]]:
    """recsight's sequence variants: key -> (label, class, fixed params)."""
    has_loss = "loss" in inspect.signature(SASRec).parameters
    # plain SASRec passes no `loss`: its default ("auto") is the full softmax on these catalogs
    out = {"sasrec": ("recsight SASRec (full-softmax CE)", "SASRec", {})}
    if has_loss:
        out["gsasrec"] = (
            "recsight gSASRec (gBCE, 256 uniform negatives, t=0.75)",
            "SASRec",
            {"loss": "gbce", "n_negatives": 256, "gbce_t": 0.75},
        )
    wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(wanted) - {"sasrec", "gsasrec"})
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; expected some of sasrec, gsasrec")
    missing = [k for k in wanted if k not in out]
    if missing:
        print(f"skipping {missing}: this recsight's SASRec has no `loss` option")
    return {k: out[k] for k in wanted if k in out}


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "OPEN"}[passed]


def _seed_summary(runs: list[dict], key: str) -> tuple[float, float]:
    v = np.array([r[key] if key in r else r["metrics"][key] for r in runs], dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _paired(a: dict, b: dict, key: str = "ndcg@10") -> float:
    """Two-sided paired Wilcoxon p-value of per-user `key`, aligned on the users' ids."""
    if a[key]["users"] != b[key]["users"]:
        pos = {u: i for i, u in enumerate(b[key]["users"])}
        if sorted(pos) != sorted(a[key]["users"]):
            raise SystemExit(f"paired test: the two runs cover different users ({key})")
        vb = np.array(b[key]["values"])[[pos[u] for u in a[key]["users"]]]
    else:
        vb = np.array(b[key]["values"])
    return paired_pvalue(np.array(a[key]["values"]), vb, "wilcoxon")


def converge(args: argparse.Namespace, console: Console) -> None:
    root = args.data or data_dir()
    if root is None:
        raise SystemExit("shared data folder not found: pass --data or set RECSIGHT_DATA_DIR")
    source, n_users, title = DATASETS[args.dataset]
    out_path = args.out or HERE / "results" / f"sequential_converge_{args.dataset}.json"
    doc: dict[str, Any] = {"runs": {}}
    if out_path.exists() and not args.fresh:
        doc = json.loads(out_path.read_text())
    runs: dict[str, dict] = doc.setdefault("runs", {})
    data, fit_data, test = prepare(root / source, n_users)
    console.print(
        f"{title}: {len(data):,} events, {data.n_users:,} users, {data.n_items:,} items; "
        f"{len(test):,} test events"
    )
    doc.update({
        "dataset": title,
        "protocol": "leave_last:1 (valid = second-last, test = last event), full ranking; "
        "headline masks the user's training items; ties by recsight.models.topk",
        "selection": "recsight: dropout (= attn dropout) and variant chosen on validation "
        "NDCG@10 of seed 42; both libraries keep their best-validation epoch, patience "
        f"{args.patience}, validation = second-last event, training items masked, shared ties",
        "size": SIZE,
        "threads": args.threads,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "command": " ".join(["python benchmarks/bench_sequential.py", *sys.argv[1:]]),
    })  # fmt: skip

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=1) + "\n")

    def fit(key: str, cls: str, params: dict, seed: int) -> dict:
        run_key = json.dumps({"variant": key, "params": params, "seed": seed}, sort_keys=True)
        if run_key in runs:
            return runs[run_key]
        job = {"source": str(root / source), "n_users": n_users, "cls": cls, "params": params,
               "seed": seed, "threads": args.threads, "epochs": args.max_epochs,
               "patience": args.patience, "max_minutes": args.max_minutes}  # fmt: skip
        console.print(f"fitting {key} {params} seed {seed} ...")
        with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
            res = pool.apply(_fit_child, (job,))
        res.update(variant=key, params=params, seed=seed, commit=_commit())
        m = res["metrics"]
        console.print(
            f"  {key} {params} seed {seed}: valid {res['best_valid_ndcg10']:.4f} test NDCG@10 "
            f"{m['ndcg@10']:.4f} HR@10 {m['hr@10']:.4f}; {res['epochs']} epochs (best "
            f"{res['best_epoch']}), {res['seconds_per_epoch']:.1f} s/epoch, "
            f"{res['peak_rss_mb']:.0f} MB"
        )
        runs[run_key] = res
        save()
        return res

    seeds = [int(s) for s in args.seeds.split(",")]
    dropouts = [float(d) for d in args.dropouts.split(",")]
    chosen: dict[str, dict] = {}
    for key, (label, cls, fixed) in _variants(args).items():
        grid = [{**fixed, "dropout": d, "attn_dropout": d} for d in dropouts]
        tuned = [fit(key, cls, p, seeds[0]) for p in grid]
        best = max(tuned, key=lambda r: r["best_valid_ndcg10"])
        seeded = [best] + [fit(key, cls, best["params"], s) for s in seeds[1:]]
        chosen[key] = {"label": label, "params": best["params"], "runs": seeded,
                       "grid": [{"params": r["params"], "valid": r["best_valid_ndcg10"]}
                                for r in tuned]}  # fmt: skip
    best_key = max(chosen, key=lambda k: chosen[k]["runs"][0]["best_valid_ndcg10"])

    recbole = None
    if not args.no_recbole:
        work = args.recbole_work or HERE / ".peers-runs" / f"recbole-sasrec-{args.dataset}"
        if not (work / "ml" / "ml.inter").exists():
            write_recbole_inter(data, work)
        base = ["--max-len", str(SIZE["max_len"]), "--threads", str(args.threads),
                "--patience", str(args.patience), "--max-epochs", str(args.max_epochs)]  # fmt: skip
        done = work / "result.json"
        ckpt = work / "checkpoint.pt"
        finished = done.exists() and not json.loads(done.read_text())["stopped_by"].startswith(
            "partial"
        )
        # a partial result still matches the checkpoint it was scored from
        current = done.exists() and (
            not ckpt.exists() or done.stat().st_mtime >= ckpt.stat().st_mtime
        )
        if not finished and not (args.recbole_partial and current):
            console.print(
                "RecBole: "
                + ("best epoch so far (partial)" if args.recbole_partial else "training")
            )
            run_recbole(work, base + (["--finish"] if args.recbole_partial else ["--resume"]),
                        console)  # fmt: skip
        meta = json.loads(done.read_text())
        metrics, per_user = evaluate(recbole_scorer(work, data), fit_data, test)
        hist = meta["history"]
        recbole = {
            **{k: v for k, v in meta.items() if k != "history"},
            "settings": RECBOLE_SETTINGS,
            "seconds_per_epoch": float(
                np.mean([h["train_seconds"] + h.get("valid_seconds", 0.0) for h in hist])
            ),  # fmt: skip
            "history": hist,
            "metrics": metrics,
            "per_user": per_user,
        }
        doc["recbole"] = recbole

    checks = []
    if recbole is not None:
        rb = recbole["metrics"]["ndcg@10"]
        rb_done = recbole["stopped_by"] in ("early_stopping", "max_epochs")
        targets = (("sasrec", 1.0, "parity"), (best_key, 1.1, "best variant (validation)"))
        for key, target, what in targets:
            if key not in chosen:
                continue
            rs = chosen[key]["runs"]
            mean = _seed_summary(rs, "ndcg@10")[0]
            p = holm([_paired(r["per_user"], recbole["per_user"]) for r in rs])
            # a comparison with a model that did not converge establishes nothing
            converged = rb_done and all(r["stopped_by"] == "early_stopping" for r in rs)
            checks.append({
                "statement": f"{what}: {chosen[key]['label']} mean NDCG@10 over {len(rs)} "
                f"seed(s) {mean:.4f} vs RecBole SASRec {rb:.4f} ({recbole['stopped_by']}): "
                f"ratio {mean / rb:.3f} (target >= {target})"
                + ("" if converged else "; NOT CONVERGED, so not a converged comparison"),
                "ratio": mean / rb, "target": target,
                "passed": bool(mean / rb >= target) if converged else None,
                "p_holm_per_seed": p.tolist(),
                "significant_all_seeds": bool((p < 0.05).all()),
            })  # fmt: skip
    doc["chosen"] = {k: {"label": v["label"], "params": v["params"], "grid": v["grid"],
                         "seeds": [r["seed"] for r in v["runs"]]}
                     for k, v in chosen.items()}  # fmt: skip
    doc["best_variant"] = best_key
    doc["checks"] = checks
    save()

    header = ("model", "seeds", "NDCG@10", "HR@10", "NDCG@10 unmasked", "HR@10 unmasked",
              "epochs (best)", "s/epoch", "s to best", "peak RSS MB")  # fmt: skip
    lines: list[tuple[str, ...]] = []

    def fmt(runs_: list[dict], key: str) -> str:
        m, sd = _seed_summary(runs_, key)
        return f"{m:.4f}" + (f" ±{sd:.4f}" if len(runs_) > 1 else "")

    for v in chosen.values():
        rs = v["runs"]
        lines.append((
            f"{v['label']} dropout {v['params']['dropout']}",
            ",".join(str(r["seed"]) for r in rs),
            fmt(rs, "ndcg@10"), fmt(rs, "hr@10"), fmt(rs, "ndcg@10_unmasked"),
            fmt(rs, "hr@10_unmasked"),
            ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs),
            f"{_seed_summary(rs, 'seconds_per_epoch')[0]:.1f}",
            f"{_seed_summary(rs, 'seconds_to_best')[0]:.0f}",
            f"{max(r['peak_rss_mb'] for r in rs):.0f}",
        ))  # fmt: skip
    if recbole is not None:
        m = recbole["metrics"]
        lines.append((
            f"RecBole SASRec ({recbole['stopped_by']})", "2020",
            f"{m['ndcg@10']:.4f}", f"{m['hr@10']:.4f}", f"{m['ndcg@10_unmasked']:.4f}",
            f"{m['hr@10_unmasked']:.4f}",
            f"{len(recbole['history'])} ({recbole['best_epoch']})",
            f"{recbole['seconds_per_epoch']:.1f}", f"{recbole['seconds_to_best']:.0f}",
            f"{recbole['peak_rss_mb']:.0f}",
        ))  # fmt: skip
    table = Table(title=f"{title}, leave-one-out, full ranking, to convergence")
    for col in header:
        table.add_column(col)
    for line in lines:
        table.add_row(*line)
    console.print(table)
    md = [
        f"{title}, leave-one-out, full ranking, to convergence (`{doc['command']}`)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    md += [""] + [
        f"- {_verdict(c['passed'])}: {c['statement']}; Holm p per seed "
        f"{', '.join(f'{p:.2g}' for p in c['p_holm_per_seed'])}"
        for c in checks
    ]
    out_path.with_suffix(".md").write_text("\n".join(md) + "\n")
    for c in checks:
        console.print(f"{_verdict(c['passed'])}: {c['statement']}; Holm p per seed "
                      f"{[f'{p:.2g}' for p in c['p_holm_per_seed']]}")  # fmt: skip
    console.print(f"wrote {out_path}")


# --- throughput --------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, console: Console) -> None:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(ALL_MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; expected some of {ALL_MODELS}")
    root = args.data or data_dir()
    if root is None:
        raise SystemExit("shared data folder not found: pass --data or set RECSIGHT_DATA_DIR")
    budget = 0.5 if args.quick else args.budget_minutes
    out_path = args.out or HERE / "results" / (
        "sequential_quick.json" if args.quick else "sequential.json"
    )
    data, fit_data, test = prepare(root / DATASETS["ml-1m-2999"][0], 300 if args.quick else None)
    console.print(
        f"{len(data):,} events, {len(np.unique(data.user_idx)):,} users; "
        f"test users {len(test):,}; budget {budget} min per model"
    )
    rows = []

    def record(name: str, scorer, train_s: float, extra: dict) -> None:
        metrics, _ = evaluate(scorer, fit_data, test)
        row = {"model": name, "train_seconds": round(train_s, 1), **extra, **metrics}
        rows.append(row)
        console.print(row)

    for name in models:
        if name in ("sasrec", "bert4rec", "text_sasrec"):
            cls = {"sasrec": SASRec, "bert4rec": BERT4Rec, "text_sasrec": TextSASRec}[name]
            model = cls(**SIZE, threads=args.threads, epochs=10_000, max_minutes=budget,
                        patience=None)  # fmt: skip
            t0 = time.perf_counter()
            model.fit(fit_data)
            h = model.history_
            record(name, model, time.perf_counter() - t0, {
                "epochs": len(h.epochs), "best_epoch": h.best_epoch,
                "stopped_by": h.stopped_by, "budget_minutes": budget,
            })  # fmt: skip
        elif name == "recbole_sasrec":
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                write_recbole_inter(data, work)
                meta = run_recbole(work, ["--budget-minutes", str(budget), "--threads",
                                          str(args.threads), "--max-len", str(SIZE["max_len"])],
                                   console)  # fmt: skip
                scorer = recbole_scorer(work, data)
            meta.pop("history", None)
            record(name, scorer, meta["train_seconds"], {**meta, "budget_minutes": budget})
        else:
            model = EASE(reg=600.0)
            t0 = time.perf_counter()
            model.fit(fit_data)
            record("ease", model, time.perf_counter() - t0, {"reg": 600.0})

    table = Table(title="Throughput: ML-1M users 1-2,999, leave-last-out, equal wall-clock budget")
    for col in ("model", "NDCG@10", "HR@10", "NDCG@10 tail", "NDCG@10 unmasked",
                "HR@10 unmasked", "train s", "epochs"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"], f"{r['ndcg@10']:.4f}", f"{r['hr@10']:.4f}", f"{r['ndcg@10_tail']:.4f}",
            f"{r['ndcg@10_unmasked']:.4f}", f"{r['hr@10_unmasked']:.4f}",
            str(r["train_seconds"]), f"{r.get('epochs', '–')}",
        )  # fmt: skip
    console.print(table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({
        "dataset": "ML-1M (users 1-2,999)" + (" users 1-300 (quick)" if args.quick else ""),
        "comparison": "throughput: equal wall-clock training budget, not convergence",
        "protocol": "leave_last:1, full ranking, NDCG@10/HR@10 of the last event",
        "budget_minutes": budget,
        "threads": args.threads,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "rows": rows,
    }, indent=2) + "\n")  # fmt: skip
    console.print(f"wrote {out_path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("converge", help="train to convergence (the headline comparison)")
    conv.add_argument("--dataset", choices=sorted(DATASETS), default="ml-100k")
    conv.add_argument("--variants", default="sasrec,gsasrec",
                      help="recsight variants to tune (sasrec, gsasrec)")  # fmt: skip
    conv.add_argument("--dropouts", default="0.1,0.2,0.3,0.5", help="validation grid")
    conv.add_argument("--seeds", default="42,43,44", help="the first one is used for tuning")
    conv.add_argument("--patience", type=int, default=5)
    conv.add_argument("--max-epochs", type=int, default=300)
    conv.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="safety cap per recsight fit (reported as stopped_by time_budget)",
    )
    conv.add_argument("--no-recbole", action="store_true")
    conv.add_argument(
        "--recbole-work",
        type=Path,
        default=None,
        help="RecBole's run folder (default benchmarks/.peers-runs/...)",
    )
    conv.add_argument(
        "--recbole-partial",
        action="store_true",
        help="if RecBole has not converged, report its best epoch so far",
    )
    conv.add_argument("--fresh", action="store_true", help="ignore runs saved in --out")
    thr = sub.add_parser("throughput", help="equal wall-clock budget on the ML-1M subset")
    thr.add_argument("--budget-minutes", type=float, default=20.0)
    thr.add_argument(
        "--models",
        default=",".join(ALL_MODELS),
        help=f"comma-separated subset of {', '.join(ALL_MODELS)}",
    )
    thr.add_argument("--quick", action="store_true", help="users 1-300, 0.5-minute budgets")
    for p in (conv, thr):
        p.add_argument("--data", type=Path, default=None, help="shared data folder")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    if args.command == "converge":
        converge(args, console)
    else:
        throughput(args, console)


if __name__ == "__main__":
    main()
