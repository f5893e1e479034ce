"""Tests for the synthetic shop generator: files, determinism and the planted structure."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsight.data.generate import ShopSummary, generate_shop
from recsight.data.schema import EVENT_TYPES

N_USERS = 1500
N_ITEMS = 300
N_DAYS = 30
START = "2026-01-01"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> tuple[ShopSummary, dict[str, pd.DataFrame]]:
    out = tmp_path_factory.mktemp("shop")
    summary = generate_shop(out, n_users=N_USERS, n_items=N_ITEMS, n_days=N_DAYS, seed=3)
    frames = {name: pd.read_parquet(path) for name, path in summary.files.items()}
    return summary, frames


def _user_num(user_ids: pd.Series) -> np.ndarray:
    return user_ids.str.slice(1).astype(int).to_numpy()


def test_files_and_schemas(shop):
    summary, frames = shop
    assert set(summary.files) == {"events", "items", "users", "users_truth"}
    assert pq.read_schema(summary.files["events"]) == pa.schema([
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("event_type", pa.string()),
        ("value", pa.float64()),
        ("session_id", pa.string()),
    ])  # fmt: skip
    users = pq.read_schema(summary.files["users"])
    assert users.names == ["user_id", "age", "gender", "region", "signup_date"]
    assert pa.types.is_integer(users.field("age").type)
    assert users.field("signup_date").type == pa.date32()
    truth = pq.read_schema(summary.files["users_truth"])
    assert truth.names == ["user_id", "taste_cluster", "is_bot"]
    assert truth.field("is_bot").type == pa.bool_()
    items = pq.read_schema(summary.files["items"])
    assert items.names == ["item_id", "title", "description", "category", "price"]
    assert items.field("price").type == pa.float64()

    ev = frames["events"]
    assert summary.n_events == len(ev)
    assert summary.event_counts == ev.event_type.value_counts().reindex(EVENT_TYPES).to_dict()
    assert ev.event_id.is_unique
    assert set(ev.event_type) == set(EVENT_TYPES)
    assert ev.user_id.str.fullmatch(r"u\d+").all()
    assert set(ev.item_id) <= set(frames["items"].item_id)
    assert set(ev.user_id) == set(frames["users"].user_id)  # every user has a session
    assert ev.session_id.str.fullmatch(r"u\d+-\d+").all()
    assert (ev.session_id.str.split("-").str[0] == ev.user_id).all()
    t0 = pd.Timestamp(START, tz="UTC")
    assert ev.timestamp.min() >= t0
    assert ev.timestamp.max() < t0 + pd.Timedelta(days=N_DAYS)

    has_value = ev.event_type.isin(["cart", "purchase", "rating"])
    assert ev.value[~has_value].isna().all()
    assert ev.value[has_value].notna().all()
    assert (ev.value[ev.event_type.isin(["cart", "purchase"])] >= 1).all()

    # Rows are sorted by (user number, timestamp).
    key = pd.DataFrame({"u": _user_num(ev.user_id), "t": ev.timestamp})
    assert key.equals(key.sort_values(["u", "t"], kind="stable"))

    users_df, truth_df = frames["users"], frames["users_truth"]
    assert len(users_df) == len(truth_df) == N_USERS
    assert users_df.user_id.is_unique and (users_df.user_id == truth_df.user_id).all()
    assert set(users_df.gender) <= {"F", "M", "X"}
    assert users_df.age.between(16, 90).all()
    first_day = ev.groupby("user_id").timestamp.min().dt.date
    signup = users_df.set_index("user_id").signup_date.loc[first_day.index]
    assert (signup <= first_day).all()


def test_items_are_readable_and_share_vocabulary_within_category(shop):
    _, frames = shop
    items = frames["items"]
    assert items.item_id.is_unique and len(items) == N_ITEMS
    assert 8 <= items.category.nunique() <= 30
    assert (items.price > 0).all()
    assert items.title.str.len().gt(5).all() and items.description.str.len().gt(40).all()
    # Word overlap of descriptions is much higher within a category than across categories.
    words = [set(re.findall(r"[a-z]+", d.lower())) for d in items.description]
    cat = items.category.to_numpy()
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(items), size=(4000, 2))
    jac = np.array([len(words[a] & words[b]) / len(words[a] | words[b]) for a, b in pairs])
    same = cat[pairs[:, 0]] == cat[pairs[:, 1]]
    assert jac[same].mean() > 2 * jac[~same].mean()


def test_items_are_worded_from_the_packaged_catalog_file(shop):
    _, frames = shop
    path = resources.files("recsight.data").joinpath("catalog.json")
    cats = {c["name"]: c for c in json.loads(path.read_text("utf-8"))["categories"]}
    items = frames["items"]
    # small catalogs use a prefix of the file's table
    assert set(items.category) == set(list(cats)[: items.category.nunique()])
    for title, category in zip(items.title, items.category, strict=True):
        c = cats[category]
        assert any(title.startswith(b + " ") for b in c["brands"]), title
        assert any(n in title for n in c["nouns"]), title


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    kw = {"n_users": 300, "n_items": 100, "n_days": 20, "chunk_users": 120}
    a = generate_shop(tmp_path / "a", seed=7, **kw)
    b = generate_shop(tmp_path / "b", seed=7, **kw)
    c = generate_shop(tmp_path / "c", seed=8, **kw)
    for name in a.files:
        with open(a.files[name], "rb") as fa, open(b.files[name], "rb") as fb:
            assert fa.read() == fb.read(), name
    ev_a, ev_c = pd.read_parquet(a.files["events"]), pd.read_parquet(c.files["events"])
    assert not ev_a.equals(ev_c)
    assert not pd.read_parquet(a.files["items"]).equals(pd.read_parquet(c.files["items"]))


def _preceded_by(ev: pd.DataFrame, later: str, earlier: str) -> pd.Series:
    """For each `later` event: is there an `earlier` event of the same user & item at <= time?"""
    a = ev[ev.event_type == later][["event_id", "user_id", "item_id", "timestamp"]]
    b = ev[ev.event_type == earlier][["user_id", "item_id", "timestamp"]]
    m = a.merge(b, on=["user_id", "item_id"], suffixes=("", "_b"))
    ok = set(m.event_id[m.timestamp_b <= m.timestamp])
    return a.event_id.isin(ok)


def test_funnel_order(shop):
    _, frames = shop
    ev = frames["events"]
    n = ev.event_type.value_counts()
    assert n["view"] >= n["click"] >= n["cart"] >= n["purchase"] > 0
    assert 0.2 < n["click"] / n["view"] < 0.4
    assert 0.15 < n["cart"] / n["click"] < 0.4
    assert 0.25 < n["purchase"] / n["cart"] < 0.55
    assert _preceded_by(ev, "purchase", "cart").all()
    assert _preceded_by(ev, "cart", "click").all()
    assert _preceded_by(ev, "click", "view").all()
    assert _preceded_by(ev, "fav", "click").all()


def test_ratings_follow_purchases_and_are_stars(shop):
    _, frames = shop
    ev = frames["events"]
    r = ev[ev.event_type == "rating"]
    assert len(r) > 0
    assert r.value.between(1, 5).all() and (r.value == np.round(r.value)).all()
    assert r.value.nunique() >= 4
    assert _preceded_by(ev, "rating", "purchase").all()


def test_item_popularity_is_skewed(shop):
    _, frames = shop
    ev = frames["events"]
    views = ev[ev.event_type == "view"].item_id.value_counts()
    counts = np.sort(views.reindex(frames["items"].item_id, fill_value=0).to_numpy())
    n = len(counts)
    gini = (2 * np.arange(1, n + 1) - n - 1) @ counts / (n * counts.sum())
    assert gini > 0.5
    assert counts[::-1][: n // 5].sum() > 0.5 * counts.sum()


def test_taste_clusters_show_in_category_counts(shop):
    _, frames = shop
    ev, truth = frames["events"], frames["users_truth"]
    cat = ev.item_id.map(frames["items"].set_index("item_id").category)
    counts = pd.crosstab(ev.user_id, cat)
    counts = counts[counts.sum(axis=1) >= 20]
    x = counts.to_numpy(float, copy=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cluster = truth.set_index("user_id").taste_cluster.loc[counts.index].to_numpy()
    sim = x @ x.T
    same = cluster[:, None] == cluster[None, :]
    np.fill_diagonal(same, False)
    other = cluster[:, None] != cluster[None, :]
    assert truth.taste_cluster.nunique() >= 6
    assert sim[same].mean() > 1.5 * sim[other].mean()


def test_bots_are_fast_and_never_buy(shop):
    _, frames = shop
    ev, truth = frames["events"], frames["users_truth"]
    bots = set(truth.user_id[truth.is_bot])
    assert 1 <= len(bots) <= 0.01 * N_USERS
    minute = ev.timestamp.astype("int64") // 60_000
    per_user = (
        ev.assign(minute=minute)
        .groupby("user_id")
        .agg(n=("event_id", "size"), minutes=("minute", "nunique"))
    )
    rate = per_user.n / per_user.minutes
    assert rate[list(bots)].min() > 5 * rate.median()
    bot_ev = ev[ev.user_id.isin(bots)]
    assert (bot_ev.event_type == "view").all()
    assert bot_ev.groupby("user_id").size().min() >= 150


def test_sessions_have_short_inner_gaps_and_long_outer_gaps(shop):
    _, frames = shop
    ev = frames["events"]
    t = ev.timestamp.astype("int64").to_numpy()
    same_user = ev.user_id.to_numpy()[1:] == ev.user_id.to_numpy()[:-1]
    same_session = ev.session_id.to_numpy()[1:] == ev.session_id.to_numpy()[:-1]
    gap = np.diff(t)
    assert gap[same_session].max() < 30 * 60_000
    assert gap[same_user & ~same_session].min() >= 60 * 60_000
    # Repeat visits exist, and the hour-of-day profile peaks in the evening.
    assert ev.groupby("user_id").session_id.nunique().gt(1).mean() > 0.3
    hours = ev.timestamp.dt.hour
    assert hours.between(18, 22).mean() > 2 * hours.between(1, 5).mean()


def test_small_chunks_stream_the_same_users(tmp_path):
    done: list[int] = []
    small = generate_shop(
        tmp_path / "small",
        n_users=400,
        n_items=100,
        n_days=20,
        chunk_users=50,
        progress=done.append,
    )
    big = generate_shop(tmp_path / "big", n_users=400, n_items=100, n_days=20)
    assert done == list(range(50, 401, 50))
    assert pq.ParquetFile(small.files["events"]).metadata.num_row_groups == 8
    ev = pd.read_parquet(small.files["events"])
    assert ev.event_id.is_unique and len(ev) == small.n_events
    assert ev.user_id.nunique() == 400
    truth = pd.read_parquet(small.files["users_truth"])
    assert len(truth) == 400 and truth.user_id.is_unique
    assert truth.is_bot.sum() == pd.read_parquet(big.files["users_truth"]).is_bot.sum() == 1
    # The catalog does not depend on the chunking.
    with open(small.files["items"], "rb") as fa, open(big.files["items"], "rb") as fb:
        assert fa.read() == fb.read()


def test_rejects_empty_sizes(tmp_path):
    with pytest.raises(ValueError):
        generate_shop(tmp_path, n_users=0)


def test_layout_output_holds_the_same_events(tmp_path):
    """`layout=True` streams the same shop into the canonical dataset layout."""
    from recsight.data.layout import open_store, read_manifest

    args = {"n_users": 400, "n_items": 60, "n_days": 10, "seed": 3, "chunk_users": 150}
    flat = generate_shop(tmp_path / "flat", **args)
    lay = generate_shop(tmp_path / "lay", **args, layout=True)  # three chunks streamed
    assert lay.n_events == flat.n_events and lay.event_counts == flat.event_counts
    manifest = read_manifest(tmp_path / "lay")
    assert manifest.n_events == flat.n_events
    assert len(list((tmp_path / "lay" / "events").glob("event_date=*"))) == 10
    assert (tmp_path / "lay" / "users_truth.parquet").is_file()
    cols = ["event_id", "user_id", "item_id", "event_type", "value", "session_id"]
    with open_store(tmp_path / "lay") as store:
        got = store.con.execute(f"SELECT {', '.join(cols)}, epoch_ms(timestamp) AS ts FROM "
                                "events ORDER BY event_id").df()  # fmt: skip
        assert store.count("items") == 60 and store.count("users") == 400
    want = pd.read_parquet(tmp_path / "flat" / "events.parquet")
    want["ts"] = (want["timestamp"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    want = want[cols + ["ts"]].sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
