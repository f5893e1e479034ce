"""One machine pushed to its limit: every stage of recsight on a generated shop of N events.

For each size, the stages run one after another, each as its own `recsight` process so its
peak RSS is its own (read from the kernel by `os.wait4`): generate, ingest, analyze, train ALS
(64 factors, 15 iterations, with the ANN index), train item-kNN, train SASRec (sampled
softmax, a fixed time budget; HR@10 and NDCG@10 on 10,000 sampled users against popularity
under the same leave-last-out split), evaluate (popularity and ALS,
full ranking, up to 100,000 sampled test users), batch top-10 for all users, and serve
(start-up time and memory, then an open loop of 200 requests/s for users drawn by activity,
with the history cache's miss rate). Each stage's result is kept as JSON under
``benchmarks/results/scale/<size>/<stage>.json``; ``--resume`` skips stages already there, so a
long run continues in a later session. The table is printed and written as Markdown to
``benchmarks/results/scale.md`` (copied into BENCHMARKS.md). ``--results DIR`` puts the JSON
under ``DIR/<size>/`` and the table in ``DIR.md`` instead (trial runs).

    .venv/bin/python benchmarks/bench_scale.py --sizes 1e6 1e7 [--stages ingest analyze] \\
        [--resume] [--workdir /tmp/recsight-scale] [--results benchmarks/results/scale]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_serve import open_loop  # noqa: E402

from recsight.data.generate import AVG_EVENTS_PER_USER  # noqa: E402
from tests.serving.live import free_port, start_raw, wait_healthy  # noqa: E402

STAGES = ("generate", "ingest", "analyze", "train_als", "train_itemknn", "train_sasrec",
          "evaluate", "batch", "ann_recall", "serve")  # fmt: skip
RESULTS = Path("benchmarks/results/scale")
EVENTS_PER_ITEM = 100  # 100M events over 1M items, as the target shop
SASREC_USERS = 10_000  # test users sampled for SASRec against popularity


def sasrec_minutes(n: int) -> float:
    """SASRec's training budget: 10 minutes at 100M events, in proportion below (2 at least)."""
    return max(2.0, 10.0 * n / 100_000_000)


KEY = "bench-key"

