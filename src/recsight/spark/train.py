"""`recsight train NAME --engine spark --events DIR`: which models train on Spark, and how.

- ``als``: MLlib ALS on the cluster (`recsight.spark.als.SparkALS`), saved as recsight's ALS.
- the neural models (``sasrec``, ...): PyTorch DDP launched by TorchDistributor
  (`recsight.spark.distributed`), ``--param num_processes=N`` (default 2).

Both read the dataset layout through Spark (`recsight.spark.layout`), in the id space the
local engine gives the same folder; `--split` holds out the same test events as on the local
engine. Other models do not run on Spark and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsight.data.dataset import IdIndex, Interactions
from recsight.data.pseudonyms import META_FINGERPRINT
from recsight.data.splits import Split, split
from recsight.errors import EngineError
from recsight.models import Recommender, create_model, model_class
from recsight.models.neural.base import TorchRecommender
from recsight.spark.session import spark_master

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: DDP processes when `num_processes` is not given.
DEFAULT_PROCESSES = 2


def require_spark_trainable(name: str, params: dict[str, Any]) -> None:
    """Refuse, in one line, a model that `recsight train --engine spark` does not train (ALS
    runs on MLlib, the neural models on DDP; the rest are single-machine models)."""
    if name != "als" and not issubclass(model_class(name), TorchRecommender):
        raise EngineError(
            f"`recsight train {name}` does not run on Spark (als and the neural models do, "
            "e.g. sasrec): drop --engine spark to train it on the local engine"
        )
    if name == "als" and "num_processes" in params:
        raise EngineError("num_processes: applies to the neural models; MLlib ALS uses the cluster")


def _ids(spark: SparkSession, view: str, key: str, idx: str) -> np.ndarray:
    frame = spark.table(view).select(key, idx).orderBy(idx).toPandas()
    if not np.array_equal(frame[idx].to_numpy(), np.arange(len(frame))):
        raise EngineError(f"{view}: the id map is not numbered 0..n-1")  # a broken layout view
    return frame[key].astype(str).to_numpy(dtype=object)


def collect_interactions(spark: SparkSession, fill_rating: str | None = None) -> Interactions:
    """The registered layout's events as `Interactions` on the driver (for the neural models,
    whose every DDP process holds all the training data), in the store's id space;
    `fill_rating` is the layout's ``--fill-rating`` policy (applied at fit time)."""
    from pyspark.sql import functions as F

    users = _ids(spark, "user_map", "user_id", "user_idx")
    items = _ids(spark, "item_map", "item_id", "item_idx")
    log = (
        spark.table("event_log")
        .select(
            "seq",
            "user_idx",
            "item_idx",
            "event_type",
            "value",
            (F.unix_micros(F.col("timestamp")) / 1e6).alias("ts"),
        )
        .orderBy("seq")
        .toPandas()
    )
    types = sorted(log["event_type"].dropna().astype(str).unique())
    ts = log["ts"].to_numpy(dtype=np.float64, na_value=np.nan)
    return Interactions(
        user_idx=log["user_idx"].to_numpy(np.int32),
        item_idx=log["item_idx"].to_numpy(np.int32),
        value=log["value"].to_numpy(np.float32, na_value=np.nan),
        event_type=pd.Categorical(log["event_type"], categories=types).codes.astype(np.int8),
        event_types=tuple(types),
        seq=log["seq"].to_numpy(np.int64),
        users=IdIndex(users),
        items=IdIndex(items),
        timestamp=None if np.isnan(ts).all() else ts,
        fill_rating=fill_rating,
    )


def train_on_spark(
    spark: SparkSession,
    name: str,
    events: str | Path,
    out: Path,
    params: dict[str, Any],
    split_spec: str | None = None,
    seed: int = 42,
) -> tuple[Recommender, dict[str, Any], Split | None]:
    """Fit model `name` with `params` on the layout at `events` and save it to `out`.

    Returns the model, facts for the report (events read, processes, MLlib parameters) and the
    manifest (the layout's pseudonym key fingerprint, under `META_FINGERPRINT`, so that
    `recommend --user` hashes the ids people give as it does for a model trained locally),
    and the split. With `split_spec` the events are collected to the driver and split there by
    `recsight.data.splits.split`, the single-node rules (ties in time by ingest order, `seq`),
    so both engines hold out the same events; the model fits on the fit part (train + valid)
    and the caller evaluates it on the test part, on the driver as on one machine."""
    from recsight.spark.layout import read_layout

    require_spark_trainable(name, params)
    params = dict(params)
    processes = params.pop("num_processes", None)
    layout = read_layout(spark, str(events))
    fill = getattr(layout.manifest, "fill_rating", None)
    facts: dict[str, Any] = {
        "engine": "spark",
        "events": str(events),
        META_FINGERPRINT: layout.manifest.pseudonym_key_fingerprint,
    }
    parts = data = None
    if split_spec is not None or name != "als":  # the neural models hold every event anyway
        data = collect_interactions(spark, fill)
        if split_spec is not None:
            parts = split(data, split_spec, seed=seed)
            data = parts.fit_part
    if name == "als":
        from recsight.spark.als import SparkALS

        model = SparkALS(**params)
        if data is not None:
            model.fit(data)  # the fit part's (user, item) weights go back to Spark
        else:  # weighted and summed on Spark, no per-event rows on the driver
            model.fit_log(
                spark.table("event_log"),
                _ids(spark, "user_map", "user_id", "user_idx"),
                _ids(spark, "item_map", "item_id", "item_idx"),
                fill_rating=fill,
            )
        model.save(out)
        n = len(data) if data is not None else int(spark.table("event_log").count())
        facts.update(n_train_events=n, mllib=model.mllib_params())
        return model, facts, parts
    from recsight.spark.distributed import fit_distributed

    n = DEFAULT_PROCESSES if processes is None else processes
    local = spark_master(spark).startswith("local")
    model, history = fit_distributed(create_model(name, **params), data, out, n, local_mode=local)
    facts.update(n_train_events=len(data), num_processes=n, history=history)
    return model, facts, parts
