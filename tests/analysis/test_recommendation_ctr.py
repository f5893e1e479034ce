"""Live click-through of served recommendations, from exposures and request ids."""

from __future__ import annotations

import datetime as dt

import pytest

from recsight.analysis import analyze, from_store
from recsight.analysis.funnel import recommendation_ctr
from recsight.analysis.source import NotAvailable
from recsight.data.store import Store


def test_ctr_by_model_and_position(tmp_path):
    t = dt.datetime(2026, 1, 1)
    with Store(tmp_path / "s.duckdb") as s:
        s.con.execute(
            "CREATE TABLE exposures (request_id VARCHAR, user_id VARCHAR, item_id VARCHAR, "
            "position INTEGER, model_version VARCHAR, ts TIMESTAMP)"
        )
        # v1 shows 2 lists of 3 items (6 exposures), v2 one list of 2
        rows = [(f"r{r}", "u", f"i{p}", p, "v1", t) for r in (1, 2) for p in range(3)]
        rows += [("r3", "u", f"i{p}", p, "v2", t) for p in range(2)]
        s.con.executemany("INSERT INTO exposures VALUES (?, ?, ?, ?, ?, ?)", rows)
        s.append_events(
            [
                # clicks on r1/i0 (twice: counted once), r2/i1 and r3/i0; a view does not count,
                # nor does a click on an item the list did not show
                {"user_id": "u", "item_id": "i0", "event_type": "click", "request_id": "r1"},
                {"user_id": "u", "item_id": "i0", "event_type": "purchase", "request_id": "r1"},
                {"user_id": "u", "item_id": "i1", "event_type": "cart", "request_id": "r2"},
                {"user_id": "u", "item_id": "i2", "event_type": "view", "request_id": "r2"},
                {"user_id": "u", "item_id": "i9", "event_type": "click", "request_id": "r2"},
                {"user_id": "u", "item_id": "i0", "event_type": "click", "request_id": "r3"},
            ]
        )
        rc = recommendation_ctr(from_store(s))
        report = analyze(from_store(s), sections="funnel")
    by_model = {r.key: (r.views, r.clicks, r.ctr) for r in rc.by_model}
    assert by_model == {"v1": (6, 2, pytest.approx(2 / 6)), "v2": (2, 1, 0.5)}
    by_pos = {r.key: (r.views, r.clicks) for r in rc.by_position}
    assert by_pos == {"1": (3, 2), "2": (3, 1), "3": (2, 0)}
    assert rc.lists == 3
    assert report.recommendation_ctr == rc
    assert any(c.id == "recommendation_ctr" for c in report.charts)


def test_not_available_without_exposures(tmp_path):
    with Store(tmp_path / "s.duckdb") as s:
        s.append_events([{"user_id": "u", "item_id": "i", "event_type": "click"}])
        with pytest.raises(NotAvailable):
            recommendation_ctr(from_store(s))
