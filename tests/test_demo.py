"""The main job end to end on a small generated shop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recsight.cli.demo import run_demo
from recsight.serving.pipeline import Pipeline


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch):
    # a relative --out, as `make demo` gives it
    monkeypatch.chdir(tmp_path)
    result = run_demo(Path("demo"), users=300, items=120, days=20, seed=3, quiet=True)
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert report["overview"]["n_users"] == 300
    assert report["privacy"]["min_group_size"] == 5  # the report keeps groups of 5+ users
    board = json.loads((tmp_path / "demo" / "leaderboard.json").read_text())
    names = [m["name"] for m in board["models"]]
    assert {"popular", "itemknn", "ease", "als"} <= set(names)
    ndcg = {m["name"]: m["metrics"]["ndcg@10"]["mean"] for m in board["models"]}
    assert max(ndcg.values()) > ndcg["popular"]  # personalised models beat the floor
    pipeline = Pipeline.load(result["pipeline"])
    assert pipeline.manifest["training_cutoff"] and result["recommendations"]
    assert all(len(items) == 5 for items in result["recommendations"].values())
