"""ONE local SparkSession for all Spark tests (starting one costs 5-15 s and ~1 GB of JVM),
and ONE Spark Connect server, inside that session's JVM.

Settings (`SPARK_TEST_CONF`): local[2], no UI, 2 shuffle partitions, 2 GB driver, UTC, and
what suits many tiny queries on 2 cores (no code generation, no adaptive execution, no
constraint propagation), bound to 127.0.0.1 (else
Spark binds to the external interface) and Python workers on this interpreter (else
mapInPandas / TorchDistributor workers start the system python, without recsight). Tests
skip when pyspark or Java is missing, except under CI=true, where they fail.

The Connect server is Spark's own (`SparkConnectPlugin`, what `start-connect-server.sh` and
``SparkSession.builder.remote("local")`` start too), loaded by the tests' session on a free
port of 127.0.0.1: `sc://` clients in subprocesses get it without a second JVM.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import need

SPARK_TEST_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    # 2 GB: the report keeps its intermediates persisted; at 1 GB an aggregation once could
    # not get execution memory beside them (UNABLE_TO_ACQUIRE_MEMORY in a CI run)
    "spark.driver.memory": "2g",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.bindAddress": "127.0.0.1",
    # tiny data, many small queries: compiling each stage to Java costs more than it saves
    "spark.sql.codegen.wholeStage": "false",
    "spark.ui.showConsoleProgress": "false",
    # re-planning each query after every shuffle stage buys nothing on 2 small partitions
    "spark.sql.adaptive.enabled": "false",
    # each query's plan is rendered as text for the listener bus even without a UI
    "spark.sql.ui.explainMode": "simple",
    # filters derived from constraints save nothing on a few rows; deriving them through the
    # report's deep plans is optimizer time
    "spark.sql.constraintPropagation.enabled": "false",
    # expressions interpreted, not compiled to Java per query (an internal setting Spark's own
    # tests use): the shop report's test took 82 s instead of 121 s
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    # no concurrent collector threads; 4 MB thread stacks for recursion over deep plans and
    # interpreted expressions. C1 only (-XX:TieredStopAtLevel=1) saved CPU (143 s vs 219 s
    # on the shop report) but not time, and made the ALS test slower (49 s vs 37 s)
    "spark.driver.extraJavaOptions": "-XX:+UseSerialGC -Xss4m",
}


def spark_missing(connect: bool = False) -> str | None:
    """Why Spark (with `connect`: also Spark Connect's client) cannot run here, or None."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install 'recsight[spark]')"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "Java is not installed (apt-get install openjdk-17-jre-headless)"
    if connect:
        try:
            import grpc  # noqa: F401
            import zstandard  # noqa: F401
        except ImportError:
            return "the Spark Connect client is not installed (pip install 'recsight[spark]')"
    return None


def _unavailable(why: str) -> None:
    """Skip (fail under CI=true, where the Spark tests must run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"Spark tests cannot run under CI=true: {why}")
    pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def connect_port() -> int:
    """The port of the tests' Spark Connect server (chosen before the session starts)."""
    return _free_port()


@pytest.fixture(scope="session")
def spark(connect_port):
    """The session-scoped local SparkSession (started through recsight's own session code),
    serving Spark Connect on `connect_port`."""
    why = spark_missing()
    if why:
        _unavailable(why)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from recsight.spark.session import spark_session

    conf = {
        **SPARK_TEST_CONF,
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(connect_port),
    }
    with spark_session("local[2]", conf, app_name="recsight-tests") as session:
        session.sparkContext.setLogLevel("ERROR")
        yield session


@pytest.fixture(scope="session")
def connect_url(spark, connect_port) -> str:
    """`sc://` URL of the Spark Connect server running in the tests' session."""
    why = spark_missing(connect=True)
    if why:
        _unavailable(why)
    try:
        socket.create_connection(("127.0.0.1", connect_port), timeout=5).close()
    except OSError as exc:
        _unavailable(f"the Spark Connect server is not listening on {connect_port}: {exc}")
    return f"sc://127.0.0.1:{connect_port}"


@pytest.fixture(scope="session")
def ml100k_layout(data_dir, tmp_path_factory) -> Path:
    """ML-100K ingested and exported as a dataset layout, once for all Spark tests."""
    need(data_dir / "ml-100k" / "u.data")
    from recsight.data.ingest import ingest
    from recsight.data.layout import export_store
    from recsight.data.store import Store

    base = tmp_path_factory.mktemp("ml100k-layout")
    with Store(base / "s.duckdb") as store:
        ingest(store, data_dir / "ml-100k")
        export_store(store, base / "layout")
    return base / "layout"


@pytest.fixture(scope="session")
def shop_layout(tmp_path_factory) -> Path:
    """A small generated shop with planted bots (1,397 events; every report section applies),
    declared in Berlin time, as a dataset layout. Its categories tie in the funnel (two reach
    the first stage with 25 users each, two with 24): the report's order must not depend on
    the engine."""
    from recsight.data.generate import generate_shop
    from recsight.data.ingest import ingest
    from recsight.data.layout import export_store
    from recsight.data.store import Store

    folder = tmp_path_factory.mktemp("shop")
    generate_shop(folder / "gen", n_users=100, n_items=50, n_days=7, seed=0)
    with Store(folder / "s.duckdb") as store:
        ingest(store, folder / "gen", tz="Europe/Berlin")
        export_store(store, folder / "layout")
    return folder / "layout"


#: `--min-group-size` of the shop reports (not the default 5: the option must reach Spark).
SHOP_MIN_GROUP = 8


@pytest.fixture(scope="session")
def local_shop_report(shop_layout, tmp_path_factory) -> dict:
    """report.json of `recsight analyze` on the local engine over `shop_layout`, computed
    once: the reference the Spark and Spark Connect reports are compared with."""
    import typer
    from typer.testing import CliRunner

    from recsight.cli.analysis import register

    app = typer.Typer()
    register(app)
    out = tmp_path_factory.mktemp("shop-report-local")
    res = CliRunner().invoke(app, ["analyze", "--events", str(shop_layout), "-q", "--out",
                                   str(out), "--min-group-size", str(SHOP_MIN_GROUP)])  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text())
