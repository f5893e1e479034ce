"""Where an evaluation's memory goes: peak RSS and wall time of each phase of an experiment
run in one process, as `recsight evaluate` runs it (loading, split, the pair matrices, then
each model's fit and evaluation), with the load average around each phase and each model's
metrics (so two code versions can be checked to agree).

A phase's peak is the kernel's high-water mark (VmHWM), reset before the phase through
``/proc/self/clear_refs`` where the kernel allows it; otherwise (or in addition) a thread
samples RSS every 20 ms. Works on code without this branch's runner changes as well (it
then loads, splits and derives the pairs as that code does), to measure before and after.

    nice -n 10 .venv/bin/python benchmarks/eval_memory_profile.py EXPERIMENT.yaml \\
        [--out benchmarks/results/eval_memory.json]

`bench_scale.py --stages evaluate` writes the experiment it runs to ``WORKDIR/<size>/
experiment.yaml``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import threading
import time
from pathlib import Path

import psutil

from recsight.evaluation import experiment as ex


def _hwm_mb() -> float | None:
    """The process's peak RSS since the last reset (VmHWM), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Phase:
    """Times a phase and records its peak RSS (high-water mark and a 20 ms sampler)."""

    def __init__(self, name: str, rows: list[dict]):
        self.name, self.rows = name, rows
        self.proc = psutil.Process()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, self.proc.memory_info().rss)

    def __enter__(self) -> Phase:
        self.reset = _reset_hwm()
        self._peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.load_start = os.getloadavg()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.perf_counter() - self.t0
        self._stop.set()
        self._thread.join()
        rss = self.proc.memory_info().rss
        sampled = max(self._peak, rss) / 2**20
        hwm = _hwm_mb() if self.reset else None
        self.rows.append({
            "phase": self.name,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(max(sampled, hwm or 0.0), 1),
            "peak_source": "VmHWM" if hwm is not None and hwm >= sampled else "sampled",
            "rss_end_mb": round(rss / 2**20, 1),
            "load_average_start": [round(x, 2) for x in self.load_start],
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
        })  # fmt: skip
        print(f"{self.name:<28} {seconds:9.1f} s {self.rows[-1]['peak_rss_mb']:9.0f} MB peak "
              f"{self.rows[-1]['rss_end_mb']:9.0f} MB after  load "
              f"{self.load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip


def profile(path: Path, out: Path) -> dict:
    """Run the experiment at `path` phase by phase; returns the phases and the metrics,
    also written to `out` after every phase (a run stopped early keeps what it measured)."""
    cfg, base = ex.load_experiment(path)
    runner = ex.ExperimentRunner(cfg, base, quiet=True)
    runner.check_models()
    rows = Rows(out, {"experiment": str(path), "machine": platform.platform(),
                      "cpus": os.cpu_count(),
                      "memory_gb": round(psutil.virtual_memory().total / 1e9, 1)})  # fmt: skip
    features = getattr(runner, "needs_features", True)
    load_kw = {"with_features": features} if "with_features" in inspect.signature(
        ex.load_data).parameters else {}  # fmt: skip
    with Phase("loading", rows):
        data = ex.load_data(cfg, base, **load_kw)
    n_events = len(data)
    rows.head["events"] = n_events
    consume = "consume" in inspect.signature(runner.splits).parameters
    with Phase("split", rows):
        train, test, tuning = runner.splits(data, consume=True) if consume else runner.splits(data)
        del data
    if tuning is not None:
        raise SystemExit("the profile runs untuned experiments only (no grid or search)")
    rows.head.update(n_train=len(train), n_test=len(test), features_loaded=features)
    # as the runner does: the pairs derived once, the test events released before any fit
    # and the train events after the last one (when the code has `without_events`)
    release = getattr(ex, "without_events", None)
    eval_kw: dict = {}
    if hasattr(runner, "_ranking_pairs"):
        with Phase("ranking pairs", rows):
            pairs = runner._ranking_pairs(train, test)
            if release:  # the evaluations get the pairs, and the cache holds no events
                runner._pairs.clear()
                eval_kw = {"pairs": pairs}
                test = release(test)
    metrics = {}
    for n, mc in enumerate(cfg.models):
        with Phase(f"fit {mc.display}", rows):
            model = runner._build(mc, dict(mc.params)).fit(train)
        if release and n == len(cfg.models) - 1:
            train = release(train)
        with Phase(f"evaluate {mc.display}", rows):
            result = runner._evaluate(model, train, test, final=True, **eval_kw)
        metrics[mc.display] = result.summary
        rows.head["metrics"] = metrics
        rows.write()
        del model, result
    rows.head["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return rows.write()


class Rows(list):
    """The phases measured so far, written to `out` (with `head`) after each one."""

    def __init__(self, out: Path, head: dict):
        super().__init__()
        self.out, self.head = out, head
        out.parent.mkdir(parents=True, exist_ok=True)

    def append(self, row: dict) -> None:
        super().append(row)
        self.write()

    def write(self) -> dict:
        doc = {**self.head, "peak_rss_mb": max(r["peak_rss_mb"] for r in self), "phases": self}
        self.out.write_text(json.dumps(doc, indent=2) + "\n")
        return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("experiment", type=Path, help="an untuned experiment YAML")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_memory.json"))
    args = ap.parse_args()
    out = profile(args.experiment, args.out)
    for name, summary in out["metrics"].items():
        print(name, json.dumps(summary))
    print(f"peak {out['peak_rss_mb']:.0f} MB over {out['events']:,} events; wrote {args.out}")


if __name__ == "__main__":
    main()
