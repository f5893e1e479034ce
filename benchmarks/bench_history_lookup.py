"""How the service should read one user's recent events from a big store: a plain scan, an
ART index on ``event_log(user_idx)``, or a copy of the table clustered (sorted) by user so
DuckDB's per-row-group min/max skip everything else.

Builds a synthetic ``event_log`` of N rows in ingest (time) order, each row's user drawn
uniformly (by hash), then times the serving query for random users. Prints a table
and writes benchmarks/results/history_lookup.json.

    .venv/bin/python benchmarks/bench_history_lookup.py --events 10000000 --users 300000
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
from rich.console import Console
from rich.table import Table

QUERY = """SELECT seq, item_idx, event_type, value FROM {table} WHERE user_idx = ?
           ORDER BY "timestamp" DESC NULLS LAST, seq DESC LIMIT 200"""


def time_lookups(con: duckdb.DuckDBPyConnection, table: str, users: np.ndarray) -> dict:
    sql = QUERY.format(table=table)
    con.execute(sql, [int(users[0])]).fetchall()  # warm the buffer pool
    lat = []
    for u in users:
        t0 = time.perf_counter()
        con.execute(sql, [int(u)]).fetchall()
        lat.append(time.perf_counter() - t0)
    ms = np.asarray(lat) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=300_000)
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/history_lookup.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results: dict = {"events": args.events, "users": args.users, "machine": platform.platform()}
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "h.duckdb"))
        con.execute("SET memory_limit='1536MB'")
        con.execute(f"""CREATE TABLE event_log AS SELECT range AS seq,
                    hash(range)::UBIGINT % {args.users} AS user_idx,
                    (hash(range + 1) % 100000)::INTEGER AS item_idx,
                    TIMESTAMP '2026-01-01' + to_seconds(range) AS "timestamp",
                    'view' AS event_type, NULL::DOUBLE AS value
                    FROM range({args.events})""")
        probe = rng.integers(0, args.users, size=args.lookups)
        results["scan"] = time_lookups(con, "event_log", probe)
        t0 = time.perf_counter()
        con.execute("CREATE INDEX event_log_user ON event_log(user_idx)")
        results["index"] = {"build_s": time.perf_counter() - t0}
        results["index"].update(time_lookups(con, "event_log", probe))
        con.execute("DROP INDEX event_log_user")
        t0 = time.perf_counter()
        con.execute("CREATE TABLE by_user AS SELECT * FROM event_log ORDER BY user_idx, seq")
        results["clustered"] = {"build_s": time.perf_counter() - t0}
        results["clustered"].update(time_lookups(con, "by_user", probe))
        con.execute("CHECKPOINT")
        con.close()
        results["db_mb"] = (Path(tmp) / "h.duckdb").stat().st_size / 1e6
    table = Table(title=f"history lookup, {args.events:,} events, {args.users:,} users")
    for col in ("layout", "build s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for name in ("scan", "index", "clustered"):
        r = results[name]
        build = f"{r['build_s']:.1f}" if "build_s" in r else "-"
        table.add_row(name, build, f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
