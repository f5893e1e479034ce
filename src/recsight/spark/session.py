"""Starting (or joining) the SparkSession behind `--engine spark`.

`spark_session(master, conf)` is the one entry point the commands use. It resolves the master
(`--spark-master`, else ``SPARK_MASTER``, else the master `spark-submit` gave, else
``local[*]``), fails fast with one line when something is missing (the ``spark`` extra, Java,
a reachable master), and yields a session with the settings recsight relies on (UTC session
time zone). A session already running in the process (tests, notebooks, `spark-submit`) is
joined and left running; one started here is stopped on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from recsight.errors import EngineError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

ENGINES = ("local", "spark")
DEFAULT_MASTER = "local[*]"
#: Seconds the reachability check waits for a remote master before giving up.
CONNECT_TIMEOUT = 3.0
#: Settings every recsight session gets (a `--spark-conf` of the same key wins): figures by
#: hour and date follow the session time zone, and recsight's times are UTC.
BASE_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Spark's console progress bars would draw over recsight's own status line
    "spark.ui.showConsoleProgress": "false",
}
_DEFAULT_PORTS = {"spark": 7077, "sc": 15002}
_INSTALL_EXTRA = "pip install 'recsight[spark]'"


def check_engine(engine: str, command: str, spark_ok: bool = True) -> bool:
    """Validate `--engine` for `command`; True when it is Spark. `spark_ok=False` marks a
    command that runs on the local engine only."""
    if engine not in ENGINES:
        raise EngineError(f"--engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "spark" and not spark_ok:
        raise EngineError(
            f"`recsight {command}` does not run on Spark: drop --engine spark (it runs on the "
            "local engine)"
        )
    return engine == "spark"


def resolve_master(master: str | None) -> str | None:
    """The master URL to use, or None to keep the one `spark-submit` configured."""
    master = master or os.environ.get("SPARK_MASTER") or None
    if master:
        return master
    # launched by spark-submit / pyspark: the JVM already has spark.master
    return None if os.environ.get("PYSPARK_GATEWAY_PORT") else DEFAULT_MASTER


def require_pyspark(connect: bool = False) -> None:
    """One line naming the install when pyspark (or Spark Connect's client) is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise EngineError(
            f"--engine spark needs the spark extra, which is not installed: {_INSTALL_EXTRA}"
        ) from None
    if connect:
        try:
            import grpc  # noqa: F401
            import zstandard  # noqa: F401
        except ImportError:
            raise EngineError(
                "a Spark Connect (sc://) master needs the Spark Connect client, which the "
                f"spark extra installs: {_INSTALL_EXTRA}"
            ) from None


def java_major_version(java: str) -> int | None:
    """The major version of the `java` executable (17 for '17.0.15'), None if unreadable."""
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def require_java(minimum: int = 17) -> str:
    """The `java` Spark will run (JAVA_HOME's, else PATH's), checked to be `minimum`+."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise EngineError(
            f"--engine spark needs Java {minimum}+, and no java was found"
            + (f" in JAVA_HOME={home}" if home else " on PATH")
            + ": install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set "
            "JAVA_HOME"
        )
    major = java_major_version(java)
    if major is not None and major < minimum:
        raise EngineError(
            f"--engine spark needs Java {minimum}+, {java} is Java {major}: install "
            "openjdk-17-jre-headless or point JAVA_HOME at a newer Java"
        )
    return java


def master_endpoints(master: str) -> list[tuple[str, int]]:
    """(host, port) pairs a remote master listens on; [] for masters without one to check
    (local[*], yarn: resolved by Hadoop's configuration)."""
    if master.startswith("local") or master == "yarn":
        return []
    url = master[len("k8s://") :] if master.startswith("k8s://") else master
    scheme, _, rest = url.partition("://")
    if not rest:
        raise EngineError(
            f"--spark-master {master!r}: expected local[*], spark://HOST:PORT, sc://HOST:PORT, "
            "yarn or k8s://https://HOST:PORT"
        )
    default = _DEFAULT_PORTS.get(scheme, 443 if scheme == "https" else 80)
    out = []
    # a standalone master with standby masters lists them all: spark://h1:7077,h2:7077
    for hostport in rest.split("/")[0].split(";")[0].split(","):
        parts = urlsplit(f"//{hostport}")
        if not parts.hostname:
            raise EngineError(f"--spark-master {master!r}: no host in {hostport!r}")
        out.append((parts.hostname, parts.port or default))
    return out


def check_reachable(master: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail in one line, within `timeout` seconds, when no endpoint of a remote master accepts
    a TCP connection (Spark itself would retry for about a minute)."""
    endpoints = master_endpoints(master)
    errors = []
    for host, port in endpoints:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            errors.append(f"{host}:{port}: {exc.strerror or type(exc).__name__}")
    if errors:
        raise EngineError(
            f"cannot reach Spark master {master} ({'; '.join(errors)}); check --spark-master "
            "/ SPARK_MASTER and that the cluster is up"
        )


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (`sc://` master): it has no SparkContext, RDDs or
    broadcast variables; DataFrames, SQL, pandas UDFs and MLlib work through it."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark: SparkSession) -> int | None:
    """The cluster's task slots (`SparkContext.defaultParallelism`), or None over Spark
    Connect, which does not expose them (callers then leave the choice to Spark)."""
    return None if is_connect(spark) else max(1, spark.sparkContext.defaultParallelism)


def spark_master(spark: SparkSession) -> str:
    """The master the session's driver runs with (over Spark Connect: the server's)."""
    if is_connect(spark):
        return spark.conf.get("spark.master", "")
    return spark.sparkContext.master


def parse_conf(pairs: list[str] | None) -> dict[str, str]:
    """`--spark-conf key=value` options as a dict (a malformed one named in the error)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EngineError(
                f"--spark-conf {pair!r}: expected key=value, e.g. spark.executor.memory=4g"
            )
        out[key.strip()] = value.strip()
    return out


@contextlib.contextmanager
def spark_session(
    master: str | None = None, conf: Mapping[str, str] | None = None, app_name: str = "recsight"
) -> Iterator[SparkSession]:
    """The SparkSession for a command: the running one if any, else a new one (stopped on
    exit). See the module docstring for how the master is chosen."""
    url = resolve_master(master)
    connect = bool(url and url.startswith("sc://"))
    require_pyspark(connect=connect)
    from pyspark.sql import SparkSession

    if url:
        check_reachable(url)  # before anything waits on it
    conf = dict(conf or {})
    settings = {**BASE_CONF, **conf}
    active = None if connect else SparkSession.getActiveSession()
    if active is not None:
        for key, value in settings.items():
            if active.conf.isModifiable(key):  # static settings are the running session's
                active.conf.set(key, value)
        yield active
        return
    builder = SparkSession.builder.appName(app_name)
    if connect:
        builder = builder.remote(url)
        # a Connect session can only change SQL settings; the rest are the server's
        settings = {k: v for k, v in settings.items() if k.startswith("spark.sql.") or k in conf}
    else:
        require_java()
        # executors in local mode run Python workers: the interpreter that has recsight
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        if url:
            builder = builder.master(url)
        if url and url.startswith("local"):
            settings.setdefault("spark.ui.enabled", "false")
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # py4j / JVM start-up errors: one line, not a Java trace
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineError(f"cannot start Spark ({url or 'spark-submit master'}): {first}") from None
    try:
        yield session
    finally:
        session.stop()
