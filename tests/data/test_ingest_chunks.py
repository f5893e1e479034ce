"""Ingest checks rows a chunk at a time (bounded memory at any size); the outcome must not
depend on the chunk size: every table row for row, and the report, equal a one-shot ingest's."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from recsight.data.ingest import _Raw, ingest
from recsight.data.layout import export_store
from recsight.data.store import Store

ONE_SHOT = 10**9
FIELDS = ["event_id", "user_id", "item_id", "event_type", "timestamp", "value", "session_id"]


def messy_rows(seed: int, n: int) -> list[dict]:
    """Rows from small pools, so the same event often repeats (with and without an event
    id, within and across chunks), with rows the contract drops, padded ids, ratings with
    and without a value, and items seen under several categories."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        rows.append(
            {
                "event_id": rng.choice(["", "", "", "e1", "e2", "e3", "e4", f"e{rng.random()}"]),
                "user_id": rng.choice(["u1", "u2", " u3", "u4 ", "u5", ""]),
                "item_id": rng.choice(["i1", "i2", "i3", "i4", "i5", "i6"]),
                "event_type": rng.choice(["view", "view", "click", "rating", "purchase"]),
                "timestamp": rng.choice(["1700000000", "1700000100", "1700000200", "soon"]),
                "value": rng.choice(["", "", "3", "4.5", "5"]),
                "session_id": rng.choice(["", "s1", "s2"]),
                "category": rng.choice(["", "c1", "c2", "c3"]),
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict], malformed_every: int = 0) -> Path:
    cols = [*FIELDS, "category"]
    lines = [",".join(cols)]
    for k, row in enumerate(rows):
        lines.append(",".join(row[c] for c in cols))
        if malformed_every and k % malformed_every == 3:
            lines.append("too,few,fields")  # rejected by the reader: shifts later line numbers
    path.write_text("\n".join(lines) + "\n")
    return path


def tables(db: Path) -> dict:
    with Store(db, read_only=True) as s:
        names = [r[0] for r in s.con.execute("SHOW TABLES").fetchall()]
        return {t: s.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in names}


def run(tmp: Path, name: str, files: list[Path], chunk_rows: int, **options) -> tuple:
    """Ingest `files` in turn into a new store; the last with `chunk_rows`. Returns every
    table and the last report (timing left out)."""
    db = tmp / f"{name}-{chunk_rows}.duckdb"
    with Store(db) as store:
        for path in files[:-1]:
            ingest(store, path)
        report = ingest(store, files[-1], chunk_rows=chunk_rows, **options).to_dict()
    report.pop("seconds")
    return tables(db), report


def assert_same_as_one_shot(
    tmp: Path, name: str, files: list[Path], sizes: tuple[int, ...] = (1, 2, 3, 7), **options
) -> tuple:
    want_tables, want_report = run(tmp, name, files, ONE_SHOT, **options)
    for size in sizes:
        got_tables, got_report = run(tmp, name, files, size, **options)
        assert got_report == want_report, size
        for table, rows in want_tables.items():
            assert got_tables[table] == rows, (size, table)
    return want_tables, want_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_csv_ingest_equals_one_shot_into_a_store_with_events(tmp_path, seed):
    stored = write_csv(tmp_path / "stored.csv", messy_rows(100 + seed, 15))
    new = write_csv(tmp_path / "new.csv", messy_rows(seed, 40), malformed_every=9)
    _, report = assert_same_as_one_shot(tmp_path, "csv", [stored, new])
    # the data exercise what the chunks must carry over: within-file and stored duplicates,
    # contract drops, reader rejects, trimmed ids and category conflicts
    for reason in ("duplicate", "duplicate_of_stored", "malformed_line", "missing_user_id"):
        assert report["dropped"].get(reason, 0) > 0, (reason, report["dropped"])
    assert report["fixed"]["id_whitespace_trimmed"] > 0
    assert any("more than one category" in note for note in report["notes"])


