"""`recommend --all-users` on Spark gives the single-node rows, user for user."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from recsight.data.layout import open_store
from recsight.errors import InputError
from recsight.models import ALS, load_model
from recsight.models.ann import build_for
from recsight.models.neural.base import holdout_last
from recsight.serving.batch import recommend_chunk
from recsight.serving.pipeline import Pipeline
from recsight.spark.batch import recommend_all_users_spark

COLD = ["cold-a", "cold-b"]  # users with no events at all: the fallback chain answers


@pytest.fixture(scope="module")
def ml100k_case(ml100k_layout, tmp_path_factory):
    """ML-100K events, and a pipeline whose model trained on part of them: users with index
    % 10 == 0 are unknown to it (their histories are folded in), users % 10 == 1 have one
    event more than it saw (folded in too), the rest are ranked from the model's own rows."""
    with open_store(ml100k_layout) as s:
        data = s.interactions()
        events = s.events_frame()[["user_id", "item_id", "event_type", "value"]]
        items = s.items_frame()
    u = data.user_idx
    keep = (u % 10 != 0) & ~((u % 10 == 1) & holdout_last(data, min_events=1))
    model = ALS(factors=16, iterations=4).fit(data.subset(keep))
    folder = model.save(tmp_path_factory.mktemp("model") / "als")
    return events, items, folder


def run_both(spark, case, tmp_path, events, explain, folder=None, ann=False):
    _, items, model_folder = case
    folder = folder or model_folder
    users = pd.DataFrame({"user_id": sorted(set(events.user_id)) + COLD})
    sources: dict[str, int] = {}
    pipeline = Pipeline.load(folder, items=items)
    local = recommend_chunk(
        pipeline, events, k=10, explain=explain, users=COLD, sources=sources, ann=ann
    )
    out = str(tmp_path / "recs")
    recommend_all_users_spark(
        folder, items, spark.createDataFrame(events), spark.createDataFrame(users), out, k=10,
        explain=explain, ann=ann,
    )  # fmt: skip
    got = pd.read_parquet(out)
    # written sorted by user and rank, like the single-node folder
    assert got[["user_id", "rank"]].apply(tuple, axis=1).is_monotonic_increasing
    assert set(got.user_id) == set(users.user_id)
    return local, got, sources


def test_spark_rows_equal_single_node_rows_for_every_user(spark, ml100k_case, tmp_path):
    local, got, sources = run_both(spark, ml100k_case, tmp_path, ml100k_case[0], False)
    # all three paths ran: the model's rows, folded-in histories, the fallback chain
    assert sources["model"] > 0 and sources["history"] > 0 and sources["popular"] == 2
    assert list(got.columns) == ["user_id", "rank", "item_id", "score"]
    assert len(got) == 10 * (943 + 2)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), local.reset_index(drop=True))


def test_spark_explanations_equal_single_node_ones(spark, ml100k_case, tmp_path):
    events = ml100k_case[0]
    some = events[events.user_id.isin(sorted(set(events.user_id))[:40])]
    local, got, _ = run_both(spark, ml100k_case, tmp_path, some, True)
    assert list(got.columns) == ["user_id", "rank", "item_id", "score", "explanation"]
    assert got.explanation.str.contains("because you liked").mean() > 0.5
    pd.testing.assert_frame_equal(got.reset_index(drop=True), local.reset_index(drop=True))


def test_ann_rows_equal_single_node_ann_rows(spark, ml100k_case, tmp_path):
    # candidates from the model's ANN index on the executors, re-scored exactly: the rows of
    # the single-node --ann, for the model's own rows, folded-in histories and cold users
    events, _, folder = ml100k_case
    with_index = tmp_path / "als-ann"
    shutil.copytree(folder, with_index)
    build_for(load_model(folder)).save(with_index)
    local, got, sources = run_both(spark, ml100k_case, tmp_path, events, False, with_index, True)
    assert sources["model"] > 0 and sources["history"] > 0 and sources["popular"] == 2
    assert len(got) == 10 * (943 + 2)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), local.reset_index(drop=True))
    # a folder without an index is refused on the driver, before any Spark job
    frame = spark.createDataFrame(events.head(5))
    with pytest.raises(InputError, match="--ann: the model folder has no ANN index"):
        recommend_all_users_spark(folder, None, frame, frame, str(tmp_path / "o"), ann=True)


def test_bad_k_is_refused(spark, ml100k_case, tmp_path):
    events, items, folder = ml100k_case
    frame = spark.createDataFrame(events.head(5))
    with pytest.raises(InputError, match="--k"):
        recommend_all_users_spark(folder, items, frame, frame, str(tmp_path / "o"), k=0)
