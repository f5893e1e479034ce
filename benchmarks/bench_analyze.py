"""Benchmark `recsight analyze`: the full report on ML-100K and on generated shops of growing size.

Each point runs in a fresh subprocess so its peak RSS (ru_maxrss) is its own. Generated data:
``generate_shop(out, n_users=round(N / AVG_EVENTS_PER_USER), n_items=20_000, n_days=60, seed=0)``,
the same as ``recsight generate --users U --items 20000 --days 60 --seed 0 --out DIR``.

    .venv/bin/python benchmarks/bench_analyze.py                 # ML-100K, 1M, 3M
    .venv/bin/python benchmarks/bench_analyze.py --sizes 1e6 3e6 1e7

Writes benchmarks/results/analyze.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "analyze.json"
N_ITEMS = 20_000
N_DAYS = 60


def _one(kind: str, size: float, work: Path) -> dict:
    """One point, in this process: prepare the store, then time the full report."""
    from recsight.analysis import analyze, from_store, write_report
    from recsight.data.generate import AVG_EVENTS_PER_USER, generate_shop
    from recsight.data.ingest import ingest
    from recsight.data.store import Store
    from recsight.datasets import data_dir

    rec: dict = {"data": kind}
    db = work / "bench.duckdb"
    t = time.perf_counter()
    if kind == "ml-100k":
        source = data_dir() / "ml-100k"
    else:
        n_users = round(size / AVG_EVENTS_PER_USER)
        source = work / "shop"
        generate_shop(source, n_users=n_users, n_items=N_ITEMS, n_days=N_DAYS, seed=0)
        rec["generate_command"] = (
            f"recsight generate --users {n_users} --items {N_ITEMS} --days {N_DAYS} --seed 0 "
            f"--out DIR  (= generate_shop(DIR, n_users={n_users}, n_items={N_ITEMS}, "
            f"n_days={N_DAYS}, seed=0))"
        )
    rec["prepare_seconds"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    with Store(db) as store:
        ingest(store, source)
    rec["ingest_seconds"] = round(time.perf_counter() - t, 2)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with Store(db, read_only=True) as store:
        t = time.perf_counter()
        report = analyze(from_store(store))
        write_report(report, work / "report")
        rec["analyze_seconds"] = round(time.perf_counter() - t, 2)
        rec["n_events"] = report.overview.n_events
        rec["n_users"] = report.overview.n_users
        rec["section_seconds"] = {k: v.seconds for k, v in report.sections.items()}
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    rec["peak_rss_mb_before_analyze"] = round(rss_before, 1)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 3e6])
    ap.add_argument("--one", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(_one(args.one[0], float(args.one[1]), Path(tmp))))
        return
    points = [("ml-100k", 0.0)] + [("generated", s) for s in args.sizes]
    env = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    rows = []
    for kind, size in points:
        out = subprocess.run(
            [sys.executable, __file__, "--one", kind, str(size)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(rec)
        print(
            f"{rec['data']:<10} {rec['n_events']:>11,} events  ingest {rec['ingest_seconds']:7.1f}s"
            f"  analyze {rec['analyze_seconds']:7.1f}s  peak RSS {rec['peak_rss_mb']:8.0f} MB",
            flush=True,
        )
    gen = [r for r in rows if r["data"] == "generated"]
    for r in gen:
        r["us_per_event"] = round(r["analyze_seconds"] / r["n_events"] * 1e6, 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "targets": {"ml-100k_seconds": 10, "10M_seconds": 90, "10M_peak_rss_mb": 4096},
                "points": rows,
            },
            indent=1,
        )  # fmt: skip
    )
    print(f"\n{'data':<10} {'events':>11} {'analyze s':>10} {'us/event':>9} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['data']:<10} {r['n_events']:>11,} {r['analyze_seconds']:>10.1f} "
              f"{r.get('us_per_event', ''):>9} {r['peak_rss_mb']:>12.0f}")  # fmt: skip
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
