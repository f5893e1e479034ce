"""Micro-batching: concurrent requests share one model pass and get the answers they would
get alone; torch's thread count is set once at start-up, never on the request path."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recsight.data.store import Store
from recsight.errors import InputError
from recsight.models.registry import create_model
from recsight.serving.app import ServiceConfig, create_app
from recsight.serving.batching import MicroBatcher
from recsight.serving.pipeline import History, Pipeline, RecommendRequest

USERS = [f"u{i}" for i in range(1, 41)] + ["nobody-yet"]


def test_batcher_groups_waiting_requests_and_fails_them_alone():
    seen: list[list[int]] = []

    def run(requests):
        seen.append(list(requests))
        return [ValueError(f"bad {r}") if r == 7 else r * 10 for r in requests]

    batcher = MicroBatcher(run, window=0.05, max_batch=8)

    async def many() -> list:
        return await asyncio.gather(*(batcher.submit(n) for n in range(20)), return_exceptions=True)

    out = asyncio.run(many())
    batcher.close()
    assert [o for n, o in enumerate(out) if n != 7] == [n * 10 for n in range(20) if n != 7]
    assert isinstance(out[7], ValueError) and str(out[7]) == "bad 7"
    # 20 requests submitted at once, 8 at most per pass: 3 passes, every request once
    assert [len(b) for b in seen] == [8, 8, 4]
    assert sorted(r for b in seen for r in b) == list(range(20))
    assert (batcher.batches, batcher.requests) == (3, 20)
    with pytest.raises(RuntimeError, match="shutting down"):
        asyncio.run(batcher.submit(1))


def test_a_failed_pass_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def run(requests):
        calls.append(len(requests))
        if len(calls) == 1:
            raise RuntimeError("model broke")
        return list(requests)

    batcher = MicroBatcher(run, window=0.0)
    with pytest.raises(RuntimeError, match="model broke"):
        asyncio.run(batcher.submit(1))
    assert asyncio.run(batcher.submit(2)) == 2
    batcher.close()


def requests_for(store_path: Path, pipe: Pipeline) -> list[RecommendRequest]:
    """Every path of the pipeline: users with histories (main model), an empty history
    (popularity), an anonymous history, unknown items only (popularity), a category filter,
    seen items kept, a large k, explanations, an unknown category and a bad k."""
    with Store(store_path, read_only=True) as s:
        events = s.con.execute(
            "SELECT user_id, item_id, event_type, value FROM events ORDER BY seq"
        ).df()
    out = []
    for n, user in enumerate(USERS):
        ev = events[events.user_id == user].tail(50)
        h = History(user, ev.item_id.tolist(), ev.event_type.tolist(), ev.value.tolist())
        out.append(RecommendRequest(h, k=5 + n % 7, exclude_seen=n % 5 != 0))
    anon = History(None, ["i1", "i2", "i3"], ["view"] * 3, [None] * 3)
    category = pipe.category("i4")
    out += [
        RecommendRequest(anon, k=10, category=category),
        RecommendRequest(History(None, ["no-such-item"], ["view"], [None]), k=4),
        RecommendRequest(anon, k=80),
        RecommendRequest(anon, k=5, explain=True),
        RecommendRequest(anon, k=5, category="no-such-category"),
        RecommendRequest(anon, k=0),
    ]
    return out


def lists(answer) -> list[tuple[str, float]]:
    return [(r.item_id, r.score) for r in answer.items]


def answers_and_alone(pipe: Pipeline, reqs: list[RecommendRequest], many: list):
    """(batched answer, the request's answer alone) for each request that has a list; a
    request's error must be the error it gets alone, and the source the same."""
    for req, got in zip(reqs, many, strict=True):
        try:
            alone = pipe.recommend(req.history, req.k, req.exclude_seen, req.category, req.explain)
        except InputError as exc:
            assert isinstance(got, InputError) and str(got) == str(exc)
            continue
        assert got.source == alone.source
        yield got, alone


def test_recommend_many_equals_recommend_alone(shop_model, store_copy):
    """One pass for all requests gives each the list `recommend` gives it alone (item-kNN
    scores a sparse product, row by row, so scores agree to the bit)."""
    _, model = shop_model
    with Store(store_copy, read_only=True) as s:
        pipe = Pipeline.load(model, s.items_frame())
    reqs = requests_for(store_copy, pipe)
    many = pipe.recommend_many(reqs)
    assert len(many) == len(reqs)
    for got, alone in answers_and_alone(pipe, reqs, many):
        assert lists(got) == lists(alone)
        assert [r.explanation for r in got.items] == [r.explanation for r in alone.items]
    sources = [getattr(a, "source", None) for a in many]
    assert sources.count("main") >= 40 and "popular" in sources
    assert many[-2].items == [] and isinstance(many[-1], InputError)  # no such category; k=0


def test_ann_pipeline_answers_a_batch_with_one_fold_in_and_the_lists_of_single_requests(
    shop_model, store_copy, monkeypatch
):
    """With an ANN index the main model's requests of a micro-batch share one fold-in and
    one faiss search per shape (k, exclusion, filter), and each gets the list it gets
    alone. The fold-in of a batch may round in the last bits: same items, scores to 1e-5."""
    from recsight.models import ann
    from recsight.models.ann import build_for

    base, _ = shop_model
    with Store(base, read_only=True) as s:
        data, items = s.interactions(), s.items_frame()
    model = create_model("als", factors=16, iterations=5, num_threads=1).fit(data)
    pipe = Pipeline(model, items=items, ann=build_for(model))
    assert pipe.ann is not None
    reqs = requests_for(store_copy, pipe)
    searches: list[int] = []
    real = ann.AnnIndex.search

    def counted(self, queries, n):
        searches.append(len(queries))
        return real(self, queries, n)

    monkeypatch.setattr(ann.AnnIndex, "search", counted)
    folds: list[int] = []
    real_fold = type(model).fold_in
    monkeypatch.setattr(
        type(model), "fold_in", lambda self, h: folds.append(h.shape[0]) or real_fold(self, h)
    )
    many = pipe.recommend_many(reqs)
    main = [n for n, a in enumerate(many) if getattr(a, "source", None) == "main"]
    assert len(main) >= 40 and folds == [len(main)]
    shapes = {(reqs[n].k, reqs[n].exclude_seen, reqs[n].category) for n in main}
    assert len(searches) < len(main) and sum(searches) >= len(main) and len(shapes) > 1
    for got, alone in answers_and_alone(pipe, reqs, many):
        assert [r.item_id for r in got.items] == [r.item_id for r in alone.items]
        np.testing.assert_allclose(
            [r.score for r in got.items], [r.score for r in alone.items], rtol=1e-5
        )


@pytest.fixture(scope="module")
def sasrec_model(shop_model, tmp_path_factory) -> Path:
    base, _ = shop_model
    with Store(base, read_only=True) as s:
        data = s.interactions()
    out = tmp_path_factory.mktemp("sasrec") / "model"
    model = create_model("sasrec", epochs=2, dim=16, layers=1, heads=1, max_len=20, verbose=False)
    model.fit(data).save(out)
    return out


def serve(client: TestClient, users: list[str], concurrent: bool) -> dict[str, list]:
    def get(user: str) -> list:
        r = client.get(f"/recommendations/{user}?k=10")
        assert r.status_code == 200, r.text
        return [(x["item_id"], x["score"]) for x in r.json()["recommendations"]]

    if not concurrent:
        return {u: get(u) for u in users}
    with ThreadPoolExecutor(16) as pool:
        return dict(zip(users, pool.map(get, users), strict=True))


@pytest.mark.parametrize("name", ["itemknn", "sasrec"])
def test_concurrent_requests_get_the_lists_of_sequential_ones(
    name, shop_model, sasrec_model, store_copy
):
    """Over HTTP: the same users' lists, one request at a time and 16 at a time (a long
    window so that they share passes). SASRec's batched forward pass may round scores
    differently in the last bits (BLAS kernels differ with the batch size): same items in
    the same order, scores to 1e-5."""
    model = shop_model[1] if name == "itemknn" else sasrec_model
    config = ServiceConfig(model=model, db=store_copy, batch_window_ms=20)
    with TestClient(create_app(config)) as client:
        batcher = client.app.state.service.batcher
        sequential = serve(client, USERS, concurrent=False)
        assert batcher.batches == batcher.requests == len(USERS)  # one pass each
        concurrent = serve(client, USERS, concurrent=True)
        # fewer passes than requests: concurrent requests shared them
        assert batcher.batches - len(USERS) < len(USERS)
    for user in USERS:
        got, expect = concurrent[user], sequential[user]
        assert [i for i, _ in got] == [i for i, _ in expect], user
        if name == "itemknn":
            assert got == expect
        else:
            np.testing.assert_allclose([s for _, s in got], [s for _, s in expect], rtol=1e-5)


def test_torch_threads_are_set_once_at_start_up(sasrec_model, store_copy, monkeypatch):
    """The service sets torch's thread count when it loads a torch model and restores it at
    shutdown; requests never change it (a process-wide setting that concurrent requests
    would race on), and the model scores with it."""
    import torch

    before = torch.get_num_threads()
    calls: list[int] = []
    real = torch.set_num_threads

    def spy(n: int) -> None:
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", spy)
    config = ServiceConfig(model=sasrec_model, db=store_copy, torch_threads=2)
    with TestClient(create_app(config)) as client:
        assert calls == [2]
        model = client.app.state.service.pipeline.main
        assert model.threads == 1  # the model's own setting, which serving leaves aside
        scoring = model._traced  # what the service scores with (see the test below)
        during: list[int] = []

        def score(padded):  # on the thread that runs the model
            during.append(torch.get_num_threads())
            return scoring(padded)

        monkeypatch.setattr(model, "_traced", score)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda u: client.get(f"/recommendations/{u}?explain=1"), USERS))
        assert {c.status_code for c in codes} == {200}
        assert calls == [2] and len(during) >= 40 and set(during) == {2}
    assert calls == [2, before]


