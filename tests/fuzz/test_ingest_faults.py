"""Hypothesis: event files (CSV, TSV, JSON Lines, Parquet) built from valid rows plus
labelled injected faults, ingested by the CLI into a store that already holds events.

Each fault kind implies an outcome: a row dropped for a named reason, a row kept as it is,
or the whole file refused. Each kind gets its own examples (with up to two other faults) and
the test asserts it was generated; ingest either succeeds with exactly the kept and dropped
counts the faults imply, or exits 2 with one line naming the file and leaves every table of
the store as it was."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from recsight.cli.main import app
from recsight.data.ingest import ingest
from recsight.data.store import Store
from tests.fuzz.bounds import bounded

FIELDS = ["user_id", "item_id", "event_type", "value", "timestamp"]
TEXT = ("csv", "tsv", "jsonl")
FATAL = "fatal"
KEPT = "kept"
#: fault kind -> format -> what it implies: a drop reason, KEPT, or FATAL (exit 2)
IMPLIES = {
    "bad_encoding": {"csv": "bad_encoding", "tsv": "bad_encoding", "jsonl": FATAL},
    "byte_order_mark": {"csv": KEPT, "tsv": KEPT, "jsonl": KEPT},
    "utf16": {"csv": FATAL, "tsv": FATAL, "jsonl": FATAL},
    "wrong_delimiter": {"csv": "malformed_line", "tsv": "malformed_line", "jsonl": FATAL},
    "broken_quoting": {"csv": FATAL, "tsv": FATAL, "jsonl": FATAL},
    "huge_field": dict.fromkeys((*TEXT, "parquet"), "id_too_long"),
    "control_chars": dict.fromkeys((*TEXT, "parquet"), KEPT),
    "mixed_types": dict.fromkeys((*TEXT, "parquet"), "bad_value"),
    "missing_column": dict.fromkeys((*TEXT, "parquet"), FATAL),
}
#: faults of the whole file rather than of one row
FILE_FAULTS = {"byte_order_mark", "utf16", "missing_column"}

ids = st.text(alphabet="abcdefXYZ0123456789_-", min_size=1, max_size=8)
valid_row = st.fixed_dictionaries(
    {
        "user_id": ids,
        "item_id": ids,
        "event_type": st.sampled_from(["view", "click", "cart", "purchase", "pv", "share"]),
        "value": st.one_of(st.none(), st.integers(0, 9)),
    }
)


@st.composite
def fault_files(draw, kind: str):
    """(format, rows, faults) with a fault of `kind` and up to two others: faults as (kind,
    row index, or None for a fault of the whole file)."""
    fmt = draw(st.sampled_from(sorted(IMPLIES[kind])))
    rows = draw(st.lists(valid_row, min_size=3, max_size=12))
    for i, row in enumerate(rows):  # distinct rows: no duplicates to account for
        row["timestamp"] = 1_600_000_000 + i
    others = [k for k, by_format in IMPLIES.items() if fmt in by_format and k != kind]
    chosen = [kind, *draw(st.permutations(others))[: draw(st.integers(0, 2))]]
    targets = draw(st.permutations(range(len(rows))))
    faults = [(k, None if k in FILE_FAULTS else targets[j]) for j, k in enumerate(chosen)]
    return fmt, rows, faults


def _row_text(row: dict, sep: str, fields: list[str] = FIELDS) -> str:
    return sep.join("" if row[f] is None else str(row[f]) for f in fields) + "\n"


def write(path: Path, fmt: str, rows: list[dict], faults: list[tuple]) -> None:
    rows = [dict(r) for r in rows]
    kinds = {k for k, _ in faults}
    at = {i: k for k, i in faults if i is not None}
    for i, kind in at.items():
        if kind == "huge_field":
            rows[i]["item_id"] = "h" * 100_000
        elif kind == "control_chars":
            rows[i]["user_id"] = "u\x01\x07\x1b" + rows[i]["user_id"]
        elif kind == "mixed_types":
            rows[i]["value"] = "abc"
    fields = [f for f in FIELDS if not ("missing_column" in kinds and f == "item_id")]
    if fmt == "parquet":
        frame = pd.DataFrame(rows)[fields]
        if "mixed_types" in kinds:  # a text column of numbers and one word
            frame["value"] = frame["value"].map(lambda v: None if pd.isna(v) else str(v))
        frame.to_parquet(path)
        return
    if fmt == "jsonl":
        lines = [(json.dumps({f: r[f] for f in fields}) + "\n").encode() for r in rows]
        for i, kind in at.items():
            if kind == "bad_encoding":
                lines[i] = lines[i].replace(b'"user_id": "', b'"user_id": "\xe9', 1)
            elif kind == "wrong_delimiter":
                lines[i] = _row_text(rows[i], ",").encode()
            elif kind == "broken_quoting":
                lines[i] = lines[i].rstrip(b"}\n") + b', "note": "never closed}\n'
        data = b"".join(lines)
    else:
        sep = "," if fmt == "csv" else "\t"
        lines = [(sep.join(fields) + "\n").encode()]
        lines += [_row_text(r, sep, fields).encode() for r in rows]
        for i, kind in at.items():
            if kind == "bad_encoding":
                lines[i + 1] = b"\xe9" + lines[i + 1]
            elif kind == "wrong_delimiter":
                lines[i + 1] = lines[i + 1].replace(sep.encode(), b";")
            elif kind == "broken_quoting":
                lines[i + 1] = b'"' + lines[i + 1]
        data = b"".join(lines)
    if "byte_order_mark" in kinds:
        data = b"\xef\xbb\xbf" + data
    if "utf16" in kinds:
        data = data.decode("utf-8", errors="surrogateescape").encode("utf-16", "surrogatepass")
    path.write_bytes(data)


def expected(fmt: str, rows: list[dict], faults: list[tuple]) -> tuple[bool, Counter]:
    """(fatal, drop reasons): what the injected faults imply."""
    outcomes = [IMPLIES[k][fmt] for k, _ in faults]
    if FATAL in outcomes:
        return True, Counter()
    return False, Counter(o for o in outcomes if o != KEPT)


def tables(db: Path) -> dict:
    with Store(db, read_only=True) as s:
        names = [r[0] for r in s.con.execute("SHOW TABLES").fetchall()]
        return {t: s.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in names}


@pytest.fixture(scope="module")
def base_store(tmp_path_factory) -> Path:
    """A store that already holds events (a failed ingest must leave them exactly so)."""
    root = tmp_path_factory.mktemp("faults")
    first = root / "first.csv"
    first.write_text("user_id,item_id,event_type,timestamp\nold1,x,view,1500000000\n")
    with Store(root / "base.duckdb") as s:
        ingest(s, first)
    return root / "base.duckdb"


@pytest.mark.parametrize("kind", sorted(IMPLIES))
def test_ingest_keeps_drops_or_refuses_as_the_faults_imply(base_store, kind):
    runner = CliRunner()
    before = tables(base_store)
    seen: Counter = Counter()

    @bounded(4)
    @given(fault_files(kind))
    def check(case):
        fmt, rows, faults = case
        seen.update(k for k, _ in faults)
        fatal, dropped = expected(fmt, rows, faults)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"events.{fmt}"
            write(path, fmt, rows, faults)
            db = Path(tmp) / "s.duckdb"
            shutil.copyfile(base_store, db)
            result = runner.invoke(app, ["ingest", str(path), "--db", str(db), "--json"])
            if fatal:
                out = result.output.strip()
                assert result.exit_code == 2, (faults, out)
                assert len(out.splitlines()) == 1 and str(path) in out, (faults, out)
                assert tables(db) == before, faults
                return
            assert result.exit_code == 0, (faults, result.output)
            report = json.loads(result.output)
            assert report["dropped"] == dict(dropped), (faults, report["dropped"])
            assert report["kept"] == len(rows) - sum(dropped.values()), faults
            assert report["rows_read"] == len(rows), faults

    check()
    assert seen[kind] >= 1, f"{kind} was never generated"
