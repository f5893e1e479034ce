import json

import typer
import yaml
from typer.testing import CliRunner

from recsight.cli.evaluate import register
from recsight.evaluation import experiment

from .fakes import fake_factory, write_ratings_csv


def _app():
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command keeps `evaluate` a named subcommand
        pass

    return app


def test_evaluate_prints_leaderboard_and_json(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "_default_factory", fake_factory)
    write_ratings_csv(tmp_path / "ratings.csv")
    cfg = {
        "name": "cli-toy",
        "dataset": {"path": "ratings.csv"},
        "split": "user_random:0.8",
        "models": [
            {"name": "noisy_popular", "label": "popular"},
            {"name": "noisy_popular", "label": "random", "params": {"noise": 100.0}},
        ],
        "ks": [5],
        "bootstrap": 100,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(_app(), ["evaluate", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "popular" in res.output and "ndcg@5" in res.output and "full ranking" in res.output
    assert (tmp_path / "o" / "leaderboard.html").exists()
    res = runner.invoke(_app(), ["evaluate", str(path), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [m["model"] for m in out["models"]] == ["popular", "random"]
    assert out["models"][1]["metrics"]["ndcg@5"]["significantly_worse"] is True


def test_evaluate_bad_file_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: []\n")
    res = CliRunner().invoke(_app(), ["evaluate", str(path)])
    assert res.exit_code == 2
    assert "models" in res.output
