"""The ingest contract: every rule reports its count and example lines, fatal input stops with
one clear message (exit code 2) and leaves the store exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.ingest import ingest
from recsight.data.store import Store
from recsight.errors import InputError

runner = CliRunner()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def fingerprint(db: Path) -> dict:
    """Every table's full content, to prove a failed ingest changed nothing."""
    with Store(db, read_only=True) as s:
        tables = [r[0] for r in s.con.execute("SHOW TABLES").fetchall()]
        return {t: s.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}


@pytest.fixture
def db(tmp_path) -> Path:
    path = tmp_path / "s.duckdb"
    good = write(
        tmp_path / "good.csv",
        "user_id,item_id,event_type,timestamp\na,x,view,2024-01-01T10:00:00\nb,y,buy,1704103200\n",
    )
    with Store(path) as s:
        ingest(s, good)
    return path


def test_row_rules_counts_and_lines(tmp_path):
    csv = write(
        tmp_path / "e.csv",
        (
            "user,item,event_type,value,ts\n"  # line 1
            "u1,i1,view,,2024-01-01 10:00:00\n"  # 2 kept
            ",i1,view,,2024-01-01 10:00:00\n"  # 3 missing_user_id
            "u1,,view,,2024-01-01 10:00:00\n"  # 4 missing_item_id
            "u1,i2,view,,yesterday\n"  # 5 bad_timestamp
            "u1,i2,view,,\n"  # 6 missing_timestamp
            "u1,i2,,,2024-01-01 10:00:00\n"  # 7 missing_event_type
            "u1,i2,rating,abc,2024-01-01 10:00:00\n"  # 8 bad_value
            "u1,i2,rating,7,2024-01-01 10:00:00\n"  # 9 rating_out_of_range
            "u1,i2,buy,-2,2024-01-01 10:00:00\n"  # 10 negative_value
            "u1,i1,view,,2024-01-01 10:00:00\n"  # 11 duplicate of line 2
            "u1,i1,view\n"  # 12 malformed_line
            " u2 ,i3,PV,,1704103200000\n"  # 13 kept, id trimmed, ms timestamp
            "u2,i3,rating,4,2024-01-01T10:00:00+08:00\n"  # 14 kept
        ),
    )
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, csv, rating_scale=(1, 5))
        events = s.events_frame()
    assert r.rows_read == 13 and r.kept == 3 and r.n_dropped == 10
    assert r.dropped == {
        "malformed_line": 1,
        "missing_user_id": 1,
        "missing_item_id": 1,
        "bad_timestamp": 1,
        "missing_timestamp": 1,
        "missing_event_type": 1,
        "bad_value": 1,
        "rating_out_of_range": 1,
        "negative_value": 1,
        "duplicate": 1,
    }
    assert r.examples == {
        "malformed_line": [12],
        "missing_user_id": [3],
        "missing_item_id": [4],
        "bad_timestamp": [5],
        "missing_timestamp": [6],
        "missing_event_type": [7],
        "bad_value": [8],
        "rating_out_of_range": [9],
        "negative_value": [10],
        "duplicate": [11],
    }
    assert r.fixed == {"id_whitespace_trimmed": 1, "rows": 1}
    assert list(events["user_id"]) == ["u1", "u2", "u2"]
    assert list(events["event_type"]) == ["view", "view", "rating"]
    assert list(events["raw_event_type"]) == ["view", "PV", "rating"]
    # naive times are read in the declared zone (UTC here); ms and offsets are honoured
    assert [str(t) for t in events["timestamp"]] == [
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
        "2024-01-01 02:00:00",
    ]


def test_declared_time_zone_for_naive_timestamps(tmp_path):
    csv = write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,i,2024-01-01 08:00:00\n")
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv, tz="Asia/Shanghai")
        assert str(s.events_frame()["timestamp"][0]) == "2024-01-01 00:00:00"
        assert s.timezone == "Asia/Shanghai"


def test_examples_capped_at_five(tmp_path):
    rows = "".join(f",i{k}\n" for k in range(8))
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, write(tmp_path / "e.csv", "user_id,item_id\nu,i\n" + rows))
    assert r.dropped == {"missing_user_id": 8}
    assert r.examples["missing_user_id"] == [3, 4, 5, 6, 7]


def test_dedupe_by_event_id_and_against_store(tmp_path):
    first = write(tmp_path / "a.csv", "event_id,user_id,item_id\ne1,u,i\ne1,u,j\ne2,u,i\n")
    second = write(tmp_path / "b.csv", "event_id,user_id,item_id\ne2,v,k\ne3,u,i\n")
    with Store(tmp_path / "s.duckdb") as s:
        r1 = ingest(s, first)
        r2 = ingest(s, second)
        assert s.count("events") == 3
    assert r1.dropped == {"duplicate": 1} and r1.examples["duplicate"] == [3]
    assert r2.dropped == {"duplicate_of_stored": 1} and r2.kept == 1


