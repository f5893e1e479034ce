"""Ingest throughput and peak memory for generated logs, from CSV and from Parquet.

Each ingest runs in a fresh child process so its peak RSS is its own. Prints a table and
writes benchmarks/results/ingest.json.

    .venv/bin/python benchmarks/bench_ingest.py --sizes 1000000 10000000
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

import duckdb
from rich.console import Console
from rich.table import Table

from recsight.data.generate import AVG_EVENTS_PER_USER, generate_shop

CHILD = """
import json, sys, time
from recsight.data.store import Store
from recsight.data.ingest import ingest
t0 = time.perf_counter()
with Store(sys.argv[2]) as s:
    r = ingest(s, sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0, "kept": r.kept, "read": r.rows_read}))
"""


def run_child(events: Path, db: Path) -> dict:
    # Flush what generating and converting the inputs (and the previous run) wrote, so the
    # kernel's writeback of hundreds of MB does not land inside the timed ingest.
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(events), str(db)],
        check=True,
        capture_output=True,
        text=True,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # ru_maxrss of children is the max over all children so far; runs go small to large
    result["peak_rss_mb"] = round(max(peak_kb, before) / 1024, 1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = ap.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for target in sorted(args.sizes):
            n_users = max(10, round(target / AVG_EVENTS_PER_USER))
            shop = Path(tmp) / f"shop{target}"
            t0 = time.perf_counter()
            summary = generate_shop(shop, n_users=n_users, n_items=20_000, n_days=60, seed=1)
            gen_s = time.perf_counter() - t0
            parquet = shop / "events.parquet"
            csv = shop / "events.csv"
            # a connection closed before timing: the module-level default one would keep a
            # live DuckDB instance in this process that slowed the child's ingest by ~15%
            with duckdb.connect() as con:
                con.execute(f"COPY (SELECT * FROM '{parquet}') TO '{csv}' (HEADER, DELIMITER ',')")
            for fmt, path in (("parquet", parquet), ("csv", csv)):
                db = Path(tmp) / f"{fmt}{target}.duckdb"
                r = run_child(path, db)
                rows.append(
                    {
                        "format": fmt,
                        "events": summary.n_events,
                        "generate_cmd": f"recsight generate --users {n_users} --items 20000 "
                        "--days 60 --seed 1",
                        "generate_seconds": round(gen_s, 2),
                        "ingest_seconds": round(r["seconds"], 2),
                        "rows_per_second": round(r["read"] / r["seconds"]),
                        "peak_rss_mb": r["peak_rss_mb"],
                        "file_mb": round(path.stat().st_size / 2**20, 1),
                    }
                )
                db.unlink()
    table = Table(title="recsight ingest throughput")
    for col in ("format", "events", "ingest s", "rows/s", "peak RSS MB", "file MB"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["format"],
            f"{r['events']:,}",
            f"{r['ingest_seconds']:.1f}",
            f"{r['rows_per_second']:,}",
            f"{r['peak_rss_mb']:,.0f}",
            f"{r['file_mb']}",
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
