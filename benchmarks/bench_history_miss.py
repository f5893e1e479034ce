"""CPU per history-cache miss on a real store: the DuckDB query the service ran
(`Store.recent_events` on the by-user copy) against the memory-mapped history snapshot
(`recsight.data.histories`, read through `StoredHistories` as the service does).

Run it on a scratch copy of a store (`recsight generate` + `recsight ingest`): it writes the
by-user copy and the snapshot into it when they are missing. Users are drawn by activity
(sampled events), as `bench_scale.py`'s serve stage draws them; each read is checked equal
to the query's. Prints JSON (also written to --out) with CPU ms per miss (process time) and
wall-clock percentiles, the snapshot's build time and size, and the cost of opening it
(what the service pays at start-up), with the load average before and after.

    nice -n 10 .venv/bin/python benchmarks/bench_history_miss.py --db /scratch/shop.duckdb \\
        [--misses 2000] [--query-misses 500] [--rebuild] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import psutil

from recsight.data.histories import HistorySnapshot, events_after, write_history_snapshot
from recsight.data.store import Store
from recsight.serving.history import StoredHistories


def timed(load, users: list[str], limit: int) -> tuple[dict, list]:
    out, wall = [], []
    c0 = time.process_time()
    for u in users:
        t0 = time.perf_counter()
        out.append(load(u, limit))
        wall.append(time.perf_counter() - t0)
    cpu = time.process_time() - c0
    ms = np.asarray(wall) * 1e3
    return {
        "misses": len(users),
        "cpu_ms_per_miss": round(cpu / len(users) * 1e3, 4),
        "wall_p50_ms": round(float(np.percentile(ms, 50)), 4),
        "wall_p99_ms": round(float(np.percentile(ms, 99)), 4),
    }, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--misses", type=int, default=2000, help="snapshot reads")
    ap.add_argument("--query-misses", type=int, default=500, help="DuckDB reads (slower)")
    ap.add_argument("--rebuild", action="store_true", help="write the snapshot even if there")
    ap.add_argument("--limit", type=int, default=200, help="events per history")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/history_miss.json"))
    args = ap.parse_args()
    res: dict = {"db": str(args.db), "machine": platform.platform(), "cpus": os.cpu_count(),
                 "load_before": os.getloadavg()}  # fmt: skip
    proc = psutil.Process()
    with Store(args.db) as store:
        n_events, n_users, n_items, _ = store.event_counts()
        res.update(events=n_events, users=n_users, items=n_items)
        if store.meta("by_user_upto") is None:
            t0 = time.perf_counter()
            store.cluster_by_user()
            res["by_user_copy_s"] = round(time.perf_counter() - t0, 2)
        if args.rebuild or HistorySnapshot.current(store) is None:
            t0, c0 = time.perf_counter(), time.process_time()
            write_history_snapshot(store)
            res["snapshot_write_s"] = round(time.perf_counter() - t0, 2)
            res["snapshot_write_cpu_s"] = round(time.process_time() - c0, 2)
        sample = store.con.execute(
            "SELECT u.user_id FROM (SELECT user_idx FROM event_log USING SAMPLE "
            f"reservoir({int(args.misses)} ROWS) REPEATABLE (0)) e JOIN user_map u USING (user_idx)"
        ).fetchall()
        users = [r[0] for r in sample]
        # the start-up cost: open the snapshot, read the events past it
        rss0, t0 = proc.memory_info().rss, time.perf_counter()
        snapshot = HistorySnapshot.current(store)
        source = StoredHistories(lambda u, n: [])
        source.install(snapshot, events_after(store, snapshot.upto))
        res["snapshot_open_s"] = round(time.perf_counter() - t0, 4)
        res["snapshot_open_rss_mb"] = round((proc.memory_info().rss - rss0) / 2**20, 1)
        res["snapshot_mb"] = round(
            sum(f.stat().st_size for f in snapshot.path.iterdir()) / 2**20, 1
        )
        query_users = users[: args.query_misses]
        store.recent_events(query_users[0], args.limit)  # warm the buffer pool
        res["query"], by_query = timed(store.recent_events, query_users, args.limit)
        rss0 = proc.memory_info().rss
        res["snapshot"], by_snapshot = timed(source, users, args.limit)
        res["snapshot"]["rss_growth_mb"] = round((proc.memory_info().rss - rss0) / 2**20, 1)
        res["equal"] = by_snapshot[: len(by_query)] == by_query
        res["load_after"] = os.getloadavg()
    print(json.dumps(res, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    if not res["equal"]:
        sys.exit("the snapshot's reads differ from the query's")


if __name__ == "__main__":
    main()
