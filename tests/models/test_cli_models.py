"""`recsight train` + `recsight recommend` round trip on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from recsight.cli.models import register
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.models import load_model


@pytest.fixture()
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture()
def db(tmp_path, blocks):
    rows = ["user_id,item_id,rating,timestamp"]
    rng = np.random.default_rng(5)
    for n, (u, i) in enumerate(zip(blocks.user_idx, blocks.item_idx, strict=True)):
        rows.append(f"u{u},i{i},{rng.integers(3, 6)},{1_600_000_000 + n * 60}")
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    titles = ["item_id,title"] + [f"i{i},Title {i}" for i in range(30)]
    (tmp_path / "items.csv").write_text("\n".join(titles) + "\n")
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        ingest(store, tmp_path / "events.csv", items=tmp_path / "items.csv")
    return path


def test_train_then_recommend(app, db, tmp_path):
    runner = CliRunner()
    out = tmp_path / "model"
    args = ["train", "ease", "--db", str(db), "--out", str(out), "--param", "reg=5"]
    res = runner.invoke(app, [*args, "--split", "user_random:0.8", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["params"]["reg"] == 5 and (out / "arrays.npz").exists()
    if "metrics" in report:
        saved = json.loads((out / "metrics.json").read_text())
        assert 0 <= saved["metrics"]["ndcg@10"] <= 1
    model = load_model(out)

    res = runner.invoke(app, ["recommend", "--model", str(out), "--history", "i0,i1,i2,unknown",
                              "--k", "3", "--explain", "--db", str(db), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output)["recommendations"]
    expected, _ = model.recommend_for_history(["i0", "i1", "i2"], k=3)
    assert [r["item_id"] for r in recs] == list(expected)
    assert recs[0]["title"].startswith("Title ")
    assert 'is recommended because you liked "Title ' in recs[0]["explanation"]
    assert set(recs[0]["evidence"]) <= {"i0", "i1", "i2"}  # grounded in the given history

    # the store holds the user's test events too: the model folds in the newer history
    res = runner.invoke(app, ["recommend", "--model", str(out), "--user", "u3", "--db", str(db),
                              "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with Store(db, read_only=True) as store:
        full = store.interactions()
    row = full.to_csr()[int(full.users.index_of(["u3"])[0])]
    folded, _ = model.recommend_for_history(list(full.items.ids_of(row.indices)),
                                            weights=row.data)  # fmt: skip
    got = [r["item_id"] for r in json.loads(res.output)["recommendations"]]
    assert got == [i for i in folded if i is not None]

    res = runner.invoke(app, ["recommend", "--model", str(out), "--user", "u3"])
    assert res.exit_code == 0 and "ease: top 10" in res.output


def test_cli_errors(app, db, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train", "nope", "--db", str(db), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "valid: popular" in res.output
    res = runner.invoke(app, ["train", "popular", "--db", str(db), "--out", str(tmp_path / "m")])
    assert res.exit_code == 0
    res = runner.invoke(app, ["recommend", "--model", str(tmp_path / "m"), "--text", "hi"])
    assert res.exit_code == 2 and "cannot read free text" in res.output
    res = runner.invoke(app, ["recommend", "--model", str(tmp_path / "m"), "--user", "ghost"])
    assert res.exit_code == 2 and "ghost" in res.output
