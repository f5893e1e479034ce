"""Engine selection and session start-up errors: each ends in one line naming what to do.

These need no running Spark (they fail before one would start), so they are fast.
"""

from __future__ import annotations

import socket
import sys
import time

import pytest
import typer
from typer.testing import CliRunner

from recsight.cli.analysis import register as register_analysis
from recsight.cli.serve import register as register_serve
from recsight.errors import EngineError
from recsight.spark import session as S


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free once the socket closes: nothing listens there


def test_master_endpoints():
    assert S.master_endpoints("local[*]") == [] and S.master_endpoints("yarn") == []
    assert S.master_endpoints("spark://h1:7077,h2:7078") == [("h1", 7077), ("h2", 7078)]
    assert S.master_endpoints("spark://h1") == [("h1", 7077)]
    assert S.master_endpoints("sc://gw.example.com") == [("gw.example.com", 15002)]
    assert S.master_endpoints("sc://gw:443/;token=abc") == [("gw", 443)]
    assert S.master_endpoints("k8s://https://api.k8s:6443") == [("api.k8s", 6443)]
    with pytest.raises(EngineError, match="expected local"):
        S.master_endpoints("nonsense")


def test_unreachable_master_fails_fast_in_one_line():
    url = f"spark://127.0.0.1:{_closed_port()}"
    pytest.importorskip("pyspark.sql")  # imported first: the check's time, not the import's
    t0 = time.perf_counter()
    with pytest.raises(EngineError) as exc, S.spark_session(url):
        pass
    assert time.perf_counter() - t0 < 2 * S.CONNECT_TIMEOUT
    msg = str(exc.value)
    assert msg.startswith(f"cannot reach Spark master {url}") and "\n" not in msg


def test_resolve_master(monkeypatch):
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert S.resolve_master(None) == "local[*]"
    monkeypatch.setenv("SPARK_MASTER", "spark://m:7077")
    assert S.resolve_master(None) == "spark://m:7077"
    assert S.resolve_master("local[2]") == "local[2]"  # the option beats the variable
    monkeypatch.delenv("SPARK_MASTER")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "4242")  # under spark-submit: keep its master
    assert S.resolve_master(None) is None


def test_missing_extra_java_and_connect_client_are_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import fails as if not installed
    with pytest.raises(
        EngineError, match=r"needs the spark extra.*pip install 'recsight\[spark\]'"
    ):
        S.require_pyspark()
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(
        EngineError, match=r"Spark Connect client, .*: pip install 'recsight\[spark\]'"
    ):
        S.require_pyspark(connect=True)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    with pytest.raises(EngineError, match="needs Java 17\\+, and no java was found in JAVA_HOME"):
        S.require_java()
    fake = tmp_path / "jdk/bin/java"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.2\" 2019-01-15' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(EngineError, match="is Java 11: install openjdk-17-jre-headless"):
        S.require_java()


def test_engine_option_errors_in_the_cli(tmp_path):
    app = typer.Typer()
    register_analysis(app)
    register_serve(app)
    runner = CliRunner()
    res = runner.invoke(app, ["serve", "--model", str(tmp_path), "--engine", "spark"])
    assert res.exit_code == 2
    assert "`recsight serve` does not run on Spark: drop --engine spark" in res.output
    res = runner.invoke(app, ["analyze", "--out", str(tmp_path), "--engine", "flink"])
    assert res.exit_code == 2 and "--engine 'flink': expected one of local, spark" in res.output
    res = runner.invoke(app, ["analyze", "--out", str(tmp_path), "--engine", "spark"])
    assert res.exit_code == 2 and "pass --events DIR or URL" in res.output
    res = runner.invoke(
        app,
        ["analyze", "--out", str(tmp_path), "--engine", "spark", "--events", str(tmp_path)]
        + ["--spark-conf", "spark.executor.memory"],
    )
    assert res.exit_code == 2 and "--spark-conf 'spark.executor.memory': expected key=value" in (
        res.output
    )
    port = _closed_port()
    res = runner.invoke(
        app,
        ["analyze", "--out", str(tmp_path), "--engine", "spark", "--events", str(tmp_path)],
        env={"SPARK_MASTER": f"spark://127.0.0.1:{port}"},
    )
    assert res.exit_code == 2 and f"cannot reach Spark master spark://127.0.0.1:{port}" in (
        res.output
    )
