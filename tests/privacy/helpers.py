"""Searching files and tables for an id, in every encoding it could be stored in."""

from __future__ import annotations

from pathlib import Path

import duckdb


def encodings(text: str) -> list[bytes]:
    """The byte forms of `text`: UTF-8 (DuckDB, Parquet, JSON) and UTF-16/32 (numpy's string
    arrays in .npz files are UTF-32)."""
    return [text.encode(e) for e in ("utf-8", "utf-16-le", "utf-32-le")]


def files_holding(paths: list[Path], text: str) -> list[str]:
    """The files under `paths` (files or folders) whose bytes contain `text`."""
    found = []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            data = f.read_bytes()
            if any(b in data for b in encodings(text)):
                found.append(str(f))
    return found


def tables_holding(con: duckdb.DuckDBPyConnection, text: str) -> list[str]:
    """`table.column` for every text column of every table whose values contain `text`."""
    cols = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'main' AND data_type IN ('VARCHAR', 'VARCHAR[]')"
    ).fetchall()
    hits = []
    for table, column in cols:
        n = con.execute(
            f'SELECT count(*) FROM "{table}" WHERE strpos(CAST("{column}" AS VARCHAR), ?) > 0',
            [text],
        ).fetchone()[0]
        if n:
            hits.append(f"{table}.{column}")
    return hits
