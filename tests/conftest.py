"""Shared fixtures: the real datasets folder and single-threaded numeric libraries."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from recsight.datasets import data_dir as _data_dir  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets folder. Skips when absent, except under CI=true where it must exist,
    so CI never passes by skipping."""
    d = _data_dir()
    if d is None or not d.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("RECSIGHT_DATA_DIR (or ../shared/data) is missing under CI=true")
        pytest.skip("real datasets not found: set RECSIGHT_DATA_DIR to the shared data folder")
    return d


def need(path: Path) -> Path:
    """A dataset file that must exist (same skip/fail rule as `data_dir`)."""
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing under CI=true")
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def ml100k_ingested(data_dir, tmp_path_factory):
    """ML-100K ingested into a store, read back as `Interactions` (with item features):
    100,000 ratings, 943 users, 1,682 items, in the store's id space."""
    from recsight.data.ingest import ingest
    from recsight.data.store import Store

    need(data_dir / "ml-100k" / "u.data")
    with Store(tmp_path_factory.mktemp("ml100k") / "s.duckdb") as s:
        ingest(s, data_dir / "ml-100k")
        return s.interactions()
