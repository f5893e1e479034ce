"""Erasing users from a store: their events, exposures, id-map entry and profile rows.

`erase_users` deletes in one transaction, renumbers the remaining users so the id map stays
contiguous, records each erasure in `erasure_log` as a keyed hash of the id (never the id),
and rewrites the database file (`Store.compact`) so no free block still holds the deleted
bytes. Parquet exports and snapshots are files outside the store: each one written is recorded
next to the store (`<db>.exports`), and an erasure lists those that still contain the users.
The service's history snapshot (`recsight.data.histories`) is derived data the
store vouches for: the erasure's transaction withdraws it and its files are deleted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb

from recsight.data.exports import stale_exports
from recsight.data.histories import META_KEY as HISTORY_SNAPSHOT_KEY
from recsight.data.histories import delete_history_snapshots
from recsight.data.pseudonyms import UserIds, keyed_hash
from recsight.data.store import Store

#: Store metadata: the random key of the erasure log's hashes in a store without a pseudonym key.
META_ERASURE_KEY = "erasure_log_key"

_LOG_TABLE = """
CREATE TABLE IF NOT EXISTS erasure_log (
    user_hash VARCHAR NOT NULL, erased_at TIMESTAMP NOT NULL, events BIGINT NOT NULL,
    exposures BIGINT NOT NULL, profile_rows BIGINT NOT NULL, other_rows BIGINT NOT NULL
)
"""

#: Where the removed rows are counted; rows of any other table with a `user_id` or `user_idx`
#: column (derived copies such as the service's by-user events, later features) are deleted
#: too and, for `user_id` tables, counted as `other_rows`.
_COUNTED_AS = {"users": "profile_rows", "exposures": "exposures"}


@dataclass
class UserErasure:
    """What was removed for one requested user (all zeros for a user the store never had)."""

    user_hash: str
    events: int = 0
    exposures: int = 0
    profile_rows: int = 0
    other_rows: int = 0
    id_mapped: bool = False


@dataclass
class StoreErasure:
    """The outcome of one `erase_users` call."""

    users: list[UserErasure]
    erased_at: str
    #: exports/snapshots written before the erasure that still hold some of the users' rows
    stale_exports: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        keys = ("events", "exposures", "profile_rows", "other_rows")
        return {k: sum(getattr(u, k) for u in self.users) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "erased_at": self.erased_at,
            "users": [asdict(u) for u in self.users],
            "totals": self.totals(),
            "stale_exports": self.stale_exports,
        }


def erasure_key(store: Store) -> bytes:
    """The key of the erasure log's hashes: the pseudonym key of a pseudonymized store, else a
    random key created once and kept in the store's metadata."""
    ids = UserIds.for_store(store)
    if ids.key is not None:
        return ids.key
    key = store.meta(META_ERASURE_KEY)
    if key is None:
        key = secrets.token_hex(32)
        store.set_meta(META_ERASURE_KEY, key)
    return key.encode()


def erasure_hash(key: bytes, stored_id: str) -> str:
    """The erasure log's entry for a stored user id."""
    return keyed_hash(key, stored_id, "erasure-log")


def _tables_with(con: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    """The store's tables (not views) with a column named `column`, user_map excepted."""
    rows = con.execute(
        "SELECT table_name FROM information_schema.columns c JOIN information_schema.tables t "
        "USING (table_schema, table_name) WHERE table_schema = 'main' AND column_name = ? "
        "AND table_type = 'BASE TABLE' AND table_name NOT IN ('user_map', 'erasure_log') "
        "ORDER BY table_name",
        [column],
    ).fetchall()
    return [r[0] for r in rows]


def erase_users(store: Store, stored_ids: Sequence[str], compact: bool = True) -> StoreErasure:
    """Delete every row of the users (ids as stored: pseudonyms in a pseudonymized store) and
    log the erasure; with `compact`, rewrite the file so the bytes are gone too."""
    con = store.con
    ids = list(dict.fromkeys(str(u) for u in stored_ids))  # in the order given
    key = erasure_key(store)
    now = datetime.now(UTC).replace(tzinfo=None)
    result = {u: UserErasure(erasure_hash(key, u)) for u in ids}
    con.execute(_LOG_TABLE)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _erase AS SELECT unnest(?::VARCHAR[]) AS user_id",
                    [ids])  # fmt: skip
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _erase_idx AS SELECT m.user_id, m.user_idx "
            "FROM user_map m SEMI JOIN _erase e ON m.user_id = e.user_id"
        )
        for user, n in con.execute(
            "SELECT x.user_id, count(l.user_idx) FROM _erase_idx x "
            "LEFT JOIN event_log l ON l.user_idx = x.user_idx GROUP BY 1"
        ).fetchall():
            result[user].events, result[user].id_mapped = int(n), True
        for table in _tables_with(con, "user_id"):
            field_name = _COUNTED_AS.get(table, "other_rows")
            counts = con.execute(
                f'SELECT user_id, count(*) FROM "{table}" SEMI JOIN _erase USING (user_id) '
                "GROUP BY 1"
            ).fetchall()
            for user, n in counts:
                setattr(result[user], field_name, getattr(result[user], field_name) + int(n))
            con.execute(f'DELETE FROM "{table}" WHERE user_id IN (SELECT user_id FROM _erase)')
        idx_tables = _tables_with(con, "user_idx")
        for table in idx_tables:
            con.execute(
                f'DELETE FROM "{table}" WHERE user_idx IN (SELECT user_idx FROM _erase_idx)'
            )
        _renumber_users(con, idx_tables)
        # the service's history snapshot holds the users' events: no longer
        # valid from this commit on, its files deleted after it
        con.execute("DELETE FROM meta WHERE key = ?", [HISTORY_SNAPSHOT_KEY])
        con.executemany(
            "INSERT INTO erasure_log VALUES (?, ?, ?, ?, ?, ?)",
            [[e.user_hash, now, e.events, e.exposures, e.profile_rows, e.other_rows]
             for e in result.values()],
        )  # fmt: skip
        con.execute("DROP TABLE _erase")
        con.execute("DROP TABLE _erase_idx")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    delete_history_snapshots(store.path)
    if compact:
        store.compact()
    erased_at = now.isoformat() + "Z"
    return StoreErasure(
        list(result.values()), erased_at, stale_exports(store.path, ids, before=now)
    )


def _renumber_users(con: duckdb.DuckDBPyConnection, idx_tables: list[str]) -> None:
    """Close the gaps the erased users left in `user_idx` (models and the id index read
    the map as contiguous indices 0..n-1), keeping the remaining users' order."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _remap AS SELECT * FROM (SELECT user_idx AS old, "
        "(row_number() OVER (ORDER BY user_idx) - 1)::INTEGER AS new, user_id FROM user_map "
        "WHERE user_idx NOT IN (SELECT user_idx FROM _erase_idx)) WHERE old <> new"
    )
    con.execute("DELETE FROM user_map WHERE user_idx IN (SELECT user_idx FROM _erase_idx)")
    if not con.execute("SELECT count(*) FROM _remap").fetchone()[0]:
        con.execute("DROP TABLE _remap")
        return
    for table in idx_tables:
        con.execute(
            f'UPDATE "{table}" SET user_idx = r.new FROM _remap r WHERE "{table}".user_idx = r.old'
        )
    # user_map's keys are indexed: delete the moved rows, then insert them at their new index
    con.execute("DELETE FROM user_map WHERE user_idx IN (SELECT old FROM _remap)")
    con.execute("INSERT INTO user_map SELECT new, user_id FROM _remap ORDER BY new")
    con.execute("DROP TABLE _remap")
