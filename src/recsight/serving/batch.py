"""Batch top-k for every user: what `recsight recommend --all-users` writes.

`recommend_chunk` turns some users' events into their top-k rows with exactly what
`recsight recommend --user U --db DB` answers for each of them: a user the model trained on,
whose events are those it saw, is ranked from the model's own row (`Recommender.recommend`);
a user with new events has their history folded in (`score_history`); a user none of whose
items the model knows goes down the pipeline's fallback chain (a content model when the
pipeline has one, then popularity). Every list is ranked by the shared top-k and tie rule.
It takes a pandas frame and returns one, so Spark can call it inside ``mapInPandas``.

`recommend_all_users` streams a store's users through it in chunks, sorted by user id, and
writes a Parquet folder (one part per chunk, in user order) with rows ``user_id, rank (1..k),
item_id, score[, explanation]``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsight.data.dataset import DEFAULT_WEIGHTS
from recsight.data.store import Store
from recsight.errors import InputError
from recsight.evaluation.protocol import users_per_chunk
from recsight.llm.explain import explain_recommendation
from recsight.models.ann import ann_top_k
from recsight.models.topk import id_keys
from recsight.serving.pipeline import History, Pipeline

#: Columns of the output, in order (`explanation` only with explanations).
COLUMNS = ("user_id", "rank", "item_id", "score", "explanation")
#: Users whose events are read from the store at once (one scan of the events each).
READ_USERS = 100_000
#: Text when an explanation has no grounded evidence (as `recsight recommend` says).
UNGROUNDED = "popular with similar users"


@dataclass
class BatchReport:
    """What `recommend_all_users` wrote."""

    out: Path
    n_users: int
    n_rows: int
    n_parts: int
    sources: dict[str, int]  # users answered by: "model", "history", a fallback, "popular"


def _event_weights(events: pd.DataFrame) -> np.ndarray:
    """Per-event weights as the data layer gives them (`DEFAULT_WEIGHTS`; a "value" rule
    weighs the event's value, 1 when missing; unlisted types weigh 0)."""
    w = np.zeros(len(events), dtype=np.float32)
    types = events["event_type"].astype(str).to_numpy()
    values = pd.to_numeric(events["value"], errors="coerce").to_numpy(dtype=np.float64)
    for name, rule in DEFAULT_WEIGHTS.items():
        mask = types == name
        if rule == "value":
            w[mask] = np.where(np.isnan(values[mask]), 1.0, values[mask])
        else:
            w[mask] = float(rule)
    return w


def _rows(
    user: str, ids: np.ndarray, scores: np.ndarray, explanations: list[str] | None = None
) -> list[tuple]:
    out = []
    for rank, (item, score) in enumerate(zip(ids, scores, strict=True), 1):
        if item is None:
            break
        row = (user, rank, str(item), float(score))
        out.append(row if explanations is None else (*row, explanations[rank - 1]))
    return out


def recommend_chunk(
    pipeline: Pipeline,
    events: pd.DataFrame,
    k: int = 10,
    explain: bool = False,
    users: list[str] | None = None,
    memory_budget: int | str | None = None,
    sources: dict[str, int] | None = None,
    ann: bool = False,
) -> pd.DataFrame:
    """Top-k rows for the users of `events` (columns ``user_id, item_id, event_type,
    value``; every event of each user), plus `users` that have no events (cold: fallback
    chain). Returns ``user_id, rank, item_id, score[, explanation]`` sorted by user id and
    rank. Scores are computed for as many users at once as `memory_budget` allows (default
    a quarter of RAM or half of the available memory, whichever is less). `sources`, when
    given, counts which stage answered each user. With `ann`, candidates come from the
    pipeline's ANN index and are re-scored exactly (`recsight.models.ann`)."""
    if k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    if ann and pipeline.ann is None:
        raise InputError(
            "--ann: the model folder has no ANN index; train it with `recsight train --ann`"
        )
    model = pipeline.main
    ev = events[["user_id", "item_id", "event_type", "value"]].copy()
    ev["user_id"] = ev["user_id"].astype(str)
    ev["item_id"] = ev["item_id"].astype(str)
    ev["w"] = _event_weights(ev)
    ev = ev[ev["w"] != 0]
    # one row per (user, item), weights summed, as `Interactions.to_csr` makes them
    pairs = ev.groupby(["user_id", "item_id"], sort=True, observed=True)["w"].sum()
    pairs = pairs[pairs != 0].reset_index()
    pairs["col"] = model.items_.index_of(pairs["item_id"], missing="ignore")
    all_users = pd.Index(sorted(set(events["user_id"].astype(str)) | set(map(str, users or ()))))
    by_user = pairs.groupby("user_id", sort=False)
    n_store = by_user.size().reindex(all_users, fill_value=0).to_numpy()
    any_known = (pairs["col"] >= 0).groupby(pairs["user_id"]).any()
    any_known = any_known.reindex(all_users, fill_value=False).to_numpy()
    uidx = model.users_.index_of(list(all_users), missing="ignore")
    trained = np.where(uidx >= 0, np.diff(model.seen_.indptr)[np.maximum(uidx, 0)], -1)
    step = users_per_chunk(model.n_items, memory_budget)
    answers: dict[str, list[tuple]] = {}
    counts = sources if sources is not None else {}

    def count(source: str, n: int = 1) -> None:
        counts[source] = counts.get(source, 0) + n

    # 1. users the model trained on, with the events it saw: the model's own rows
    own = (uidx >= 0) & (n_store == trained)
    own_users = list(all_users[own])
    for s in range(0, len(own_users), step):
        chunk = own_users[s : s + step]
        if ann:
            rows_idx = model.users_.index_of(chunk)
            ids, scores = ann_top_k(
                model,
                pipeline.ann,
                model.user_factors_[rows_idx],
                model.seen_[rows_idx],
                k,
                id_keys(chunk),
            )
        else:
            ids, scores = model.recommend(chunk, k=k)
        for u, i, v in zip(chunk, ids, scores, strict=True):
            why = [_explain(pipeline, u, x) for x in i] if explain else None
            answers[u] = _rows(u, i, v, why)
    count("model", len(own_users))

    # 2. users with other events than the model saw: their history folded in
    folded = list(all_users[~own & any_known])
    known_pairs = pairs[pairs["col"] >= 0]
    for s in range(0, len(folded), step):
        chunk = pd.Index(folded[s : s + step])
        part = known_pairs[known_pairs["user_id"].isin(chunk)]
        h = sp.csr_matrix(
            (part["w"].to_numpy(np.float32), (chunk.get_indexer(part["user_id"]), part["col"])),
            shape=(len(chunk), model.n_items),
            dtype=np.float32,
        )
        if ann:
            ids, vals = ann_top_k(model, pipeline.ann, model.fold_in(h), h, k, id_keys(list(chunk)))
        else:
            scores = np.array(model.score_history(h), dtype=np.float32)
            ids, vals = model._rank(scores, h, k, True, None, id_keys(list(chunk)))
        for u, i, v in zip(chunk, ids, vals, strict=True):
            why = None
            if explain:
                items = by_user.get_group(u)["item_id"].tolist()
                why = [_explain(pipeline, items, x) for x in i]
            answers[u] = _rows(u, i, v, why)
    count("history", len(folded))

    # 3. users the model knows nothing of: the pipeline's fallback chain
    for u in all_users[~own & ~any_known]:
        items = by_user.get_group(u)["item_id"].tolist() if u in by_user.groups else []
        h = History(user_id=u, items=items, types=["view"] * len(items))
        h.values = [None] * len(items)
        recs = pipeline.recommend(h, k=k, explain=explain)
        answers[u] = [
            (u, n, r.item_id, r.score) + ((r.explanation or "",) if explain else ())
            for n, r in enumerate(recs.items, 1)
        ]
        count(recs.source)

    rows: list[tuple] = []
    for u in all_users:
        rows += answers[u]
    cols = list(COLUMNS if explain else COLUMNS[:-1])
    frame = pd.DataFrame(rows, columns=cols)
    frame["rank"] = frame["rank"].astype(np.int32)
    frame["score"] = frame["score"].astype(np.float32)
    return frame


def _explain(pipeline: Pipeline, user_or_history: str | list[str], item: object) -> str:
    """The grounded explanation `recsight recommend --explain` gives for one item."""
    if item is None:
        return ""
    exp = explain_recommendation(
        pipeline.main, user_or_history, str(item), pipeline.catalog, llm=pipeline.llm
    )
    return exp.text if exp.grounded else UNGROUNDED


def _chunk_events(store: Store, users: list[str]) -> pd.DataFrame:
    """All events of `users` (one scan of the event table)."""
    store.con.register("_batch_users", pd.DataFrame({"user_id": users}))
    try:
        return store.con.execute(
            """
            SELECT u.user_id, i.item_id, e.event_type, e.value
            FROM event_log e
            JOIN user_map u ON e.user_idx = u.user_idx
            JOIN item_map i ON e.item_idx = i.item_idx
            WHERE u.user_id IN (SELECT user_id FROM _batch_users)
            """
        ).df()
    finally:
        store.con.unregister("_batch_users")


def recommend_all_users(
    pipeline: Pipeline,
    store: Store,
    out: str | Path,
    k: int = 10,
    explain: bool = False,
    read_users: int = READ_USERS,
    memory_budget: int | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    ann: bool = False,
) -> BatchReport:
    """Write every user's top-k (all users of `store`, sorted by user id) to the Parquet
    folder `out`, `read_users` users per part. `progress(done, total)` after each part."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InputError(f"--out {out}: exists and is not empty; remove it or pick another")
    users = [
        r[0] for r in store.con.execute("SELECT user_id FROM user_map ORDER BY user_id").fetchall()
    ]
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources: dict[str, int] = {}
    n_rows = n_parts = 0
    for start in range(0, len(users), read_users):
        chunk = users[start : start + read_users]
        frame = recommend_chunk(
            pipeline,
            _chunk_events(store, chunk),
            k=k,
            explain=explain,
            users=chunk,
            memory_budget=memory_budget,
            sources=sources,
            ann=ann,
        )
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False),
            tmp / f"part-{n_parts:05d}.parquet",
        )
        n_rows += len(frame)
        n_parts += 1
        if progress is not None:
            progress(min(start + read_users, len(users)), len(users))
    # readers never see a half-written folder
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return BatchReport(out, len(users), n_rows, n_parts, sources)
