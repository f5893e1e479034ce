"""recsight against peer libraries (Surprise, implicit, Cornac), side by side in one run.

    .venv/bin/python benchmarks/bench_vs_peers.py [--tasks rating,topk,loo] [--quick]

Run it with recsight's own venv. The peers live in their own venv (build it once with
``benchmarks/peers/setup.sh``); this script writes every split to files and runs
``benchmarks/peers/run_peers.py`` with the peers' python, so both sides train on identical
data. Peers return rating predictions or full score matrices (each library's own scores), and
every model — ours and theirs — is ranked and scored here by the same recsight evaluation
code: full ranking over all items, train items excluded, ties broken by the shared rule of
``recsight.models.topk`` (hash of seed, user, item). Hyperparameters of every model are chosen
on the same validation split carved from train, then refit on the full train split.
recsight's `als` and `bpr` wrap the `implicit` library's models (labelled so in the tables):
their rows measure recsight's wrapping (fold-in, defaults, tuning), not a contest of
libraries. recsight's best model of each kind (classic or sequential) is chosen on the
validation split, never on test, and tested against the best peer (by test mean: the
hardest comparison) with a paired Wilcoxon test, Holm-corrected over all peers of its kind.

Tasks:
- ``rating``: random 80/20 split of ratings (seed 42) on ML-100K and ML-1M (users 1-2,999);
  RMSE/MAE. Surprise SVD, SVD++, KNNBaseline (item-based, pearson_baseline, k=40),
  BaselineOnly, with their defaults; recsight's explicit models.
- ``topk``: ML-1M implicit pairs (all 6,040 users), per-user random 80/20 (seed 42);
  Recall/NDCG/HR at 10 and 20.
- ``loo``: ML-1M users 1-2,999, temporal leave-last-out (last = test, second-last = valid);
  HR@10, NDCG@10.

Writes ``benchmarks/results/vs_peers.json`` and ``vs_peers.md``. ``--quick`` runs every task
on ML-100K with small grids (a smoke test of the whole pipeline in about a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from recsight.data.dataset import Interactions
from recsight.data.ingest import ingest
from recsight.data.splits import concat, split
from recsight.data.store import Store
from recsight.datasets import data_dir as default_data_dir
from recsight.evaluation.leaderboard import Leaderboard, ModelRun, build_leaderboard
from recsight.evaluation.protocol import RankingResult, evaluate_ranking, evaluate_rating
from recsight.evaluation.significance import holm, paired_pvalue
from recsight.models.registry import available_models, create_model

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".peers-venv" / "bin" / "python"
TASKS = ("rating", "topk", "loo")
#: the autoencoders with their papers' settings, trained until validation NDCG@20 stops rising
#: (`patience` epochs without a better one) or the wall-clock cap, whichever comes first
VAE_PARAMS: dict[str, dict[str, Any]] = {
    "multvae": {"verbose": False, "max_minutes": 30.0},
    "recvae": {"verbose": False, "epochs": 200, "patience": 10, "max_minutes": 90.0},
}
#: the sequential model's size, as in bench_sequential.py (max length 50, 2 x 2 heads, 64-d)
SASREC_SIZE = {"max_len": 50, "dim": 64, "layers": 2, "heads": 2, "verbose": False}


# --- what runs -------------------------------------------------------------------------------


@dataclass
class Candidate:
    """One model and the grid it is tuned over (params = fixed values)."""

    label: str
    name: str  # recsight registry name, or the peer algo
    lib: str = "recsight"
    params: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    kind: str = "classic"  # or "sequential": winners are reported per kind
    #: a learned blend of these earlier candidates (labels), each at its tuned parameters
    members: list[str] = field(default_factory=list)

    def combos(self) -> list[dict[str, Any]]:
        keys = list(self.grid)
        out = [dict(self.params)]
        for key in keys:
            out = [{**p, key: v} for p in out for v in self.grid[key]]
        return out


@dataclass
class Section:
    """One dataset x protocol: its split, metrics and the candidates on both sides."""

    key: str
    title: str
    task: str  # "rating" | "ranking"
    source: str
    split_spec: str
    ks: tuple[int, ...] = (10, 20)
    metrics: tuple[str, ...] = ("recall", "ndcg", "hr")
    tuning_metric: str = "ndcg@20"
    ours: list[Candidate] = field(default_factory=list)
    peers: list[Candidate] = field(default_factory=list)


def sections(tasks: list[str], quick: bool, sequential: bool = True) -> list[Section]:
    """The benchmark plan. Grids are small on purpose: the whole run must fit ~15 minutes
    on a 2-core machine; each grid brackets the values the libraries document or that
    tuning on a validation split found before."""
    out: list[Section] = []
    # the classic explicit-rating models (the neural ones decide `explicit` per instance)
    explicit = [n for n, cls in available_models().items() if cls.explicit is True]
    if "rating" in tasks:
        surprise = [
            Candidate("Surprise BaselineOnly", "baseline", "surprise"),
            Candidate("Surprise SVD", "svd", "surprise"),
            Candidate("Surprise SVD++", "svdpp", "surprise"),
            Candidate("Surprise KNNBaseline", "knnbaseline", "surprise"),
        ]
        if quick:
            surprise = [c for c in surprise if c.name != "svdpp"]
        datasets = [("ml100k", "ML-100K", "ml-100k")]
        if not quick:
            datasets.append(
                ("ml1m_2999", "ML-1M (users 1–2,999)", "ml-1m/ratings_users_0001-2999.dat")
            )
        for key, title, src in datasets:
            out.append(Section(
                key=f"rating_{key}", title=f"Rating prediction, {title}, random 80/20",
                task="rating", source=src, split_spec="random:0.8", ks=(), metrics=(),
                tuning_metric="rmse", ours=[Candidate(f"recsight {n}", n) for n in explicit],
                peers=surprise,
            ))  # fmt: skip
    ease_grid = [250.0, 500.0, 1000.0, 2000.0]
    dlae_grid = {"dropout": [0.67, 0.75, 0.85], "reg": [300.0, 600.0, 1000.0]}
    ranking_ours = [
        Candidate("recsight popular", "popular"),
        Candidate("recsight itemknn", "itemknn", grid={"neighbors": [50, 200]}),
        Candidate("recsight userknn", "userknn", grid={"neighbors": [50, 200]}),
        Candidate("recsight als (wraps implicit ALS)", "als",
                  grid={"reg": [0.1, 1.0], "alpha": [1.0, 10.0]}),
        Candidate("recsight bpr (wraps implicit BPR)", "bpr"),
        Candidate("recsight bpr (own PyTorch backend)", "bpr", params={"backend": "torch"}),
        Candidate("recsight ease", "ease", grid={"reg": ease_grid}),
        # Steck's denoising LAEs (2020): dropout p and the L2 term, around the values a first
        # validation-only scan of the ML-1M pairs favoured (p 0.75, reg 300-600)
        Candidate("recsight dlae", "dlae", grid=dict(dlae_grid)),
        Candidate("recsight edlae", "edlae", grid=dict(dlae_grid)),
    ]  # fmt: skip
    ranking_ours += [Candidate(f"recsight {n}", n, params=dict(p)) for n, p in VAE_PARAMS.items()]
    # learned blends of the tuned models above: weights on the validation split (_blend_run)
    ease, als, knn = "recsight ease", "recsight als (wraps implicit ALS)", "recsight itemknn"
    ranking_ours += [
        Candidate("recsight blend (ease + als + itemknn)", "blend", params={"grid": 10},
                  members=[ease, als, knn]),
        Candidate("recsight blend (ease + als + itemknn + multvae)", "blend",
                  params={"grid": 5}, members=[ease, als, knn, "recsight multvae"]),
        Candidate("recsight blend (dlae + als + itemknn)", "blend", params={"grid": 10},
                  members=["recsight dlae", als, knn]),
        Candidate("recsight blend (edlae + als + itemknn)", "blend", params={"grid": 10},
                  members=["recsight edlae", als, knn]),
        Candidate("recsight blend (dlae + als + userknn)", "blend", params={"grid": 10},
                  members=["recsight dlae", als, "recsight userknn"]),
    ]  # fmt: skip
    ranking_peers = [
        Candidate("Cornac MostPop", "mostpop", "cornac"),
        Candidate("implicit ALS", "als", "implicit", {"factors": 64},
                  {"regularization": [0.01, 1.0], "alpha": [1.0, 10.0]}),
        Candidate("implicit BPR", "bpr", "implicit", {"factors": 64},
                  {"learning_rate": [0.01, 0.05]}),
        Candidate("implicit ItemItem cosine", "itemitem_cosine", "implicit", {},
                  {"K": [50, 200]}),
        Candidate("Cornac BPR", "bpr", "cornac", {"k": 64, "max_iter": 300, "lambda_reg": 0.01},
                  {"learning_rate": [0.01, 0.05]}),
        # Steck's EASE (the paper's closed form) and Cornac's default, which clips negative
        # item-item weights to zero: both over recsight's EASE grid
        Candidate("Cornac EASE (paper form, posB=False)", "ease", "cornac", {"posB": False},
                  {"lamb": ease_grid}),
        Candidate("Cornac EASE (Cornac default posB=True: negative weights clipped)", "ease",
                  "cornac", {"posB": True}, {"lamb": ease_grid}),
    ]  # fmt: skip
    sequential_ours = [
        Candidate("recsight sasrec", "sasrec", params=dict(SASREC_SIZE), kind="sequential"),
    ]
    if quick:
        for c in ranking_ours + ranking_peers:
            c.grid = {k: v[:1] for k, v in c.grid.items()}
            if c.lib == "cornac" and c.name == "bpr":
                c.params = {**c.params, "max_iter": 30}
        for c in sequential_ours + [c for c in ranking_ours if c.name in VAE_PARAMS]:
            c.params = {**c.params, "epochs": 2}
    if "topk" in tasks:
        src = "ml-100k" if quick else "ml-1m/ratings_implicit_pairs.dat"
        name = "ML-100K (quick)" if quick else "ML-1M implicit pairs (6,040 users)"
        out.append(Section(
            key="topk_ml1m_implicit", title=f"Top-K, {name}, per-user random 80/20, full ranking",
            task="ranking", source=src, split_spec="user_random:0.8", ks=(10, 20),
            metrics=("recall", "ndcg", "hr"), tuning_metric="ndcg@20",
            ours=ranking_ours, peers=ranking_peers,
        ))  # fmt: skip
    if "loo" in tasks:
        src = "ml-100k" if quick else "ml-1m/ratings_users_0001-2999.dat"
        name = "ML-100K (quick)" if quick else "ML-1M (users 1–2,999)"
        out.append(Section(
            key="loo_ml1m_2999", title=f"Top-K, {name}, temporal leave-last-out, full ranking",
            task="ranking", source=src, split_spec="leave_last:1", ks=(10,),
            metrics=("hr", "ndcg"), tuning_metric="ndcg@10",
            ours=ranking_ours + (sequential_ours if sequential else []), peers=ranking_peers,
        ))  # fmt: skip
    return out


# --- data ------------------------------------------------------------------------------------


def load(data_root: Path, source: str) -> Interactions:
    path = data_root / source
    if not path.exists():
        sys.exit(f"missing dataset {path}: set --data-dir or RECSIGHT_DATA_DIR")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, Store(Path(tmp) / "b.duckdb") as s:
        ingest(s, path)
        return s.interactions(with_features=False)


def save_events(path: Path, data: Interactions, implicit: bool) -> Path:
    value = np.ones(len(data)) if implicit else data.value.astype(np.float64)
    np.savez(path, user=data.user_idx.astype(np.int64), item=data.item_idx.astype(np.int64),
             value=value)  # fmt: skip
    return path


# --- peers -----------------------------------------------------------------------------------


class PeerScores:
    """A peer's saved score matrix (rows = its target users) as a scorer for
    `evaluate_ranking`, which ranks it with the shared top-k and tie rule."""

    def __init__(self, users: np.ndarray, scores: np.ndarray):
        self.row = {int(u): r for r, u in enumerate(users)}
        self.scores = scores

    def score_all(self, user_idx: np.ndarray) -> np.ndarray:
        return self.scores[[self.row[int(u)] for u in user_idx]]


class PairPredictions:
    """A peer's rating predictions for known pairs, as a `predict_idx` model."""

    def __init__(self, users: np.ndarray, items: np.ndarray, pred: np.ndarray, n_items: int):
        key = users.astype(np.int64) * n_items + items
        order = np.argsort(key)
        self.key, self.pred, self.n_items = key[order], pred[order], n_items

    def predict_idx(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        key = np.asarray(user_idx, np.int64) * self.n_items + np.asarray(item_idx)
        return self.pred[np.searchsorted(self.key, key)]


def run_peers(python: Path, work: Path, tag: str, task: str, train: Interactions,
              targets: dict[str, np.ndarray], cands: list[tuple[str, Candidate, dict]],
              seed: int) -> list[dict[str, Any]]:  # fmt: skip
    """One subprocess in the peers' venv fitting every (label, candidate, params) given."""
    folder = work / tag
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "task": task,
        "train": str(save_events(folder / "train.npz", train, implicit=task == "ranking")),
        "targets": str(folder / "targets.npz"),
        "n_users": train.n_users, "n_items": train.n_items, "seed": seed,
        "out": str(folder / "out"),
        "models": [{"label": lb, "lib": c.lib, "algo": c.name, "params": p}
                   for lb, c, p in cands],
    }  # fmt: skip
    # each finished model is kept under a key of its own: a rerun (or a run with fewer or
    # more peers) over the same --work folder fits only what is missing
    done = folder / "done"
    done.mkdir(exist_ok=True)
    keys = [ScoreCache.key(tag, m) for m in spec["models"]]
    missing = [n for n, k in enumerate(keys) if not (done / f"{k}.json").exists()]
    if missing:
        np.savez(folder / "targets.npz", **targets)
        spec_file = folder / "spec.json"
        spec_file.write_text(json.dumps({**spec, "models": [spec["models"][n] for n in missing]}))
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        subprocess.run([str(python), str(HERE / "peers" / "run_peers.py"), str(spec_file)],
                       check=True, env=env)  # fmt: skip
        for j, n in enumerate(missing):
            for ext in ("npz", "json"):  # the json last: it marks the model done
                (folder / "out" / f"{j}.{ext}").replace(done / f"{keys[n]}.{ext}")
    results = []
    for k in keys:
        info = json.loads((done / f"{k}.json").read_text())
        info["arrays"] = done / f"{k}.npz"  # read one at a time: score matrices are big
        results.append(info)
    return results


