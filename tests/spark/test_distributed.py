"""SASRec trained data-parallel on Spark (TorchDistributor, 2 processes) learns as well as one
process after the same epochs."""

from __future__ import annotations

import numpy as np
import pytest

from recsight.data.splits import split
from recsight.errors import InputError
from recsight.evaluation.protocol import evaluate_ranking
from recsight.evaluation.significance import bootstrap_ci
from recsight.models import create_model
from recsight.spark.distributed import fit_distributed
from tests.models.neural.data import events

PARAMS = {
    "max_len": 10,
    "dim": 16,
    "layers": 1,
    "heads": 1,
    "epochs": 4,
    "batch_size": 32,
    "early_stopping": False,
    "verbose": False,
    "seed": 1,
}


def noisy_cycles(n_users=300, n_items=40, length=14, noise=0.3, seed=0):
    """Users walk i -> i+1 (mod n_items) from a random start; 30% of steps jump anywhere."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_users):
        cur, seq = rng.integers(n_items), []
        for _ in range(length):
            cur = rng.integers(n_items) if rng.random() < noise else (cur + 1) % n_items
            seq.append(cur)
        seqs.append(seq)
    users = np.repeat(np.arange(n_users), length)
    return events(users, np.concatenate(seqs), n_users, n_items)


@pytest.mark.slow
def test_two_processes_reach_the_ndcg_of_one(spark, tmp_path):
    parts = split(noisy_cycles(), "leave_last:1", seed=0)
    one = create_model("sasrec", **PARAMS).fit(parts.train)
    two, history = fit_distributed(create_model("sasrec", **PARAMS), parts.train, tmp_path, 2)
    assert history is not None and len(history["epochs"]) == PARAMS["epochs"]
    assert two.history_.to_dict() == history  # as after a local fit (--refit reads it)
    a = evaluate_ranking(one, parts.train, parts.test, ks=(10,)).per_user["ndcg@10"]
    b = evaluate_ranking(two, parts.train, parts.test, ks=(10,)).per_user["ndcg@10"]
    lo, hi = bootstrap_ci(a, n_boot=1000, seed=0)
    # learnt something: random ranking of the ~27 unseen items gives NDCG@10 ~0.17
    assert a.mean() > 0.2
    assert lo <= b.mean() <= hi, (a.mean(), b.mean(), (lo, hi))


def test_only_neural_models_train_data_parallel(spark, tmp_path):
    data = noisy_cycles(n_users=5)
    with pytest.raises(InputError, match="not a neural model"):
        fit_distributed(create_model("als"), data, tmp_path, 2)
    with pytest.raises(InputError, match="num_processes"):
        fit_distributed(create_model("sasrec"), data, tmp_path, 0)
