"""Each section's numbers against values computed by hand or independently with pandas."""
# ruff: noqa: F811  (the make_source fixture is imported, then requested by name)

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from analysis_stores import make_source  # noqa: F401 (fixture)

from recsight.analysis import (
    activity,
    ctr,
    funnel,
    gini,
    interests,
    overview,
    popularity,
    ratings,
    retention,
    sessions,
    top_share,
    wilson_interval,
)
from recsight.analysis.interests import category_profiles, drift_table
from recsight.analysis.source import utc_offset_changes

H = 3600
DAY = 86400
WEEK = 7 * DAY


# -- funnel ------------------------------------------------------------------------------

FUNNEL_LOG = [  # 10 rows; seconds after T0
    ("u1", "i1", 0, "view", None),
    ("u1", "i1", 10, "click", None),
    ("u1", "i1", 20, "cart", 1),
    ("u1", "i1", 30, "purchase", 1),
    ("u2", "i2", 0, "view", None),
    ("u2", "i2", 5, "cart", 1),  # skipped click: stops at view in an ordered funnel
    ("u2", "i2", 6, "purchase", 1),
    ("u3", "i3", 0, "click", None),  # click before the view does not count
    ("u3", "i3", 50, "view", None),
    ("u4", "i1", 100, "view", None),
]


def test_funnel_conversion_on_ten_rows(make_source):
    src = make_source(FUNNEL_LOG, items={"i1": "A", "i2": "B", "i3": "A"})
    f = funnel(src)
    assert [s.name for s in f.stages] == ["view", "click", "cart", "purchase"]
    assert [s.users for s in f.stages] == [4, 1, 1, 1]
    assert [s.events for s in f.stages] == [4, 2, 2, 2]
    assert f.stages[1].conversion == pytest.approx(0.25)
    assert f.stages[2].step_conversion == pytest.approx(1.0)
    assert [s.median_seconds_from_previous for s in f.stages] == [None, 10.0, 10.0, 10.0]
    cats = {g.group: g.users for g in f.by_category}
    assert cats == {"A": [3, 1, 1, 1], "B": [1, 0, 0, 0]}
    assert [(g.group, g.users) for g in f.by_week] == [("2024-01-01", [4, 1, 1, 1])]
    # Configurable stages: u1 and u2 purchase after viewing; u2's 6 s gap and u1's 30 s.
    f2 = funnel(src, ["view", "purchase"])
    assert [s.users for s in f2.stages] == [4, 2]
    assert f2.stages[1].median_seconds_from_previous == pytest.approx(18.0)


def test_funnel_fav_side_branch_and_ctr(make_source):
    log = FUNNEL_LOG + [("u2", "i2", 7, "fav", None), ("u3", "i3", 60, "fav", None)]
    src = make_source(log)
    side = funnel(src).side_branch
    assert (side.users, side.then_last_stage) == (2, 0)  # u2 bought at 6 s, before the fav
    c = ctr(src, prior_strength=2.0)
    assert c.overall == pytest.approx(2 / 4)
    by_item = {r.key: r for r in c.top_items}
    assert (by_item["i1"].views, by_item["i1"].clicks) == (2, 1)
    lo, hi = wilson_interval(1, 2)
    assert by_item["i1"].wilson_low == pytest.approx(lo, abs=1e-6)
    assert by_item["i1"].bayes == pytest.approx((1 + 0.5 * 2) / (2 + 2))


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 0.0)


# -- popularity --------------------------------------------------------------------------


def test_gini_on_known_distributions():
    assert gini(np.ones(10)) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)  # (n-1)/n
    x = np.random.default_rng(0).pareto(1.5, 500)
    mad = np.abs(x[:, None] - x[None, :]).mean()  # mean absolute difference definition
    assert gini(x) == pytest.approx(mad / (2 * x.mean()))
    assert top_share(np.arange(1, 11), 0.2) == pytest.approx((10 + 9) / 55)


