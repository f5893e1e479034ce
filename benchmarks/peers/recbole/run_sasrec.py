"""RecBole's SASRec, driven epoch by epoch; run with the RecBole venv's python
(benchmarks/.peers-recbole-venv, built by setup.sh) by benchmarks/bench_sequential.py.

    run_sasrec.py WORKDIR --max-len 50 --threads 1 --budget-minutes 20   # equal-time mode
    run_sasrec.py WORKDIR --max-len 50 --threads 1 --patience 5 [--resume]  # to convergence
    run_sasrec.py WORKDIR --finish     # best epoch so far of a run still going, as a partial result

WORKDIR holds ``ml/ml.inter`` (user_id, item_id, timestamp, where the timestamp is each
event's rank in recsight's order, so timestamp ties split the same way in both libraries).
RecBole splits it itself, leave-one-out in time order (valid = second-last, test = last event
per user), and trains SASRec with its own data loader (one sample per prefix of the training
part), its own loss (CE over all items) and Adam with its configured learning rate. The
settings are RecBole's SASRec defaults (its ``sasrec.yaml``: dropout 0.5 on hidden states and
attention, inner size 256, GELU, batch 2048, lr 0.001) except the sizes the caller matches.

Budget mode trains until the wall-clock budget is spent (checked after every batch, so a budget
can end mid-epoch) and keeps the last weights. Convergence mode validates after every epoch
and keeps the best epoch, with recsight's rule: validation NDCG@10 of the second-last event,
full ranking, the user's training items masked, ties broken by recsight's shared tie rule
(this file loads ``recsight/models/topk.py``, which needs only numpy and pandas, straight
from the source tree); training stops after ``--patience`` epochs in a row without a strictly
better value. RecBole's own validation figure (``torch.topk`` over the scores with only the
[PAD] column set to -inf: RecBole masks nothing else for sequential models, and a tie with
the target is ordered by torch.topk's unspecified order) is logged beside it. A checkpoint is
written after every epoch (model, optimiser, best weights, history, every RNG state), so a
killed run continues with ``--resume`` from the last finished epoch.

At the end it scores the full catalog for every test user from their sequence up to the
second-last event, exactly as RecBole's full-sort evaluation does, and writes ``scores.npy``
(test users x RecBole items, float32), ``users.txt`` and ``items.txt`` (external ids of
rows/columns) and ``result.json`` (per-epoch history, seconds, peak RSS). Test metrics are
computed by the caller with recsight's evaluator, so both libraries' numbers come from one
implementation with one tie rule.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.utils import init_seed

TOPK_PY = Path(__file__).resolve().parents[3] / "src" / "recsight" / "models" / "topk.py"


def _load_topk():
    spec = importlib.util.spec_from_file_location("recsight_topk", TOPK_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _scores(model, loader, n_items: int, uid_field: str):
    """Full-sort scores of every row of an eval loader as RecBole computes them, with each
    row's user and target item (RecBole ids)."""
    rows, positives, users = [], [], []
    with torch.no_grad():
        for interaction, _history, _pos_u, pos_i in loader:
            s = model.full_sort_predict(interaction).view(len(interaction), n_items)
            s[:, 0] = -np.inf  # RecBole's [PAD] column
            rows.append(s)
            positives.append(pos_i)
            users.append(interaction[uid_field])
    return torch.cat(rows), torch.cat(positives), torch.cat(users).numpy()


