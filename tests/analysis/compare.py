"""Comparing two reports: every number equal (floats within 1e-9 relative), every list in the
same order. Floats are compared within a tolerance because a sum of doubles depends on the
order the engine adds them in (its threads, its plan), which no query fixes; the report's
means differ in the last bit between DuckDB and Spark, or between a materialized
intermediate and a recomputed one."""

from __future__ import annotations

import math

#: Fields that describe the run, not the data.
RUN_FIELDS = {"generated_at", "source", "seconds"}


def assert_same(a, b, where: str = "report") -> None:
    """Recursive equality: floats within 1e-9 relative, everything else exact."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a.keys() ^ b.keys())}"
        for k in a:
            if k not in RUN_FIELDS:
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} vs {len(b)} entries"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), f"{where}: {a!r} {b!r}"
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
