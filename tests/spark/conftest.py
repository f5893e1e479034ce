"""ONE local SparkSession for all Spark tests (starting one costs 5-15 s and ~1 GB of JVM).

Settings: local[2], no UI, 2 shuffle partitions, 1 GB driver, UTC, no whole-stage code
generation (the tests' queries are many and tiny), bound to 127.0.0.1 (else
Spark binds to the external interface) and Python workers on this interpreter (else
mapInPandas / TorchDistributor workers start the system python, without recsight). Tests
skip when pyspark or Java is missing, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

SPARK_TEST_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.bindAddress": "127.0.0.1",
    # tiny data, many small queries: compiling each stage to Java costs more than it saves
    "spark.sql.codegen.wholeStage": "false",
    "spark.ui.showConsoleProgress": "false",
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


@pytest.fixture(scope="session")
def spark():
    """The session-scoped local SparkSession (started through recsight's own session code)."""
    why = spark_missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Spark tests cannot run under CI=true: {why}")
        pytest.skip(why)
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from recsight.spark.session import spark_session

    with spark_session("local[2]", SPARK_TEST_CONF, app_name="recsight-tests") as session:
        session.sparkContext.setLogLevel("ERROR")
        yield session