def test_chunked_ingest_keeps_a_repeat_of_an_earlier_row_that_had_an_event_id(tmp_path):
    """A row without an event id equal in all fields to an earlier row of the same file
    that has one is kept (the keys differ): the earlier chunk's written row must not count
    as stored. A repeated stored event: first 'duplicate_of_stored', then 'duplicate'."""
    base = {"user_id": "u", "item_id": "i", "event_type": "view", "value": "", "session_id": ""}
    base["category"] = ""
    stored = write_csv(
        tmp_path / "stored.csv", [{**base, "event_id": "", "timestamp": "1700000005"}]
    )
    rows = [
        {**base, "event_id": "a", "timestamp": "1700000001"},
        {**base, "event_id": "", "timestamp": "1700000001"},
        {**base, "event_id": "", "timestamp": "1700000005"},
        {**base, "event_id": "", "timestamp": "1700000005"},
    ]
    new = write_csv(tmp_path / "new.csv", rows)
    _, report = assert_same_as_one_shot(tmp_path, "kept", [stored, new])
    assert report["kept"] == 2
    assert report["dropped"] == {"duplicate": 1, "duplicate_of_stored": 1}
    assert report["examples"] == {"duplicate_of_stored": [4], "duplicate": [5]}


def test_chunked_parquet_ratings_equal_one_shot(tmp_path):
    """Parquet (row numbers as positions): rating scale taken from the data and the
    fill-rating note, summed over chunks."""
    frame = pd.DataFrame(messy_rows(7, 200)).drop(columns=["category"])
    frame["value"] = pd.to_numeric(frame["value"]).where(frame["event_type"] == "rating")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"], errors="coerce")
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    tables, report = assert_same_as_one_shot(
        tmp_path, "pq", [path], sizes=(3, 16), fill_rating="item-mean"
    )
    ratings = [row[6] for row in tables["event_log"] if row[4] == "rating"]
    valued = [v for v in ratings if v is not None]
    assert f"rating scale taken as {min(valued):g} to {max(valued):g} " in report["notes"][0]
    assert report["notes"][1].startswith(f"{len(ratings) - len(valued)} ratings without a value")


def test_chunked_layout_and_pseudonymized_ingest_equal_one_shot(tmp_path):
    """An exported layout (positions are `seq`, with gaps where rows were dropped) and a
    pseudonymized ingest (ids hashed chunk by chunk, then again while writing)."""
    src = write_csv(tmp_path / "src.csv", messy_rows(3, 60))
    with Store(tmp_path / "src.duckdb") as store:
        ingest(store, src)
        export_store(store, tmp_path / "layout")
    assert_same_as_one_shot(tmp_path, "layout", [tmp_path / "layout"], sizes=(3, 16))
    assert_same_as_one_shot(tmp_path, "pseudo", [src], sizes=(3, 16), pseudonym_key=b"k" * 32)


