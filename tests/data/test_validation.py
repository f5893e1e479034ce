"""The one event contract: file ingest and the API path (`Store.append_events`) refuse the
same events for the same named reason (`recsight.data.validation`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.data.validation import SCALE_META, EventError, EventRules, check_event


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_future_timestamps_are_dropped_by_ingest_and_refused_by_the_api(tmp_path):
    csv = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp\n"
        "u1,i1,view,2024-01-01T10:00:00\n"
        "u1,i2,view,2999-01-01T00:00:00\n"  # line 3: the year 2999
        "u2,i1,view,32503680000\n",  # line 4: unix seconds of 3000-01-01
    )
    with Store(tmp_path / "s.duckdb") as s:
        rep = ingest(s, csv)
        assert rep.kept == 1 and rep.dropped == {"future_timestamp": 2}
        assert rep.examples["future_timestamp"] == [3, 4]
        with pytest.raises(EventError) as err:
            s.append_events(
                [{"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": "2999-01-01"}]
            )
        assert err.value.field == "timestamp" and err.value.reason == "future_timestamp"
        assert "in the future" in str(err.value)
        assert s.count("events") == 1


def test_a_day_of_clock_skew_is_accepted_and_the_epoch_is_the_earliest():
    now = datetime(2026, 6, 1, 12)
    rules = EventRules(now=now)
    ok = {"user_id": "u", "item_id": "i", "event_type": "view"}
    assert check_event(0, {**ok, "timestamp": "2026-06-02T11:59:00"}, rules)["timestamp"] == (
        datetime(2026, 6, 2, 11, 59)
    )
    with pytest.raises(EventError, match="in the future"):
        check_event(0, {**ok, "timestamp": "2026-06-02T12:01:00"}, rules)
    with pytest.raises(EventError, match="before 1970") as err:
        check_event(0, {**ok, "timestamp": "1969-12-31T23:59:59+00:00"}, rules)
    assert err.value.reason == "early_timestamp"
    # unix seconds and milliseconds by magnitude, as file ingest reads them
    assert check_event(0, {**ok, "timestamp": 1_700_000_000}, rules)["timestamp"] == datetime(
        2023, 11, 14, 22, 13, 20
    )
    assert check_event(0, {**ok, "timestamp": "1700000000000"}, rules)["timestamp"] == datetime(
        2023, 11, 14, 22, 13, 20
    )
    with pytest.raises(EventError, match="not unix seconds") as err:
        check_event(0, {**ok, "timestamp": 1e300}, rules)
    assert err.value.field == "timestamp" and err.value.reason == "bad_timestamp"


def test_the_rating_scale_is_recorded_and_holds_for_later_ingests_and_the_api(tmp_path):
    first = write(
        tmp_path / "r1.csv",
        "user_id,item_id,rating,timestamp\nu1,i1,1,1700000000\nu2,i1,5,1700000001\n",
    )
    later = write(
        tmp_path / "r2.csv",
        "user_id,item_id,rating,timestamp\nu3,i1,4,1700000002\nu3,i2,7,1700000003\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        rep = ingest(s, first)
        assert s.meta(SCALE_META) == "1,5"
        assert any("rating scale taken as 1 to 5" in n for n in rep.notes)
        rep = ingest(s, later)
        assert rep.kept == 1 and rep.dropped == {"rating_out_of_range": 1}
        assert rep.examples["rating_out_of_range"] == [3]
        # the event a new user posted: a rating of 1e308 was stored without a word
        with pytest.raises(EventError) as err:
            s.append_events(
                [{"user_id": "u9", "item_id": "i1", "event_type": "rate", "value": 1e308}]
            )
        assert err.value.field == "value" and err.value.reason == "rating_out_of_range"
        assert "outside the store's rating scale 1 to 5" in str(err.value)
        assert (
            s.append_events(
                [{"user_id": "u9", "item_id": "i1", "event_type": "rating", "value": 4.5}]
            )[0]["status"]
            == "stored"
        )
        # a declared scale replaces the one taken from the data, and says so
        rep = ingest(s, later, rating_scale=(0.0, 10.0))
        assert s.meta(SCALE_META) == "0,10"
        assert any("changes from 1,5 to 0,10" in n for n in rep.notes)


def test_non_finite_values_are_bad_values_on_both_paths(tmp_path):
    """Regression (found by the agreement property test): ingest kept 'inf' and 'nan'
    values, which the API refused."""
    csv = write(
        tmp_path / "v.csv",
        "user_id,item_id,event_type,value,timestamp\n"
        "u1,i1,purchase,2,1700000000\n"
        "u1,i2,purchase,inf,1700000000\n"
        "u1,i3,rating,nan,1700000000\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        rep = ingest(s, csv)
        assert rep.kept == 1 and rep.dropped == {"bad_value": 2}
        with pytest.raises(EventError, match="finite") as err:
            s.append_events(
                [{"user_id": "u", "item_id": "i", "event_type": "buy", "value": float("inf")}]
            )
        assert err.value.field == "value"


def test_overlong_ids_and_unknown_event_types(tmp_path):
    long_id = "x" * 257
    csv = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp\n"
        f"{long_id},i1,view,1700000000\n"
        "u1,i1,Share-Link,1700000000\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        rep = ingest(s, csv)
        assert rep.dropped == {"id_too_long": 1} and rep.kept == 1
        with pytest.raises(EventError) as err:
            s.append_events([{"user_id": "u", "item_id": long_id, "event_type": "view"}])
        assert err.value.field == "item_id" and err.value.reason == "id_too_long"
        s.append_events(
            [{"user_id": "u2", "item_id": "i1", "event_type": "Share-Link", "timestamp": 1.7e9}]
        )
        rows = s.con.execute(
            "SELECT event_type, raw_event_type FROM events ORDER BY seq"
        ).fetchall()
    # unknown types are kept lower-cased, the raw spelling beside them, on both paths
    assert rows == [("share-link", "Share-Link"), ("share-link", "Share-Link")]


def test_naive_timestamps_are_read_in_the_rules_time_zone():
    rules = EventRules(tz="Asia/Shanghai", now=datetime(2026, 1, 1))
    row = check_event(
        0,
        {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": "2025-01-01 08:00"},
        rules,
    )
    assert row["timestamp"] == datetime(2025, 1, 1, 0, 0)
    aware = datetime(2025, 1, 1, 8, tzinfo=UTC)
    row = check_event(
        0, {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": aware}, rules
    )
    assert row["timestamp"] == datetime(2025, 1, 1, 8)


def test_ids_and_event_types_are_trimmed_of_spaces_only_on_both_paths(tmp_path):
    """Regression (found by the agreement property test): the API stripped tabs from ids
    and event types, which file ingest keeps (it trims spaces, as DuckDB's trim does)."""
    csv = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp\n u1 ,\ti1,view\t,1700000000\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv)
        s.append_events(
            [{"user_id": " u1 ", "item_id": "\ti1", "event_type": "view\t", "timestamp": 1.7e9}]
        )
        rows = s.con.execute(
            "SELECT user_id, item_id, event_type, raw_event_type FROM events ORDER BY seq"
        ).fetchall()
    assert rows == [("u1", "\ti1", "view\t", "view\t")] * 2