def test_popularity_matches_pandas(make_source):
    rng = np.random.default_rng(1)
    items = [f"i{k}" for k in rng.zipf(1.6, 300) % 40]
    log = [(f"u{n % 17}", it, n * 60, "view", None) for n, it in enumerate(items)]
    cats = {f"i{k}": "AB"[k % 2] for k in range(40)}
    p = popularity(make_source(log, items=cats))
    counts = pd.Series(items).value_counts().to_numpy()
    assert p.n_items == len(counts)
    assert p.gini == pytest.approx(gini(counts), abs=1e-6)
    assert p.top_20pct_share == pytest.approx(top_share(counts, 0.2), abs=1e-6)
    assert p.top_items[0].get("events") == counts.max()
    assert p.curve_event_share[-1] == pytest.approx(1.0)
    df = pd.DataFrame({"item": items})
    df["cat"] = df.item.map(cats)
    assert {c.category: c.events for c in p.by_category} == df.cat.value_counts().to_dict()


# -- overview / activity / time zone ---------------------------------------------------


def test_overview_matches_pandas(make_source):
    rng = np.random.default_rng(2)
    n = 200
    log = [
        (f"u{rng.integers(15)}", f"i{rng.integers(30)}", int(rng.integers(0, 20 * DAY)),
         "rating", int(rng.integers(1, 6)))
        for _ in range(n)
    ]  # fmt: skip
    o = overview(make_source(log))
    df = pd.DataFrame(log, columns=["u", "i", "t", "e", "v"])
    assert (o.n_events, o.n_users, o.n_items) == (n, df.u.nunique(), df.i.nunique())
    pairs = len(df[["u", "i"]].drop_duplicates())
    assert o.sparsity == pytest.approx(1 - pairs / (df.u.nunique() * df.i.nunique()), abs=1e-6)
    per_user = df.groupby("u").size()
    assert o.events_per_user.q["p50"] == pytest.approx(per_user.quantile(0.5))
    assert o.events_per_user.q["p90"] == pytest.approx(per_user.quantile(0.9))
    assert o.rating_histogram == {
        str(k): int(v) for k, v in df.v.value_counts().sort_index().items()
    }
    assert o.span_days == pytest.approx((df.t.max() - df.t.min()) / DAY, abs=1e-3)


def test_activity_uses_declared_time_zone(make_source):
    # 2024-01-01 16:30 UTC is Tuesday 00:30 in Shanghai (UTC+8).
    log = [("u1", "i1", 16 * H + 1800, "view", None), ("u2", "i1", 2 * DAY, "view", None)]
    a = activity(make_source(log, tz="Asia/Shanghai"))
    assert a.heatmap[1][0] == 1  # Tuesday, hour 0
    assert a.heatmap[2][8] == 1  # Wed 2024-01-03 00:00 UTC = 08:00 local
    assert a.daily.period == ["2024-01-02", "2024-01-03"]
    assert sum(map(sum, a.heatmap)) == 2


def test_utc_offset_changes_finds_dst_minutes():
    ch = utc_offset_changes("Europe/Berlin", pd.Timestamp("2024-01-01"), pd.Timestamp("2024-12-01"))
    assert ch == [
        (pd.Timestamp("2024-01-01"), 3600),
        (pd.Timestamp("2024-03-31 01:00"), 7200),
        (pd.Timestamp("2024-10-27 01:00"), 3600),
    ]


def test_local_time_across_dst(make_source):
    # 00:59 UTC on 2024-03-31 is 01:59 CET; 01:00 UTC is 03:00 CEST.
    base = 90 * DAY  # 2024-03-31 00:00 UTC
    log = [("u", "i", base + 59 * 60, "view", None), ("u", "i", base + H, "view", None)]
    a = activity(make_source(log, tz="Europe/Berlin"))
    assert a.heatmap[6][1] == 1 and a.heatmap[6][3] == 1  # Sunday 01:xx and 03:xx


def test_new_vs_returning(make_source):
    log = [
        ("a", "i", 0, "view", None),
        ("a", "i", WEEK, "view", None),
        ("b", "i", WEEK, "view", None),
    ]
    nr = activity(make_source(log)).new_vs_returning
    assert (nr.new_users, nr.returning_users) == ([1, 1], [0, 1])


# -- sessions ----------------------------------------------------------------------------


def test_sessionization_at_exact_gap_boundary(make_source):
    log = [
        ("u", "i1", 0, "view", None),
        ("u", "i2", 1800, "view", None),  # exactly 30 min later: same session
        ("u", "i3", 1800 + 1801, "view", None),  # 30 min 1 s later: new session
        ("v", "i1", 0, "view", None),  # a bounce
    ]
    src = make_source(log)
    s = sessions(src)
    assert s.source == "gap"
    assert s.n_sessions == 3
    assert s.bounce_rate == pytest.approx(2 / 3)
    assert s.length_histogram["1"] == 2 and s.length_histogram["2"] == 1
    assert s.duration_seconds.q["p100"] == 1800
    assert sessions(src, gap_minutes=29.99).n_sessions == 4


