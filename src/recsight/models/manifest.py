"""The manifest of a folder of saved models (`manifest.json`): which sub-folder is the main
model and which are its fallbacks, what training saw, and the erasures applied since.

Written by `recsight train`, read by the serving pipeline and by unlearning."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsight import __version__

MANIFEST = "manifest.json"


def write_manifest(
    folder: str | Path,
    main: str,
    fallbacks: Sequence[str] = (),
    training_cutoff: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Describe a pipeline folder whose sub-folders `main` and `fallbacks` hold saved models."""
    folder = Path(folder)
    manifest = {
        "main": main,
        "fallbacks": list(fallbacks),
        "training_cutoff": training_cutoff,
        "config": config or {},
        "recsight_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The folder's manifest, or `{}` for a bare saved model (no manifest)."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}