def test_exact_dedupe_against_store_and_none_policy(tmp_path):
    csv = write(tmp_path / "a.csv", "user_id,item_id,value\nu,i,1\nu,i,1\n")
    with Store(tmp_path / "s.duckdb") as s:
        assert ingest(s, csv).kept == 1
        assert ingest(s, csv).dropped == {"duplicate": 1, "duplicate_of_stored": 1}
        assert ingest(s, csv, dedupe="none").kept == 2
        assert s.count("events") == 3


G = 10 / 3  # global mean of the three given ratings


@pytest.mark.parametrize(
    "policy, expected",
    [("item-mean", [4.0, 3.0, G]), ("user-mean", [5.0, 2.5, G]), ("global-mean", [G] * 3)],
)
def test_fill_rating_policies(tmp_path, policy, expected):
    # given: u1-i1 5, u2-i1 1, u2-i2 4; blanks: (u1,i2), (u2,i1), (u3,i9) with no history
    csv = write(
        tmp_path / "r.csv",
        "user_id,item_id,rating\nu1,i1,5\nu2,i1,1\nu2,i2,4\nu1,i2,\nu2,i1,\nu3,i9,\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, csv, fill_rating=policy, dedupe="none")
        stored = s.events_frame()["value"]
        data = s.interactions()
    # the store keeps them missing (no statistic of other rows is written into events) ...
    assert stored[3:].isna().all() and r.fixed == {}
    assert any("3 ratings without a value" in n for n in r.notes) and data.fill_rating == policy
    # ... and the policy fills them from the rows a model is given
    assert np.isnan(data.value[3:]).all()
    assert data.rating_values()[3:] == pytest.approx(expected)


def test_fill_rating_uses_training_rows_only_and_metrics_use_real_ratings(tmp_path):
    """The fill of a training split never sees the test split's ratings, and rating metrics
    are computed on real ratings only (a missing test rating is not scored as its fill)."""
    from recsight.evaluation.protocol import evaluate_rating

    # i1 is rated 5 in train (rows 1-2) and 1 in test (rows 4-5); (u3,i1) misses its
    # rating in train, (u6,i1) in test
    csv = write(
        tmp_path / "r.csv",
        "user_id,item_id,rating,timestamp\n"
        "u1,i1,5,1\nu2,i1,5,2\nu3,i1,,3\nu4,i1,1,10\nu5,i1,1,11\nu6,i1,,12\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv, fill_rating="item-mean")
        data = s.interactions()
    train, test = data.subset(np.arange(3)), data.subset(np.arange(3, 6))
    assert train.rating_values()[2] == 5.0  # not 3.0, the mean over train and test
    assert train.to_csr({"rating": "value"})[2, 0] == 5.0

    class Three:
        def predict_idx(self, u, i):  # noqa: ANN001, ANN202
            return np.full(len(u), 3.0)

    res = evaluate_rating(Three(), test)
    assert res.n_ratings == 2 and res.rmse == pytest.approx(2.0)  # |3 - 1| on the two real


def test_missing_ratings_kept_as_null_by_default(tmp_path):
    csv = write(tmp_path / "r.csv", "user_id,item_id,rating\nu1,i1,\n")
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, csv)
        assert r.fixed == {} and pd.isna(s.events_frame()["value"][0])


def test_ids_are_strings_everywhere(tmp_path):
    a = write(tmp_path / "a.csv", "user_id,item_id\n42,7\n")
    b = tmp_path / "b.jsonl"
    b.write_text(
        json.dumps({"user_id": "42", "item_id": 7})
        + "\n"
        + json.dumps({"user_id": 42, "item_id": "8"})
        + "\n"
    )
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, a)
        ingest(s, b)
        assert s.info().n_users == 1
        assert list(s.item_index().ids) == ["7", "8"]
        assert s.user_index().index_of([42]).tolist() == [0]


def test_parquet_and_column_mapping(tmp_path):
    df = pd.DataFrame(
        {
            "visitorid": [1, 2],
            "itemid": ["a", "b"],
            "ts": [1_700_000_000_000] * 2,
            "action": ["addtocart", "transaction"],
        }
    )
    df.to_parquet(tmp_path / "e.parquet")
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, tmp_path / "e.parquet", mapping={"user_id": "visitorid"})
        assert r.format == "parquet" and r.kept == 2
        assert s.info().event_types == {"cart": 1, "purchase": 1}
        assert str(s.events_frame()["timestamp"][0]) == "2023-11-14 22:13:20"


