import json

import numpy as np
import pytest
import yaml

from recsight.errors import InputError
from recsight.evaluation.experiment import ExperimentRunner, parse_experiment, run_experiment

from .fakes import fake_factory, write_ratings_csv

BASE = {
    "name": "toy",
    "dataset": {"path": "ratings.csv"},
    "split": "user_random:0.8",
    "models": [{"name": "noisy_popular"}],
}


def _cfg(**over):
    return {**BASE, **over}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"models": []}, "models"),
        ({"split": "shuffle:0.8"}, "split"),
        ({"dataset": {"path": "a", "db": "b"}}, "dataset"),
        ({"models": [{"name": "x", "grid": {"f": []}}]}, "models.0.grid"),
        ({"models": [{"name": "x", "colour": 1}]}, "models.0.colour"),
        ({"metrics": ["ndcg", "rmse"]}, "metrics: rmse"),
        ({"tuning": {"metric": "ndcg"}}, "tuning.metric"),
        ({"significance": {"test": "anova"}}, "significance.test"),
        ({"models": [{"name": "a"}, {"name": "a"}]}, "duplicate label"),
        ({"ks": [0]}, "ks"),
    ],
)
def test_config_errors_name_the_field(change, field):
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        parse_experiment(_cfg(**change), source="exp.yaml")


@pytest.fixture
def toy_dir(tmp_path):
    write_ratings_csv(tmp_path / "ratings.csv")
    return tmp_path


def _write(dir_, cfg):
    path = dir_ / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_ranking_experiment_tunes_ranks_and_writes(toy_dir):
    cfg = _cfg(
        models=[
            {"name": "noisy_popular", "label": "popular", "grid": {"noise": [5.0, 0.0]}},
            {"name": "noisy_popular", "label": "random", "params": {"noise": 100.0}},
        ],
        ks=[5, 10],
        bootstrap=200,
        output=str(toy_dir / "out"),
    )
    board, files = run_experiment(_write(toy_dir, cfg), factory=fake_factory)
    popular, random = board.runs
    assert popular.params == {"noise": 0.0}  # the grid found the noiseless setting
    assert [t["params"]["noise"] for t in popular.trials] == [5.0, 0.0]
    assert board.best["ndcg@5"] == "popular"
    assert board.cells["random"]["ndcg@5"].worse
    assert not board.cells["popular"]["ndcg@5"].worse
    lo, hi = board.cells["popular"]["ndcg@5"].ci
    assert lo <= board.cells["popular"]["ndcg@5"].mean <= hi
    assert board.protocol == "full ranking"
    assert "coverage@10" in board.columns and "novelty@5" in board.columns

    saved = json.loads(files["json"].read_text())
    assert saved["protocol"] == "full ranking"
    assert saved["models"][0]["metrics"]["ndcg@5"]["mean"] == pytest.approx(
        popular.result.summary["ndcg@5"]
    )
    assert saved["tuning"]["metric"] == "ndcg@5"
    page = files["html"].read_text()
    assert page.count("Plotly.newPlot") >= 2
    # plotly.js is inlined exactly once, so the page opens offline
    assert page.count("window.PlotlyConfig") == 1
    assert "<script src=" not in page
    assert "full ranking" in page


def test_validation_split_is_carved_from_train(toy_dir):
    cfg = parse_experiment(_cfg(models=[{"name": "noisy_popular", "grid": {"noise": [0, 1]}}]))
    runner = ExperimentRunner(cfg, toy_dir, fake_factory)
    from recsight.evaluation.experiment import load_data

    data = load_data(cfg, toy_dir)
    train, test, (inner, valid) = runner.splits(data)
    assert len(train) + len(test) == len(data)
    assert len(inner) + len(valid) == len(train)
    assert not set(valid.seq) & set(test.seq)
    assert set(inner.seq) | set(valid.seq) == set(train.seq)


def test_leave_last_uses_its_validation_part_and_refits_on_it(toy_dir):
    cfg = parse_experiment(
        _cfg(split="leave_last:1", models=[{"name": "noisy_popular", "grid": {"noise": [0, 1]}}])
    )
    data = __import__("recsight.evaluation.experiment", fromlist=["load_data"]).load_data(
        cfg, toy_dir
    )
    train, test, (inner, valid) = ExperimentRunner(cfg, toy_dir, fake_factory).splits(data)
    n_users = len(np.unique(data.user_idx))
    assert len(test) == n_users and len(valid) == n_users
    assert len(train) == len(inner) + len(valid)


