"""`recsight train` + `recsight recommend` round trip on a tiny store."""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
    # ties keyed by the user, as for a trained user's own row
    folded, _ = model.recommend_for_history(list(full.items.ids_of(row.indices)),
                                            weights=row.data, user="u3")  # fmt: skip
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


def _last_two(data, user):
    """A user's last and second-to-last items by time."""
    u = int(data.users.index_of([user])[0])
    sel = np.flatnonzero(data.user_idx == u)
    order = sel[np.lexsort((data.seq[sel], data.timestamp[sel]))]
    return data.items.ids[data.item_idx[order[-1]]], data.items.ids[data.item_idx[order[-2]]]


def test_train_split_fits_on_train_and_valid(app, db, tmp_path):
    """With --split, the model sees everything but the test part: under leave_last the
    second-to-last event (the validation part) is in the training data, the last is not; the
    manifest says what was used, down to a hash of the rows."""
    from recsight.data.splits import split

    out = tmp_path / "m"
    res = CliRunner().invoke(app, ["train", "ease", "--db", str(db), "--out", str(out),
                                   "--split", "leave_last:1", "--seed", "7"])  # fmt: skip
    assert res.exit_code == 0, res.output
    with Store(db, read_only=True) as store:
        data = store.interactions()
    parts = split(data, "leave_last:1", seed=7)
    model = load_model(out)
    for user in ("u0", "u21"):
        last, before = _last_two(data, user)
        seen = set(model.items_.ids[model.seen_[int(model.users_.index_of([user])[0])].indices])
        assert before in seen and last not in seen
    assert "split leave_last:1, seed 7" in res.output
    training = json.loads((out / "manifest.json").read_text())["config"]["training"]
    n_fit = len(data) - len(parts.test)
    assert training["n_rows"] == n_fit == parts.report.n_train + parts.report.n_valid
    assert training["n_users"] == 40 and training["part"] == "train+valid"
    assert training["split"] == "leave_last:1" and training["seed"] == 7
    assert training["content_sha256"] == parts.fit_part.content_hash()
    assert f"{n_fit:,} events of 40 users" in res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fitted_on"]["n_rows"] == n_fit


def test_train_refit_on_all_events_with_best_epoch(app, db, tmp_path):
    """--refit: test metrics come from the split fit, then the saved model is fitted on every
    event for the best validation epoch count, without early stopping, and says so."""
    out = tmp_path / "m"
    small = ["epochs=4", "dim=8", "heads=1", "layers=1", "max_len=5", "patience=1",
             "verbose=false"]  # fmt: skip
    args = ["train", "sasrec", "--db", str(db), "--out", str(out), "--split", "leave_last:1",
            "--refit", "--json"] + [a for p in small for a in ("--param", p)]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert "ndcg@10" in report["metrics"]["metrics"]
    assert report["metrics"]["fitted_on"]["part"] == "train+valid"
    with Store(db, read_only=True) as store:
        data = store.interactions()
    training = json.loads((out / "manifest.json").read_text())["config"]["training"]
    assert training["part"] == "all" and training["n_rows"] == len(data)
    assert training["content_sha256"] == data.content_hash()
    model = load_model(out)
    assert model.early_stopping is False and 1 <= model.epochs <= 4
    assert model.epochs == report["params"]["epochs"]
    assert report["refit"]["early_stopping"] is False
    last, _ = _last_two(data, "u0")
    assert last in set(model.items_.ids[model.seq_items_])  # the test events are learned from
    u = int(model.users_.index_of(["u0"])[0])
    assert model.items_.ids[model.seq_items_[model.seq_indptr_[u + 1] - 1]] == last
    res = CliRunner().invoke(app, ["train", "ease", "--db", str(db), "--out", str(out),
                                   "--refit"])  # fmt: skip
    assert res.exit_code == 2 and "--refit" in res.output


def test_content_hash_ignores_order_and_ids(blocks):
    """The same events hash the same in any order; one changed value changes the hash."""
    perm = np.random.default_rng(0).permutation(len(blocks))
    assert blocks.subset(perm).content_hash() == blocks.content_hash()
    changed = blocks.subset(np.arange(len(blocks)))
    changed.value = changed.value.copy()
    changed.value[3] = 4.0
    assert changed.content_hash() != blocks.content_hash()


SMALL_SASREC = [a for p in ("epochs=2", "dim=8", "heads=1", "layers=1", "max_len=5")
                for a in ("--param", p)]  # fmt: skip


