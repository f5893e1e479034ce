"""Benchmark the Spark engine against the local one, on the same machine in the same run.

Sections (each point in a fresh subprocess, so its peak memory is its own):

- ``report``: `recsight analyze --events DIR` on the local engine (DuckDB) and with
  ``--engine spark --spark-master local[2]``, on generated shops of 1M and 10M events written
  as the dataset layout; wall time, peak RSS of the Python driver and of the JVM.
- ``als``: MLlib ALS (`recsight.spark.als.SparkALS`, local[2]) vs `implicit` ALS at matched
  settings on ML-100K (user_random:0.8, seed 42): fit seconds, NDCG@10, paired Wilcoxon p.
- ``ddp``: SASRec on ML-100K trained by TorchDistributor with 1 and 2 DDP processes (gloo,
  CPU): seconds per epoch.

    .venv/bin/python benchmarks/bench_spark.py                    # every section
    .venv/bin/python benchmarks/bench_spark.py als ddp
    .venv/bin/python benchmarks/bench_spark.py report --sizes 1e6 1e7 --work /scratch/spark \
        --driver-memory 4g

Results accumulate in benchmarks/results/spark.json (a point already there is skipped unless
--force), so an interrupted run resumes. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "spark.json"
DATA = ROOT / "benchmarks" / ".spark-data"
MASTER = "local[2]"
#: Spark local's driver JVM heap unless --driver-memory says otherwise (Spark's default is 1 GB).
DRIVER_MEMORY = "2g"
N_ITEMS = 20_000
N_DAYS = 60
ALS_PARAMS = {"factors": 64, "reg": 1.0, "alpha": 10.0, "iterations": 15, "seed": 42}
SASREC_PARAMS = {"epochs": 2, "early_stopping": False, "verbose": False, "seed": 0}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class PeakSampler:
    """Peak RSS of a process tree, split into Java (the JVM) and everything else, sampled
    every 0.2 s (a short spike between samples can be missed)."""

    def __init__(self, pid: int):
        import psutil

        self.root = psutil.Process(pid)
        self.peak = {"driver_mb": 0.0, "jvm_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                java = other = 0.0
                for p in procs:
                    try:
                        rss = p.memory_info().rss / 2**20
                        if "java" in p.name():
                            java += rss
                        else:
                            other += rss
                    except psutil.Error:
                        pass
                self.peak["jvm_mb"] = max(self.peak["jvm_mb"], java)
                self.peak["driver_mb"] = max(self.peak["driver_mb"], other)
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _run_cli(args: list[str]) -> dict:
    """One `recsight ...` command: wall seconds and peak RSS of driver and JVM (with `error`,
    the output's last lines, when it failed)."""
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recsight", *args],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with PeakSampler(proc.pid) as sampler:
        out, _ = proc.communicate()
    seconds = time.perf_counter() - t
    rec = {"seconds": round(seconds, 2), **{k: round(v, 1) for k, v in sampler.peak.items()}}
    if proc.returncode != 0:
        rec["error"] = out[-2000:]
    return rec


def _section_seconds(report_dir: Path) -> dict[str, float]:
    """Seconds per report section, from the report.json `recsight analyze` wrote."""
    report = json.loads((report_dir / "report.json").read_text())
    return {name: s["seconds"] for name, s in report["sections"].items()}


def _layout(size: float, work: Path) -> tuple[Path, dict]:
    """The generated shop of about `size` events as a dataset layout under `work` (made
    once)."""
    from recsight.data.generate import AVG_EVENTS_PER_USER, generate_shop
    from recsight.data.ingest import ingest
    from recsight.data.layout import export_store, is_layout
    from recsight.data.store import Store

    n_users = round(size / AVG_EVENTS_PER_USER)
    folder = work / f"shop-{int(size)}"
    info = {
        "generate_command": f"recsight generate --users {n_users} --items {N_ITEMS} "
        f"--days {N_DAYS} --seed 0 --out SHOP && recsight ingest SHOP && recsight export "
        "--out DIR"
    }
    if not is_layout(folder / "layout"):
        folder.mkdir(parents=True, exist_ok=True)
        generate_shop(folder / "shop", n_users=n_users, n_items=N_ITEMS, n_days=N_DAYS, seed=0)
        db = folder / "store.duckdb"
        db.unlink(missing_ok=True)
        with Store(db) as store:
            ingest(store, folder / "shop")
        with Store(db, read_only=True) as store:
            export_store(store, folder / "layout")
    return folder / "layout", info


def point_report(size: float, work: Path, driver_memory: str) -> dict:
    from recsight.data.layout import read_manifest

    layout, info = _layout(size, work)
    rec = {"n_events": read_manifest(layout).n_events, **info}
    folder = layout.parent
    # what has finished, kept beside the layout: a run stopped half-way keeps the first row
    progress = folder / "bench-point.json"
    # Spark's event log (job by job, with times) shows how far a run got if it is stopped
    events_log = folder / "spark-events"
    events_log.mkdir(exist_ok=True)
    rec["spark_conf"] = {
        "spark.driver.memory": driver_memory,
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": str(events_log),
    }
    conf = [a for k, v in rec["spark_conf"].items() for a in ("--spark-conf", f"{k}={v}")]
    # Spark first: the longer run, the one a time-boxed run (stopped at a limit) must not lose
    runs = {
        "spark": ["analyze", "--engine", "spark", "--spark-master", MASTER, *conf, "--events",
                  str(layout)],
        "local": ["analyze", "--events", str(layout)],
    }  # fmt: skip
    for engine, args in runs.items():
        out = folder / f"r-{engine}"
        (out / "report.json").unlink(missing_ok=True)
        rec[engine] = {"load_average_before": [round(x, 1) for x in os.getloadavg()]}
        rec[engine] |= _run_cli([*args, "--out", str(out)])
        if "error" not in rec[engine]:
            rec[engine]["section_seconds"] = _section_seconds(out)
        progress.write_text(json.dumps(rec, indent=2) + "\n")
    return rec


def _spark(driver_memory: str):
    from pyspark.sql import SparkSession

    for k, v in _env().items():
        os.environ.setdefault(k, v)
    spark = (
        SparkSession.builder.master(MASTER)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _jvm_peak_mb(spark) -> float | None:
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def _ml100k():
    import tempfile

    from recsight.data.ingest import ingest
    from recsight.data.store import Store
    from recsight.datasets import data_dir

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "s.duckdb") as store:
        ingest(store, data_dir() / "ml-100k")
        return store.interactions()


def point_als(driver_memory: str) -> dict:
    from recsight.data.splits import split
    from recsight.evaluation.protocol import evaluate_ranking
    from recsight.evaluation.significance import paired_pvalue
    from recsight.models import ALS
    from recsight.spark.als import SparkALS

    parts = split(_ml100k(), "user_random:0.8", seed=42)
    spark = _spark(driver_memory)
    rec: dict = {
        "data": "ML-100K user_random:0.8 seed 42",
        "params": ALS_PARAMS,
        "driver_memory": driver_memory,
    }
    per_user = {}
    for name, cls in (("implicit", ALS), ("mllib", SparkALS)):
        t = time.perf_counter()
        model = cls(**ALS_PARAMS).fit(parts.train)
        fit = time.perf_counter() - t
        res = evaluate_ranking(model, parts.train, parts.test, ks=(10,))
        per_user[name] = res.per_user["ndcg@10"]
        rec[name] = {"fit_seconds": round(fit, 2), "ndcg@10": round(res.summary["ndcg@10"], 4)}
        if name == "mllib":
            rec[name]["mllib_params"] = model.mllib_params()
    rec["paired_wilcoxon_p"] = round(paired_pvalue(per_user["implicit"], per_user["mllib"]), 4)
    rec["driver_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    rec["jvm_peak_mb"] = _jvm_peak_mb(spark)
    spark.stop()
    return rec


def point_ddp(processes: int, driver_memory: str) -> dict:
    import tempfile

    from recsight.models import create_model
    from recsight.spark.distributed import fit_distributed

    data = _ml100k()
    spark = _spark(driver_memory)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model = create_model("sasrec", **SASREC_PARAMS)
        _, history = fit_distributed(model, data, tmp, processes)
        total = time.perf_counter() - t
    spark.stop()
    epochs = [e["seconds"] for e in history["epochs"]]
    return {
        "data": "ML-100K (all events)",
        "params": SASREC_PARAMS,
        "processes": processes,
        "driver_memory": driver_memory,
        "epoch_seconds": [round(s, 2) for s in epochs],
        "seconds_per_epoch": round(sum(epochs) / len(epochs), 2),
        "total_seconds_with_launch": round(total, 2),
    }


def _in_subprocess(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", *args],
        env=_env(),
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sections", nargs="*", default=["als", "ddp", "report"])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 1e7])
    ap.add_argument("--force", action="store_true", help="Rerun points already recorded.")
    ap.add_argument(
        "--work",
        type=Path,
        default=DATA,
        help="Folder for the generated layouts and the reports (a few GB at 1e7).",
    )
    ap.add_argument(
        "--driver-memory",
        default=DRIVER_MEMORY,
        help=f"Spark local's driver heap, e.g. 4g (default {DRIVER_MEMORY}).",
    )
    ap.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        kind, *rest = args.one
        rec = {
            "als": lambda: point_als(args.driver_memory),
            "ddp": lambda: point_ddp(int(rest[0]), args.driver_memory),
            "report": lambda: point_report(float(rest[0]), args.work, args.driver_memory),
        }[kind]()
        print(json.dumps(rec))
        return

    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"points": {}}
    todo = []
    if "als" in args.sections:
        todo.append(("als", ["als"]))
    if "ddp" in args.sections:
        todo += [(f"ddp-{n}", ["ddp", str(n)]) for n in (1, 2)]
    if "report" in args.sections:
        todo += [(f"report-{int(s)}", ["report", str(s)]) for s in args.sizes]
    # --work and --driver-memory travel to each point's subprocess
    todo = [
        (key, [*one, "--work", str(args.work), "--driver-memory", args.driver_memory])
        for key, one in todo
    ]
    for key, one in todo:
        if key in results["points"] and not args.force:
            continue
        print(f"running {key} ...", flush=True)
        t = time.perf_counter()
        try:
            rec = _in_subprocess(one)
        except RuntimeError as exc:
            rec = {"error": str(exc).splitlines()[0], "partial": True}
        rec["machine"] = _machine()
        rec["bench_seconds"] = round(time.perf_counter() - t, 1)
        results["points"][key] = rec
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    _print(results["points"])


def _print(points: dict) -> None:
    print(f"{'point':<18} result")
    for key, rec in points.items():
        if "error" in rec:
            print(f"{key:<18} not measured: {rec['error']}")
        elif key == "als":
            i, m = rec["implicit"], rec["mllib"]
            print(
                f"{key:<18} implicit {i['fit_seconds']}s NDCG@10 {i['ndcg@10']} | MLlib "
                f"{m['fit_seconds']}s NDCG@10 {m['ndcg@10']} | p {rec['paired_wilcoxon_p']}"
            )
        elif key.startswith("ddp"):
            print(f"{key:<18} {rec['seconds_per_epoch']} s/epoch ({rec['processes']} processes)")
        else:
            runs = []
            for engine in ("local", "spark"):
                r = rec[engine]
                last = r["error"].strip().splitlines()[-1][:80] if "error" in r else ""
                fail = f" FAILED ({last})" if "error" in r else ""
                mb = f"driver {r['driver_mb']} MB JVM {r['jvm_mb']} MB"
                runs.append(f"{engine} {r['seconds']}s{fail} {mb}")
            print(f"{key:<18} {rec['n_events']:,} events | " + " | ".join(runs))


if __name__ == "__main__":
    main()
