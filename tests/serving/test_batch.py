"""`recommend --all-users`: the same lists as per-user `recommend`, for every ML-100K user."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from recsight.cli.models import register
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.models import create_model, load_model
from recsight.serving.batch import recommend_chunk
from recsight.serving.pipeline import Pipeline
from tests.conftest import need


@pytest.fixture(scope="module")
def ml100k_store(data_dir, tmp_path_factory):
    """ML-100K in a store, item-kNN trained on it, then new events: a trained user with one
    more rating (history fold-in), a new user rating known movies (fold-in) and a new user
    with only an unknown item (cold: popularity)."""
    root = tmp_path_factory.mktemp("batch")
    db = root / "ml.duckdb"
    with Store(db) as store:
        ingest(store, need(data_dir / "ml-100k"))
        create_model("itemknn", neighbors=40).fit(store.interactions()).save(root / "model")
        store.append_events(
            [
                {"user_id": "1", "item_id": "1500", "event_type": "rating", "value": 4.0},
                {"user_id": "newbie", "item_id": "50", "event_type": "rating", "value": 5.0},
                {"user_id": "newbie", "item_id": "181", "event_type": "rating", "value": 3.0},
                {"user_id": "stranger", "item_id": "no-such-movie", "event_type": "view"},
            ]
        )
    return db, root / "model"


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)

    @a.command("noop")
    def _noop() -> None:  # a second command keeps `recommend` a named subcommand
        pass

    return a


def cli_recommend(db, model, user: str, k: int = 10) -> list[tuple[str, float]]:
    res = CliRunner().invoke(
        app(),
        ["recommend", "--model", str(model), "--user", user, "--db", str(db), "--k", str(k)]
        + ["--json"],
    )
    assert res.exit_code == 0, res.output
    return [(r["item_id"], round(r["score"], 4)) for r in json.loads(res.output)["recommendations"]]


def test_all_users_equals_per_user_recommend_on_ml100k(ml100k_store, tmp_path):
    db, model_dir = ml100k_store
    out = tmp_path / "recs"
    res = CliRunner().invoke(
        app(),
        ["recommend", "--all-users", "--model", str(model_dir), "--db", str(db)]
        + ["--out", str(out), "--k", "10", "--json"],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["users"] == 945
    assert summary["sources"] == {"model": 942, "history": 2, "popular": 1}
    got = pd.read_parquet(out)
    assert list(got.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(got) == 945 * 10
    # sorted by user id, then rank 1..k
    assert got["user_id"].is_monotonic_increasing
    assert (got.groupby("user_id")["rank"].apply(list) == [list(range(1, 11))] * 945).all()
    lists = {
        u: [(i, round(float(s), 4)) for i, s in zip(g["item_id"], g["score"], strict=True)]
        for u, g in got.groupby("user_id")
    }
    # the CLI itself, for the users of each path and a sample of the others
    for user in ["1", "newbie", "stranger", "2", "100", "943", "457"]:
        assert lists[user] == cli_recommend(db, model_dir, user), user
    # and for every user, the same lists the CLI computes one user at a time
    model = load_model(model_dir)
    for user in map(str, range(2, 944)):
        ids, scores = (a[0] for a in model.recommend([user], k=10))
        assert lists[user] == [(i, round(float(s), 4)) for i, s in zip(ids, scores, strict=True)]


def test_explanations_and_a_bad_out(ml100k_store, tmp_path):
    db, model_dir = ml100k_store
    with Store(db, read_only=True) as store:
        pipe = Pipeline.load(model_dir, store.items_frame())
        events = store.con.execute(
            "SELECT user_id, item_id, event_type, value FROM events "
            "WHERE user_id IN ('5', 'newbie', 'stranger')"
        ).df()
    frame = recommend_chunk(pipe, events, k=3, explain=True, users=["5", "ghost"])
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score", "explanation"]
    assert frame["user_id"].drop_duplicates().tolist() == ["5", "ghost", "newbie", "stranger"]
    assert frame["explanation"].str.len().gt(0).all()
    assert (frame[frame.user_id == "ghost"]["explanation"] == "popular with other users").all()
    # deep in popularity order many items tie: broken by the user's id on both paths
    deep = recommend_chunk(pipe, events[events.user_id == "stranger"], k=300)
    assert deep["score"].duplicated().sum() > 100
    expect = cli_recommend(db, model_dir, "stranger", k=300)
    got = [(i, round(float(s), 4)) for i, s in zip(deep.item_id, deep.score, strict=True)]
    assert got == expect
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    res = CliRunner().invoke(
        app(),
        ["recommend", "--all-users", "--model", str(model_dir), "--db", str(db)]
        + ["--out", str(tmp_path / "taken")],
    )
    assert res.exit_code == 2 and "not empty" in res.output
    res = CliRunner().invoke(app(), ["recommend", "--all-users", "--model", str(model_dir)])
    assert res.exit_code == 2 and "--out" in res.output


def test_train_ann_then_batch_and_serve_through_it(ml100k_store, tmp_path):
    db, _ = ml100k_store
    model_dir = tmp_path / "als"
    res = CliRunner().invoke(
        app(),
        ["train", "als", "--db", str(db), "--out", str(model_dir), "--ann", "--quiet"]
        + ["--param", "factors=16", "--param", "iterations=5"],
    )
    assert res.exit_code == 0, res.output
    assert (model_dir / "ann.faiss").is_file()
    with Store(db, read_only=True) as store:
        pipe = Pipeline.load(model_dir, store.items_frame())
        assert pipe.ann is not None
        events = store.con.execute(
            "SELECT user_id, item_id, event_type, value FROM events WHERE user_id < '2'"
        ).df()
    exact = recommend_chunk(pipe, events, k=10)
    approx = recommend_chunk(pipe, events, k=10, ann=True)
    assert exact["user_id"].tolist() == approx["user_id"].tolist()
    overlap = (exact["item_id"] == approx["item_id"]).mean()
    assert overlap >= 0.95
    # the service path: a history through the index, filters applied
    h = events[events.user_id == "1"]["item_id"].tolist()
    from recsight.serving.pipeline import History

    recs = pipe.recommend(
        History(user_id="1", items=h, types=["view"] * len(h), values=[None] * len(h))
    )
    assert recs.source == "main" and len(recs.items) == 10
    assert not set(r.item_id for r in recs.items) & set(h)
    res = CliRunner().invoke(
        app(), ["train", "itemknn", "--db", str(db), "--out", str(tmp_path / "k"), "--ann"]
    )
    assert res.exit_code == 2 and "als and bpr" in res.output
