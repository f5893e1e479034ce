"""`--spark-master sc://HOST:PORT`: the commands run over Spark Connect against a real Connect
server: Spark's own `SparkConnectPlugin`, which the tests' local session loads (see
tests/spark/conftest.py), so the server costs no second JVM.

The commands run in a subprocess, as a Python process holds either a classic SparkSession (the
tests' `spark` fixture) or a Connect one, not both: all three in the same one (a Python start-up
with pyspark's imports costs seconds), each through the command line's Typer app, opening and
closing its own Connect session as `recsight ...` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.layout import open_store
from recsight.models import ALS, load_model
from tests.analysis.compare import assert_same
from tests.spark.conftest import SHOP_MIN_GROUP

ROOT = Path(__file__).resolve().parents[2]


#: Runs each command line of argv[1] (JSON) through recsight's Typer app; prints per command
#: its exit code and output (stdout only when it succeeded), as JSON.
_DRIVER = """
import json, sys
from typer.testing import CliRunner
from recsight.cli.main import app
results = []
for args in json.loads(sys.argv[1]):
    res = CliRunner().invoke(app, args)
    results.append([res.exit_code, res.stdout if res.exit_code == 0 else res.output])
print(json.dumps(results))
"""


def recsight(*commands: list, timeout: float = 1800) -> list[tuple[int, str]]:
    """`recsight ARGS` for each command line, in one Python subprocess with this tree first on
    the path: (exit code, output) of each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "PYSPARK_PYTHON": sys.executable}  # fmt: skip
    lines = json.dumps([[str(a) for a in args] for args in commands])
    res = subprocess.run(
        [sys.executable, "-c", _DRIVER, lines],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return [tuple(r) for r in json.loads(res.stdout.splitlines()[-1])]


#: Report sections run over Connect: both read intermediates the report keeps on the server
#: (persisted views) and both suppress small groups on the shop at SHOP_MIN_GROUP; the whole
#: report's parity with the local engine is test_analysis_parity's, on the same code path.
CONNECT_SECTIONS = "popularity,sessions"


@pytest.mark.slow
def test_commands_over_spark_connect(connect_url, shop_layout, tmp_path):
    master = ["--engine", "spark", "--spark-master", connect_url]
    args = ["analyze", "--events", shop_layout, "-q", "--min-group-size", SHOP_MIN_GROUP,
            "--sections", CONNECT_SECTIONS]  # fmt: skip
    (code, out), (als_code, als_out), (recs_code, recs_out) = recsight(
        [*args, "--out", tmp_path / "sc", *master],
        ["train", "als", "--events", shop_layout, "--out", tmp_path / "als", "--json",
         "--param", "factors=8", "--param", "iterations=3", *master],
        ["recommend", "--all-users", "--model", tmp_path / "als", "--events", shop_layout,
         "--out", tmp_path / "recs-sc", "--json", *master],
    )  # fmt: skip

    # report sections over Connect equal the local engine's, small groups suppressed alike
    assert code == 0, out[-3000:]
    local = CliRunner().invoke(app, [str(a) for a in (*args, "--out", tmp_path / "local")])
    assert local.exit_code == 0, local.output
    want = json.loads((tmp_path / "local/report.json").read_text())
    got = json.loads((tmp_path / "sc/report.json").read_text())
    assert {k: s["status"] for k, s in want["sections"].items()} == {
        "popularity": "ok",
        "sessions": "ok",
    }
    places = want["privacy"]["suppressed_by_place"]
    assert places["popularity.top_items"] > 0 and places["sessions.length_histogram"] > 0
    assert_same(want, got)

    # MLlib ALS over Connect, saved as recsight's ALS; the same matrix as the local engine's
    assert als_code == 0, als_out[-3000:]
    assert json.loads(als_out)["engine"] == "spark"
    model = load_model(tmp_path / "als")
    with open_store(shop_layout) as store:
        data = store.interactions(with_features=False)
    assert type(model) is ALS and model.users_ == data.users
    assert (model.seen_ != data.to_csr(model.weights)).nnz == 0

    # batch recommendations over Connect equal the local engine's rows
    assert recs_code == 0, recs_out[-3000:]
    local = CliRunner().invoke(app, ["recommend", "--all-users", "--model", str(tmp_path / "als"),
                                     "--events", str(shop_layout), "--out",
                                     str(tmp_path / "recs-local")])  # fmt: skip
    assert local.exit_code == 0, local.output
    got = pd.read_parquet(tmp_path / "recs-sc")
    assert got.user_id.nunique() == data.n_users and len(got) == 10 * data.n_users
    pd.testing.assert_frame_equal(got, pd.read_parquet(tmp_path / "recs-local"))
