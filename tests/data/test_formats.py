"""Each real format round-trips with its exact published counts."""

from __future__ import annotations

import pytest

from recsight.data.ingest import ingest
from recsight.data.store import Store
from tests.conftest import need


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        yield s


def test_movielens_100k_folder(store, data_dir):
    need(data_dir / "ml-100k" / "u.data")
    report = ingest(store, data_dir / "ml-100k")
    info = store.info()
    assert (report.rows_read, report.kept, report.n_dropped) == (100_000, 100_000, 0)
    assert (info.n_events, info.n_users, info.n_items) == (100_000, 943, 1_682)
    assert (info.n_catalog_items, info.n_catalog_users) == (1_682, 943)
    assert info.event_types == {"rating": 100_000}
    assert info.rating_histogram == {"1": 6110, "2": 11370, "3": 27145, "4": 34174, "5": 21201}
    items = store.items_frame().set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story (1995)"
    assert list(items.loc["1", "tags"]) == ["Animation", "Children's", "Comedy"]
    assert items.loc["1", "category"] == "Animation"
    users = store.users_frame().set_index("user_id")
    assert users.loc["1", "age"] == 24 and users.loc["1", "occupation"] == "technician"


def test_movielens_100k_file_finds_side_files(store, data_dir):
    need(data_dir / "ml-100k" / "u.data")
    ingest(store, data_dir / "ml-100k" / "u.data")
    assert store.info().n_catalog_items == 1_682


def test_movielens_1m_users_subset(store, data_dir):
    path = need(data_dir / "ml-1m" / "ratings_users_0001-2999.dat")
    ingest(store, path)
    info = store.info()
    assert (info.n_events, info.n_users, info.n_items) == (487_650, 2_999, 3_615)
    assert (info.n_catalog_items, info.n_catalog_users) == (3_883, 6_040)
    assert info.rating_histogram["5"] == 108_545
    users = store.users_frame().set_index("user_id")
    assert users.loc["1", "gender"] == "F" and users.loc["2", "occupation"] == "self-employed"
    movies = store.items_frame().set_index("item_id")
    assert movies.loc["1", "title"] == "Toy Story (1995)"


def test_movielens_1m_pairs_have_no_time(store, data_dir):
    path = need(data_dir / "ml-1m" / "ratings_implicit_pairs.dat")
    ingest(store, path)
    info = store.info()
    assert (info.n_events, info.n_users, info.n_items) == (1_000_209, 6_040, 3_706)
    assert not info.has_timestamps and info.time_range["min"] is None
    assert info.rating_histogram == {}


def test_movielens_1m_folder_with_two_ratings_files_is_an_error(store, data_dir):
    folder = data_dir / "ml-1m"
    need(folder / "ratings_implicit_pairs.dat")
    with pytest.raises(
        Exception,
        match="more than one candidate ratings file: "
        "ratings_implicit_pairs.dat, ratings_users_0001-2999.dat",
    ):
        ingest(store, folder)


def test_taobao_users_head(store, data_dir):
    path = need(data_dir / "taobao-userbehavior" / "UserBehavior_users_head.csv")
    report = ingest(store, path)
    info = store.info()
    assert report.format == "taobao" and report.timezone == "Asia/Shanghai"
    assert (info.n_events, info.n_users, info.n_items) == (84_287, 814, 55_233)
    assert info.event_types == {"view": 75_693, "cart": 4_494, "fav": 2_351, "purchase": 1_749}
    assert info.raw_event_types == {"pv": 75_693, "cart": 4_494, "fav": 2_351, "buy": 1_749}
    assert store.timezone == "Asia/Shanghai"
    # unix seconds are instants: 1511544070 is 2017-11-24 17:21:10 UTC whatever the zone
    first = store.events_frame(limit=1).iloc[0]
    assert str(first["timestamp"]) == "2017-11-24 17:21:10"
    # the items table holds each item's category (most frequent one when several appear)
    assert store.count("items") == 55_233