# --- one section -----------------------------------------------------------------------------


def _splits(sec: Section, data: Interactions, seed: int):
    """Final (train, test) and tuning (inner_train, valid), the experiment runner's rule:
    the split's own validation part when it has one, else the same method applied to train."""
    main = split(data, sec.split_spec, seed=seed)
    train = concat(main.train, main.valid)
    if main.valid is not None:
        return train, main.test, main.train, main.valid
    inner = split(train, sec.split_spec, seed=seed + 1)
    return train, main.test, concat(inner.train, inner.valid), inner.test


def _evaluate(sec: Section, model: Any, train: Interactions, test: Interactions, final: bool):
    if sec.task == "rating":
        return evaluate_rating(model, test)
    ks = sec.ks if final else (int(sec.tuning_metric.split("@")[1]),)
    metrics = sec.metrics if final else ("ndcg",)
    return evaluate_ranking(model, train, test, ks=ks, metrics=metrics)


def _objective(sec: Section, res: Any) -> float:
    v = res.summary[sec.tuning_metric]
    return -v if sec.tuning_metric == "rmse" else v


def run_section(sec: Section, data_root: Path, peers_python: Path | None, work: Path,
                seed: int, log, cache: ScoreCache | None = None,
                only: set[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Tune, fit and score every candidate of `sec` (of ours, only the labels in `only` when
    given); recsight's classic ranking models go through `cache` when one is given."""
    t_section = time.perf_counter()
    data = load(data_root, sec.source)
    train, test, inner, valid = _splits(sec, data, seed)
    log(f"{sec.title}: {len(train):,} train / {len(test):,} test events "
        f"(tuning on {len(inner):,} / {len(valid):,})")  # fmt: skip
    runs: list[ModelRun] = []
    recommend_s: dict[str, float] = {}

    def add(label: str, lib: str, params: dict, fitted_s: float, pred_s: float, res, trials):
        runs.append(ModelRun(label, lib, params, res, fitted_s, pred_s, 0.0, trials))
        recommend_s[label] = pred_s

    # -- recsight side, in this process
    valid_of: dict[str, float | None] = {}
    kind_of: dict[str, str] = {c.label: c.kind for c in sec.ours + sec.peers}
    scored: dict[tuple[str, str], Fitted] = {}
    best_of: dict[str, dict[str, Any]] = {}
    for cand in sec.ours:
        if only and cand.label not in only:
            continue
        if cand.members:
            res, fit_s, params, value = _blend_run(sec, cand, scored, best_of, inner, valid,
                                                   train, test, cache)  # fmt: skip
            valid_of[cand.label] = value
            add(cand.label, "recsight", params, fit_s, res.score_seconds, res, [])
            log(f"  {cand.label} {params}: fit {fit_s:.2f}s  {_headline(sec, res)}")
            continue
        trials = []
        combos = cand.combos()
        # every candidate gets a validation score when its kind has several candidates:
        # recsight's best model of a kind is chosen on it, never on test
        rivals = sum(c.kind == cand.kind for c in sec.ours)
        # classic rankers go through their score matrices (kept for the blends, and cached)
        cached = sec.task == "ranking" and cand.kind == "classic"
        if len(combos) > 1 or rivals > 1:
            for params in combos:
                if cached:
                    fitted = _fit_scores(cache, sec, "valid", cand, params, inner, valid, seed)
                    scorer: Any = PeerScores(fitted.users, fitted.scores)
                else:
                    scorer = create_model(cand.name, **params).fit(inner)
                value = _objective(sec, _evaluate(sec, scorer, inner, valid, final=False))
                trials.append({"params": params, "objective": value})
            top = max(trials, key=lambda t: t["objective"])
            best, valid_of[cand.label] = top["params"], top["objective"]
        else:
            best, valid_of[cand.label] = combos[0], None
        best_of[cand.label] = best
        if cached:
            # the tuned model's validation scores stay at hand for the blends
            scored[cand.label, "valid"] = _fit_scores(cache, sec, "valid", cand, best, inner,
                                                      valid, seed)  # fmt: skip
            fitted = _fit_scores(cache, sec, "test", cand, best, train, test, seed)
            scored[cand.label, "test"], fit_s = fitted, fitted.fit_seconds
            model = PeerScores(fitted.users, fitted.scores)
        else:
            model = create_model(cand.name, **best)
            t0 = time.perf_counter()
            model.fit(train)
            fit_s = time.perf_counter() - t0
        res = _evaluate(sec, model, train, test, final=True)
        pred_s = res.predict_seconds if sec.task == "rating" else res.score_seconds
        if cached:  # scoring happened when the scores were made; ranking happened here
            pred_s += fitted.score_seconds
        add(cand.label, "recsight", best, fit_s, pred_s, res, trials)
        log(f"  {cand.label} {best}: fit {fit_s:.2f}s  {_headline(sec, res)}")

    # -- peers side, in their venv: tune (one call), then refit the winners (one call)
    if peers_python is not None:
        if sec.task == "rating":

            def targets_for(d: Interactions) -> dict[str, np.ndarray]:
                return {"user": d.user_idx.astype(np.int64), "item": d.item_idx.astype(np.int64)}
        else:

            def targets_for(d: Interactions) -> dict[str, np.ndarray]:
                return {"users": np.unique(d.user_idx).astype(np.int64)}

        # every peer is scored on validation too (the report shows it beside the test figure)
        tune = [(c.label, c, p) for c in sec.peers for p in c.combos()]
        best: dict[str, dict] = {c.label: c.combos()[0] for c in sec.peers}
        trials_of: dict[str, list] = {c.label: [] for c in sec.peers}
        if tune:
            outs = run_peers(peers_python, work, f"{sec.key}-tune", sec.task, inner,
                             targets_for(valid), tune, seed)  # fmt: skip
            for (label, _c, params), out in zip(tune, outs, strict=True):
                res = _peer_result(sec, out, inner, valid, final=False)
                trials_of[label].append({"params": params, "objective": _objective(sec, res)})
            for label, trials in trials_of.items():
                top = max(trials, key=lambda t: t["objective"])
                best[label], valid_of[label] = top["params"], top["objective"]
        final = [(c.label, c, best[c.label]) for c in sec.peers]
        outs = run_peers(peers_python, work, f"{sec.key}-final", sec.task, train,
                         targets_for(test), final, seed)  # fmt: skip
        for (label, cand, params), out in zip(final, outs, strict=True):
            res = _peer_result(sec, out, train, test, final=True)
            add(label, cand.lib, params, out["fit_seconds"], out["predict_seconds"], res,
                trials_of[label])  # fmt: skip
            log(f"  {label} {params}: fit {out['fit_seconds']:.2f}s  {_headline(sec, res)}")

    board = build_leaderboard(sec.key, sec.task, runs, n_boot=1000, seed=seed)
    return {
        "title": sec.title,
        "protocol": board.protocol,
        "split": sec.split_spec,
        "seed": seed,
        "n_train": len(train),
        "n_test": len(test),
        "n_tuning_train": len(inner),
        "n_valid": len(valid),
        "tuning_metric": sec.tuning_metric,
        "seconds": time.perf_counter() - t_section,
        "board": board,
        "recommend_seconds": recommend_s,
        "valid": valid_of,
        "kind": kind_of,
    }


# --- resumable scores and the learned blend --------------------------------------------------


@dataclass
class Fitted:
    """A fitted model's scores for the users of one evaluation split, and what they cost."""

    users: np.ndarray
    scores: np.ndarray
    fit_seconds: float
    score_seconds: float
    training: dict[str, Any] | None = None  # neural models: epochs, best epoch, why it stopped


class ScoreCache:
    """Score matrices of recsight's fitted models on disk, keyed by section, phase, model,
    parameters and split sizes: a stopped run resumes where it stopped (every fit here is
    seeded, so a cached matrix is what a refit would give), and several processes can fill
    one cache at once (``--only``)."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(*parts: Any) -> str:
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:20]

    def get(self, key: str) -> Fitted | None:
        meta = self.root / f"{key}.json"
        if not meta.exists():
            return None
        info = json.loads(meta.read_text())
        arrays = np.load(self.root / f"{key}.npz")
        return Fitted(arrays["users"], arrays["scores"], info["fit_seconds"],
                      info["score_seconds"], info.get("training"))  # fmt: skip

    def get_note(self, key: str) -> dict[str, Any] | None:
        path = self.root / f"{key}.note.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put_note(self, key: str, note: dict[str, Any]) -> None:
        (self.root / f"{key}.note.json").write_text(json.dumps(note))

    def put(self, key: str, fitted: Fitted, about: dict[str, Any]) -> None:
        tmp = self.root / f"{key}.tmp.npz"
        np.savez(tmp, users=fitted.users, scores=fitted.scores)
        tmp.replace(self.root / f"{key}.npz")
        info = {**about, "fit_seconds": fitted.fit_seconds, "score_seconds": fitted.score_seconds}
        (self.root / f"{key}.json").write_text(json.dumps(info, default=str))


def _fit_scores(cache: ScoreCache | None, sec: Section, phase: str, cand: Candidate,
                params: dict[str, Any], fit_on: Interactions, eval_on: Interactions,
                seed: int) -> Fitted:  # fmt: skip
    """`cand` with `params` fitted on `fit_on`: its scores for every user of `eval_on`, from
    the cache when this fit was done before."""
    key = ScoreCache.key(sec.key, sec.source, sec.split_spec, seed, phase, cand.name, params,
                         len(fit_on), len(eval_on))  # fmt: skip
    hit = None if cache is None else cache.get(key)
    if hit is not None:
        return hit
    users = np.unique(eval_on.user_idx).astype(np.int64)
    model = create_model(cand.name, **params)
    t0 = time.perf_counter()
    model.fit(fit_on)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = np.asarray(model.score_all(users), dtype=np.float32)
    fitted = Fitted(users, scores, fit_s, time.perf_counter() - t0)
    about: dict[str, Any] = {"section": sec.key, "phase": phase, "model": cand.name,
                             "params": params}  # fmt: skip
    history = getattr(model, "history_", None)
    if history is not None:  # neural models: how training ended
        about["training"] = {"epochs": len(history.epochs), "best_epoch": history.best_epoch,
                             "best_valid": history.best_metric, "stopped_by": history.stopped_by,
                             "valid_by_epoch": [e.metric for e in history.epochs]}  # fmt: skip
    fitted.training = about.get("training")
    if cache is not None:
        cache.put(key, fitted, about)
    return fitted


def _blend_run(sec: Section, cand: Candidate, scored: dict[tuple[str, str], Fitted],
               best_of: dict[str, dict[str, Any]], inner: Interactions, valid: Interactions,
               train: Interactions, test: Interactions,
               cache: ScoreCache | None = None):  # fmt: skip
    """The learned blend of `cand.members`, each at its tuned parameters: weights searched on
    the validation split (members fitted on the tuning part of train, as when they were
    tuned), then applied to the members refitted on all of train. This is exactly
    ``Blend(models=..., valid_share=0.2, seed=seed + 1, max_valid_users=None).fit(train)``
    (its holdout is the tuning split's), computed from the fits this run already made.
    Returns (test result, fit seconds of every member fit, the blend's params, its
    validation NDCG)."""
    from recsight.models.blend import normalised, search_weights

    missing = [m for m in cand.members if (m, "test") not in scored]
    if missing:
        raise SystemExit(f"{cand.label}: members {missing} must run (cached) before the blend")
    grid = int(cand.params.get("grid", 10))
    # the weight search is the slow part: its answer is kept beside the members' scores
    names = [_name_of(sec, m) for m in cand.members]
    key = ScoreCache.key("blend", sec.key, grid, names, [best_of[m] for m in cand.members],
                         len(inner), len(valid))  # fmt: skip
    note = None if cache is None else cache.get_note(key)
    if note is None:
        vu = scored[cand.members[0], "valid"].users
        inner_seen = inner.to_csr(binary=True)[vu]
        zs = [normalised(scored[m, "valid"].scores, inner_seen) for m in cand.members]
        weights, value = search_weights(zs, vu, inner, valid, grid)
        note = {"weights": weights.tolist(), "valid": value}
        if cache is not None:
            cache.put_note(key, note)
    weights, value = np.array(note["weights"]), float(note["valid"])
    tu = scored[cand.members[0], "test"].users
    train_seen = train.to_csr(binary=True)[tu]
    t0 = time.perf_counter()
    mix = sum(
        np.float32(w) * normalised(scored[m, "test"].scores, train_seen)
        for m, w in zip(cand.members, weights, strict=True)
        if w
    )
    mix_s = time.perf_counter() - t0
    res = evaluate_ranking(PeerScores(tu, mix), train, test, ks=sec.ks, metrics=sec.metrics)
    res.score_seconds += mix_s + sum(scored[m, "test"].score_seconds for m in cand.members)
    fit_s = sum(scored[m, p].fit_seconds for m in cand.members for p in ("valid", "test"))
    models = [{"name": _name_of(sec, m), "params": best_of[m]} for m in cand.members]
    params = {"models": models, "grid": grid, "weights": [round(float(w), 4) for w in weights]}
    return res, fit_s, params, value


def _name_of(sec: Section, label: str) -> str:
    return next(c.name for c in sec.ours if c.label == label)


def _peer_result(sec: Section, out: dict, train: Interactions, test: Interactions, final: bool):
    arrays = np.load(out["arrays"])
    if sec.task == "rating":
        model = PairPredictions(test.user_idx, test.item_idx, arrays["pred"], test.n_items)
        return evaluate_rating(model, test)
    return _evaluate(
        sec, PeerScores(np.unique(test.user_idx), arrays["scores"]), train, test, final
    )


def _headline(sec: Section, res: Any) -> str:
    if sec.task == "rating":
        return f"RMSE {res.rmse:.4f} MAE {res.mae:.4f}"
    assert isinstance(res, RankingResult)
    return "  ".join(f"{k} {v:.4f}" for k, v in res.summary.items() if k.startswith("ndcg"))


# --- report ----------------------------------------------------------------------------------


#: NDCG ratio that recsight's best model must reach over the best peer (issue 11)
TARGET_RATIO = {"topk": 1.03, "loo": 1.0}


def _checks(key: str, res: dict[str, Any]) -> list[dict[str, Any]]:
    """The acceptance statements, evaluated on this run's numbers: per kind of model,
    recsight's best (chosen on validation) against the best peer of that kind (by test mean),
    with the paired Wilcoxon p-value Holm-corrected over every peer of the kind."""
    board: Leaderboard = res["board"]
    mean = {r.label: {c: board.cells[r.label][c].mean for c in board.columns} for r in board.runs}
    ours = [r.label for r in board.runs if r.name == "recsight"]
    peers = [r.label for r in board.runs if r.name != "recsight"]
    if not ours or not peers:
        return []
    out: list[dict[str, Any]] = []
    if key.startswith("rating"):
        best = min(ours, key=lambda lb: mean[lb]["rmse"])  # explicit models: one kind
        for p in ("Surprise SVD", "Surprise SVD++", "Surprise KNNBaseline"):
            if p in mean:
                ok = mean[best]["rmse"] < mean[p]["rmse"]
                out.append({"statement": f"{best} RMSE {mean[best]['rmse']:.4f} < {p} "
                            f"{mean[p]['rmse']:.4f}", "passed": ok})  # fmt: skip
        return out
    metric = "ndcg@20" if "ndcg@20" in board.columns else "ndcg@10"
    target = TARGET_RATIO["topk" if key.startswith("topk") else "loo"]
    per_user = {r.label: r.result.per_user[metric] for r in board.runs}
    for kind in sorted({res["kind"][lb] for lb in ours}):
        mine = [lb for lb in ours if res["kind"][lb] == kind]
        valid = res["valid"]
        best = (
            mine[0]
            if len(mine) == 1
            else max(mine, key=lambda lb: valid[lb] if valid[lb] is not None else -np.inf)
        )
        rivals = [p for p in peers if res["kind"][p] == kind]
        if not rivals:
            out.append({"kind": kind, "model": best, "passed": None,
                        "statement": f"{kind}: {best} {metric} {mean[best][metric]:.4f}; no "
                        "peer of this kind in this run"})  # fmt: skip
            continue
        top = max(rivals, key=lambda lb: mean[lb][metric])
        p_raw = [paired_pvalue(per_user[best], per_user[p]) for p in rivals]
        p_top = float(holm(p_raw)[rivals.index(top)])
        ratio = mean[best][metric] / mean[top][metric]
        passed = bool(ratio >= target and (target <= 1.0 or p_top < 0.05))
        out.append({
            "kind": kind, "model": best, "peer": top, "metric": metric, "ratio": ratio,
            "target": target, "p_holm": p_top, "passed": passed,
            "statement": f"{kind}: {best} (chosen on validation) {metric} "
            f"{mean[best][metric]:.4f} = {ratio:.3f} x {top} {mean[top][metric]:.4f} "
            f"(target >= {target}); paired Wilcoxon p = {p_top:.2g} (Holm over "
            f"{len(rivals)} peers)",
        })  # fmt: skip
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "recsight": metadata.version("recsight")}
    for pkg in ("numpy", "scipy"):
        out[pkg] = metadata.version(pkg)
    return out


def _peer_versions(python: Path | None) -> dict[str, str]:
    if python is None:
        return {}
    code = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('implicit', 'scikit-surprise', 'cornac', 'numpy')}))")  # fmt: skip
    return json.loads(subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                     check=True).stdout)  # fmt: skip


def write_report(out_dir: Path, results: dict[str, dict], meta: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "sections": {}}
    md = [
        "# recsight vs peers",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} ({meta['cpus']} CPUs, load average "
        f"at start {meta['load_at_start']}); total {meta['seconds']:.0f} s. recsight "
        f"{meta['versions']['recsight']}; peers: "
        + ", ".join(f"{k} {v}" for k, v in meta["peer_versions"].items())
        + ". All models ran in this one run on identical split files and were scored by "
        "recsight's evaluation code; hyperparameters were tuned on the same validation split "
        "carved from train, then refit on the full train split. Peers return their own scores; "
        "every model is ranked with recsight's shared top-k (train items excluded, ties by "
        "hash(seed, user, item)). *valid* is the tuning metric on the validation split (what "
        "picked the parameters and recsight's best model of each kind). ± is the half-width "
        "of a 95% bootstrap CI over users; * marks a model significantly worse than the best "
        "(paired Wilcoxon, Holm). recsight `als`/`bpr` wrap the `implicit` library. Times are "
        "wall-clock seconds on this machine, shared CPU.",
        "",
    ]
    for key, res in results.items():
        board: Leaderboard = res["board"]
        bd = board.to_dict()
        for row in bd["models"]:
            row["recommend_seconds"] = res["recommend_seconds"][row["model"]]
        checks = _checks(key, res)
        doc["sections"][key] = {
            **{k: v for k, v in res.items() if k not in ("board", "recommend_seconds")},
            "leaderboard": bd,
            "checks": checks,
        }
        md += [f"## {res['title']}", "",
               f"Protocol: {res['protocol']}; split `{res['split']}` (seed {res['seed']}); "
               f"{res['n_train']:,} train / {res['n_test']:,} test events; tuned on "
               f"{res['tuning_metric']} with {res['n_tuning_train']:,} / {res['n_valid']:,}.",
               ""]  # fmt: skip
        cols = board.columns
        md.append("| model | kind | valid | " + " | ".join(cols)
                  + " | fit s | predict/score s | params |")  # fmt: skip
        md.append("|---|---|" + "---:|" * (len(cols) + 3) + "---|")
        for run in board.runs:
            cells = []
            for c in cols:
                cell = board.cells[run.label][c]
                text = f"{cell.mean:.4f}"
                if cell.ci is not None:
                    text += f" ±{(cell.ci[1] - cell.ci[0]) / 2:.4f}"
                text += "*" if cell.worse else ""
                cells.append(f"**{text}**" if board.best.get(c) == run.label else text)
            params = json.dumps(run.params, default=str).replace("|", "\\|")
            v = res["valid"].get(run.label)
            md.append(f"| {run.label} | {res['kind'][run.label]} | "
                      + ("–" if v is None else f"{abs(v):.4f}") + " | "
                      + " | ".join(cells) + f" | {run.fit_seconds:.2f} | "
                      f"{res['recommend_seconds'][run.label]:.2f} | `{params}` |")  # fmt: skip
        if checks:
            tag = {True: "PASS", False: "FAIL", None: "NOTE"}
            md += ["", "Checks:"] + [f"- {tag[c['passed']]}: {c['statement']}" for c in checks]
        md.append("")
    (out_dir / "vs_peers.json").write_text(json.dumps(doc, indent=2, default=_json_default))
    (out_dir / "vs_peers.md").write_text("\n".join(md))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma list of rating,topk,loo")
    ap.add_argument("--quick", action="store_true", help="smoke run on ML-100K, tiny grids")
    ap.add_argument("--peers-python", type=Path, default=PEERS_PYTHON)
    ap.add_argument("--no-peers", action="store_true", help="run recsight's side only")
    ap.add_argument(
        "--no-sequential",
        action="store_true",
        help="leave recsight's SASRec out of the leave-last-out section",
    )
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default benchmarks/results (--quick: a temporary folder)",
    )
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="keep peer runs and recsight's score matrices here, and reuse them: a rerun "
        "resumes (default: a temporary folder, nothing reused)",
    )
    ap.add_argument(
        "--only",
        default=None,
        help="semicolon list of recsight candidate labels to run; with --no-peers and --work, "
        "fills the shared cache from a second process",
    )
    ap.add_argument(
        "--peers",
        default=None,
        help="semicolon list of peer labels to run (labels hold commas; default: all)",
    )
    args = ap.parse_args(argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad:
        ap.error(f"--tasks: unknown {', '.join(bad)}; expected some of {', '.join(TASKS)}")
    peers_python = None if args.no_peers else args.peers_python
    if peers_python is not None and not peers_python.exists():
        ap.error(f"{peers_python} not found: build it with benchmarks/peers/setup.sh "
                 "(or pass --no-peers)")  # fmt: skip
    data_root = args.data_dir or default_data_dir()
    if data_root is None:
        ap.error("no datasets folder: pass --data-dir or set RECSIGHT_DATA_DIR")
    out_dir = args.out or (
        Path(tempfile.gettempdir()) / "recsight-vs-peers-quick" if args.quick else HERE / "results"
    )
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%d %H:%M")
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    meta = {
        "command": " ".join(["python benchmarks/bench_vs_peers.py", *(argv or sys.argv[1:])]),
        "date": started,
        "cpus": os.cpu_count(),
        "load_at_start": load_avg,
        "seconds": 0.0,
        "quick": args.quick,
        "versions": _versions(),
        "peer_versions": _peer_versions(peers_python),
    }
    results = {}
    only = None if args.only is None else {x.strip() for x in args.only.split(";") if x.strip()}
    with tempfile.TemporaryDirectory(prefix="recsight-vs-peers-") as tmp:
        work = args.work or Path(tmp)
        for sec in sections(tasks, args.quick, sequential=not args.no_sequential):
            if args.peers is not None:
                wanted = {x.strip() for x in args.peers.split(";")}
                sec.peers = [c for c in sec.peers if c.label in wanted]
            cache = ScoreCache(work / "scores" / sec.key) if args.work else None
            results[sec.key] = run_section(sec, data_root, peers_python, work, args.seed, log,
                                           cache, only)  # fmt: skip
            # the report so far after every section: a long run that stops keeps what it did
            meta["seconds"] = time.perf_counter() - t0
            write_report(out_dir, results, meta)
    log(f"wrote {out_dir / 'vs_peers.md'} and vs_peers.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