def test_sampled_negatives_are_labelled(toy_dir):
    cfg = _cfg(sampled_negatives=20, bootstrap=0, ks=[5], output=str(toy_dir / "o"))
    board, files = run_experiment(_write(toy_dir, cfg), factory=fake_factory)
    assert board.protocol == "sampled (20 negatives)"
    assert "sampled (20 negatives)" in files["html"].read_text()
    assert json.loads(files["json"].read_text())["protocol"] == "sampled (20 negatives)"


def test_rating_experiment(toy_dir):
    cfg = _cfg(
        task="rating",
        split="random:0.8",
        models=[
            {"name": "shrunk_item_mean", "label": "tuned", "grid": {"shrink": [1e6, 5.0]}},
            {"name": "shrunk_item_mean", "label": "global_mean", "params": {"shrink": 1e9}},
        ],
        bootstrap=200,
        output=str(toy_dir / "r"),
    )
    board, _ = run_experiment(_write(toy_dir, cfg), factory=fake_factory)
    assert board.runs[0].params == {"shrink": 5.0}
    assert board.best["rmse"] == "tuned"
    assert board.cells["global_mean"]["rmse"].worse
    cell = board.cells["tuned"]["rmse"]
    assert cell.ci[0] <= cell.mean <= cell.ci[1]
    assert board.runs[0].trials[0]["rmse"] > board.runs[0].trials[1]["rmse"]


def test_rating_task_rejects_implicit_model(toy_dir):
    cfg = _cfg(task="rating", output=str(toy_dir / "x"))
    with pytest.raises(InputError, match="does not predict ratings"):
        run_experiment(_write(toy_dir, cfg), factory=fake_factory)


def test_optuna_search(toy_dir):
    pytest.importorskip("optuna")
    cfg = _cfg(
        task="rating",
        split="random:0.8",
        tuning={"method": "optuna", "n_trials": 6},
        models=[
            {
                "name": "shrunk_item_mean",
                "search": {"shrink": {"low": 0.1, "high": 1e5, "log": True}},
            }
        ],
        bootstrap=0,
        output=str(toy_dir / "opt"),
    )
    board, _ = run_experiment(_write(toy_dir, cfg), factory=fake_factory)
    run = board.runs[0]
    assert len(run.trials) == 6
    assert run.params["shrink"] == min(run.trials, key=lambda t: t["rmse"])["params"]["shrink"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"name": "eas"}, r"models\[1\] \(eas\): unknown model 'eas'"),
        ({"name": "ease", "grid": {"reg": [100, "lots"]}}, r"models\[1\] \(ease\): .*reg='lots'"),
        ({"name": "ease", "params": {"binary": "maybe"}}, r"models\[1\] \(ease\): .*binary"),
        ({"name": "sasrec", "search": {"dim": {"choices": [16, "big"]}}}, r"dim='big'"),
    ],
)
def test_experiment_checks_every_model_before_training_any(toy_dir, bad, message):
    """A misspelt name or a bad value late in the file fails before the first model trains
    (it used to surface only when its turn came, after the earlier models had trained)."""
    steps: list[str] = []
    path = _write(toy_dir, _cfg(models=[{"name": "popular"}, bad]))
    with pytest.raises(InputError, match=message):
        run_experiment(path, out=toy_dir / "out", progress=steps.append)
    assert steps == []  # not even the data was loaded


def test_quiet_experiment_turns_model_logs_off(toy_dir):
    seen: list[bool] = []

    class Loud:
        name, explicit = "loud", False

        def __init__(self, verbose: bool = True):
            self.verbose = verbose

        def fit(self, train):  # noqa: ANN001, ANN202
            seen.append(self.verbose)
            self.counts_ = np.bincount(train.item_idx, minlength=train.n_items)
            return self

        def score_all(self, users):  # noqa: ANN001, ANN202
            return np.tile(self.counts_.astype(np.float32), (len(users), 1))

    path = _write(toy_dir, _cfg(models=[{"name": "loud"}]))
    run_experiment(path, out=toy_dir / "o1", factory=lambda n, **p: Loud(**p), quiet=True)
    run_experiment(path, out=toy_dir / "o2", factory=lambda n, **p: Loud(**p))
    assert seen == [False, True]
