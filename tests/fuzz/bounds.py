"""How hard the fuzz suites push: bounded and repeatable in `make test`, deeper and randomized
in `make fuzz` (FUZZ_DEPTH=deep)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

DEEP = os.environ.get("FUZZ_DEPTH") == "deep"


def bounded(max_examples: int) -> settings:
    """`max_examples` derandomized examples with no example database, reported as found
    (unshrunk); under FUZZ_DEPTH=deep 15 times as many, random, shrunk."""
    if DEEP:
        return settings(
            max_examples=max_examples * 15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
