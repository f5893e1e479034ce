"""What a private fit guarantees, in one record: DP-SGD (`recsight.models.neural.dp`) and federated
training with server noise (`recsight.privacy.federated`) both report it as `privacy_`, and
`recsight train` prints it and writes it into the model's manifest."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class PrivacyReport:
    """What a DP fit guaranteed: the unit protected ("user"), the target ε (None when the
    noise was set directly) and the ε actually spent at δ, the noise multiplier and clipping
    norm, the share of users sampled per step (or round), the steps (rounds) taken and the
    accountant."""

    unit: str
    epsilon_target: float | None
    epsilon_spent: float
    delta: float
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    accountant: str = "rdp"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("epsilon_target", "epsilon_spent", "max_grad_norm"):
            if d[key] is not None and math.isinf(d[key]):
                d[key] = "inf"  # JSON has no infinity
        return d