#: recall@100 of ANN retrieval (+ exact re-scoring) against exact scoring, on 10K users
ANN_RECALL = """
import json, sys, time
import numpy as np
from recsight.models import load_model
from recsight.models.ann import AnnIndex, ann_top_k
from recsight.models.topk import id_keys
model = load_model(sys.argv[1]); index = AnnIndex.load(sys.argv[1])
rng = np.random.default_rng(0)
users = list(rng.choice(model.users_.ids, min(10_000, len(model.users_)), replace=False))
uidx = model.users_.index_of(users)
t0 = time.perf_counter()
exact, _ = model.recommend(users, k=100)
t_exact = time.perf_counter() - t0
t0 = time.perf_counter()
got, _ = ann_top_k(model, index, model.user_factors_[uidx], model.seen_[uidx], 100, id_keys(users))
t_ann = time.perf_counter() - t0
recall = np.mean([len(set(a) & set(b)) / len(set(b) - {None}) for a, b in zip(got, exact)])
print(json.dumps({"recall_at_100": float(recall), "users": len(users),
                  "exact_s": t_exact, "ann_s": t_ann}))
"""


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(cmd: list[str], log: Path) -> dict:
    """Run one stage's command; wall time, the process tree's peak RSS and the load average
    (1, 5, 15 min) before and after it (wall times are only comparable at similar loads)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}:\n{log.read_text()[-2000:]}")
    return {
        "seconds": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_average": {
            "start": [round(x, 2) for x in load_start],
            "end": [round(x, 2) for x in os.getloadavg()],
        },
    }


def recsight(*args: str) -> list[str]:
    return [sys.executable, "-m", "recsight", *args]


def stage_cmd(
    stage: str, n: int, work: Path, budget: str | None = None
) -> tuple[list[str], Path] | None:
    """The command of a stage and the path whose size is its output; `budget` is the
    evaluations' memory budget for score chunks (None: the evaluator's default for
    evaluate, 2 GB for train_sasrec)."""
    budgeted = {} if budget is None else {"memory_budget": budget}
    users = max(300, round(n / AVG_EVENTS_PER_USER))
    items = max(100, n // EVENTS_PER_ITEM)
    db, shop = work / "shop.duckdb", work / "shop"
    if stage == "generate":
        args = ["generate", "--users", str(users), "--items", str(items), "--days", "60"]
        return recsight(*args, "--seed", "0", "--out", str(shop), "--quiet"), shop
    if stage == "ingest":
        # a fresh store: into the last run's, every row would be a duplicate, dropped unwritten
        for path in (db, db.with_name(db.name + ".wal")):
            path.unlink(missing_ok=True)
        return recsight("ingest", str(shop), "--db", str(db), "--quiet"), db
    if stage == "analyze":
        return recsight("analyze", "--db", str(db), "--out", str(work / "report")), work / "report"
    if stage == "train_als":
        params = ["--param", "factors=64", "--param", "iterations=15"]
        out = work / "als"
        return recsight("train", "als", "--db", str(db), "--out", str(out), *params, "--ann",
                        "--quiet"), out  # fmt: skip
    if stage == "train_itemknn":
        out = work / "itemknn"
        return recsight("train", "itemknn", "--db", str(db), "--out", str(out), "--quiet"), out
    if stage == "evaluate":
        exp = {
            "name": "scale",
            "dataset": {"db": str(db)},
            "split": "user_random:0.8",
            "models": [
                {"name": "popular"},
                {"name": "als", "params": {"factors": 64, "iterations": 15}},
            ],
            "ks": [10],
            "metrics": ["ndcg", "recall", "hr"],
            "bootstrap": 200,
            "max_test_users": 100_000,
            **budgeted,
            "output": str(work / "eval"),
        }
        path = work / "experiment.yaml"
        path.write_text(yaml.safe_dump(exp))
        return recsight("evaluate", str(path), "--json"), work / "eval"
    if stage == "train_sasrec":
        # both models under one protocol: each user's last event held out (leave_last:1),
        # fitted on the rest, full ranking over the catalog for the same sampled test users.
        # SASRec: sampled softmax with popularity-drawn negatives and the logQ correction
        # (uniform negatives over a Zipf catalog are mostly rarely seen items)
        sasrec = {"loss": "sampled", "proposal": "popularity", "epochs": 10_000,
                  "max_minutes": sasrec_minutes(n), "early_stopping": False,
                  "threads": os.cpu_count() or 1}  # fmt: skip
        exp = {
            "name": "scale_sasrec",
            "dataset": {"db": str(db)},
            "split": "leave_last:1",
            "models": [{"name": "popular"}, {"name": "sasrec", "params": sasrec}],
            "ks": [10],
            "metrics": ["hr", "ndcg"],
            "bootstrap": 200,
            "max_test_users": SASREC_USERS,
            # score chunks (10K users x 1M items is 40 GB of scores): 2 GB unless told
            "memory_budget": budget or "2GB",
            "output": str(work / "eval_sasrec"),
        }
        path = work / "experiment_sasrec.yaml"
        path.write_text(yaml.safe_dump(exp))
        return recsight("evaluate", str(path), "--json"), work / "eval_sasrec"
    if stage == "ann_recall":
        return [sys.executable, "-c", ANN_RECALL, str(work / "als")], work / "als" / "ann.faiss"
    if stage == "batch":
        out = work / "recs"
        shutil.rmtree(out, ignore_errors=True)
        ann = ["--ann"] if n >= 50_000_000 else []  # exact up to 10M, ANN at 100M
        return recsight("recommend", "--all-users", "--model", str(work / "als"), "--db",
                        str(db), "--out", str(out), "--k", "10", "--json", *ann), out  # fmt: skip
    return None


REFLECT_CHECKS = 50  # users whose just-seen item is posted during the open loop


async def reflected(url: str, users: list[str], seconds: float, start: float) -> dict:
    """While the open loop runs: for `REFLECT_CHECKS` users spread over its duration, ask for
    top-10, post a view of the first item (acknowledged once stored), ask again; the posted
    item must be gone from the next top-10 (seen items are excluded). Returns the count of
    checks whose next recommendation reflected the event, and the ones that did not."""
    checks = list(dict.fromkeys(users))[:REFLECT_CHECKS]
    gap = seconds / max(len(checks), 1)
    ok, failed, errors = 0, [], 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for n, user in enumerate(checks):
            await asyncio.sleep(max(0.0, start + 0.5 + n * gap - time.perf_counter()))
            try:
                before = await client.get(f"/recommendations/{user}", params={"k": 10})
                items = [r["item_id"] for r in before.json()["recommendations"]]
                if not items:
                    continue
                posted = await client.post("/events", headers={"X-API-Key": KEY}, json={
                    "user_id": user, "item_id": items[0], "event_type": "view"})  # fmt: skip
                posted.raise_for_status()
                after = await client.get(f"/recommendations/{user}", params={"k": 10})
                again = [r["item_id"] for r in after.json()["recommendations"]]
            except (httpx.HTTPError, KeyError, ValueError):
                errors += 1
                continue
            if items[0] in again:
                failed.append({"user": user, "item": items[0]})
            else:
                ok += 1
    return {"checks": ok + len(failed), "reflected": ok, "not_reflected": failed[:5],
            "errors": errors}  # fmt: skip


async def open_loop_with_events(url: str, users: list[str], seconds: float) -> tuple[dict, dict]:
    """The 200 requests/s open loop and, at the same time, the posted events' check (on
    users from the end of the list, which the loop's first requests do not reach)."""
    start = time.perf_counter()
    loop, check = await asyncio.gather(
        open_loop(url, users, 200.0, seconds), reflected(url, users[::-1], seconds, start)
    )
    return loop, check


