"""Fit peer libraries on split files written by bench_vs_peers.py and write their outputs.

Runs inside the peers' own venv (benchmarks/.peers-venv: implicit, scikit-surprise, cornac);
it never imports recsight. All metrics are computed afterwards by bench_vs_peers.py with
recsight's evaluation code, so every library is scored by one implementation.

Usage: python run_peers.py SPEC.json, where the spec is::

    {"task": "rating" | "ranking",
     "train": "train.npz",        # arrays user, item, value (ints in one shared id space)
     "targets": "targets.npz",    # rating: arrays user, item (pairs to predict)
                                  # ranking: array users (who gets a top-k list)
     "n_users": N, "n_items": M, "seed": 42, "out": "folder",
     "models": [{"label": "implicit ALS", "lib": "implicit", "algo": "als", "params": {}}]}

For each model it writes ``out/<n>.npz`` (``pred`` aligned with the target pairs, or
``scores`` of shape (len(users), n_items), float32, -inf for items the library cannot score)
and ``out/<n>.json`` with fit and predict/score seconds. Ranking tasks return scores, not
top-k lists: bench_vs_peers.py ranks every library's scores with recsight's shared top-k
(``recsight.models.topk``), so exclusion of train items and the tie rule are identical for
every model. The scores are each library's own: implicit's factor products (what its
``recommend`` ranks; BPR's item bias is one of its factors) and item-item similarity sums,
Cornac's ``score``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


def _matrix(train: dict[str, np.ndarray], n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix(
        (np.ones(len(train["user"]), np.float32), (train["user"], train["item"])),
        shape=(n_users, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


# --- Surprise: rating prediction -----------------------------------------------------------


def surprise_rating(algo: str, params: dict[str, Any], train, pairs, seed: int):
    import pandas as pd
    from surprise import SVD, BaselineOnly, Dataset, KNNBaseline, Reader, SVDpp

    df = pd.DataFrame({"u": train["user"], "i": train["item"], "r": train["value"]})
    trainset = Dataset.load_from_df(df, Reader(rating_scale=(1, 5))).build_full_trainset()
    if algo == "svd":
        model = SVD(random_state=seed, **params)
    elif algo == "svdpp":
        model = SVDpp(random_state=seed, **params)
    elif algo == "knnbaseline":
        p = {"k": 40, "sim_options": {"name": "pearson_baseline", "user_based": False}}
        model = KNNBaseline(verbose=False, **{**p, **params})
    elif algo == "baseline":
        model = BaselineOnly(verbose=False, **params)
    else:
        raise ValueError(f"unknown surprise algo {algo!r}")
    t0 = time.perf_counter()
    model.fit(trainset)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = np.array(
        [
            model.predict(int(u), int(i)).est
            for u, i in zip(pairs["user"], pairs["item"], strict=True)
        ],
        dtype=np.float64,
    )
    return {"pred": pred}, fit_s, time.perf_counter() - t0


# --- implicit: scores --------------------------------------------------------------------------


def implicit_scores(algo: str, params: dict[str, Any], x: sp.csr_matrix, users, seed: int):
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import CosineRecommender

    if algo == "als":
        model = AlternatingLeastSquares(random_state=seed, **params)
    elif algo == "bpr":
        model = BayesianPersonalizedRanking(random_state=seed, **params)
    elif algo == "itemitem_cosine":
        model = CosineRecommender(**params)
    else:
        raise ValueError(f"unknown implicit algo {algo!r}")
    # implicit's own advice: one BLAS thread, its own threads do the parallel work
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        model.fit(x, show_progress=False)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if algo == "itemitem_cosine":
            # what implicit's ItemItemRecommender.recommend ranks: user row x similarity
            scores = (x[users] @ model.similarity).toarray()
        else:
            # what MatrixFactorizationBase.recommend ranks: user factors . item factors
            scores = model.user_factors[users] @ model.item_factors.T
        score_s = time.perf_counter() - t0
    return {"scores": np.asarray(scores, dtype=np.float32)}, fit_s, score_s


# --- Cornac: scores -----------------------------------------------------------------------------


def cornac_scores(algo: str, params: dict[str, Any], train, x: sp.csr_matrix, users,
                  seed: int):  # fmt: skip
    from cornac.data import Dataset
    from cornac.models import BPR, EASE, MostPop

    triplets = list(zip(train["user"].astype(str), train["item"].astype(str),
                        np.ones(len(train["user"])), strict=True))  # fmt: skip
    data = Dataset.from_uir(triplets, seed=seed)
    if algo == "ease":
        model = EASE(verbose=False, seed=seed, **params)
    elif algo == "bpr":
        model = BPR(seed=seed, **params)
    elif algo == "mostpop":
        model = MostPop()
    else:
        raise ValueError(f"unknown cornac algo {algo!r}")
    t0 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t0
    # cornac's internal item order -> the shared item index
    item_of = np.empty(len(data.iid_map), dtype=np.int64)
    for raw, inner in data.iid_map.items():
        item_of[inner] = int(raw)
    t0 = time.perf_counter()
    scores = np.full((len(users), x.shape[1]), -np.inf, dtype=np.float32)
    for row, u in enumerate(users):
        inner = data.uid_map.get(str(int(u)))
        if inner is not None:
            scores[row, item_of] = model.score(inner)
    return {"scores": scores}, fit_s, time.perf_counter() - t0


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    train = dict(np.load(spec["train"]))
    targets = dict(np.load(spec["targets"]))
    seed = int(spec.get("seed", 42))
    x = _matrix(train, spec["n_users"], spec["n_items"])
    for n, m in enumerate(spec["models"]):
        lib, algo, params = m["lib"], m["algo"], m.get("params", {})
        print(f"[peers] {m['label']} {params}", flush=True)
        if spec["task"] == "rating":
            if lib != "surprise":
                raise ValueError(f"rating task: unsupported library {lib!r}")
            arrays, fit_s, pred_s = surprise_rating(algo, params, train, targets, seed)
        elif lib == "implicit":
            arrays, fit_s, pred_s = implicit_scores(algo, params, x, targets["users"], seed)
        elif lib == "cornac":
            arrays, fit_s, pred_s = cornac_scores(algo, params, train, x, targets["users"],
                                                  seed)  # fmt: skip
        else:
            raise ValueError(f"ranking task: unsupported library {lib!r}")
        np.savez(out / f"{n}.npz", **arrays)
        (out / f"{n}.json").write_text(json.dumps({
            "label": m["label"], "params": params, "fit_seconds": fit_s,
            "predict_seconds": pred_s,
        }))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
