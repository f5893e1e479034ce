"""RecBole's SASRec under a wall-clock training budget; run with the RecBole venv's python
(benchmarks/.peers-recbole-venv, built by setup.sh) by benchmarks/bench_sequential.py.

    run_sasrec.py WORKDIR BUDGET_MINUTES THREADS MAX_LEN

WORKDIR holds ``ml/ml.inter`` (user_id, item_id, timestamp, rows in recsight's ingest order,
so timestamp ties split the same way). RecBole splits it itself, leave-one-out in time order
(valid = second-last, test = last event per user), and trains SASRec with its own data loader
(one sample per prefix), loss and Adam, batch by batch until the budget is spent (checked
after every batch, so a budget can end mid-epoch). Then it scores the full catalog for every
test user from their sequence up to the second-last event, exactly as RecBole's full-sort
evaluation does, and writes ``scores.npy`` (test users x RecBole items, float32),
``users.txt`` and ``items.txt`` (the external ids of rows/columns) and ``result.json``. The
metrics are computed by the caller with recsight's evaluator, so both libraries' numbers come
from one implementation with one tie rule.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.utils import init_seed


def main() -> None:
    work, budget_min, threads, max_len = (
        Path(sys.argv[1]),
        float(sys.argv[2]),
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    torch.set_num_threads(threads)
    config = Config(
        model="SASRec",
        dataset="ml",
        config_dict={
            "data_path": str(work),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "MAX_ITEM_LIST_LENGTH": max_len,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_size": 64,
            "inner_size": 256,
            "hidden_dropout_prob": 0.5,
            "attn_dropout_prob": 0.5,
            "loss_type": "CE",
            "train_neg_sample_args": None,
            "learning_rate": 0.001,
            "train_batch_size": 2048,
            "eval_batch_size": 256,
            "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full"},
            "device": "cpu",
            "use_gpu": False,
            "seed": 2020,
            "reproducibility": True,
            "show_progress": False,
            "checkpoint_dir": str(work / "saved"),
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, _, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset)
    opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    budget = 60.0 * budget_min
    t0 = time.perf_counter()
    batches, epochs_done, stop = 0, 0.0, False
    n_batches = len(train_data)
    while not stop:
        model.train()
        for i, interaction in enumerate(train_data):
            opt.zero_grad()
            loss = model.calculate_loss(interaction)
            loss.backward()
            opt.step()
            batches += 1
            if time.perf_counter() - t0 >= budget:
                epochs_done += (i + 1) / n_batches
                stop = True
                break
        else:
            epochs_done += 1
    train_s = time.perf_counter() - t0

    model.eval()
    rows, users = [], []
    uid_field = dataset.uid_field
    with torch.no_grad():
        for batch in test_data:
            interaction = batch[0]
            scores = model.full_sort_predict(interaction).view(len(interaction), -1)
            rows.append(scores.numpy().astype(np.float32))
            users += interaction[uid_field].tolist()
    scores = np.concatenate(rows)
    np.save(work / "scores.npy", scores)
    (work / "users.txt").write_text(
        "\n".join(dataset.id2token(uid_field, np.array(users)).tolist()) + "\n"
    )
    (work / "items.txt").write_text("\n".join(dataset.field2id_token["item_id"].tolist()) + "\n")
    (work / "result.json").write_text(
        json.dumps(
            {
                "train_seconds": train_s,
                "epochs": epochs_done,
                "batches": batches,
                "batches_per_epoch": n_batches,
                "train_samples": len(train_data.dataset),
            }
        )
    )


if __name__ == "__main__":
    main()
