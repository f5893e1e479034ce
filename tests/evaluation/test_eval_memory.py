"""What the experiment runner holds at scale: the log released while it is split, the pair
matrices derived once for every model, feature tables only for models that read them."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from recsight.data.dataset import EVENT_COLUMNS
from recsight.data.splits import split
from recsight.evaluation import experiment
from recsight.evaluation.experiment import ExperimentRunner, parse_experiment, run_experiment
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.knn import ItemKNN
from recsight.models.popular import MostPopular
from tests.models.conftest import make_interactions

from .fakes import write_ratings_csv


def _log(n_users=60, n_items=40, n=900, seed=0):
    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    data = make_interactions(
        users, items, rng.integers(1, 6, n).astype(np.float32), n_users, n_items
    )
    data.timestamp = rng.integers(0, 50, n).astype(np.float64)  # ties broken by seq
    return data


@pytest.mark.parametrize(
    "spec", ["random:0.8", "random:0.7:0.1", "user_random:0.8", "temporal:0.8", "leave_last:1"]
)
def test_consuming_split_gives_the_same_parts_and_releases_the_log(spec):
    want = split(_log(), spec, seed=5)
    data = _log()
    got = split(data, spec, seed=5, consume=True)
    for name in EVENT_COLUMNS:
        assert getattr(data, name) is None  # nothing of the log is left to hold
        for part in ("train", "valid", "test"):
            a, b = getattr(got, part), getattr(want, part)
            if b is None:
                assert a is None
                continue
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert got.report == want.report
    assert len(got.train) + len(got.test) + (len(got.valid) if got.valid else 0) == 900


def _cfg(tmp_path, models):
    write_ratings_csv(tmp_path / "ratings.csv")
    (tmp_path / "items.csv").write_text(
        "item_id,title,category\n" + "".join(f"I{i},Item {i},c{i % 3}\n" for i in range(50))
    )
    return {
        "name": "mem",
        "dataset": {"path": str(tmp_path / "ratings.csv"), "items": str(tmp_path / "items.csv")},
        "split": "user_random:0.8",
        "models": models,
        "ks": [5],
        "metrics": ["ndcg", "hr"],
        "bootstrap": 0,
        "output": str(tmp_path / "out"),
    }


def test_featureless_models_load_no_feature_tables_and_share_one_pair_derivation(
    tmp_path, monkeypatch
):
    cfg = _cfg(tmp_path, [{"name": "popular"}, {"name": "itemknn"}])
    loads, derived = [], []
    real_load, real_pairs = experiment.load_data, experiment.ranking_pairs

    def load(*args, **kwargs):
        data = real_load(*args, **kwargs)
        loads.append(data.item_features)
        return data

    def pairs(*args, **kwargs):
        derived.append(args[:2])
        return real_pairs(*args, **kwargs)

    monkeypatch.setattr(experiment, "load_data", load)
    monkeypatch.setattr(experiment, "ranking_pairs", pairs)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    board, _ = run_experiment(path)
    assert loads == [None]  # popularity and item-kNN read no features
    assert len(derived) == 1  # one derivation for both models
    rows = {m["model"]: m for m in board.to_dict()["models"]}
    assert set(rows) == {"popular", "itemknn"}
    # the shared derivation gives what each evaluation derived on its own before
    runner = ExperimentRunner(parse_experiment(cfg), tmp_path)
    train, test, _ = runner.splits(real_load(runner.cfg, tmp_path, with_features=False))
    alone = evaluate_ranking(MostPopular().fit(train), train, test, ks=(5,),
                             metrics=("ndcg", "hr"), seed=runner.cfg.seed)  # fmt: skip
    assert rows["popular"]["metrics"]["ndcg@5"]["mean"] == pytest.approx(
        alone.summary["ndcg@5"], abs=0
    )


def test_final_evaluations_read_no_events_and_give_the_same_metrics(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, [{"name": "popular"}, {"name": "itemknn"}])
    given = []
    real_eval = experiment.evaluate_ranking

    def evaluate(model, train, test, **kwargs):
        given.append((type(model).__name__, len(train), len(test)))
        return real_eval(model, train, test, **kwargs)

    monkeypatch.setattr(experiment, "evaluate_ranking", evaluate)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    board, _ = run_experiment(path)
    runner = ExperimentRunner(parse_experiment(cfg), tmp_path)
    train, test, _ = runner.splits(experiment.load_data(runner.cfg, tmp_path, False))
    # the test events go before any fit, the train events after the last one
    assert given == [("MostPopular", len(train), 0), ("ItemKNN", 0, 0)]
    out = board.to_dict()
    assert (out["n_train"], out["n_test"]) == (len(train), len(test))
    rows = {m["model"]: m["metrics"] for m in out["models"]}
    for name, model in (("popular", MostPopular()), ("itemknn", ItemKNN())):
        alone = real_eval(model.fit(train), train, test, ks=(5,), metrics=("ndcg", "hr"),
                          seed=runner.cfg.seed)  # fmt: skip
        for key in ("ndcg@5", "hr@5"):
            assert rows[name][key]["mean"] == pytest.approx(alone.summary[key], abs=0)


@pytest.mark.parametrize(
    ("models", "needs"),
    [([{"name": "popular"}, {"name": "als"}], False), ([{"name": "deepfm"}], True),
     ([{"name": "popular"}, {"name": "content"}], True)],
)  # fmt: skip
def test_feature_tables_are_loaded_when_a_model_may_read_them(tmp_path, models, needs):
    runner = ExperimentRunner(parse_experiment(_cfg(tmp_path, models)), tmp_path)
    assert runner.needs_features is needs
    data = experiment.load_data(runner.cfg, tmp_path, with_features=runner.needs_features)
    assert (data.item_features is not None) is needs
    if needs:
        i = int(data.items.index_of(["I7"])[0])
        assert data.item_features.loc[i, "title"] == "Item 7"
