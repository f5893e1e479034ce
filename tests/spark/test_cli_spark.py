"""`recsight train` and `recommend --all-users` with --engine spark, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from recsight.cli.models import register
from recsight.data.generate import generate_shop
from recsight.data.ingest import ingest
from recsight.data.layout import export_store, open_store
from recsight.data.pseudonyms import PSEUDONYM_KEY_ENV, pseudonym
from recsight.data.store import Store
from recsight.models import ALS, load_model, model_class
from recsight.serving.pipeline import Pipeline
from recsight.spark.layout import read_layout
from recsight.spark.train import collect_interactions

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(app, *args: str):
    """Exit code and stdout (stderr carries Spark's and pandas' warnings)."""
    res = runner.invoke(app, [str(a) for a in args])
    return res.exit_code, res.stdout if res.exit_code == 0 else res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "ease", "--events", "x"], "does not run on Spark"),
        (["train", "als"], "--events"),
        (["train", "als", "--events", "x", "--refit"], "--refit: give --split too"),
        (["train", "sasrec", "--events", "x", "--ann"], "--ann: model 'sasrec' does not score"),
        (["train", "als", "--events", "x", "--split", "nope:0.8"], "--split 'nope:0.8'"),
        (["train", "als", "--events", "x", "--param", "num_processes=2"], "num_processes"),
        (["recommend", "--model", "m", "--user", "u1"], "only --all-users"),
        (["recommend", "--model", "m", "--all-users", "--out", "o"], "--events"),
    ],
)
def test_unsupported_on_spark_is_one_line(app, tmp_path, args, message):
    # refused before any Spark work: exit 2 and one line naming what to do
    code, out = run(
        app, *args, "--engine", "spark", *(["--out", tmp_path / "m"] if args[0] == "train" else [])
    )
    assert code == 2, out
    assert message in out and "Traceback" not in out


def test_layout_read_on_spark_gives_the_local_interactions(spark, ml100k_layout):
    read_layout(spark, str(ml100k_layout))
    got = collect_interactions(spark)
    with open_store(ml100k_layout) as store:
        want = store.interactions(with_features=False)
    assert got.users == want.users and got.items == want.items
    for name in ("user_idx", "item_idx", "seq", "value", "timestamp"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert [got.event_types[c] for c in got.event_type] == [
        want.event_types[c] for c in want.event_type
    ]


def test_train_als_on_spark_then_all_users_on_both_engines(app, spark, ml100k_layout, tmp_path):
    model_dir = tmp_path / "als"
    code, out = run(app, "train", "als", "--engine", "spark", "--events", ml100k_layout,
                    "--out", model_dir, "--param", "factors=8", "--param", "iterations=3",
                    "--json")  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["engine"] == "spark" and report["n_train_events"] == 100_000
    model = load_model(model_dir)
    assert type(model) is ALS and model.seen_.nnz == 100_000
    # the same id space and matrix as the local engine reads from the folder
    with open_store(ml100k_layout) as store:
        local = store.interactions(with_features=False)
    assert model.users_ == local.users and (model.seen_ != local.to_csr()).nnz == 0
    # the saved folder serves like any trained model
    code, out = run(app, "recommend", "--model", model_dir, "--user", "196", "--json")
    assert code == 0 and len(json.loads(out)["recommendations"]) == 10

    code, out = run(app, "recommend", "--all-users", "--engine", "spark", "--model", model_dir,
                    "--events", ml100k_layout, "--out", tmp_path / "spark", "--json")  # fmt: skip
    assert code == 0, out
    code, out2 = run(app, "recommend", "--all-users", "--model", model_dir,
                     "--events", ml100k_layout, "--out", tmp_path / "local", "--json")  # fmt: skip
    assert code == 0, out2
    on_spark = pd.read_parquet(tmp_path / "spark")
    on_local = pd.read_parquet(tmp_path / "local")
    assert on_spark.user_id.nunique() == 943 and len(on_spark) == 9430
    pd.testing.assert_frame_equal(on_spark, on_local)


def test_split_on_spark_holds_out_the_local_test_events(app, spark, ml100k_layout, tmp_path):
    # ML-100K users rate several movies in the same second: leave_last breaks those ties by
    # ingest order, on Spark as on the local engine
    args = ["--events", ml100k_layout, "--split", "leave_last:1", "--seed", "3",
            "--param", "factors=8", "--param", "iterations=3", "--json"]  # fmt: skip
    code, out = run(app, "train", "als", "--engine", "spark", "--out", tmp_path / "s", *args)
    assert code == 0, out
    on_spark = json.loads(out)
    code, out = run(app, "train", "als", "--out", tmp_path / "l", *args)
    assert code == 0, out
    local = json.loads(out)
    # the same fit part, row for row (content hash), so the same test events
    assert on_spark["training"] == local["training"]
    assert on_spark["training"]["n_rows"] == on_spark["n_train_events"] == 100_000 - 943
    assert on_spark["metrics"]["fitted_on"] == local["metrics"]["fitted_on"]
    assert on_spark["metrics"]["n_users"] == local["metrics"]["n_users"] == 943
    # a real model: far above chance (~0.006 for 1 test item among ~1,600 unseen)
    assert on_spark["metrics"]["metrics"]["ndcg@10"] > 0.02
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["metrics"] == on_spark["metrics"]["metrics"]
    model = load_model(tmp_path / "s")
    assert model.seen_.sum() == pytest.approx(load_model(tmp_path / "l").seen_.sum())


def test_refit_on_spark_fits_every_event_after_the_test_metrics(app, spark, shop_layout,
                                                                tmp_path):  # fmt: skip
    # --refit: the test metrics come from the fit part, then the saved model is MLlib's ALS
    # fitted on every event, recorded as on the local engine; --ann builds its index
    args = ["--events", shop_layout, "--split", "leave_last:1", "--refit", "--param",
            "factors=4", "--param", "iterations=2", "--json"]  # fmt: skip
    code, out = run(app, "train", "als", "--engine", "spark", "--out", tmp_path / "s",
                    "--ann", *args)  # fmt: skip
    assert code == 0, out
    on_spark = json.loads(out)
    code, out = run(app, "train", "als", "--out", tmp_path / "l", *args)
    assert code == 0, out
    local = json.loads(out)
    with open_store(shop_layout) as store:
        data = store.interactions(with_features=False)
    fitted_on = on_spark["metrics"]["fitted_on"]
    assert fitted_on == local["metrics"]["fitted_on"]
    assert fitted_on["part"] == "train+valid" and fitted_on["n_rows"] < len(data)
    assert on_spark["n_train_events"] == len(data)
    assert on_spark["training"] == local["training"]
    config = json.loads((tmp_path / "s" / "manifest.json").read_text())["config"]
    assert config["refit"] is True and config["training"] == local["training"]
    assert config["training"]["part"] == "all" and config["training"]["n_rows"] == len(data)
    assert config["training"]["content_sha256"] == data.content_hash()
    model = load_model(tmp_path / "s")
    assert (model.seen_ != data.to_csr(model.weights)).nnz == 0  # the test events too
    assert (tmp_path / "s" / "metrics.json").is_file()
    assert Pipeline.load(tmp_path / "s").ann is not None


@pytest.mark.slow
def test_train_sasrec_on_spark_with_two_processes_then_recommend(app, spark, shop_layout,
                                                                 tmp_path):  # fmt: skip
    # DDP over 2 processes launched by TorchDistributor; rank 0 writes the model
    model_dir = tmp_path / "sasrec"
    code, out = run(app, "train", "sasrec", "--engine", "spark", "--events", shop_layout,
                    "--out", model_dir, "--param", "num_processes=2", "--param", "epochs=2",
                    "--param", "dim=16", "--param", "layers=1", "--param", "heads=1",
                    "--param", "max_len=10", "--param", "batch_size=32", "--json")  # fmt: skip
    assert code == 0, out
    report = json.loads(out)
    assert report["engine"] == "spark" and report["num_processes"] == 2
    assert len(report["history"]["epochs"]) == 2
    model = load_model(model_dir)
    assert type(model) is model_class("sasrec") and model.get_params()["dim"] == 16
    # trained in the id space the local engine reads from the same folder
    with open_store(shop_layout) as store:
        local = store.interactions(with_features=False)
    assert model.users_ == local.users and model.items_ == local.items
    # the saved folder serves: a known user's top-10, unseen items of the catalog
    user = str(local.users.ids[0])
    code, out = run(app, "recommend", "--model", model_dir, "--user", user, "--json")
    assert code == 0, out
    recs = [r["item_id"] for r in json.loads(out)["recommendations"]]
    seen = set(local.items.ids_of(local.to_csr()[0].indices))
    assert len(recs) == 10 and len(set(recs)) == 10
    assert set(recs) <= set(local.items.ids) - seen


def test_train_on_spark_from_a_pseudonymized_layout_serves_plain_ids(app, spark, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    # a pseudonymized store's export holds pseudonyms; a model trained on it on Spark must
    # hash the ids people give, as one trained on the local engine does
    key = "k" * 32
    monkeypatch.setenv(PSEUDONYM_KEY_ENV, key)
    generate_shop(tmp_path / "gen", n_users=30, n_items=20, n_days=3, seed=4)
    with Store(tmp_path / "s.duckdb") as store:
        ingest(store, tmp_path / "gen", pseudonym_key=key.encode())
        export_store(store, tmp_path / "layout")
    code, out = run(app, "train", "als", "--engine", "spark", "--events", tmp_path / "layout",
                    "--out", tmp_path / "als", "--param", "factors=4", "--param",
                    "iterations=2", "--json")  # fmt: skip
    assert code == 0, out
    model = load_model(tmp_path / "als")
    raw = str(pd.read_parquet(tmp_path / "gen" / "events.parquet", columns=["user_id"]).user_id[0])
    stored = pseudonym(raw, key.encode())
    assert stored in set(model.users_.ids) and raw not in set(model.users_.ids)
    want, _ = model.recommend([stored], k=10)
    code, out = run(app, "recommend", "--model", tmp_path / "als", "--user", raw, "--json")
    assert code == 0, out
    got = json.loads(out)["recommendations"]
    assert [r["item_id"] for r in got] == list(want[0])