def serve_stage(work: Path, seconds: float = 30.0) -> dict:
    """Start-up time and RSS of `recsight serve` (ALS with its ANN index), then an open loop
    of 200 requests/s for users drawn by activity (repeat users hit the history cache), with
    events posted at the same time and checked to be reflected in the next recommendation."""
    from recsight.data.histories import write_history_snapshot
    from recsight.data.store import Store

    db = work / "serve.duckdb"
    # a WAL left by a killed earlier run belongs to the old copy: DuckDB refuses to replay it
    db.with_name(db.name + ".wal").unlink(missing_ok=True)
    shutil.copyfile(work / "shop.duckdb", db)
    # the by-user copy and the history snapshot the service otherwise builds in the
    # background on its first start (misses query the store until then)
    t0 = time.perf_counter()
    with Store(db) as store:
        store.cluster_by_user()
        cluster_s = time.perf_counter() - t0
        write_history_snapshot(store)
    snapshot_s = time.perf_counter() - t0 - cluster_s
    with duckdb.connect(str(db), read_only=True) as con:
        users = [r[0] for r in con.execute(
            "SELECT u.user_id FROM (SELECT user_idx FROM event_log USING SAMPLE 20000 ROWS) e "
            "JOIN user_map u USING (user_idx)"
        ).fetchall()]  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = start_raw(work / "als", db, KEY, port)
    try:
        wait_healthy(proc, url, 600, poll=0.1)
        startup = time.perf_counter() - t0
        ps = psutil.Process(proc.pid)
        rss_start = ps.memory_info().rss
        loop, check = asyncio.run(open_loop_with_events(url, users, seconds))
        cache = httpx.get(url + "/health", timeout=10).json()["history_cache"]
        rss_end = ps.memory_info().rss
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lookups = cache["hits"] + cache["misses"]
    return {
        "seconds": round(startup, 2),
        "startup_s": round(startup, 2),
        "peak_rss_mb": round(max(rss_start, rss_end) / 2**20, 1),
        "rss_at_start_mb": round(rss_start / 2**20, 1),
        "by_user_copy_s": round(cluster_s, 2),
        "history_snapshot_s": round(snapshot_s, 2),
        "open_loop_200rps": loop,
        "events_reflected": check,
        "cache_miss_rate": round(cache["misses"] / lookups, 3) if lookups else None,
    }


def label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}K"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", nargs="+", default=["1e6"], help="event counts, e.g. 1e6 1e7")
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--resume", action="store_true", help="skip stages with a result already")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/recsight-scale"))
    ap.add_argument("--results", type=Path, default=RESULTS,
                    help="stage results go under DIR/<size>/, the table to DIR.md")  # fmt: skip
    ap.add_argument("--memory-budget", default=None,
                    help="evaluate/train_sasrec: memory budget for score chunks, e.g. 2GB "
                         "(default: evaluate the evaluator's, a quarter of RAM; "
                         "train_sasrec 2GB)")  # fmt: skip
    ap.add_argument("--serve-seconds", type=float, default=30.0, help="open-loop duration")
    args = ap.parse_args()
    console = Console()
    sizes = [int(float(s)) for s in args.sizes]
    for n in sizes:
        work = args.workdir / label(n)
        work.mkdir(parents=True, exist_ok=True)
        res_dir = args.results / label(n)
        res_dir.mkdir(parents=True, exist_ok=True)
        for stage in args.stages:
            target = res_dir / f"{stage}.json"
            if args.resume and target.exists():
                continue
            console.print(f"[bold]{label(n)}[/] {stage} ...")
            if stage == "serve":
                result = serve_stage(work, args.serve_seconds)
                out_path = None
            else:
                cmd, out_path = stage_cmd(stage, n, work, args.memory_budget)
                result = run(cmd, work / f"{stage}.log")
                result["output_mb"] = round(size_of(out_path) / 1e6, 1)
                if stage in ("train_sasrec", "evaluate", "batch", "ann_recall"):
                    result["stdout"] = json.loads((work / f"{stage}.log").read_text())
                if stage == "evaluate":
                    result["memory_budget"] = args.memory_budget
                elif stage == "train_sasrec":
                    result["memory_budget"] = args.memory_budget or "2GB"
            result.update(
                {"events": n, "stage": stage, "machine": platform.platform(),
                 "cpus": os.cpu_count(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                   time.gmtime())}
            )  # fmt: skip
            target.write_text(json.dumps(result, indent=2) + "\n")
            console.print(f"  {result['seconds']:.1f} s, {result['peak_rss_mb']:.0f} MB")
    write_table(console, args.results)