def test_sessions_use_log_session_ids(make_source):
    cols = ("user_id", "item_id", "timestamp", "event_type", "value", "session_id")
    log = [("u", "i", 0, "view", None, "s1"), ("u", "i", 5 * H, "view", None, "s1"),
           ("u", "i", 6 * H, "view", None, "s2")]  # fmt: skip
    s = sessions(make_source(log, columns=cols))
    assert (s.source, s.n_sessions) == ("session_id", 2)


def test_session_table_from_ids_numbers_sessions_as_sessionized(make_source):
    """With the log's session ids the table is aggregated by id, not by joining every event
    to its session's number; the rows and numbers equal those of the sessionized events."""
    import ibis.expr.operations as ops

    from recsight.analysis.sessions import session_table, sessionized

    cols = ("user_id", "item_id", "timestamp", "event_type", "value", "session_id")
    rng = np.random.default_rng(5)
    log = [
        (f"u{u}", f"i{rng.integers(6)}", int(rng.integers(0, 5 * DAY)), "view", None, f"s{sid}")
        for u in range(4)
        for sid in rng.choice(50, 4, replace=False)
        for _ in range(int(rng.integers(1, 5)))
    ]
    src = make_source(log, columns=cols)
    s = src.df(sessionized(src))
    want = (
        s.groupby(["user_idx", "session"])
        .agg(n=("item_idx", "size"), items=("item_idx", "nunique"), start=("timestamp", "min"))
        .reset_index()
    )
    table = session_table(src)
    assert not list(table.op().find(ops.JoinChain))  # no event is joined back to its session
    got = src.df(table).sort_values(["user_idx", "session"]).reset_index(drop=True)
    assert len(got) == 16
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


# -- retention ---------------------------------------------------------------------------


def test_retention_on_constructed_cohorts(make_source):
    log = [
        ("a", "i", 0, "view", None), ("a", "i", WEEK, "view", None),
        ("a", "i", 2 * WEEK + 5, "view", None),
        ("b", "i", DAY, "view", None), ("b", "i", 2 * WEEK, "view", None),
        ("c", "i", 2 * DAY, "view", None),
        ("d", "i", WEEK + DAY, "view", None), ("d", "i", 2 * WEEK + DAY, "view", None),
    ]  # fmt: skip
    r = retention(make_source(log))
    assert r.cohorts == ["2024-01-01", "2024-01-08"]
    assert r.sizes == [3, 1]
    assert r.active == [[3, 1, 2], [1, 1, 0]]
    assert r.rate[0] == pytest.approx([1.0, 1 / 3, 2 / 3])
    assert r.rate[1][:2] == pytest.approx([1.0, 1.0]) and r.rate[1][2] is None
    assert r.mean_week1 == pytest.approx((1 + 1) / (3 + 1))


# -- interests ---------------------------------------------------------------------------


def test_decayed_profile_and_drift(make_source):
    items = {"a1": "A", "a2": "A", "b1": "B"}
    # u: 5 events on A early, 5 on B at the end; the log ends at 40 days.
    log = [("u", "a1" if k % 2 else "a2", k * H, "view", None) for k in range(5)]
    log += [("u", "b1", 10 * DAY + k * H, "view", None) for k in range(5)]
    log += [("w", "a1", 40 * DAY, "purchase", 1)]
    src = make_source(log, items=items)
    prof = src.df(category_profiles(src, half_life_days=30.0))
    end = 40 * DAY
    df = pd.DataFrame(log, columns=["u", "i", "t", "e", "v"])
    df["w"] = np.where(df.e == "purchase", 5.0, 1.0) * 2.0 ** (-(end - df.t) / (30 * DAY))
    df["c"] = df.i.map(items)
    expect = df.groupby(["u", "c"]).w.sum() / df.groupby("u").w.sum()
    got = prof.merge(src.df(src.events.select("user_idx", "user_id").distinct()), on="user_idx")
    got = got.set_index(["user_id", "category"]).share.sort_index()
    assert got.to_numpy() == pytest.approx(expect.sort_index().to_numpy())
    d = src.df(drift_table(src))
    assert len(d) == 1 and d.drift.iloc[0] == pytest.approx(1.0)
    assert (d.early_top.iloc[0], d.recent_top.iloc[0]) == ("A", "B")


