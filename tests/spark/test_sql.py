"""Ibis expressions compiled to Spark SQL read persisted views from the cache."""

from __future__ import annotations

import ibis
import pandas as pd

from recsight.spark.layout import persist_view
from recsight.spark.sql import to_spark_sql


def test_a_subexpression_read_twice_reads_the_persisted_view(spark, tmp_path):
    # Ibis writes a subexpression read twice as a CTE; Spark 4.3 did not match a CTE's body
    # against the cache and read the Parquet files again (the report's costliest queries)
    pd.DataFrame({"u": [1, 1, 2, 3, 3, 3], "v": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}).to_parquet(
        tmp_path / "t.parquet"
    )
    spark.read.parquet(str(tmp_path / "t.parquet")).createOrReplaceTempView("raw_t")
    kept = persist_view(spark, "kept_t", "SELECT * FROM raw_t")
    t = ibis.table({"u": "int64", "v": "float64"}, name="kept_t")
    per_user = t.group_by("u").aggregate(n=t.count())
    many = per_user.filter(per_user.n > 1).select(m="u")
    expr = per_user.inner_join(many, per_user.u == many.m)
    sql = to_spark_sql(expr)
    assert "WITH" not in sql.upper()
    df = spark.sql(sql)
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "InMemoryTableScan" in plan  # (the CTE query's plan had none)
    assert sorted(map(tuple, df.select("u", "n").toPandas().to_numpy().tolist())) == [
        (1, 2),
        (3, 3),
    ]
    spark.catalog.dropTempView("kept_t")
    kept.unpersist()