def test_sequence_models_serve_through_a_trace_with_the_eager_answers(sasrec_model, store_copy):
    """The service scores SASRec through a TorchScript trace of its network (less CPU per
    pass, one GIL release per pass): the lists, explanations included, are the eager
    network's, and new weights drop the trace."""
    config = ServiceConfig(model=sasrec_model, db=store_copy)
    with TestClient(create_app(config)) as client:
        model = client.app.state.service.pipeline.main
        assert model._traced is not None
        calls = 0
        traced = model._traced

        def counted(padded):
            nonlocal calls
            calls += 1
            return traced(padded)

        model._traced = counted
        fast = {u: client.get(f"/recommendations/{u}?k=10&explain=1").json() for u in USERS}
        assert calls >= len(USERS) - 1  # every known user's pass went through the trace
        model._traced = None
        eager = {u: client.get(f"/recommendations/{u}?k=10&explain=1").json() for u in USERS}
    for user in USERS:
        got, expect = fast[user]["recommendations"], eager[user]["recommendations"]
        assert [r["item_id"] for r in got] == [r["item_id"] for r in expect], user
        assert [r["evidence"] for r in got] == [r["evidence"] for r in expect], user
        np.testing.assert_allclose(
            [r["score"] for r in got], [r["score"] for r in expect], rtol=1e-6
        )
    with Store(store_copy, read_only=True) as s:
        data = s.interactions()
    assert model.trace_scoring() and model._traced is not None
    model.epochs = 1
    model.fit(data)
    assert model._traced is None