def write_table(console: Console, results: Path = RESULTS) -> None:
    """All stage results found on disk, as a Rich table and as Markdown."""
    rows = []
    for size_dir in sorted(results.glob("*"), key=lambda p: float(p.name[:-1]) * (
            1e6 if p.name.endswith("M") else 1e3)):  # fmt: skip
        for stage in STAGES:
            f = size_dir / f"{stage}.json"
            if f.exists():
                rows.append(json.loads(f.read_text()))
    table = Table(title="bench_scale: wall time, peak RSS, output size per stage")
    head = ["events", "stage", "wall s", "peak RSS MB", "output MB", "notes"]
    for h in head:
        table.add_column(h, justify="right")
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        note = ""
        if r["stage"] == "serve":
            loop = r["open_loop_200rps"]
            built = (
                f" (by-user copy built before: {r['by_user_copy_s']} s)"
                if "by_user_copy_s" in r
                else " (by-user copy built meanwhile)"
            )
            note = (f"start-up {r['startup_s']} s{built}; p50 {loop['p50_ms']:.1f} ms, p99 "
                    f"{loop['p99_ms']:.1f} ms at 200 req/s ({loop['requests']:,} requests); "
                    f"{loop['errors']} errors; "
                    f"cache miss rate {r['cache_miss_rate']}")  # fmt: skip
            if "events_reflected" in r:
                c = r["events_reflected"]
                note += (f"; events posted during the loop reflected in the next top-10: "
                         f"{c['reflected']}/{c['checks']} ({c['errors']} errors)")  # fmt: skip
        elif r["stage"] == "evaluate":
            models = r["stdout"].get("models", [])
            note = "; ".join(
                f"{m['model']} ndcg@10 {m['metrics']['ndcg@10']['mean']:.4f}" for m in models
            ) + (f" (memory budget {r['memory_budget']})" if r.get("memory_budget") else "")
            if "load_average" in r:
                load = r["load_average"]
                note += f"; load {load['start'][0]:.1f} -> {load['end'][0]:.1f}"
        elif r["stage"] == "train_sasrec":
            models = r["stdout"].get("models", [])
            note = "; ".join(
                f"{m['model']} HR@10 {m['metrics']['hr@10']['mean']:.4f}, NDCG@10 "
                f"{m['metrics']['ndcg@10']['mean']:.4f}"
                for m in models
            )
            fit = {m["model"]: m["fit_seconds"] for m in models}.get("sasrec", 0.0)
            note += (f" (leave_last:1, {models[0]['n_users']:,} sampled users; SASRec sampled "
                     f"softmax, trained {fit / 60:.1f} min"
                     + (f"; memory budget {r['memory_budget']}" if r.get("memory_budget") else "")
                     + ")")  # fmt: skip
        elif r["stage"] == "ann_recall":
            o = r["stdout"]
            note = (f"recall@100 {o['recall_at_100']:.4f} on {o['users']:,} users; exact "
                    f"{o['exact_s']:.1f} s, ANN {o['ann_s']:.1f} s")  # fmt: skip
        elif r["stage"] == "batch":
            note = f"{r['stdout']['rows']:,} rows, {r['stdout']['users']:,} users"
        cells = [label(r["events"]), r["stage"], f"{r['seconds']:.1f}",
                 f"{r['peak_rss_mb']:.0f}", f"{r.get('output_mb', 0):.1f}", note]  # fmt: skip
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    results.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
