"""Sequential recommendation on ML-1M (users 1-2,999): recsight's SASRec and BERT4Rec side by
side with RecBole's SASRec, plus the best classic model (EASE), under one protocol.

Protocol: time-ordered leave-one-out (``split(data, "leave_last:1")``: each user's last event
is test, the one before it validation); models train on train + validation (the neural ones
hold each user's last training event out themselves for early stopping, i.e. the same
validation item RecBole uses); full ranking over all items, NDCG@10 and HR@10 on the test
item, computed by recsight's evaluator for every model, RecBole included (its scores are
written by its own process and ranked here, so ties break identically). Headline numbers
rank without masking the user's history, as RecBole does for sequential models; masked
("seen excluded") figures are reported too. Max length 50 and the same model size
(2 layers, 2 heads, 64-d) for every transformer; each gets the same wall-clock training
budget (``--budget-minutes``). RecBole runs in its own venv (benchmarks/peers/recbole/setup.sh).

    .venv/bin/python benchmarks/bench_sequential.py --budget-minutes 20
    .venv/bin/python benchmarks/bench_sequential.py --quick          # smoke test, ~3 minutes
    .venv/bin/python benchmarks/bench_sequential.py --models sasrec --budget-minutes 10

Writes benchmarks/results/sequential.json (or sequential_quick.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

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
from recsight.llm.text_sasrec import TextSASRec
from recsight.models.ease import EASE
from recsight.models.neural.bert4rec import BERT4Rec
from recsight.models.neural.sasrec import SASRec

HERE = Path(__file__).resolve().parent
RECBOLE_PY = HERE / ".peers-recbole-venv" / "bin" / "python"
RECBOLE_RUNNER = HERE / "peers" / "recbole" / "run_sasrec.py"
ALL_MODELS = ("sasrec", "bert4rec", "recbole_sasrec", "text_sasrec", "ease")


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
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "ml1m.duckdb") as store:
        ingest(store, path)
        data = store.interactions()
    if n_users is not None:
        keep = np.isin(data.users.ids[data.user_idx], [str(u) for u in range(1, n_users + 1)])
        data = data.subset(keep)
    return data


def tail_items(fit_data: Interactions) -> np.ndarray:
    """Boolean mask of long-tail items: the less popular half of the items seen in training
    (by event count; ties by index), plus items never seen in training."""
    counts = np.bincount(fit_data.item_idx, minlength=fit_data.n_items)
    seen = np.flatnonzero(counts > 0)
    order = seen[np.lexsort((seen, counts[seen]))]
    tail = counts == 0
    tail[order[: len(order) // 2]] = True
    return tail


def evaluate(model, fit_data: Interactions, test: Interactions) -> dict[str, float]:
    out = {}
    test_item = np.full(fit_data.n_users, -1, np.int64)
    test_item[test.user_idx] = test.item_idx
    tail = tail_items(fit_data)
    for masked in (False, True):
        res = evaluate_ranking(
            model, fit_data, test, ks=(10,), exclude_seen=masked, metrics=("ndcg", "hr")
        )
        tag = "_masked" if masked else ""
        out[f"ndcg@10{tag}"] = res.summary["ndcg@10"]
        out[f"hr@10{tag}"] = res.summary["hr@10"]
        on_tail = tail[test_item[res.users]]
        out[f"ndcg@10_tail{tag}"] = float(res.per_user["ndcg@10"][on_tail].mean())
        out[f"ndcg@10_head{tag}"] = float(res.per_user["ndcg@10"][~on_tail].mean())
        out["n_tail_users"] = int(on_tail.sum())
        out["n_users"] = len(res.users)
    return out


def run_recbole(
    data: Interactions, budget: float, threads: int, max_len: int, console: Console
) -> tuple[FixedScorer, dict]:
    if not RECBOLE_PY.exists():
        raise SystemExit(f"{RECBOLE_PY} missing: run benchmarks/peers/recbole/setup.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "ml").mkdir()
        # RecBole's own sort may break timestamp ties differently from recsight (ties by
        # ingest order); give it each event's rank in recsight's order as its time, so both
        # libraries hold out exactly the same validation and test events
        order = np.lexsort((data.seq, data.timestamp))
        frame = pd.DataFrame(
            {
                "user_id:token": data.users.ids[data.user_idx[order]],
                "item_id:token": data.items.ids[data.item_idx[order]],
                "timestamp:float": np.arange(len(order), dtype=np.float64),
            }
        )
        frame.to_csv(work / "ml" / "ml.inter", sep="\t", index=False)
        t0 = time.perf_counter()
        cmd = [
            str(RECBOLE_PY),
            str(RECBOLE_RUNNER),
            str(work),
            str(budget),
            str(threads),
            str(max_len),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            console.print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit("RecBole run failed")
        meta = json.loads((work / "result.json").read_text())
        meta["wall_seconds"] = time.perf_counter() - t0
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
    return FixedScorer(rows, data.n_items), meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="shared data folder")
    ap.add_argument(
        "--budget-minutes",
        type=float,
        default=20.0,
        help="wall-clock training budget of each transformer",
    )
    ap.add_argument(
        "--models",
        default=",".join(ALL_MODELS),
        help=f"comma-separated subset of {', '.join(ALL_MODELS)}",
    )
    ap.add_argument(
        "--converge", action="store_true", help="also train recsight's SASRec to convergence"
    )
    ap.add_argument(
        "--converge-minutes",
        type=float,
        default=None,
        help="safety cap on the convergence run (reported if it is hit)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke test: users 1-300, 0.5-minute budgets"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
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
    torch.set_num_threads(args.threads)
    console = Console()

    data = load_data(root / "ml-1m" / "ratings_users_0001-2999.dat", 300 if args.quick else None)
    parts = split(data, "leave_last:1")
    fit_data = data.subset(~np.isin(data.seq, parts.test.seq))
    test = parts.test
    console.print(
        f"{len(data):,} events, {len(np.unique(data.user_idx)):,} users; "
        f"test users {len(test):,}; budget {budget} min per model"
    )

    size = {"max_len": args.max_len, "dim": 64, "layers": 2, "heads": 2, "threads": args.threads}
    rows = []

    def record(name: str, scorer, train_s: float, extra: dict) -> None:
        row = {
            "model": name,
            "train_seconds": round(train_s, 1),
            **extra,
            **evaluate(scorer, fit_data, test),
        }
        rows.append(row)
        console.print(row)

    for name in models:
        if name in ("sasrec", "bert4rec", "text_sasrec"):
            cls = {"sasrec": SASRec, "bert4rec": BERT4Rec, "text_sasrec": TextSASRec}[name]
            model = cls(**size, epochs=10_000, max_minutes=budget, patience=None)
            t0 = time.perf_counter()
            model.fit(fit_data)
            h = model.history_
            record(
                name,
                model,
                time.perf_counter() - t0,
                {
                    "epochs": len(h.epochs),
                    "best_epoch": h.best_epoch,
                    "stopped_by": h.stopped_by,
                    "budget_minutes": budget,
                },
            )
        elif name == "recbole_sasrec":
            scorer, meta = run_recbole(data, budget, args.threads, args.max_len, console)
            record(name, scorer, meta["train_seconds"], {**meta, "budget_minutes": budget})
        else:
            model = EASE(reg=600.0)
            t0 = time.perf_counter()
            model.fit(fit_data)
            record("ease", model, time.perf_counter() - t0, {"reg": 600.0})
    if args.converge:
        model = SASRec(**size, epochs=10_000, patience=5, max_minutes=args.converge_minutes)
        t0 = time.perf_counter()
        model.fit(fit_data)
        h = model.history_
        record(
            "sasrec (to convergence)",
            model,
            time.perf_counter() - t0,
            {"epochs": len(h.epochs), "best_epoch": h.best_epoch, "stopped_by": h.stopped_by},
        )

    table = Table(title="ML-1M users 1-2,999, leave-last-out, full ranking (history not masked)")
    for col in (
        "model",
        "NDCG@10",
        "HR@10",
        "NDCG@10 tail",
        "NDCG@10 masked",
        "HR@10 masked",
        "train s",
        "epochs",
    ):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["model"],
            f"{r['ndcg@10']:.4f}",
            f"{r['hr@10']:.4f}",
            f"{r['ndcg@10_tail']:.4f}",
            f"{r['ndcg@10_masked']:.4f}",
            f"{r['hr@10_masked']:.4f}",
            str(r["train_seconds"]),
            f"{r.get('epochs', '–')}",
        )
    console.print(table)
    by = {r["model"]: r for r in rows}
    if "sasrec" in by and "recbole_sasrec" in by:
        ratio = by["sasrec"]["ndcg@10"] / max(by["recbole_sasrec"]["ndcg@10"], 1e-12)
        console.print(f"recsight SASRec / RecBole SASRec NDCG@10 = {ratio:.2f} (target >= 1.1)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "dataset": "ML-1M (users 1-2,999)" + (" users 1-300 (quick)" if args.quick else ""),
                "protocol": "leave_last:1, full ranking, NDCG@10/HR@10 of the last event",
                "budget_minutes": budget,
                "threads": args.threads,
                "machine": platform.platform(),
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
