"""The dataset layout (`recsight.data.layout`) as tables of a SparkSession.

`read_layout(spark, path)` registers temporary views named like the store's tables
(`events`, `event_log`, `items`, `users`, `user_map`, `item_map`), created from the same Ibis
view expressions the local engine compiles for DuckDB, so ids get the same integer indices on
both engines. `path` is anything Spark reads: a local folder or a Hadoop-compatible URL
(``s3a://bucket/shop``, ``hdfs://...``, ``abfss://...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ibis
import ibis.expr.types as ir

from recsight.data.layout import (
    EVENTS_DIR,
    EVENTS_SCHEMA,
    LAYOUT_EVENT_COLUMNS,
    MANIFEST,
    Manifest,
    parse_manifest,
    read_manifest,
    view_expressions,
)
from recsight.errors import InputError
from recsight.spark.sql import to_spark_sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


@dataclass
class SparkLayout:
    """A layout registered on a SparkSession: the manifest and, per view name, the unbound
    Ibis table (its schema) that expressions over the view are built from."""

    spark: SparkSession
    path: str
    manifest: Manifest
    tables: dict[str, ir.Table]

    def df(self, name: str) -> DataFrame:
        """A registered view as a Spark DataFrame."""
        return self.spark.table(name)

    def sql(self, expr: ir.Expr) -> str:
        """Spark SQL for an Ibis expression over the views."""
        return to_spark_sql(expr)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _join(path: str, name: str) -> str:
    return path.rstrip("/") + "/" + name


def spark_manifest(spark: SparkSession, path: str) -> Manifest:
    """The layout's manifest, read directly for local paths and through Spark otherwise."""
    if _is_local(path):
        return read_manifest(path.removeprefix("file://"))
    where = _join(path, MANIFEST)
    try:
        lines = [r.value for r in spark.read.text(where, wholetext=True).collect()]
    except Exception as exc:  # Spark's AnalysisException for a missing path, among others
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: cannot read the layout manifest ({msg})") from None
    return parse_manifest("".join(lines), where)


def _ibis_schema(struct) -> ibis.Schema:
    from ibis.backends.pyspark.datatypes import PySparkType

    return ibis.schema({f.name: PySparkType.to_ibis(f.dataType) for f in struct.fields})


def read_layout(
    spark: SparkSession, path: str | os.PathLike, cache_events: bool = False
) -> SparkLayout:
    """Register the layout at `path` on `spark` (see the module docstring). The id maps are
    computed once and cached; with `cache_events` the joined events, items and users too (in
    memory, spilling to disk), for work such as the report that reads them dozens of times
    (each read of an uncached view reads its Parquet files again)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    path = str(path)
    manifest = spark_manifest(spark, path)
    events_struct = from_arrow_schema(EVENTS_SCHEMA)
    try:
        events = (
            spark.read.schema(events_struct)
            .parquet(_join(path, EVENTS_DIR))
            .select(*LAYOUT_EVENT_COLUMNS)  # the partition column is derived, not needed
            if manifest.n_events
            else spark.createDataFrame([], events_struct)
        )
        sides = {k: spark.read.parquet(_join(path, f"{k}.parquet")) for k in ("items", "users")}
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: cannot read the layout on Spark ({msg})") from None
    raw = {"events": events, **sides}
    for kind, df in raw.items():
        df.createOrReplaceTempView(f"layout_{kind}")
    raw_tables = {
        k: ibis.table(_ibis_schema(df.schema), name=f"layout_{k}") for k, df in raw.items()
    }
    exprs = view_expressions(raw_tables["events"], raw_tables["items"], raw_tables["users"])
    tables: dict[str, ir.Table] = {}
    for name, expr in exprs.items():
        sql = to_spark_sql(expr)
        if name.endswith("_map") or (cache_events and name in ("events", "items", "users")):
            spark.catalog.dropTempView(name)  # one of an earlier read: uncached and gone
            persist_view(spark, name, sql)
        else:
            spark.sql(sql).createOrReplaceTempView(name)
        tables[name] = ibis.table(expr.schema(), name=name)
    return SparkLayout(spark, path, manifest, tables)


def persist_view(spark: SparkSession, name: str, sql: str) -> DataFrame:
    """The rows of `sql`, computed now and kept (memory, spilling to disk), as the temporary
    view `name`; `spark.catalog.dropTempView(name)` uncaches them.

    Not ``CACHE TABLE name AS sql``: that view keeps the SQL text, which Spark parses and
    analyses again, with every view it reads, in each query that reads it, before it finds the
    cached rows; the report's queries read such views dozens of times, nested several deep. A
    DataFrame's view keeps its analysed plan, which is matched to the cached rows directly."""
    df = spark.sql(sql).persist()
    df.count()
    df.createOrReplaceTempView(name)
    return df
