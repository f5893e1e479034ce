"""Every user's top-k on Spark: `recsight recommend --all-users --engine spark`.

The serving pipeline travels to the executors inside the scoring function, as its saved files
(model, fallbacks, manifest) plus the item metadata, and is loaded there once per Python
worker, so executors need recsight installed but no access to the driver's disk. (PySpark
broadcasts a function this large by itself; over Spark Connect, which has no broadcast
variables, it travels in the query plan, so the saved pipeline must fit the server's
``spark.connect.grpc.maxInboundMessageSize``, 128 MiB by default.)
Events are hash-partitioned by user and sorted within each partition, so every user's events
sit together; ``mapInPandas`` then streams each partition through
`recsight.serving.batch.recommend_chunk`, the same function the single-node command runs,
so both engines give the same rows: the model's own row for users it trained on, a fold-in
for users with new events, the fallback chain for users it does not know, the shared top-k
and tie rule, and (with `explain`) template explanations, computed on the executors.

Output: a Parquet folder with rows ``user_id, rank (1..k), item_id, score[, explanation]``
sorted by user id and rank, as the single-node command writes.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from recsight.errors import InputError
from recsight.serving.batch import recommend_chunk
from recsight.serving.pipeline import Pipeline
from recsight.spark.session import default_parallelism

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Complete users' events handed to `recommend_chunk` at once on an executor.
CHUNK_EVENTS = 200_000

#: Pipelines loaded in this (executor) process, by the token shipped with them.
_LOADED: dict[str, Pipeline] = {}


def _folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under a saved pipeline/model folder, by relative path."""
    return {
        str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
    }


def _pipeline(payload: tuple[str, dict[str, bytes], pd.DataFrame | None]) -> Pipeline:
    """The shipped pipeline, loaded once per worker process from its saved files."""
    token, files, items = payload
    if token not in _LOADED:
        with tempfile.TemporaryDirectory(prefix="recsight-pipeline-") as tmp:
            for rel, data in files.items():
                path = Path(tmp) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            _LOADED[token] = Pipeline.load(tmp, items=items)
    return _LOADED[token]


def output_schema(explain: bool) -> str:
    """The Spark schema of the output rows (the single-node command's columns)."""
    cols = "user_id string, rank int, item_id string, score float"
    return cols + (", explanation string" if explain else "")


def _partition_fn(
    payload: tuple[str, dict[str, bytes], pd.DataFrame | None],
    k: int,
    explain: bool,
    ann: bool = False,
):
    """The ``mapInPandas`` function: batches of one partition (sorted by user, so a user's
    rows may only be split across consecutive batches) -> top-k rows of complete users."""

    def score(rows: pd.DataFrame) -> pd.DataFrame:
        cold = rows["item_id"].isna()  # users without events (the left join's empty side)
        return recommend_chunk(
            _pipeline(payload),
            rows[~cold],
            k=k,
            explain=explain,
            users=rows.loc[cold, "user_id"].tolist(),
            ann=ann,
        )

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        pending: list[pd.DataFrame] = []
        n_pending = 0
        carry = None
        for batch in batches:
            rows = batch if carry is None else pd.concat([carry, batch], ignore_index=True)
            if not len(rows):
                continue
            # the last user may continue in the next batch: hold their rows back
            tail = (rows["user_id"] == rows["user_id"].iloc[-1]).to_numpy()
            carry = rows[tail]
            if not tail.all():
                pending.append(rows[~tail])
                n_pending += int((~tail).sum())
            if n_pending >= CHUNK_EVENTS:
                yield score(pd.concat(pending, ignore_index=True))
                pending, n_pending = [], 0
        if carry is not None:
            pending.append(carry)
        if pending:
            yield score(pd.concat(pending, ignore_index=True))

    return run


def recommend_all_users_spark(
    model_dir: str | Path,
    items: pd.DataFrame | None,
    events: DataFrame,
    users: DataFrame,
    out: str,
    k: int = 10,
    explain: bool = False,
    mode: str = "error",
    ann: bool = False,
) -> DataFrame:
    """Write every user's top-k to the Parquet folder `out` (see the module docstring).

    `model_dir`: a saved model or pipeline folder (what `Pipeline.load` reads); `items`: the
    item metadata (titles and categories for explanations and filters), or None.
    `events`: Spark rows ``user_id, item_id, event_type, value`` (the layout's `events`
    view); `users`: a ``user_id`` column listing every user to answer (users without events
    go down the fallback chain). `mode`: Spark's save mode when `out` exists (error,
    overwrite, append, ignore; Spark Connect takes no other spelling, e.g. errorifexists).
    With `ann`, every executor takes candidates from the model's ANN index (shipped with the
    folder: `recsight train --ann`) and re-scores them exactly, as the single-node
    ``--ann`` does. Returns the written rows as a DataFrame over `out`."""
    from pyspark.sql import functions as F

    if k < 1:
        raise InputError(f"--k: expected a positive integer, not {k}")
    spark = events.sparkSession
    folder = Path(model_dir)
    pipeline = Pipeline.load(folder)  # a bad folder fails here, in one line, not on executors
    if ann and pipeline.ann is None:
        raise InputError(
            "--ann: the model folder has no ANN index; train it with `recsight train --ann`"
        )
    ev = events.select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        F.col("event_type").cast("string").alias("event_type"),
        F.col("value").cast("double").alias("value"),
    )
    everyone = users.select(F.col("user_id").cast("string").alias("user_id")).distinct()
    rows = everyone.join(ev, "user_id", "left")
    # one partition per task slot; over Spark Connect (slots unknown) the session's shuffle
    # partitions, which adaptive execution coalesces
    slots = default_parallelism(spark)
    rows = rows.repartition(*([slots] if slots else []), "user_id").sortWithinPartitions("user_id")
    payload = (uuid.uuid4().hex, _folder_files(folder), items)
    recs = rows.mapInPandas(_partition_fn(payload, k, explain, ann), output_schema(explain))
    # kept: the global sort samples its input before shuffling it, which would score every
    # user twice
    recs = recs.persist()
    try:
        recs.orderBy("user_id", "rank").write.mode(mode).parquet(out)
    finally:
        recs.unpersist()
    return spark.read.parquet(out)
