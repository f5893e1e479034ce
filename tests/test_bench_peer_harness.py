"""The peer-comparison harness in benchmarks/: how it picks the models it compares, how it
hands peers' scores to the evaluator and how it gives RecBole recsight's event order."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluation.fakes import interactions

from recsight.data.splits import split
from recsight.evaluation.leaderboard import ModelRun, build_leaderboard
from recsight.evaluation.protocol import RankingResult, evaluate_ranking
from recsight.evaluation.significance import holm, paired_pvalue

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    # loaded by path: "benchmarks" is not a package, and a dependency in the venv ships a
    # top-level package of that name
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


bench_vs_peers = _load("bench_vs_peers")
PeerScores, _checks = bench_vs_peers.PeerScores, bench_vs_peers._checks
write_recbole_inter = _load("bench_sequential").write_recbole_inter


def _result(values: np.ndarray) -> RankingResult:
    return RankingResult(
        protocol="full ranking",
        ks=(20,),
        users=np.arange(len(values)),
        per_user={"ndcg@20": values},
        summary={"ndcg@20": float(values.mean())},
        n_items=10,
        n_skipped=0,
        score_seconds=0.0,
    )


def test_checks_pick_recsight_best_on_validation_and_holm_over_peers() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 300)
    per_user = {
        # the better one on test, the worse one on validation: it must not be picked
        "recsight b": base + 0.05,
        "recsight a": base + 0.03,
        "peer p": base,
        "peer q": base - 0.02 + rng.normal(0, 0.01, 300),
    }
    runs = [
        ModelRun(lb, "recsight" if lb.startswith("recsight") else "peerlib", {}, _result(v), 0, 0)
        for lb, v in per_user.items()
    ]
    res = {
        "board": build_leaderboard("topk_test", "ranking", runs, n_boot=10),
        "valid": {"recsight a": 0.50, "recsight b": 0.40, "peer p": 0.3, "peer q": 0.2},
        "kind": dict.fromkeys(per_user, "classic"),
    }
    (check,) = _checks("topk_ml1m", res)
    assert check["model"] == "recsight a"
    assert check["peer"] == "peer p"
    assert check["ratio"] == pytest.approx(per_user["recsight a"].mean() / base.mean())
    raw = [paired_pvalue(per_user["recsight a"], per_user[p]) for p in ("peer p", "peer q")]
    assert check["p_holm"] == pytest.approx(holm(raw)[0])
    assert check["passed"] is bool(check["ratio"] >= 1.03 and check["p_holm"] < 0.05)


def test_checks_report_each_kind_against_peers_of_its_kind() -> None:
    v = np.linspace(0.1, 0.5, 50)
    runs = [
        ModelRun("recsight ease", "recsight", {}, _result(v), 0, 0),
        ModelRun("recsight sasrec", "recsight", {}, _result(v + 0.2), 0, 0),
        ModelRun("peer ease", "peerlib", {}, _result(v - 0.01), 0, 0),
    ]
    res = {
        "board": build_leaderboard("loo", "ranking", runs, n_boot=10),
        "valid": {"recsight ease": 0.1, "recsight sasrec": None, "peer ease": 0.1},
        "kind": {"recsight ease": "classic", "recsight sasrec": "sequential",
                 "peer ease": "classic"},
    }  # fmt: skip
    classic, sequential = _checks("loo_ml1m_2999", res)
    assert (classic["kind"], classic["model"], classic["peer"]) == (
        "classic",
        "recsight ease",
        "peer ease",
    )
    # no sequential peer ran: reported, neither passed nor failed
    assert sequential["model"] == "recsight sasrec" and sequential["passed"] is None


def test_peer_scores_rows_follow_user_ids_and_ties_use_the_shared_rule() -> None:
    train = interactions([0, 1, 2], [0, 1, 2], n_users=3, n_items=6)
    test = interactions([0, 1, 2], [5, 4, 3], n_users=3, n_items=6)
    # a peer wrote its rows for users (2, 0, 1); user 2's row puts its test item first
    scores = np.zeros((3, 6), np.float32)
    scores[0, 3] = 1.0
    peer = PeerScores(np.array([2, 0, 1]), scores)
    res = evaluate_ranking(peer, train, test, ks=(1,), metrics=("hr",))
    assert res.per_user["hr@1"][res.users == 2] == 1.0

    # all-equal scores rank exactly like any other constant model under the shared tie rule
    flat = PeerScores(np.arange(3), np.zeros((3, 6), np.float32))

    class Constant:
        def score_all(self, user_idx: np.ndarray) -> np.ndarray:
            return np.full((len(user_idx), 6), 7.0, np.float32)

    a = evaluate_ranking(flat, train, test, ks=(3,), metrics=("hr",))
    b = evaluate_ranking(Constant(), train, test, ks=(3,), metrics=("hr",))
    np.testing.assert_array_equal(a.per_user["hr@3"], b.per_user["hr@3"])


def test_recbole_input_keeps_recsight_order_on_timestamp_ties(tmp_path) -> None:
    # user 0's last three events share one timestamp: recsight orders them by ingest order
    data = interactions([0, 0, 0, 0, 1, 1, 1], [3, 1, 2, 0, 4, 0, 2], n_users=2, n_items=5)
    data.timestamp = np.array([1.0, 5.0, 5.0, 5.0, 2.0, 3.0, 3.0])
    path = write_recbole_inter(data, tmp_path)
    frame = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    assert frame["timestamp:float"].is_unique  # RecBole cannot reorder tied events
    parts = split(data, "leave_last:1")
    for u in ("u0", "u1"):
        rows = frame[frame["user_id:token"] == u].sort_values("timestamp:float")
        # RecBole's leave-one-out takes the last event as test, the one before as validation
        test_item = data.items.ids[parts.test.item_idx[data.users.ids[parts.test.user_idx] == u]]
        valid_item = data.items.ids[parts.valid.item_idx[data.users.ids[parts.valid.user_idx] == u]]
        assert rows["item_id:token"].iloc[-1] == test_item[0]
        assert rows["item_id:token"].iloc[-2] == valid_item[0]


def _planted(n_users: int = 60, n_items: int = 40, seed: int = 0):
    """Users in two taste groups over two item blocks, with a few popular items each."""
    rng = np.random.default_rng(seed)
    us, its = [], []
    for u in range(n_users):
        lo = 0 if u < n_users // 2 else n_items // 2
        p = np.where(np.arange(n_items // 2) < 5, 0.8, 0.35)
        chosen = lo + np.flatnonzero(rng.random(n_items // 2) < p)
        us += [u] * len(chosen)
        its += list(chosen)
    return interactions(us, its, n_users=n_users, n_items=n_items)


def test_harness_blend_is_the_registered_blend_fitted_on_the_tuning_split(tmp_path) -> None:
    # the harness assembles its blend row from fits it already made; that must be exactly
    # what the registered model gives when its holdout is the harness's tuning split
    from recsight.models.blend import Blend

    b = bench_vs_peers
    members = ["recsight popular", "recsight ease"]
    sec = b.Section(
        key="t", title="t", task="ranking", source="planted", split_spec="user_random:0.8",
        ks=(10, 20), metrics=("ndcg", "recall"),
        ours=[b.Candidate("recsight popular", "popular"),
              b.Candidate("recsight ease", "ease", grid={"reg": [5.0, 50.0]}),
              b.Candidate("recsight blend", "blend", params={"grid": 4}, members=members)],
    )  # fmt: skip
    data = _planted()
    train, test, inner, valid = b._splits(sec, data, 42)
    cache = b.ScoreCache(tmp_path)
    scored, best_of = {}, {"recsight popular": {}, "recsight ease": {"reg": 50.0}}
    for cand in sec.ours[:2]:
        params = best_of[cand.label]
        scored[cand.label, "valid"] = b._fit_scores(cache, sec, "valid", cand, params, inner,
                                                    valid, 42)  # fmt: skip
        scored[cand.label, "test"] = b._fit_scores(cache, sec, "test", cand, params, train,
                                                   test, 42)  # fmt: skip
    res, _, params, value = b._blend_run(sec, sec.ours[2], scored, best_of, inner, valid,
                                         train, test, cache)  # fmt: skip

    model = Blend(models=params["models"], grid=4, valid_share=0.2, seed=43,
                  max_valid_users=None, verbose=False).fit(train)  # fmt: skip
    assert model.valid_ndcg_ == pytest.approx(value)
    assert model.weights_.tolist() == params["weights"]
    assert 0 < params["weights"][1] < 1  # a real mix, so the comparison tests the mixing too
    ref = evaluate_ranking(model, train, test, ks=(10, 20), metrics=("ndcg", "recall"))
    np.testing.assert_array_equal(res.users, ref.users)
    for key in ref.per_user:
        np.testing.assert_allclose(res.per_user[key], ref.per_user[key], atol=1e-12)

    # the cache answers a second time without fitting again
    again = b._fit_scores(cache, sec, "test", sec.ours[1], {"reg": 50.0}, train, test, 42)
    np.testing.assert_array_equal(again.scores, scored["recsight ease", "test"].scores)
    assert len(list(tmp_path.glob("*.npz"))) == 4
    # and so does the blend's weight search
    again = b._blend_run(sec, sec.ours[2], scored, best_of, inner, valid, train, test, cache)
    assert again[2] == params and again[3] == value
    assert len(list(tmp_path.glob("*.note.json"))) == 1
