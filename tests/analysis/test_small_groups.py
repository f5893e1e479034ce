"""Minimum group size on the rating histogram, the bias histograms, live CTR by model and
position, and retention cells: a log small enough to count every group by hand."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from recsight.analysis import analyze, from_store
from recsight.analysis.charts import build_charts
from recsight.analysis.groups import GroupPolicy
from recsight.analysis.report import render_html
from recsight.data.store import Store

MON, TUE = datetime(2026, 1, 5, 12), datetime(2026, 1, 13, 12)
WEEK1, WEEK2 = datetime(2026, 1, 12, 12), datetime(2026, 1, 19, 12)
A = [f"a{i}" for i in range(1, 6)]


def _ev(user, item, when, kind="rating", value=None, request=None):
    e = {"user_id": user, "item_id": item, "event_type": kind, "timestamp": when}
    if value is not None:
        e["value"] = value
    if request:
        e["request_id"] = request
    return e


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """a1..a5 rate `pop` 4 (week 0) and `good` 5 (week 1); a6 rates `pop` 3 (week 0) and views
    it in week 2; b1 rates `odd` and `odd2` 1 (week 0); c1, c2 only view `pop` in week 1.
    Served lists: v1 showed 2 items to each of a1..a5 (a1 clicked `pop`), v2 showed 3 to b1."""
    path = tmp_path_factory.mktemp("small") / "s.duckdb"
    events = [_ev(u, "pop", MON, value=4) for u in A] + [_ev(u, "good", WEEK1, value=5) for u in A]
    events += [_ev("a6", "pop", MON, value=3), _ev("a6", "pop", WEEK2, "view")]
    events += [_ev("b1", "odd", MON, value=1), _ev("b1", "odd2", MON, value=1)]
    events += [_ev(u, "pop", TUE, "view") for u in ("c1", "c2")]
    events.append(_ev("a1", "pop", MON.replace(hour=13), "click", request="r1"))
    with Store(path) as s:
        s.append_events(events)
        s.con.execute(
            "CREATE TABLE exposures (request_id VARCHAR, user_id VARCHAR, item_id VARCHAR, "
            "position INTEGER, model_version VARCHAR, ts TIMESTAMP)"
        )
        rows = [(f"r{i}", u, it, p, "v1", MON) for i, u in enumerate(A, 1)
                for p, it in enumerate(["pop", "good"])]  # fmt: skip
        rows += [("r6", "b1", it, p, "v2", MON) for p, it in enumerate(["pop", "good", "odd"])]
        s.con.executemany("INSERT INTO exposures VALUES (?, ?, ?, ?, ?, ?)", rows)
    return path


def _report(db, k: int):
    with Store(db, read_only=True) as s:
        src = from_store(s)
        src.privacy = GroupPolicy(k)
        return analyze(src, ["overview", "funnel", "retention", "ratings"])


def test_rating_histogram_and_bias_histograms(db):
    off, on = _report(db, 1), _report(db, 5)
    # value 1: two ratings by b1 alone; value 3: a6 alone; 4 and 5: a1..a5 each
    assert off.overview.rating_histogram == {"1": 2, "3": 1, "4": 5, "5": 5}
    assert on.overview.rating_histogram == {"1": None, "3": None, "4": 5, "5": 5}
    # mean 50/13; item biases odd, odd2 -37/13 (bin 0, rated by b1 only), pop 23/6-50/13
    # = -1/78 (bin 14, a1..a6), good 15/13 (the last bin, a1..a5): 20 bins over [-37/13, 15/13]
    items = on.ratings.item_bias_histogram
    assert items.edges[0] == round(-37 / 13, 4) and items.edges[-1] == round(15 / 13, 4)
    assert off.ratings.item_bias_histogram.counts == [2] + [0] * 13 + [1] + [0] * 4 + [1]
    assert items.counts == [None] + [0] * 13 + [1] + [0] * 4 + [1]
    # user biases: b1 -37/13 (bin 0), a6 -11/13 (bin 11 of 20 over 3.5), a1..a5 17/26 (last)
    assert off.ratings.user_bias_histogram.counts == [1] + [0] * 10 + [1] + [0] * 7 + [5]
    assert on.ratings.user_bias_histogram.counts == [None] + [0] * 10 + [None] + [0] * 7 + [5]
    places = on.privacy.suppressed_by_place
    assert places["overview.rating_histogram"] == 2
    assert places["ratings.user_bias_histogram"] == 2
    assert places["ratings.item_bias_histogram"] == 1
    assert off.privacy.suppressed_rows == 0


def test_recommendation_ctr_by_model_and_position(db):
    off, on = _report(db, 1).recommendation_ctr, _report(db, 5).recommendation_ctr
    assert {r.key: (r.views, r.clicks) for r in off.by_model} == {"v1": (10, 1), "v2": (3, 0)}
    assert {r.key: (r.views, r.clicks) for r in off.by_position} == {
        "1": (6, 1), "2": (6, 0), "3": (1, 0)}  # fmt: skip
    # v2 and position 3 were shown to b1 alone
    assert {r.key: (r.views, r.clicks) for r in on.by_model} == {"v1": (10, 1)}
    assert {r.key: (r.views, r.clicks) for r in on.by_position} == {"1": (6, 1), "2": (6, 0)}
    assert on.lists == off.lists == 6
    # the prior is the overall CTR of everything served, 1 click in 13 exposures, either way
    assert on.by_model[0].bayes == pytest.approx((1 + 20 / 13) / (10 + 20), abs=1e-6)
    places = _report(db, 5).privacy.suppressed_by_place
    assert places["recommendation_ctr.by_model"] == 1
    assert places["recommendation_ctr.by_position"] == 1


def test_retention_cells(db):
    off, on = _report(db, 1).retention, _report(db, 5).retention
    # cohort of Jan 5: a1..a6, b1 (7); week 1: a1..a5; week 2: a6 alone. Jan 12: c1, c2.
    assert off.cohorts == ["2026-01-05", "2026-01-12"] and off.sizes == [7, 2]
    assert off.active == [[7, 5, 1], [2, 0, 0]]
    assert off.rate == [[1.0, 5 / 7, 1 / 7], [1.0, 0.0, None]]
    assert off.mean_week1 == pytest.approx(5 / 9)
    assert on.cohorts == ["2026-01-05"] and on.sizes == [7]
    assert on.active == [[7, 5, None]]  # a6 alone in week 2
    assert on.rate == [[1.0, 5 / 7, None]]
    assert on.mean_week1 == pytest.approx(5 / 7)
    r6 = _report(db, 6)
    assert r6.retention.active == [[7, None, None]]
    assert r6.retention.mean_week1 is None  # 5 returning users is fewer than 6
    assert r6.privacy.suppressed_by_place["retention.mean_week1"] == 1
    assert _report(db, 5).privacy.suppressed_by_place["retention.cells"] == 1


def test_report_and_json_state_what_was_suppressed(db):
    r = _report(db, 5)
    twin = json.loads(r.model_dump_json())
    assert twin["overview"]["rating_histogram"]["1"] is None
    assert twin["retention"]["active"] == [[7, 5, None]]
    page = render_html(r)
    for place in ("overview.rating_histogram", "ratings.item_bias_histogram",
                  "recommendation_ctr.by_position", "retention.cells"):  # fmt: skip
        assert place in page
    takeaways = {c.id: c.takeaway for c in r.charts}
    assert "2 rating values of fewer than 5 users suppressed" in takeaways["rating_histogram"]
    assert "3 bins of fewer than 5 users suppressed" in takeaways["rating_bias"]
    assert "1 cell of fewer than 5 users suppressed" in takeaways["retention"]
    assert "suppressed (fewer than 5 users)" in page  # the legend of the crosses on the axis


def test_daily_chart_breaks_on_days_without_rows(db):
    """The report's daily chart runs over every calendar day: a day without a row (no events,
    or suppressed) is a break, not a line drawn from the day before to the day after."""
    with Store(db, read_only=True) as s:
        src = from_store(s)
        src.privacy = GroupPolicy(1)
        r = analyze(src, ["activity"])
    assert r.activity.daily.period == ["2026-01-05", "2026-01-12", "2026-01-13", "2026-01-19"]
    (fig,) = [f for i, f in build_charts(r) if i.id == "daily_activity"]
    events = fig.data[0]
    assert list(events.x) == [f"2026-01-{d:02d}" for d in range(5, 20)]
    # Jan 5: a1..a5 and a6 rate pop, b1 rates twice, a1 clicks; Jan 12: a1..a5; Jan 13: c1,
    # c2; Jan 19: a6
    assert list(events.y) == [9, *[None] * 6, 5, 2, *[None] * 5, 1]
