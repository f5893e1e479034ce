"""Start-up time of the command line: `recsight --help`, `recsight info`, `recsight ingest`.

Each command runs as its own process, as a user would start it (`--runs` times after one
warm-up, so the OS file cache is warm); the table shows the median and the minimum wall time
and the targets from issue 15 (`--help` < 0.5 s, `info` < 1 s). Also reports, for each command,
whether torch was imported (it must not be for these three), and the CPU time (user +
system) of each process, which a busy machine inflates far less than the wall time. Writes
benchmarks/results/cli.json.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RECSIGHT = str(Path(sys.executable).parent / "recsight")
TARGETS = {"--help": 0.5, "info": 1.0}
# prints whether torch got imported, after the command ran in-process (the same code path)
PROBE = (
    "import sys; from recsight.cli.main import app\n"
    "try:\n    app(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
    "print('TORCH', 'torch' in sys.modules, file=sys.stderr)"
)


def once(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of `cmd`. On a busy machine the
    wall time grows with the load; the CPU time is what the start-up itself costs."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def imports_torch(args: list[str], cwd: Path) -> bool:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=cwd, capture_output=True, text=True
    )
    return "TORCH True" in res.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cli.json"))
    args = ap.parse_args()
    console = Console()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        subprocess.run(
            [RECSIGHT, "generate", "--users", "200", "--items", "50", "--days", "10",
             "--out", "shop", "-q"],
            cwd=cwd, check=True,
        )  # fmt: skip
        subprocess.run(
            [RECSIGHT, "ingest", "shop/events.parquet", "--db", "s.duckdb", "-q"],
            cwd=cwd,
            check=True,
        )
        commands = {
            "--help": ["--help"],
            "info": ["info", "--db", "s.duckdb"],
            # a fresh store each time: start-up plus a ~7K-row ingest
            "ingest": ["ingest", "shop/events.parquet", "--db", "fresh.duckdb", "-q"],
        }
        for name, argv in commands.items():
            runs = []
            for _ in range(args.runs + 1):  # the first is a warm-up
                (cwd / "fresh.duckdb").unlink(missing_ok=True)
                runs.append(once([RECSIGHT, *argv], cwd))
            walls, cpus = [w for w, _ in runs[1:]], [c for _, c in runs[1:]]
            rows.append({
                "command": f"recsight {name}",
                "median_s": statistics.median(walls),
                "min_s": min(walls),
                "median_cpu_s": statistics.median(cpus),
                "target_s": TARGETS.get(name),
                "imports_torch": imports_torch(argv, cwd),
                "runs": len(walls),
            })  # fmt: skip
    table = Table(title="recsight start-up (wall time per process)")
    for col in ("command", "median s", "min s", "median CPU s", "target s", "imports torch"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for r in rows:
        target = "-" if r["target_s"] is None else f"< {r['target_s']}"
        table.add_row(r["command"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                      f"{r['median_cpu_s']:.3f}", target, str(r["imports_torch"]))  # fmt: skip
    console.print(table)
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    console.print(f"load average {meta['load_average'][0]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
