"""Server CPU per recommendation request, by thread, for `recsight serve` on a big store.

Wall-clock latency on a shared machine measures the neighbours; CPU seconds per request do
not (much). The script copies a prepared store (`--prepare` once: the by-user copy and the
history snapshot built, as `bench_scale.py`'s serve stage does), starts the service from
`--src` (a checkout's ``src``, so two branches are measured alike) under ``nice``, warms it
up, then runs a closed loop of `--clients` concurrent GETs of top-10 for users drawn by
activity and reads each server thread's CPU from ``/proc/PID/task/*/stat`` around it.
Thread names come from `py-spy dump` when py-spy is installed. Then a sequential pass saves
the answers (request ids dropped) to compare branches: ``--answers FILE``.

    python benchmarks/bench_serve_cpu.py --prepare --db shop.duckdb --work DIR
    python benchmarks/bench_serve_cpu.py --model DIR/als --work DIR --src ../main/src \
        --requests 3000 --json main.json --answers main-answers.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx

PREPARED = "prepared.duckdb"
TICK = os.sysconf("SC_CLK_TCK")


def prepare(db: Path, work: Path) -> None:
    """A copy of `db` with the by-user copy and the history snapshot the service would build
    in the background on its first start."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from recsight.data.histories import write_history_snapshot
    from recsight.data.store import Store

    work.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(db, work / PREPARED)
    with Store(work / PREPARED) as store:
        store.cluster_by_user()
        write_history_snapshot(store)


def copy_store(prepared: Path, db: Path) -> None:
    """`prepared` copied to `db`, its history snapshot (a folder named after the store
    file) along: without it the service reads misses from the store until it has built one."""
    db.with_name(db.name + ".wal").unlink(missing_ok=True)
    shutil.copyfile(prepared, db)
    snapshots = db.with_name(db.name + ".histories")
    shutil.rmtree(snapshots, ignore_errors=True)
    shutil.copytree(prepared.with_name(prepared.name + ".histories"), snapshots)


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of `pid`."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Python thread names by OS thread id (from `py-spy dump`; empty without py-spy)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        text = subprocess.run(
            [spy, "dump", "--pid", str(pid), "--nonblocking"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    names = {}
    for line in text.splitlines():
        # Thread 0x7F... (idle): "micro-batch"  or  Thread 1234 (active): "MainThread"
        if line.startswith("Thread ") and '"' in line:
            ident = line.split()[1]
            tid = int(ident, 16) if ident.startswith("0x") else int(ident)
            names[tid] = line.split('"')[1]
    return names


def users_by_activity(db: Path, n: int, seed: int) -> list[str]:
    """`n` user ids drawn from the event log (so by activity), the same for a given seed."""
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        ids = [r[0] for r in con.execute(
            f"SELECT u.user_id FROM (SELECT user_idx FROM event_log USING SAMPLE {n} ROWS "
            f"(reservoir, {seed})) e JOIN user_map u USING (user_idx)"
        ).fetchall()]  # fmt: skip
    return ids


async def closed_loop(url: str, users: list[str], clients: int) -> tuple[int, float]:
    """Each user's top-10 once, `clients` requests in flight; (errors, wall seconds)."""
    queue = list(reversed(users))
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            user = queue.pop()
            r = await http.get(f"{url}/recommendations/{user}", params={"k": 10})
            errors += r.status_code != 200

    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return errors, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder of the prepared store")
    ap.add_argument("--prepare", action="store_true", help="prepare the store from --db")
    ap.add_argument("--db", type=Path, help="the store to prepare (left unchanged)")
    ap.add_argument("--model", type=Path, help="model folder to serve")
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answers", type=Path, help="save a sequential pass's answers here")
    ap.add_argument("--answer-requests", type=int, default=200)
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.db, args.work)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.serving.live import free_port, wait_healthy

    db = args.work / "serve-cpu.duckdb"
    copy_store(args.work / PREPARED, db)
    users = users_by_activity(args.work / PREPARED, args.warmup + args.requests, args.seed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "RECSIGHT_API_KEY": "k",
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    cmd = ["nice", "-n", str(args.nice), sys.executable, "-m", "recsight", "serve",
           "--model", str(args.model), "--db", str(db), "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    try:
        startup = wait_healthy(proc, url, 900)
        asyncio.run(closed_loop(url, users[: args.warmup], args.clients))
        cache0 = httpx.get(url + "/health", timeout=30).json()["history_cache"]
        load0, cpu0 = os.getloadavg(), thread_cpu(proc.pid)
        errors, wall = asyncio.run(closed_loop(url, users[args.warmup :], args.clients))
        cpu1, load1 = thread_cpu(proc.pid), os.getloadavg()
        cache1 = httpx.get(url + "/health", timeout=30).json()["history_cache"]
        names = thread_names(proc.pid)
        answers = []
        if args.answers:
            with httpx.Client(timeout=60) as http:
                for i, user in enumerate(users[: args.answer_requests]):
                    params = {"k": 10, "explain": i % 4 == 0}
                    body = http.get(f"{url}/recommendations/{user}", params=params).json()
                    body.pop("request_id")
                    answers.append(body)
            args.answers.write_text(json.dumps(answers, indent=0) + "\n")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    n = args.requests
    per_thread = {tid: cpu1[tid] - cpu0.get(tid, 0.0) for tid in cpu1}
    groups: dict[str, float] = {}
    for tid, s in per_thread.items():
        name = "event loop" if tid == proc.pid else names.get(tid, "other")
        name = "thread pool" if name.startswith(("AnyIO", "asyncio", "ThreadPool")) else name
        groups[name] = groups.get(name, 0.0) + s
    misses = cache1["misses"] - cache0["misses"]
    hits = cache1["hits"] - cache0["hits"]
    result = {
        "src": str(args.src),
        "requests": n,
        "clients": args.clients,
        "errors": errors,
        "startup_s": round(startup, 1),
        "wall_s": round(wall, 2),
        "cpu_ms_per_request": round(1000 * sum(per_thread.values()) / n, 3),
        "by_thread_ms": {k: round(1000 * v / n, 3) for k, v in sorted(groups.items())},
        "miss_rate": round(misses / max(1, misses + hits), 3),
        "load_average": {
            "start": [round(x, 2) for x in load0],
            "end": [round(x, 2) for x in load1],
        },  # fmt: skip
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if answers:
        print(f"{len(answers)} answers saved to {args.answers}")


if __name__ == "__main__":
    main()