def test_interest_entropy_associations_transitions(make_source):
    items = {"x": "A", "y": "A", "z": "B", "q": "C"}
    log = []
    for n, u in enumerate(["u1", "u2", "u3"]):  # x and y always together; z with x once
        log += [(u, "x", n * DAY, "view", None), (u, "y", n * DAY + 60, "view", None)]
    log += [("u1", "z", 5 * DAY, "view", None), ("u4", "q", 0, "view", None)]
    log += [("u4", "z", 60, "view", None)]
    it = interests(make_source(log, items=items), min_support=1)
    pairs = {frozenset((p.item_a, p.item_b)): p for p in it.associations}
    # 4 users with recent items; n_x = n_y = 3, n_z = 2, n_q = 1.
    assert pairs[frozenset("xy")].users == 3
    assert pairs[frozenset("xy")].lift == pytest.approx(3 * 4 / (3 * 3), abs=1e-4)
    assert pairs[frozenset("qz")].lift == pytest.approx(1 * 4 / (1 * 2), abs=1e-4)
    assert it.n_categories == 3
    labels = it.transition_categories
    m = {(a, b): it.transitions[i][j] for i, a in enumerate(labels) for j, b in enumerate(labels)}
    assert m[("A", "A")] == 3 and m[("A", "B")] == 1 and m[("C", "B")] == 1
    assert it.self_transition_share == pytest.approx(3 / 5)
    assert it.entropy.q["p0"] == pytest.approx(0.0)  # u2, u3 only touch A


# -- ratings -----------------------------------------------------------------------------


def test_ratings_biases_match_pandas(make_source):
    rng = np.random.default_rng(3)
    log = [
        (f"u{rng.integers(8)}", f"i{rng.integers(12)}", int(k * 60), "rating",
         int(rng.integers(1, 6)))
        for k in range(150)
    ]  # fmt: skip
    r = ratings(make_source(log))
    df = pd.DataFrame(log, columns=["u", "i", "t", "e", "v"])
    mu = df.v.mean()
    ub = df.groupby("u").v.mean() - mu
    ib = df.groupby("i").agg(m=("v", "mean"), n=("v", "size"))
    assert r.global_mean == pytest.approx(mu)
    assert r.user_bias.q["p50"] == pytest.approx(ub.quantile(0.5))
    assert r.item_bias.mean == pytest.approx((ib.m - mu).mean())
    assert sum(r.user_bias_histogram.counts) == df.u.nunique()
    rho = ib.n.rank().corr(ib.m.rank())
    assert r.popularity_rating_spearman == pytest.approx(rho)
    assert sum(b.items for b in r.by_popularity) == df.i.nunique()
    assert all(b.min_ratings <= b.max_ratings for b in r.by_popularity)
    assert not math.isnan(r.by_popularity[0].mean_rating)


def test_grouped_quantiles_equal_the_databases_quantile(make_source):
    """The spill-friendly quantile (value counts + running count) equals DuckDB's
    `quantile_cont` and numpy's linear quantile, with many ties, at the ends and in between."""
    from recsight.analysis.overview import grouped_quantiles

    rng = np.random.default_rng(3)
    secs = np.concatenate([rng.integers(0, 5_000, 700), np.full(300, 2_500), [90_000]])
    src = make_source([(f"u{i % 40}", f"i{i % 13}", int(s), "view") for i, s in enumerate(secs)])
    qs = (0.0, 0.001, 0.25, 0.5, 0.9, 0.999, 1.0)
    got = grouped_quantiles(src, src.events, src.events.timestamp.epoch_seconds(), qs)
    e = src.events
    ts = e.timestamp.epoch_seconds()
    want = src.df(e.aggregate(**{f"q{i}": ts.quantile(q) for i, q in enumerate(qs)})).iloc[0]
    base = float(src.df(e.aggregate(m=ts.min())).iloc[0].m)  # epoch of T0
    for i, q in enumerate(qs):
        assert got[i] == pytest.approx(float(want[f"q{i}"]), abs=1e-6)
        assert got[i] - base == pytest.approx(float(np.quantile(secs - secs.min(), q)), abs=1e-6)
