"""Start-up time of the command line: `recsight --help`, `recsight info`, `recsight ingest`.

Each command runs as its own process, as a user would start it (`--runs` times after one
warm-up, so the OS file cache is warm); the table shows the median and the minimum wall time
and the targets from issue 15 (`--help` < 0.5 s, `info` < 1 s). Also reports, for each command,
whether torch was imported (it must not be for these three). Writes
benchmarks/results/cli.json.

    .venv/bin/python benchmarks/bench_cli.py [--runs 15]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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


def timed(cmd: list[str], cwd: Path, runs: int) -> list[float]:
    subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)  # warm-up
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, capture_output=True, check=True)
        out.append(time.perf_counter() - t0)
    return out


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
            if name == "ingest":
                times = []
                for _ in range(args.runs + 1):
                    (cwd / "fresh.duckdb").unlink(missing_ok=True)
                    t0 = time.perf_counter()
                    subprocess.run([RECSIGHT, *argv], cwd=cwd, capture_output=True, check=True)
                    times.append(time.perf_counter() - t0)
                times = times[1:]
                (cwd / "fresh.duckdb").unlink(missing_ok=True)
            else:
                times = timed([RECSIGHT, *argv], cwd, args.runs)
            rows.append({
                "command": f"recsight {name}",
                "median_s": statistics.median(times),
                "min_s": min(times),
                "target_s": TARGETS.get(name),
                "imports_torch": imports_torch(argv, cwd),
                "runs": len(times),
            })  # fmt: skip
            if name == "ingest":
                (cwd / "fresh.duckdb").unlink(missing_ok=True)
    table = Table(title="recsight start-up (wall time per process)")
    for col in ("command", "median s", "min s", "target s", "imports torch"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for r in rows:
        target = "-" if r["target_s"] is None else f"< {r['target_s']}"
        table.add_row(r["command"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}", target,
                      str(r["imports_torch"]))  # fmt: skip
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
