"""The behavior report on Spark: the analysis layer's Ibis expressions, run by a SparkSession.

There is no second implementation of any section: `spark_source` gives the analysis an
`AnalysisSource` whose tables are the layout's views on Spark and whose `execute` compiles each
expression to Spark SQL, so `recsight.analysis.analyze` runs unchanged. Intermediates the
report reads more than once (`AnalysisSource.materialize`) are persisted DataFrames, registered
as temporary views, for the report's duration, as they are DuckDB temporary tables on the local
engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import ibis.expr.types as ir
import pandas as pd

from recsight.analysis.source import AnalysisSource
from recsight.spark.layout import SparkLayout, persist_view, read_layout
from recsight.spark.sql import to_spark_sql

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def spark_source(spark: SparkSession, path: str | os.PathLike) -> AnalysisSource:
    """An `AnalysisSource` over the dataset layout at `path`, executed on `spark`."""
    layout = read_layout(spark, path, cache_events=True)
    return layout_source(layout)


def layout_source(layout: SparkLayout) -> AnalysisSource:
    """An `AnalysisSource` over a layout already registered on its session."""
    spark = layout.spark

    def execute(expr: ir.Expr) -> pd.DataFrame:
        return spark.sql(to_spark_sql(expr)).toPandas()

    def keep(name: str, expr: ir.Table) -> Callable[[], None]:
        # an intermediate several queries read (sessions, funnel times): computed once, where
        # Spark would recompute it from every event in each of them
        df = persist_view(spark, name, to_spark_sql(expr))

        def drop() -> None:
            spark.catalog.dropTempView(name)
            df.unpersist()

        return drop

    t = layout.tables
    return AnalysisSource(
        events=t["events"],
        items=t["items"],
        users=t["users"],
        execute=execute,
        keep=keep,
        timezone=layout.manifest.timezone,
        name=layout.path,
    )
