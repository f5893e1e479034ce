"""Reader faults found while building the ingest fuzzer (tests/fuzz/test_ingest_faults.py),
one regression test each."""

from __future__ import annotations

import re

import pytest

from recsight.data.ingest import ingest
from recsight.data.readers import check_line_endings
from recsight.data.store import Store
from recsight.errors import InputError

HEADER = "user_id,item_id,event_type,timestamp\n"


def rows(n: int) -> str:
    return "".join(f"u{i},i{i % 50},view,{1_700_000_000 + i}\n" for i in range(n))


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    """Regression: a UTF-8 file with a BOM (as spreadsheets save CSV) failed with 'missing
    required column(s) user_id; the file has columns \\ufeffuser_id, ...'."""
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + rows(3)).encode())
    with Store(tmp_path / "s.duckdb") as s:
        assert ingest(s, path).kept == 3


def test_a_line_in_another_encoding_is_dropped_as_bad_encoding(tmp_path):
    """Regression: a latin-1 line was reported as 'the line does not split into the
    header's number of fields'."""
    path = tmp_path / "enc.csv"
    path.write_bytes((HEADER + rows(2)).encode() + "caf\xe9,i1,view,1700000000\n".encode("latin-1"))
    with Store(tmp_path / "s.duckdb") as s:
        rep = ingest(s, path)
    assert rep.kept == 2 and rep.dropped == {"bad_encoding": 1}
    assert rep.examples["bad_encoding"] == [4]


def test_an_unterminated_quote_after_the_sniffed_head_stops_with_its_line(tmp_path):
    """Regression: past the rows DuckDB samples, an unterminated quote swallowed the rest of
    the file into one field: 5,000 rows silently lost, reported as one malformed line."""
    lines = rows(30_000).splitlines(keepends=True)
    lines.insert(25_000, 'u9,"i9,view,1700000000\n')
    path = tmp_path / "quote.csv"
    path.write_text(HEADER + "".join(lines))
    with Store(tmp_path / "s.duckdb") as s, pytest.raises(InputError) as err:
        ingest(s, path)
    assert str(err.value).startswith(f"{path}: line 25002: a quoted field is never closed")


def test_utf16_is_named(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes((HEADER + rows(2)).encode("utf-16"))
    with Store(tmp_path / "s.duckdb") as s, pytest.raises(InputError, match="UTF-16 encoded"):
        ingest(s, path)


def test_a_bare_carriage_return_among_newline_lines_is_named_with_its_line(tmp_path):
    """Regression: bare CRs (old Mac line ends) among \\n lines, here past DuckDB's sniffed
    head, failed with 'cannot read as csv (... state machine reached an invalid state)'."""
    path = tmp_path / "mixed.csv"
    body = HEADER + rows(25_000) + rows(3).replace("\n", "\r") + rows(2)
    path.write_bytes(body.encode())
    with Store(tmp_path / "s.duckdb") as s, pytest.raises(InputError) as err:
        ingest(s, path)
    assert str(err.value).startswith(f"{path}: line 25002: a bare carriage return (\\r")
    assert "expected one line-ending style" in str(err.value)


def test_a_file_of_bare_carriage_return_lines_reads_as_it_is(tmp_path):
    path = tmp_path / "mac.csv"
    path.write_bytes((HEADER + rows(30)).replace("\n", "\r").encode())
    with Store(tmp_path / "s.duckdb") as s:
        assert ingest(s, path).kept == 30


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 1 << 20])
def test_check_line_endings_agrees_with_a_regex_at_any_block_size(tmp_path, chunk):
    """The streamed check names the line (counted by \\n) of the first CR not followed by a
    \\n, whatever the block boundaries (a CRLF split across two blocks is no bare CR)."""
    cases = [b"a\r\nb\r\nc\r\n", b"a\nb\rc\n", b"a\r\nb\r", b"a\rb\rc", b"a\n\r\nb\rx\n", b"\r\n"]
    for data in cases:
        path = tmp_path / "f.csv"
        path.write_bytes(data)
        bare = re.search(rb"\r(?!\n)", data)
        if bare is None or b"\n" not in data:
            check_line_endings(path, chunk)
        else:
            line = data.count(b"\n", 0, bare.start()) + 1
            with pytest.raises(InputError, match=f"f.csv: line {line}: a bare carriage"):
                check_line_endings(path, chunk)
