"""The store's layout: integer-only event rows behind an `events` view, and the upgrade of a
store written by schema version 1 (string ids in an `events` table)."""

from __future__ import annotations

import duckdb

from recsight.data.ingest import ingest
from recsight.data.store import SCHEMA_VERSION, Store

V1_EVENTS = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE user_map (user_idx INTEGER PRIMARY KEY, user_id VARCHAR UNIQUE);
CREATE TABLE item_map (item_idx INTEGER PRIMARY KEY, item_id VARCHAR UNIQUE);
CREATE TABLE events (
    seq BIGINT, user_id VARCHAR NOT NULL, item_id VARCHAR NOT NULL, user_idx INTEGER NOT NULL,
    item_idx INTEGER NOT NULL, "timestamp" TIMESTAMP, event_type VARCHAR NOT NULL,
    raw_event_type VARCHAR, value DOUBLE, event_id VARCHAR, session_id VARCHAR,
    request_id VARCHAR);
CREATE TABLE items (item_id VARCHAR NOT NULL, item_idx INTEGER NOT NULL, title VARCHAR,
    description VARCHAR, category VARCHAR, tags VARCHAR[], "text" VARCHAR, price DOUBLE);
CREATE TABLE users (user_id VARCHAR NOT NULL, user_idx INTEGER NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1'), ('timezone', 'UTC');
INSERT INTO user_map VALUES (0, 'alice'), (1, 'bob');
INSERT INTO item_map VALUES (0, 'x'), (1, 'y');
INSERT INTO events VALUES
    (0, 'alice', 'x', 0, 0, '2024-01-01 10:00', 'view', 'pv', NULL, 'e0', 's0', NULL),
    (1, 'bob', 'y', 1, 1, '2024-01-01 11:00', 'purchase', 'buy', 2, 'e1', 's1', NULL),
    (2, 'alice', 'y', 0, 1, '2024-01-02 09:00', 'cart', 'cart', 1, 'e2', 's2', 'r1');
"""


def write_v1(path) -> list[tuple]:
    con = duckdb.connect(str(path))
    con.execute(V1_EVENTS)
    rows = con.execute("SELECT * FROM events ORDER BY seq").fetchall()
    con.close()
    return rows


def test_events_are_stored_with_integer_ids_and_read_with_external_ones(tmp_path):
    csv = tmp_path / "e.csv"
    csv.write_text("user_id,item_id,event_type\n7,a,view\n8,b,buy\n7,b,view\n")
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv)
        stored = [r[0] for r in s.con.execute("DESCRIBE event_log").fetchall()]
        rows = s.con.execute(
            "SELECT user_id, item_id, user_idx, item_idx FROM events ORDER BY seq"
        ).fetchall()
    assert "user_id" not in stored and "item_id" not in stored
    assert rows == [("7", "a", 0, 0), ("8", "b", 1, 1), ("7", "b", 0, 1)]


def test_event_ids_are_written_uncompressed_and_read_back_as_ingested(tmp_path):
    # DuckDB's dictionary+FSST analysis of unique ids cost a quarter of a bulk write
    csv = tmp_path / "e.csv"
    csv.write_text(
        "event_id,user_id,item_id\n" + "".join(f"e{i},u{i % 7},i{i % 5}\n" for i in range(3000))
    )
    with Store(tmp_path / "s.duckdb") as s:
        ingest(s, csv)
        s.con.execute("CHECKPOINT")
        methods = s.con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('event_log') "
            "WHERE column_name = 'event_id' AND segment_type = 'VARCHAR'"
        ).fetchall()
        ids = [r[0] for r in s.con.execute("SELECT event_id FROM events ORDER BY seq").fetchall()]
    assert methods == [("Uncompressed",)]
    assert ids == [f"e{i}" for i in range(3000)]


def test_a_version_1_store_is_upgraded_in_place_with_nothing_lost(tmp_path):
    db = tmp_path / "old.duckdb"
    before = write_v1(db)
    with Store(db) as s:
        assert s.meta("schema_version") == SCHEMA_VERSION
        after = s.con.execute("SELECT * FROM events ORDER BY seq").fetchall()
        assert after == before
        # and it takes new events after the old ones
        res = s.append_events([{"user_id": "carol", "item_id": "x", "event_type": "view"}])
        assert res == [{"status": "stored", "seq": 3}]
        assert s.info().n_users == 3


def test_a_version_1_store_opens_read_only_without_an_upgrade(tmp_path):
    db = tmp_path / "old.duckdb"
    write_v1(db)
    with Store(db, read_only=True) as s:
        info = s.info()
        data = s.interactions(with_features=False)
        assert s.meta("schema_version") == "1"
    assert info.n_events == 3 and info.event_types == {"view": 1, "purchase": 1, "cart": 1}
    assert data.user_idx.tolist() == [0, 1, 0] and data.item_idx.tolist() == [0, 1, 1]