def test_quiet_and_json_silence_the_training_log(app, db, tmp_path):
    """SASRec logs every epoch by default; --json prints JSON only, --quiet nothing."""
    base = ["train", "sasrec", "--db", str(db), "--out", str(tmp_path / "m"), *SMALL_SASREC]
    loud = CliRunner().invoke(app, base)
    assert loud.exit_code == 0 and "epoch 1" in loud.output
    res = CliRunner().invoke(app, [*base, "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["model"] == "sasrec" and "epoch" not in res.stderr
    res = CliRunner().invoke(app, [*base, "--quiet"])
    assert res.exit_code == 0 and res.output == ""


def test_expected_failures_end_in_one_clear_line(app, db, tmp_path, monkeypatch):
    """Bad parameters, diverging training and a catalog too large for EASE: one message,
    the right exit code, no traceback."""
    from recsight.models.neural.sasrec import SASRec

    def run(*args):  # noqa: ANN002, ANN202
        res = CliRunner().invoke(app, ["train", *args, "--db", str(db), "--out",
                                       str(tmp_path / "m")])  # fmt: skip
        assert isinstance(res.exception, SystemExit), res.exception  # not a traceback
        return res

    res = run("ease", "--param", "reg=lots")
    assert res.exit_code == 2 and "reg='lots': expected float" in res.output
    res = run("sasrec", "--param", "dropout=[1]", "--param", "verbose=false")
    assert res.exit_code == 2 and "dropout" in res.output

    monkeypatch.setattr(
        SASRec, "_window_loss", lambda self, net, w: net.pos_emb.weight.sum() * np.nan
    )
    res = run("sasrec", *SMALL_SASREC, "--param", "verbose=false")
    assert res.exit_code == 1 and "loss became nan" in res.output and "lower lr" in res.output
    monkeypatch.undo()

    import recsight.models.ease as ease_module

    class Tiny:
        available = 10_000  # 10 kB free: 30 items need 28 kB
        total = 8 * 2**30  # the store sizes DuckDB's memory limit from it

    monkeypatch.setattr(ease_module.psutil, "virtual_memory", lambda: Tiny())
    res = run("ease")
    assert res.exit_code == 2 and "EASE" in res.output


def test_train_a_blend_quietly_then_recommend(app, db, tmp_path):
    out = tmp_path / "blend"
    members = '[{"name": "ease", "params": {"reg": 5}}, {"name": "multvae", "params": ' \
        '{"hidden": 16, "latent": 4, "epochs": 2}}]'  # fmt: skip
    res = CliRunner().invoke(app, ["train", "blend", "--db", str(db), "--out", str(out),
                                   "--param", f"models={members}", "--param", "grid=2",
                                   "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["params"]["grid"] == 2  # nothing but JSON on stdout
    assert (out / "0-ease" / "arrays.npz").exists() and (out / "1-multvae").is_dir()
    model = load_model(out)
    assert model.models_[1].verbose is False  # the members were silenced with the blend
    res = CliRunner().invoke(app, ["recommend", "--model", str(out), "--history", "i0,i1",
                                   "--k", "3", "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    expected, _ = model.recommend_for_history(["i0", "i1"], k=3)
    assert [r["item_id"] for r in json.loads(res.output)["recommendations"]] == list(expected)


@pytest.mark.parametrize("fill", ["none", "item-mean"])
def test_train_als_fits_what_the_events_give(app, blocks, tmp_path, monkeypatch, fill):
    """Without --split, ALS trains on the (user, item) weights summed inside DuckDB and the
    manifest's counts, cut-off and content hash are computed in SQL: the events are never
    read into arrays. Under a rating fill policy it reads the events as before. Either way
    the saved model and its manifest are the ones the events give."""
    from recsight.models.als import ALS

    rows = ["user_id,item_id,event_type,rating,timestamp"]
    rng = np.random.default_rng(2)
    for n, (u, i) in enumerate(zip(blocks.user_idx, blocks.item_idx, strict=True)):
        kind = rng.choice(["view", "click", "purchase", "rating"])
        rating = rng.choice(["", "4", "2.5"]) if kind == "rating" else ""
        rows += [f"u{u},i{i},{kind},{rating},{1_600_000_000 + n * 60}"] * rng.integers(1, 3)
    (tmp_path / "events.csv").write_text("\n".join(rows) + "\n")
    db = tmp_path / "s.duckdb"
    with Store(db) as store:
        ingest(store, tmp_path / "events.csv", dedupe="none", fill_rating=fill)
    summed, reads = [], []
    original, read = Store.weighted_matrix, Store.interactions
    monkeypatch.setattr(
        Store, "weighted_matrix", lambda self, w=None: summed.append(w) or original(self, w)
    )
    monkeypatch.setattr(
        Store, "interactions", lambda self, *a, **k: reads.append(1) or read(self, *a, **k)
    )
    out = tmp_path / "als"
    params = ["--param", "num_threads=1", "--param", "iterations=3", "--param", "factors=8"]
    res = CliRunner().invoke(app, ["train", "als", "--db", str(db), "--out", str(out), *params])
    assert res.exit_code == 0, res.output
    assert len(summed) == (1 if fill == "none" else 0)
    assert len(reads) == (0 if fill == "none" else 1)
    with Store(db, read_only=True) as store:
        data = store.interactions()
    expected = ALS(num_threads=1, iterations=3, factors=8).fit(data)
    model = load_model(out)
    for key in ("item_factors_", "user_factors_"):
        assert np.array_equal(getattr(model, key), getattr(expected, key)), key
    assert (model.seen_ != expected.seen_).nnz == 0
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["config"]["training"]
    assert training["n_rows"] == len(data) and training["content_sha256"] == data.content_hash()
    assert (training["n_users"], training["n_items"]) == (data.n_users, data.n_items)
    last = datetime.fromtimestamp(1_600_000_000 + (len(blocks) - 1) * 60, UTC)
    assert manifest["training_cutoff"] == last.isoformat().replace("+00:00", "Z")
