"""benchmarks/bench_serve.py's CPU burner (`--hog`): it burns CPU while the block runs and
leaves no process behind."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_serve.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_serve", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_serve"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_hog_burns_cpu_and_stops():
    bench = _load()
    with bench.Hog(2) as hog:
        pids = [p.pid for p in hog._procs]
        assert all(psutil.pid_exists(p) for p in pids)
        time.sleep(1.0)
    summary = hog.summary()
    assert summary["procs"] == 2 and summary["cpu_seconds"] > 0
    # killed and reaped: nothing keeps burning after the phase
    assert not any(psutil.pid_exists(p) for p in pids)
