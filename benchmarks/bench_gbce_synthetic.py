"""gSASRec's gBCE against the full softmax on a synthetic sequential task (issue 11).

    .venv/bin/python benchmarks/bench_gbce_synthetic.py [--items 1000] [--negatives 256]

Each of 300 users walks 40 steps over `--items` items; the next item is the current item's
fixed successor (a seeded random permutation) with probability 0.8, else uniform. SASRec
(1 layer, 1 head, 32-d, max length 20, dropout 0.2, Adam lr 1e-3, batches of 16 windows,
`--epochs` epochs, no early stopping) predicts each user's last event (leave-one-out, full
ranking, NDCG@10 unmasked; random ranking gives about 4.5 / items). Variants: the full
softmax, recsight's gBCE (t = 0.75, per-position negatives, logits shifted by the output bias
``log(beta / k)``), and gBCE without that shift (the earlier form, re-created here as the
reference), each with its last training loss beside the loss of the constant-score optimum
(every item scored alike), where gBCE settles when it stops ranking."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from recsight.data.dataset import IdIndex, Interactions
from recsight.data.splits import split
from recsight.evaluation.experiment import concat
from recsight.evaluation.protocol import evaluate_ranking
from recsight.models.neural import sasrec
from recsight.models.neural.sasrec import SASRec, gbce_beta, gbce_loss


def markov(n_users: int, n_items: int, length: int, p: float, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    succ = rng.permutation(n_items)
    us, its = [], []
    for u in range(n_users):
        cur = int(rng.integers(n_items))
        for _ in range(length):
            us.append(u)
            its.append(cur)
            cur = int(succ[cur]) if rng.random() < p else int(rng.integers(n_items))
    n = len(us)
    return Interactions(
        user_idx=np.asarray(us, np.int32), item_idx=np.asarray(its, np.int32),
        value=np.full(n, np.nan, np.float32), event_type=np.zeros(n, np.int8),
        event_types=("click",), seq=np.arange(n, dtype=np.int64),
        users=IdIndex([f"u{i}" for i in range(n_users)]),
        items=IdIndex([f"i{i}" for i in range(n_items)]),
        timestamp=np.arange(n, dtype=np.float64) * 60.0,
    )  # fmt: skip


def unshifted_gbce_loss(pos, neg, hit, beta):
    """The earlier gBCE: the same loss without the ``log(beta / k)`` shift (reference only)."""
    shift = math.log(beta / neg.shape[1])
    return gbce_loss(pos - shift, neg - shift, hit, beta)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--negatives", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "gbce_synthetic.json"
    )
    args = ap.parse_args(argv)
    data = markov(300, args.items, 40, 0.8)
    parts = split(data, "leave_last:1")
    train = concat(parts.train, parts.valid)
    k = args.negatives
    beta = gbce_beta(k, args.items, 0.75)
    # the loss when every item scores alike, at the best such score (raw score 0 after the
    # shift): beta * softplus(-s) + k * softplus(s) at s = log(beta / k)
    s = math.log(beta / k)
    floor = (beta * math.log1p(math.exp(-s)) + k * math.log1p(math.exp(s))) / (k + 1)
    own = sasrec.gbce_loss
    rows = []
    for name, loss, patch in (("full softmax", "full", None),
                              ("gBCE, shifted by log(beta / k)", "gbce", None),
                              ("gBCE, unshifted (earlier form)", "gbce",
                               unshifted_gbce_loss)):  # fmt: skip
        sasrec.gbce_loss = patch or own
        t0 = time.perf_counter()
        model = SASRec(max_len=20, dim=32, layers=1, heads=1, dropout=0.2, attn_dropout=0.2,
                       loss=loss, n_negatives=k, gbce_t=0.75, epochs=args.epochs, lr=1e-3,
                       batch_size=16, early_stopping=False, verbose=False).fit(train)  # fmt: skip
        sasrec.gbce_loss = own
        res = evaluate_ranking(model, train, parts.test, ks=(10,), metrics=("ndcg",),
                               exclude_seen=False)  # fmt: skip
        rows.append({"variant": name, "ndcg@10": res.summary["ndcg@10"],
                     "last_loss": model.history_.epochs[-1].loss,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        print(
            f"{name}: NDCG@10 {rows[-1]['ndcg@10']:.4f}, last loss {rows[-1]['last_loss']:.4f}"
            + (f" (constant-score optimum {floor:.4f})" if loss == "gbce" else ""),
            flush=True,
        )
    command = " ".join(["python benchmarks/bench_gbce_synthetic.py", *(argv or sys.argv[1:])])
    doc = {"items": args.items, "negatives": k, "epochs": args.epochs, "beta": beta,
           "constant_score_loss": floor, "rows": rows, "command": command}  # fmt: skip
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
