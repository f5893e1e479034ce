"""Implicit ALS fitted by Spark MLlib, saved as recsight's own `ALS` model.

`SparkALS` is recsight's `ALS` (same hyperparameters, same saved layout: it saves under the
name ``als``, so `recsight recommend`, `recsight serve` and `load_model` read it as a plain
`ALS`) whose item factors come from ``pyspark.ml.recommendation.ALS`` with
``implicitPrefs=True``. The event weights are computed and summed per (user, item) on Spark;
the driver then collects the aggregated matrix, which every recsight model keeps (`seen_`).

Parameter mapping (recsight / `implicit` -> MLlib):

- ``factors`` -> ``rank``; ``iterations`` -> ``maxIter``; ``seed`` -> ``seed``.
- ``alpha`` -> ``alpha``. `implicit` uses confidence ``c = alpha * w``, MLlib
  ``c = 1 + alpha * w``: equal up to the constant 1, negligible when ``alpha * w`` is large.
- ``reg`` -> ``regParam = reg * (n_users + n_items) / (2 * nnz)``. MLlib multiplies
  ``regParam`` by each user's (item's) number of interactions (ALS-WR), `implicit` uses
  ``reg`` for every row; this choice makes the total regularisation over all users and items
  the same.
- ``num_threads`` has no MLlib counterpart (Spark's parallelism is the cluster's).

After MLlib has fitted the item factors, the user factors are recomputed with recsight's
exact fold-in equation (`ALS.fold_in`, with ``reg`` and ``alpha``), as the single-node ALS
does after `implicit`: a known user's history folded in then reproduces their trained row,
in `recommend`, in `serve` and after new events alike.
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsight.data.dataset import DEFAULT_WEIGHTS, IdIndex, Interactions
from recsight.errors import InputError
from recsight.models.als import ALS
from recsight.spark.session import default_parallelism, is_connect

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


#: MLlib ALS checkpoints its factors every this many iterations (where the SparkContext has a
#: checkpoint directory: `ensure_checkpoint_dir`), which bounds the lineage each task carries.
CHECKPOINT_INTERVAL = 5


def mllib_reg_param(reg: float, n_users: int, n_items: int, nnz: int) -> float:
    """MLlib's ``regParam`` for recsight's ``reg`` (see the module docstring)."""
    return float(reg) * (n_users + n_items) / (2.0 * max(nnz, 1))


def weight_column(weights: Mapping[str, float | str] | None = None) -> Column:
    """The per-event weight as a Spark column, by the rule of `Interactions.weights`: a number
    per event type, or "value" for the event's value (1 where it is missing or NaN); types
    not listed weigh 0."""
    from pyspark.sql import functions as F

    rules = DEFAULT_WEIGHTS if weights is None else weights
    value = F.col("value").cast("double")
    expr = None
    for name, rule in rules.items():
        if rule == "value":
            w = F.when(value.isNull() | F.isnan(value), F.lit(1.0)).otherwise(value)
        else:
            w = F.lit(float(rule))
        cond = F.col("event_type") == F.lit(name)
        expr = F.when(cond, w) if expr is None else expr.when(cond, w)
    return F.lit(0.0) if expr is None else expr.otherwise(F.lit(0.0))


def filled_ratings(event_log: DataFrame, policy: str | None) -> DataFrame:
    """`event_log` with missing rating values filled by the `--fill-rating` policy, as
    `Interactions.rating_values` fills them locally: the mean of the item's ("item-mean") or
    user's ("user-mean") real ratings among these events, else of all of them ("global-mean",
    and the fallback). Computed from the rows given, so a training split never sees test
    ratings. Without a policy (or without real ratings) the log is returned unchanged."""
    from pyspark.sql import functions as F

    keys = {"item-mean": "item_idx", "user-mean": "user_idx", "global-mean": None}
    if policy in (None, "none"):
        return event_log
    if policy not in keys:
        raise InputError(f"fill_rating: expected one of none, {', '.join(keys)}, not {policy!r}")
    value = F.col("value").cast("double")
    missing = value.isNull() | F.isnan(value)
    is_rating = F.col("event_type") == F.lit("rating")
    real = event_log.where(is_rating & ~missing)
    overall = real.agg(F.avg(value).alias("m")).first()["m"]
    if overall is None:
        return event_log
    fill = F.lit(float(overall))
    key = keys[policy]
    if key is not None:
        means = real.groupBy(key).agg(F.avg(value).alias("_fill_mean"))
        event_log = event_log.join(F.broadcast(means), on=key, how="left")
        fill = F.coalesce(F.col("_fill_mean"), fill)
    filled = F.when(is_rating & missing, fill).otherwise(F.col("value"))
    return event_log.withColumn("value", filled).drop("_fill_mean")


class SparkALS(ALS):
    """`ALS` whose fit runs on the active SparkSession (MLlib ALS, ``implicitPrefs``).

    `fit(train)` takes recsight `Interactions` (their id space is kept, so the evaluator
    can score it like any model); `fit_log` takes events already on Spark (a dataset layout
    read by `recsight.spark.layout`). Saved models are plain `ALS`.
    """

    def fit(self, train: Interactions) -> SparkALS:
        spark = _active_session()
        x = train.to_csr(self.weights)
        self._set_training(train, x)
        coo = x.tocoo()
        pairs = pd.DataFrame(
            {
                "u": coo.row.astype(np.int32),
                "i": coo.col.astype(np.int32),
                "w": coo.data.astype(np.float64),
            }
        )
        self._fit_pairs(spark.createDataFrame(pairs))
        return self

    def fit_log(
        self,
        event_log: DataFrame,
        users: Sequence[str],
        items: Sequence[str],
        fill_rating: str | None = None,
    ) -> SparkALS:
        """Fit on a Spark DataFrame shaped like the store's ``event_log`` (``user_idx,
        item_idx, event_type, value``) whose indices number `users` and `items`, as
        `recsight.spark.layout.read_layout` registers a dataset layout (so the id space is
        the one the local engine reads from the same folder). Missing ratings are filled by
        the layout's `fill_rating` policy (`filled_ratings`). The weighting and the
        per-(user, item) sums run on Spark; the summed matrix is collected to the driver."""
        from pyspark.sql import functions as F

        missing = {"user_idx", "item_idx", "event_type", "value"} - set(event_log.columns)
        if missing:
            raise InputError(
                f"event_log: missing column(s) {', '.join(sorted(missing))}; expected "
                "user_idx, item_idx, event_type, value"
            )
        pairs = (
            filled_ratings(event_log, fill_rating)
            .select("user_idx", "item_idx", weight_column(self.weights).alias("w"))
            .groupBy("user_idx", "item_idx")
            .agg(F.sum("w").alias("w"))
            .where(F.col("w") != 0)
            .select(
                F.col("user_idx").cast("int").alias("u"),
                F.col("item_idx").cast("int").alias("i"),
                F.col("w").cast("double").alias("w"),
            )
            .cache()
        )
        try:
            local = pairs.toPandas()
            shape = (len(users), len(items))
            seen = sp.csr_matrix(
                (local.w.to_numpy(np.float32), (local.u.to_numpy(), local.i.to_numpy())),
                shape=shape,
            )
            self.users_ = IdIndex(np.asarray(users, dtype=object))
            self.items_ = IdIndex(np.asarray(items, dtype=object))
            self.seen_ = seen.tocsr().astype(np.float32)
            self.seen_.sort_indices()
            self._derive()
            self._fit_pairs(pairs)
        finally:
            pairs.unpersist()
        return self

    def mllib_params(self) -> dict[str, Any]:
        """The MLlib ALS parameters this model fits with (needs the training matrix)."""
        n_users, n_items = self.seen_.shape
        return {
            "rank": int(self.factors),
            "maxIter": int(self.iterations),
            "regParam": mllib_reg_param(self.reg, n_users, n_items, self.seen_.nnz),
            "alpha": float(self.alpha),
            "seed": int(self.seed),
        }

    def _fit_pairs(self, pairs: DataFrame) -> None:
        """MLlib ALS on (u, i, w) rows; item factors from it, user factors re-solved."""
        from pyspark.ml.recommendation import ALS as MLlibALS

        if self.seen_.nnz == 0:
            raise InputError("events: every event weighs 0 under the model's weights")
        params = self.mllib_params()
        # one block per core/executor slot: MLlib's default of 10 only adds tasks on a small
        # cluster or in local mode (kept over Spark Connect, which does not expose the slots)
        slots = default_parallelism(pairs.sparkSession)
        blocks = {} if slots is None else {"numUserBlocks": slots, "numItemBlocks": slots}
        if not math.isfinite(params["regParam"]) or params["regParam"] < 0:
            raise InputError(f"reg: expected a non-negative number, not {self.reg}")
        ensure_checkpoint_dir(pairs.sparkSession)
        als = MLlibALS(
            implicitPrefs=True,
            checkpointInterval=CHECKPOINT_INTERVAL,
            userCol="u",
            itemCol="i",
            ratingCol="w",
            nonnegative=False,
            **blocks,
            **params,
        )
        fitted = als.fit(pairs)
        self.item_factors_ = _factor_matrix(fitted.itemFactors, self.n_items, self.factors)
        self._derive()
        self.user_factors_ = self.fold_in(self.seen_)


def ensure_checkpoint_dir(spark: SparkSession) -> str | None:
    """The SparkContext's checkpoint directory; in local mode a temporary one is set (removed at
    exit) when there is none.

    MLlib ALS cuts its RDD lineage every ``checkpointInterval`` iterations only where a
    checkpoint directory is set. Without one the lineage grows with every iteration, each task
    deserializes all of it recursively, and after enough iterations a task thread overflows its
    stack: a fatal error, which ends the executor (in local mode, the driver's JVM). On a
    cluster the directory must be storage every executor reaches (``--spark-conf
    spark.checkpoint.dir=hdfs://...``); over Spark Connect it is the server's setting.
    """
    if is_connect(spark):
        return None
    sc = spark.sparkContext
    current = sc.getCheckpointDir()
    if current or not sc.master.startswith("local"):
        return current
    path = tempfile.mkdtemp(prefix="recsight-checkpoints-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    sc.setCheckpointDir(path)
    return sc.getCheckpointDir()


def _active_session() -> SparkSession:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise InputError("SparkALS: no active SparkSession; start one (recsight --engine spark)")
    return spark


def _factor_matrix(factors: DataFrame, n: int, rank: int) -> np.ndarray:
    """MLlib's (id, features) rows as a dense (n, rank) float32 matrix; ids MLlib never saw
    (no non-zero weight) get zero rows."""
    local = factors.toPandas()
    out = np.zeros((n, int(rank)), dtype=np.float32)
    if len(local):
        out[local["id"].to_numpy()] = np.vstack(local["features"].to_numpy())
    return out
