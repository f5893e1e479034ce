"""The register of exports and snapshots written from a store (a file beside it), so that
erasing a user can list the copies made before the erasure that still hold the user's rows."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import duckdb


def exports_registry(db: str | Path) -> Path:
    """The file next to a store that lists the exports and snapshots written from it."""
    db = Path(db)
    return db.with_name(db.name + ".exports")


def record_export(db: str | Path, out_dir: str | Path) -> None:
    """Note that `out_dir` now holds a copy of the store's rows (see `stale_exports`)."""
    entry = {
        "path": str(Path(out_dir).resolve()),
        "written_at": datetime.now(UTC).replace(tzinfo=None).isoformat() + "Z",
    }
    try:
        with exports_registry(db).open("a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as exc:  # the export itself succeeded; only the bookkeeping failed
        warnings.warn(f"could not record the export in {exports_registry(db)}: {exc}", stacklevel=2)


def stale_exports(db: str | Path, stored_ids: Sequence[str], before: datetime) -> list[str]:
    """Exports recorded for `db` (written before `before`) whose Parquet files still hold a
    row of one of the users: erasing from the store cannot reach them."""
    registry = exports_registry(db)
    if not registry.is_file() or not stored_ids:
        return []
    paths: dict[str, None] = {}
    for line in registry.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if datetime.fromisoformat(entry["written_at"].rstrip("Z")) <= before:
            paths[entry["path"]] = None
    con = duckdb.connect()
    try:
        return [p for p in paths if _holds_users(con, Path(p), list(stored_ids))]
    finally:
        con.close()


def _holds_users(con: duckdb.DuckDBPyConnection, folder: Path, ids: list[str]) -> bool:
    files = [folder] if folder.is_file() else sorted(folder.rglob("*.parquet"))
    for f in files:
        try:
            cols = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(f)])
                    .fetchall()}  # fmt: skip
            if (
                "user_id" in cols
                and con.execute(
                    "SELECT count(*) FROM read_parquet(?) WHERE user_id::VARCHAR IN "
                    "(SELECT unnest(?::VARCHAR[]))",
                    [str(f), ids],
                ).fetchone()[0]
            ):
                return True
        except duckdb.Error:
            if f.exists():
                return True  # unreadable: it cannot be shown free of the users, so list it
    return False