def _recbole_ndcg(scores: torch.Tensor, targets: torch.Tensor, k: int) -> float:
    """NDCG@k as RecBole's collector computes it for one positive per row."""
    _, idx = torch.topk(scores, k, dim=-1)
    hit = (idx == targets[:, None]).float()
    return float((hit / torch.log2(torch.arange(2, k + 2).float())).sum(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget-minutes", type=float, default=None)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--max-epochs", type=int, default=500)
    ap.add_argument("--resume", action="store_true", help="continue from WORKDIR/checkpoint.pt")
    ap.add_argument(
        "--finish",
        action="store_true",
        help="no training: score the test users with the best epoch of the checkpoint so far "
        "(a partial result while the run goes on; safe beside it, the checkpoint is replaced "
        "atomically)",
    )
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args()
    work = args.work
    torch.set_num_threads(args.threads)
    config = Config(
        model="SASRec",
        dataset="ml",
        config_dict={
            "data_path": str(work),
            "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
            "USER_ID_FIELD": "user_id",
            "ITEM_ID_FIELD": "item_id",
            "TIME_FIELD": "timestamp",
            "MAX_ITEM_LIST_LENGTH": args.max_len,
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
            "seed": args.seed,
            "reproducibility": True,
            "show_progress": False,
            "checkpoint_dir": str(work / "saved"),
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset)
    opt = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    n_items = dataset.item_num
    uid_field, iid_field = dataset.uid_field, dataset.iid_field
    converge = args.budget_minutes is None

    ckpt = work / "checkpoint.pt"
    state = {"epoch": 0, "history": [], "best_epoch": None, "best_metric": None,
             "bad_epochs": 0, "best_state": None, "train_seconds": 0.0,
             "elapsed_seconds": 0.0, "stopped_by": None, "segments": 0}  # fmt: skip
    if args.finish and not ckpt.exists():
        raise SystemExit(f"--finish: no checkpoint in {work}")
    if (args.resume or args.finish) and ckpt.exists():
        # our own checkpoint; torch >= 2.6 defaults to weights_only=True, which refuses the
        # numpy RNG state saved in it
        saved = torch.load(ckpt, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        np.random.set_state(saved["numpy_rng"])
        random.setstate(saved["python_rng"])
        train_data.generator.set_state(saved["loader_rng"])
        state = saved["state"]
        print(f"resumed after epoch {state['epoch']}", flush=True)
    state["segments"] += 1

    valid_ndcg = None
    if converge:
        topk = _load_topk()
        # the training items of each validation user (masked, as recsight's validation does)
        inter = dataset.inter_feat
        order = np.lexsort((inter["timestamp"].numpy(), inter[uid_field].numpy()))
        users_sorted = inter[uid_field].numpy()[order]
        items_sorted = inter[iid_field].numpy()[order]
        starts = np.flatnonzero(np.r_[True, users_sorted[1:] != users_sorted[:-1]])
        ends = np.r_[starts[1:], len(users_sorted)]
        train_items = {int(users_sorted[s]): items_sorted[s : e - 2] for s, e in
                       zip(starts, ends, strict=True)}  # fmt: skip
        item_keys = topk.id_keys(dataset.field2id_token[iid_field])

        def valid_ndcg() -> tuple[float, float]:
            model.eval()
            scores, targets, users = _scores(model, valid_data, n_items, uid_field)
            theirs = _recbole_ndcg(scores, targets, 10)
            s = scores.numpy().astype(np.float32, copy=True)
            for r, u in enumerate(users):
                s[r, train_items[int(u)]] = -np.inf
            user_keys = topk.id_keys(dataset.id2token(uid_field, users))
            rank = topk.target_ranks(s, targets.numpy(), user_keys, item_keys)
            ours = float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())
            return ours, theirs

    t_segment = time.perf_counter()
    elapsed0 = state["elapsed_seconds"]
    budget = None if converge else 60.0 * args.budget_minutes
    n_batches = len(train_data)
    while state["stopped_by"] is None and not args.finish:
        if converge and state["epoch"] >= args.max_epochs:
            state["stopped_by"] = "max_epochs"
            break
        model.train()
        t0 = time.perf_counter()
        total, done = 0.0, 0
        for interaction in train_data:
            opt.zero_grad()
            loss = model.calculate_loss(interaction)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            done += 1
            if budget is not None and state["train_seconds"] + time.perf_counter() - t0 >= budget:
                state["stopped_by"] = "time_budget"
                break
        train_s = time.perf_counter() - t0
        state["train_seconds"] += train_s
        state["epoch"] += 1
        rec = {"epoch": state["epoch"], "fraction": done / n_batches, "loss": total / max(done, 1),
               "train_seconds": train_s}  # fmt: skip
        if valid_ndcg is not None:
            t1 = time.perf_counter()
            ours, theirs = valid_ndcg()
            rec.update(valid_ndcg10=ours, valid_ndcg10_recbole=theirs,
                       valid_seconds=time.perf_counter() - t1)  # fmt: skip
            if state["best_metric"] is None or ours > state["best_metric"]:
                state["best_metric"], state["best_epoch"], state["bad_epochs"] = (
                    ours,
                    rec["epoch"],
                    0,
                )
                state["best_state"] = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                state["bad_epochs"] += 1
                if state["bad_epochs"] >= args.patience:
                    state["stopped_by"] = "early_stopping"
        state["elapsed_seconds"] = elapsed0 + time.perf_counter() - t_segment
        rec.update(elapsed_seconds=state["elapsed_seconds"], peak_rss_mb=_peak_rss_mb())
        state["history"].append(rec)
        print(json.dumps(rec), flush=True)
        tmp = ckpt.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                    "python_rng": random.getstate(), "loader_rng": train_data.generator.get_state(),
                    "state": state}, tmp)  # fmt: skip
        os.replace(tmp, ckpt)

    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    model.eval()
    scores, _, users = _scores(model, test_data, n_items, uid_field)
    np.save(work / "scores.npy", scores.numpy().astype(np.float32))
    (work / "users.txt").write_text("\n".join(dataset.id2token(uid_field, users).tolist()) + "\n")
    (work / "items.txt").write_text("\n".join(dataset.field2id_token[iid_field].tolist()) + "\n")
    hist = state["history"]
    best = state["best_epoch"]
    (work / "result.json").write_text(json.dumps({
        "mode": "converge" if converge else "budget",
        "stopped_by": state["stopped_by"] or "partial: still training",
        "epochs": sum(h["fraction"] for h in hist),
        "best_epoch": best,
        "best_valid_ndcg10": state["best_metric"],
        "train_seconds": state["train_seconds"],
        "elapsed_seconds": state["elapsed_seconds"],
        "seconds_to_best": hist[best - 1]["elapsed_seconds"] if best else None,
        "peak_rss_mb": max(h["peak_rss_mb"] for h in hist),
        "batches_per_epoch": n_batches,
        "train_samples": len(train_data.dataset),
        "segments": state["segments"],
        "history": hist,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