def test_typed_parquet_columns_follow_the_same_rules(tmp_path):
    """Typed columns take other code paths than text (no trimming, presence by NULL): the
    rules and their example row numbers must come out the same."""
    df = pd.DataFrame(
        {
            "user_id": ["u1", " u2 ", "u3", "u4", "", "u6"],
            "item_id": ["a", "b", "c", "d", "e", "f"],
            "timestamp": pd.to_datetime(
                ["2024-01-01 10:00", "2024-01-01 11:00", None, "2024-01-01 12:00"]
                + ["2024-01-01 13:00", "2024-01-01 14:00"]
            ),
            "event_type": ["PV", "buy", "view", "cart", "view", " fav "],
            "value": [None, 2.0, None, -1.0, None, None],
        }
    )
    df.to_parquet(tmp_path / "e.parquet")
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, tmp_path / "e.parquet")
        ev = s.events_frame()
    assert r.dropped == {"missing_user_id": 1, "missing_timestamp": 1, "negative_value": 1}
    assert r.examples == {"missing_user_id": [5], "missing_timestamp": [3], "negative_value": [4]}
    assert r.fixed == {"id_whitespace_trimmed": 1, "rows": 1}
    assert ev["user_id"].tolist() == ["u1", "u2", "u6"]
    assert ev["event_type"].tolist() == ["view", "purchase", "fav"]
    assert ev["raw_event_type"].tolist() == ["PV", "buy", "fav"]


def test_zoned_parquet_timestamps_are_stored_as_utc(tmp_path):
    local = pd.to_datetime(["2024-01-01 08:00:00", "2024-07-01 08:00:00.123456"], format="ISO8601")
    df = pd.DataFrame(
        {
            "user_id": ["u", "v"],
            "item_id": ["a", "b"],
            "timestamp": local.tz_localize("Asia/Shanghai"),
        }
    )
    df.to_parquet(tmp_path / "e.parquet")
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, tmp_path / "e.parquet", tz="America/New_York")  # --tz is for naive times only
        ts = s.events_frame()["timestamp"].tolist()
    assert ts == [pd.Timestamp("2024-01-01 00:00"), pd.Timestamp("2024-07-01 00:00:00.123456")]


def test_item_with_two_categories_keeps_the_most_frequent(tmp_path):
    csv = write(tmp_path / "e.csv", "user_id,item_id,category\nu,i,a\nv,i,b\nw,i,b\nu,j,c\n")
    items = write(
        tmp_path / "items.csv",
        "item_id,title,price,tags,brand\ni,Lamp,9.5,home|light,Acme\nk,Desk,oops,,Acme\n",
    )
    with Store(tmp_path / "s.duckdb") as s:
        r = ingest(s, csv, items=items)
        frame = s.items_frame().set_index("item_id")
    assert any("1 item(s) appear with more than one category" in n for n in r.notes)
    assert frame.loc["i", "category"] == "b" and frame.loc["i", "title"] == "Lamp"
    assert list(frame.loc["i", "tags"]) == ["home", "light"] and frame.loc["i", "brand"] == "Acme"
    assert r.items.fixed == {"bad_price_set_null": 1} and pd.isna(frame.loc["k", "price"])
    assert r.items.new == 1 and r.items.updated == 1  # k is a catalog-only item, i had events


def test_snapshot_round_trip(tmp_path, db):
    with Store(db) as s:
        s.export_parquet(tmp_path / "snap")
        before = s.info()
    with Store(tmp_path / "copy.duckdb") as c:
        r = ingest(c, tmp_path / "snap")
        after = c.info()
    assert r.kept == before.n_events
    assert after.event_types == before.event_types
    assert after.raw_event_types == before.raw_event_types
    assert after.time_range == before.time_range


