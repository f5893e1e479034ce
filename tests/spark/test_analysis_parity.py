"""The report on Spark equals the local report on the same exported layout, section by section:
every number equal (floats within 1e-9 relative), every list in the same order, the same
sections available. One analysis code path, two executors."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from recsight.analysis import analyze, from_store
from recsight.cli.analysis import register
from recsight.data.layout import open_store
from recsight.spark.analysis import spark_source
from recsight.spark.layout import read_layout
from tests.analysis.compare import assert_same
from tests.spark.conftest import SHOP_MIN_GROUP


def test_assert_same_catches_differences():
    assert_same({"x": [1, 2.0, "a"]}, {"x": [1, 2.0 + 1e-12, "a"]})
    for other in ({"x": [2, 1]}, {"x": [1, 2.0001]}, {"x": [1]}, {"y": [1, 2]}):
        with pytest.raises(AssertionError):
            assert_same({"x": [1, 2]}, other)


def test_spark_reads_the_layout_like_duckdb(spark, shop_layout):
    """Same ids, same integer indices, same events and catalog on both engines."""
    lay = read_layout(spark, shop_layout)
    with open_store(shop_layout) as st:
        for name in ("user_map", "item_map", "event_log", "items", "users"):
            order = {"event_log": "seq", "items": "item_idx", "users": "user_idx"}.get(
                name, name.replace("_map", "_idx")
            )
            local = st.con.execute(f"SELECT * FROM {name} ORDER BY {order}").df()
            remote = lay.df(name).orderBy(order).toPandas()
            assert list(local.columns) == list(remote.columns), name
            assert len(local) == len(remote) > 0, name
            for c in local.columns:
                x, y = map(_plain, local[c].tolist()), map(_plain, remote[c].tolist())
                assert list(x) == list(y), f"{name}.{c}"


def _plain(v) -> str:
    """A cell as text, whichever null (None, NaN, NaT), date or array type the engine
    returned."""
    if v is None or (not hasattr(v, "__len__") and pd.isna(v)):
        return "null"
    if isinstance(v, dt.date):  # DuckDB gives dates as timestamps, Spark as dates
        return str(pd.Timestamp(v))
    return str(list(v)) if hasattr(v, "__len__") and not isinstance(v, str) else str(v)


def test_cli_report_on_spark_equals_local_report(spark, shop_layout, local_shop_report, tmp_path):
    app = typer.Typer()
    register(app)
    res = CliRunner().invoke(app, ["analyze", "--events", str(shop_layout), "-q", "--out",
                                   str(tmp_path), "--engine", "spark", "--min-group-size",
                                   str(SHOP_MIN_GROUP)])  # fmt: skip
    assert res.exit_code == 0, res.output
    local = local_shop_report
    remote = json.loads((tmp_path / "report.json").read_text())
    assert {k: v["status"] for k, v in local["sections"].items()} == {
        k: "ok" for k in local["sections"]
    } | {"ratings": local["sections"]["ratings"]["status"]}
    # the minimum group size applied on both engines, to the same rows
    assert local["privacy"]["min_group_size"] == SHOP_MIN_GROUP
    assert local["privacy"]["suppressed_rows"] > 0
    assert_same(local, remote)
    assert (tmp_path / "report.html").stat().st_size > 10_000
    # the session was the tests' own: joined, not stopped
    assert spark.range(3).count() == 3


@pytest.mark.slow
def test_ml100k_report_on_spark_equals_local_report(spark, ml100k_layout):
    with open_store(ml100k_layout) as st:
        local = json.loads(analyze(from_store(st)).model_dump_json())
    remote = json.loads(analyze(spark_source(spark, ml100k_layout)).model_dump_json())
    assert local["overview"]["n_events"] == 100_000
    assert_same(local, remote)
