"""Property: file ingest (the contract's SQL executor) and the API path (its Python executor)
keep, refuse and parse every event alike (`recsight.data.validation`)."""

from __future__ import annotations

import csv
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.data.validation import EventError, EventRules, check_event
from tests.fuzz.bounds import bounded

SCALE = (1.0, 5.0)
NOW = datetime.now(UTC).replace(tzinfo=None)
# text that survives a CSV round trip and does not look like another delimiter
SAFE = st.text(alphabet="abcXYZ019 -_.:+é", max_size=8)

VALID_ID = st.text(alphabet="abcXYZ019_é", min_size=1, max_size=6)
ids = st.one_of(VALID_ID, SAFE, st.sampled_from(["", " ", " u1 ", "\tu2", "x" * 257, "0042"]))
event_types = st.one_of(
    st.sampled_from(
        ["view", "PV", "buy", "Rate", "rating", " cart ", "share-link", "", "Order", "view\t"]
    ),
    SAFE,
)
values = st.one_of(
    st.sampled_from(["", "3", "-1", "1e308", "inf", "-Infinity", "nan", "abc", " 2.5 ", "0"]),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-10, 10).map(str),
)
# instants away from the contract's edges (the epoch; now plus a day), where a few seconds
# between the two checks' clocks would decide
past = st.datetimes(min_value=datetime(1970, 1, 2), max_value=NOW - timedelta(hours=1))
instants = st.one_of(
    past,
    st.datetimes(min_value=NOW + timedelta(days=2), max_value=datetime(9000, 1, 1)),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(1969, 12, 31)),
)
timestamps = st.one_of(
    instants.map(lambda d: d.isoformat()),
    instants.map(lambda d: d.replace(microsecond=0).isoformat(sep=" ")),
    instants.map(lambda d: d.replace(microsecond=0, tzinfo=UTC).isoformat()),
    instants.map(lambda d: str(int((d - datetime(1970, 1, 1)).total_seconds()))),
    instants.map(lambda d: str(int((d - datetime(1970, 1, 1)).total_seconds() * 1000))),
    st.sampled_from(["yesterday", "2024-13-01", "1e300", "-5", "abc"]),
)
valid = st.fixed_dictionaries(
    {
        "user_id": VALID_ID,
        "item_id": VALID_ID,
        "event_type": st.sampled_from(["view", "PV", "buy", "Rate", "rating", " cart ", "hover"]),
        "value": st.one_of(st.just(""), st.integers(1, 5).map(str), st.sampled_from(["2.5", "9"])),
        "timestamp": st.one_of(
            past.map(lambda d: d.isoformat()),
            past.map(lambda d: str(int((d - datetime(1970, 1, 1)).total_seconds()))),
        ),
    }
)
FIELD_STRATEGIES = {
    "user_id": ids,
    "item_id": ids,
    "event_type": event_types,
    "value": values,
    "timestamp": timestamps,
}


def _one_field_from(rec: dict) -> st.SearchStrategy[dict]:
    return st.sampled_from(sorted(FIELD_STRATEGIES)).flatmap(
        lambda f: FIELD_STRATEGIES[f].map(lambda v: {**rec, f: v})
    )


# valid rows (to compare what is stored), rows with one field drawn from anything (so every
# rule is reached), and rows with every field drawn from anything
records = st.one_of(valid, valid.flatmap(_one_field_from), st.fixed_dictionaries(FIELD_STRATEGIES))
FIELDS = ["user_id", "item_id", "event_type", "value", "timestamp"]


@bounded(20)
@given(rows=st.lists(records, min_size=1, max_size=25))
def test_ingest_and_api_apply_one_contract(rows):
    rules = EventRules(rating_scale=SCALE)
    expect_rows, expect_reasons = [], Counter()
    lines: dict[str, list[int]] = {}
    for i, rec in enumerate(rows):
        try:
            expect_rows.append(check_event(i, rec, rules))
        except EventError as err:
            expect_reasons[err.reason] += 1
            lines.setdefault(err.reason, []).append(i + 2)  # file line (after the header)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(FIELDS)
            w.writerows([rec[k] for k in FIELDS] for rec in rows)
        with Store(Path(tmp) / "s.duckdb") as s:
            rep = ingest(s, path, dedupe="none", rating_scale=SCALE, fmt="csv")
            stored = s.con.execute(
                'SELECT user_id, item_id, "timestamp", event_type, raw_event_type, value '
                "FROM events ORDER BY seq"
            ).fetchall()
    assert rep.dropped == dict(expect_reasons)
    for reason, where in lines.items():
        assert rep.examples[reason] == where[:5], reason
    want = [
        (
            r["user_id"],
            r["item_id"],
            r["timestamp"],
            r["event_type"],
            r["raw_event_type"],
            r["value"],
        )
        for r in expect_rows
    ]
    assert stored == want