BAD_FILES = {
    "missing_column": ("e.csv", b"user_id,product\nu,i\n", "missing required column(s) item_id"),
    "wrong_delimiter": ("e.csv", b"user_id item_id\nu i\n", "could not detect a delimiter"),
    "binary": ("e.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR", "looks like binary data"),
    "empty": ("e.csv", b"", "the file is empty"),
    "bad_parquet": ("e.parquet", b"not parquet at all", "not a readable Parquet file"),
    "header_only": ("e.csv", b"user_id,item_id\n", "no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_fatal_input_leaves_store_unchanged(tmp_path, db, case):
    name, content, message = BAD_FILES[case]
    bad = tmp_path / name
    bad.write_bytes(content)
    before = fingerprint(db)
    result = runner.invoke(app, ["ingest", str(bad), "--db", str(db)])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(bad) in result.output
    assert "Traceback" not in result.output
    assert fingerprint(db) == before


def test_unknown_format_and_bad_options(tmp_path, db):
    good = write(tmp_path / "g.csv", "user_id,item_id\nu,i\n")
    before = fingerprint(db)
    for args, message in [
        (["--format", "xls"], "unknown format 'xls'"),
        (["--tz", "Mars/Base"], "unknown time zone"),
        (["--map", "user_id=nope"], "no column 'nope'"),
        (["--map", "broken"], "expected key=value"),
        (["--dedupe", "fuzzy"], "--dedupe 'fuzzy'"),
        (["--rating-scale", "5,1"], "MIN must be below MAX"),
    ]:
        result = runner.invoke(app, ["ingest", str(good), "--db", str(db), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert fingerprint(db) == before


def test_failed_ingest_creates_no_store(tmp_path):
    bad = write(tmp_path / "e.csv", "")
    result = runner.invoke(app, ["ingest", str(bad), "--db", str(tmp_path / "new.duckdb")])
    assert result.exit_code == 2 and not (tmp_path / "new.duckdb").exists()


def test_cli_ingest_json_and_info(tmp_path):
    csv = write(
        tmp_path / "e.csv",
        "user_id,item_id,event_type,timestamp\n1,a,pv,1700000000\n2,a,buy,1700000100\n",
    )
    db = tmp_path / "s.duckdb"
    out = runner.invoke(app, ["ingest", str(csv), "--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["kept"] == 2
    info = json.loads(runner.invoke(app, ["info", "--db", str(db), "--json"]).output)
    assert {
        k: info[k] for k in ("n_events", "n_users", "n_items", "n_catalog_items", "n_catalog_users")
    } == {
        "n_events": 2,
        "n_users": 2,
        "n_items": 1,
        "n_catalog_items": 0,
        "n_catalog_users": 0,
    }
    assert info["event_types"] == {"view": 1, "purchase": 1}
    assert info["time_range"] == {"min": "2023-11-14T22:13:20Z", "max": "2023-11-14T22:15:00Z"}


def test_reading_a_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such store"):
        Store(tmp_path / "none.duckdb", read_only=True)


def test_append_events_is_idempotent_and_validated(tmp_path):
    from datetime import UTC, datetime

    with Store(tmp_path / "s.duckdb") as s:
        out = s.append_events(
            [
                {
                    "user_id": 7,
                    "item_id": "a",
                    "event_type": "pv",
                    "event_id": "e1",
                    "timestamp": datetime(2024, 1, 1, 12, tzinfo=UTC),
                    "request_id": "r1",
                },
                {"user_id": "7", "item_id": "b", "event_type": "buy", "value": 2, "event_id": "e1"},
                {"user_id": "8", "item_id": "a", "event_type": "click"},
            ]
        )
        assert [o["status"] for o in out] == ["stored", "duplicate", "stored"]
        assert (
            s.append_events(
                [{"user_id": "7", "item_id": "a", "event_type": "view", "event_id": "e1"}]
            )[0]["status"]
            == "duplicate"
        )
        events = s.events_frame()
        assert list(events["event_type"]) == ["view", "click"]
        assert (
            events["request_id"][0] == "r1" and str(events["timestamp"][0]) == "2024-01-01 12:00:00"
        )
        assert s.info().n_users == 2
        for bad, msg in [
            ({"item_id": "a", "event_type": "view"}, "'user_id' is required"),
            (
                {"user_id": "u", "item_id": "a", "event_type": "buy", "value": -1},
                "must not be negative",
            ),
            (
                {"user_id": "u", "item_id": "a", "event_type": "view", "value": "x"},
                "must be a finite number",
            ),
        ]:
            with pytest.raises(InputError, match=msg):
                s.append_events([{"user_id": "u", "item_id": "z", "event_type": "view"}, bad])
        assert s.count("events") == 2  # a bad record rejects the whole batch


def test_fill_rating_policy_travels_with_an_exported_layout(tmp_path):
    """Missing ratings stay missing in an export; the policy goes with them, so a model
    trained from the layout (read in place or ingested) fills them the same way."""
    from recsight.data.layout import export_store, open_store

    csv = write(
        tmp_path / "r.csv", "user_id,item_id,rating,timestamp\nu1,i1,5,1\nu2,i1,3,2\nu3,i1,,3\n"
    )
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv, fill_rating="item-mean")
        export_store(s, tmp_path / "lay")
    with open_store(tmp_path / "lay") as lay:
        data = lay.interactions()
    assert np.isnan(data.value[2]) and data.rating_values()[2] == pytest.approx(4.0)
    with Store(tmp_path / "t.duckdb") as t:
        ingest(t, tmp_path / "lay")
        assert t.meta("fill_rating") == "item-mean"
        assert t.interactions().rating_values()[2] == pytest.approx(4.0)
