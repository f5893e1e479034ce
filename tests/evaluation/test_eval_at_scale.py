"""Evaluation at scale: memory-budgeted chunks, sparse hit lookup, sampled test users."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from typer.testing import CliRunner

from recsight.data.splits import split
from recsight.errors import InputError
from recsight.evaluation import experiment
from recsight.evaluation import metrics as M
from recsight.evaluation.protocol import (
    BYTES_PER_SCORE,
    evaluate_ranking,
    memory_budget_bytes,
    users_per_chunk,
)
from recsight.models.knn import ItemKNN
from tests.conftest import need
from tests.models.conftest import make_interactions

from .fakes import fake_factory, write_ratings_csv
from .test_cli_evaluate import _app


class CoarseKNN:
    """Item-kNN scores rounded to one decimal: many ties, so chunking must not move them."""

    def __init__(self, model: ItemKNN):
        self.model = model

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return np.round(self.model.score_all(user_idx), 1)


@pytest.fixture(scope="module")
def ml100k_split(data_dir):
    raw = np.loadtxt(need(data_dir / "ml-100k" / "u.data"), dtype=np.int64)
    data = make_interactions(raw[:, 0] - 1, raw[:, 1] - 1, raw[:, 2].astype(np.float32))
    data.timestamp = raw[:, 3].astype(np.float64)
    parts = split(data, "user_random:0.8", seed=3)
    train, test = parts.train, parts.test
    return train, test, CoarseKNN(ItemKNN(neighbors=50).fit(train))


def test_memory_budgeted_chunks_give_exactly_the_one_chunk_metrics(ml100k_split):
    train, test, model = ml100k_split
    one = evaluate_ranking(model, train, test, ks=(5, 20), batch_users=10_000)
    assert one.metadata["batch_users"] == 10_000
    # a budget that fits 37 users' scores at a time: 26 chunks over ML-100K's 943 users
    budget = 37 * train.n_items * BYTES_PER_SCORE
    chunked = evaluate_ranking(model, train, test, ks=(5, 20), memory_budget=budget)
    assert chunked.metadata["batch_users"] == 37
    assert np.array_equal(chunked.users, one.users)
    assert chunked.summary == one.summary
    for key, values in one.per_user.items():
        assert np.array_equal(chunked.per_user[key], values), key


def test_sampled_test_users_are_seeded_stated_and_a_subset(ml100k_split):
    train, test, model = ml100k_split
    full = evaluate_ranking(model, train, test, ks=(10,), metrics=("ndcg", "recall"), seed=4)
    a = evaluate_ranking(
        model, train, test, ks=(10,), metrics=("ndcg", "recall"), seed=4, max_test_users=200
    )
    b = evaluate_ranking(
        model, train, test, ks=(10,), metrics=("ndcg", "recall"), seed=4, max_test_users=200
    )
    c = evaluate_ranking(
        model, train, test, ks=(10,), metrics=("ndcg", "recall"), seed=5, max_test_users=200
    )
    assert len(a.users) == 200 and np.array_equal(a.users, b.users)
    assert not np.array_equal(a.users, c.users)
    # each sampled user's metrics are exactly their metrics in the full evaluation
    pos = np.searchsorted(full.users, a.users)
    assert np.array_equal(full.users[pos], a.users)
    assert np.array_equal(a.per_user["ndcg@10"], full.per_user["ndcg@10"][pos])
    n = len(full.users)
    assert a.protocol == f"full ranking; 200 of {n:,} test users sampled (seed 4)"
    assert a.to_dict()["sampled_users"] == {"n": 200, "of": n, "seed": 4}
    assert full.protocol == "full ranking" and "sampled_users" not in full.to_dict()
    with pytest.raises(InputError, match="max_test_users"):
        evaluate_ranking(model, train, test, max_test_users=0)


def test_sparse_hit_lookup_matches_the_dense_one():
    rng = np.random.default_rng(0)
    truth = sp.random(50, 400, density=0.05, format="csr", random_state=1)
    truth.data[::7] = 0.0  # stored zeros are not relevant
    topk = rng.integers(-1, 400, size=(50, 30))
    dense = truth.toarray() != 0
    expected = np.take_along_axis(dense, np.maximum(topk, 0), axis=1) & (topk >= 0)
    assert np.array_equal(M.hits_matrix(topk, truth), expected)
    assert expected.any() and not M.hits_matrix(topk, sp.csr_matrix((50, 400))).any()


def _fake_memory(monkeypatch, total, available):
    import psutil

    vm = SimpleNamespace(total=total, available=available)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: vm)


def test_default_budget_is_a_quarter_of_ram_or_half_of_what_is_available(monkeypatch):
    _fake_memory(monkeypatch, total=24 * 10**9, available=20 * 10**9)
    assert memory_budget_bytes(None) == 6 * 10**9  # a quarter of RAM
    # a busy machine: 5 GB left, of which the chunks take at most half
    _fake_memory(monkeypatch, total=24 * 10**9, available=5 * 10**9)
    assert memory_budget_bytes(None) == 2_500_000_000
    assert users_per_chunk(1_000_000, None) == 78


def test_default_budget_on_a_busy_machine_gives_the_one_chunk_metrics(monkeypatch, ml100k_split):
    train, test, model = ml100k_split
    one = evaluate_ranking(model, train, test, ks=(5, 20), batch_users=10_000)
    # 26 users' scores fit in half of what is available
    _fake_memory(monkeypatch, 10**12, 2 * 26 * train.n_items * BYTES_PER_SCORE + 1)
    chunked = evaluate_ranking(model, train, test, ks=(5, 20))
    assert chunked.metadata["batch_users"] == 26
    assert np.array_equal(chunked.users, one.users)
    assert chunked.summary == one.summary


def test_memory_budget_sizes():
    assert memory_budget_bytes("4GB") == 4 * 10**9
    assert memory_budget_bytes("512MiB") == 512 * 2**20
    assert memory_budget_bytes("1.5 gb") == 1_500_000_000
    assert memory_budget_bytes(1000) == 1000
    assert memory_budget_bytes(None) > 0
    for bad in ("lots", "4XB", "-1GB", "0"):
        with pytest.raises(InputError, match="memory budget"):
            memory_budget_bytes(bad)
    # a million items at 32 bytes a score: 4 GB holds 125 users' scores
    assert users_per_chunk(1_000_000, "4GB") == 125
    assert users_per_chunk(1_000_000, "1MB") == 1


def test_yaml_keys_and_cli_options(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "_default_factory", fake_factory)
    write_ratings_csv(tmp_path / "ratings.csv", n_users=80)
    cfg = {
        "name": "scale-toy",
        "dataset": {"path": "ratings.csv"},
        "split": "user_random:0.8",
        "models": [{"name": "noisy_popular", "label": "popular"}],
        "ks": [5],
        "bootstrap": 50,
        "memory_budget": "64MB",
        "max_test_users": 30,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(_app(), ["evaluate", str(path), "--out", str(tmp_path / "o"), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert "30 of" in out["protocol"] and "test users sampled (seed 42)" in out["protocol"]
    res = runner.invoke(
        _app(),
        ["evaluate", str(path), "--out", str(tmp_path / "o"), "--json", "--max-test-users", "20"],
    )
    assert "20 of" in json.loads(res.output)["protocol"]
    res = runner.invoke(_app(), ["evaluate", str(path), "--memory-budget", "lots"])
    assert res.exit_code == 2 and "memory_budget" in res.output
    cfg["memory_budget"] = "12 parsecs"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(InputError, match="memory_budget"):
        experiment.load_experiment(path)