@pytest.mark.parametrize(("first", "last", "n", "size"), [(0, 9, 10, 3), (5, 104, 10, 4)])
def test_chunks_cover_every_position_once_in_order(first, last, n, size):
    raw = _Raw(None, "VIEW", "", "", "_rownum", 0, n, first, last, {})
    chunks = raw.chunks(size)
    covered = [p for lo, hi in chunks for p in range(lo, hi + 1)]
    assert covered == list(range(first, last + 1))
    # about `size` rows a chunk when positions have gaps (here 10 rows over 100 positions)
    assert len(chunks) == -(-n // size)


def unique_rows(seed: int, n: int) -> list[dict]:
    """`messy_rows` with no two rows of the same dedupe key (each has its own event id, or
    its own timestamp where the id is empty), so nothing in the file is a duplicate."""
    rows = messy_rows(seed, n)
    for k, row in enumerate(rows):
        row["event_id"] = f"x{k}" if k % 4 else ""
        if not row["event_id"] and row["timestamp"] != "soon":
            row["timestamp"] = str(1700000000 + k)
    return rows


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_unstaged_check_equals_the_chunked_one(tmp_path, monkeypatch, fmt):
    """A file in which no row can be a duplicate is checked by aggregating the source, with
    nothing staged; the tables and the report equal those of the staged chunks (forced by
    declaring every file unstreamable), drops, fixes, ratings and categories included."""
    from recsight.data import ingest as ingest_module

    rows = unique_rows(5, 80)
    if fmt == "csv":
        path = write_csv(tmp_path / "events.csv", rows, malformed_every=9)
    else:
        frame = pd.DataFrame(rows)
        frame["value"] = pd.to_numeric(frame["value"])
        path = tmp_path / "events.parquet"
        frame.to_parquet(path)
    calls = []
    streaming = ingest_module._tally_streaming
    monkeypatch.setattr(
        ingest_module, "_tally_streaming", lambda *a: calls.append(1) or streaming(*a)
    )
    got_tables, got_report = run(tmp_path, "streamed", [path], 16, fill_rating="item-mean")
    assert calls, "the file has no duplicates: checked without staging"
    monkeypatch.setattr(ingest_module, "_streamable", lambda *a: False)
    want_tables, want_report = run(tmp_path, "staged", [path], 16, fill_rating="item-mean")
    assert got_report == want_report
    assert got_tables == want_tables
    for reason in ("missing_user_id", "bad_timestamp"):
        assert got_report["dropped"].get(reason, 0) > 0, got_report["dropped"]
    assert "duplicate" not in got_report["dropped"]
    assert got_report["fixed"]["id_whitespace_trimmed"] > 0
    assert any("more than one category" in note for note in got_report["notes"])
    assert any("rating scale taken as" in note for note in got_report["notes"])


def test_a_file_with_duplicates_or_a_store_with_events_is_staged(tmp_path, monkeypatch):
    """Rows that may repeat another row (same key hash) or a stored event need the staged
    chunks: the unstaged check is not used for them."""
    from recsight.data import ingest as ingest_module

    calls = []
    monkeypatch.setattr(ingest_module, "_tally_streaming", lambda *a: calls.append(1))
    dupes = write_csv(tmp_path / "dupes.csv", messy_rows(0, 40))
    unique = write_csv(tmp_path / "unique.csv", unique_rows(1, 40))
    with Store(tmp_path / "s.duckdb") as store:
        report = ingest(store, dupes)
        assert report.dropped["duplicate"] > 0
        ingest(store, unique)  # the store holds events now
    assert calls == []


@pytest.mark.parametrize(
    ("ids", "dupes"),
    [
        (["e1", "e2", "e3", "e4"], 0),  # every row keyed by its id: only the id column is read
        (["e1", "e2", "e1", "e4"], 1),  # a repeated id
        (["e1", " ", "e3", " "], 1),  # blank ids: those rows are keyed by all their fields
        (["e1", "", "e3", ""], 1),
    ],
)
def test_key_hashes_counted_from_the_ids_alone_equal_the_full_count(tmp_path, ids, dupes):
    """Counting distinct dedupe keys from the event ids alone (when every row has one) gives
    the count of the keys of fully parsed rows, and the ingest marks the same duplicates."""
    from recsight.data.ingest import _count_key_hashes, _open_raw
    from recsight.data.readers import open_source
    from recsight.data.validation import EventRules

    frame = pd.DataFrame(
        {"event_id": ids, "user_id": ["u1"] * 4, "item_id": ["i1", "i2", "i3", "i2"]}
    )
    frame["timestamp"] = pd.Timestamp("2024-01-01", tz="UTC")
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    with Store(tmp_path / "s.duckdb") as store:
        raw = _open_raw(store.con, open_source(path, None, None, store.con), EventRules())
        full = f"SELECT count(*), count(DISTINCT _h) FROM ({raw.rows()})"
        assert _count_key_hashes(store.con, raw) == store.con.execute(full).fetchone()
        store.con.execute("DROP VIEW _raw")
        report = ingest(store, path)
    assert report.dropped.get("duplicate", 0) == dupes
