"""Keyed hashing of user ids: pseudonyms (HMAC-SHA256) and the keys behind them.

A pseudonymized store holds `pseudonym(id, key)` instead of each user id, with the key taken
from `RECSIGHT_PSEUDONYM_KEY` and never stored: the store keeps only the key's fingerprint, so
it can refuse ids hashed with another key (or not hashed at all). Every entry point that takes
a user id from a person (`profile`, `recommend --user`, `forget`, the service) maps it through
`UserIds`, so clients keep using their own ids.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from recsight.errors import InputError

if TYPE_CHECKING:
    import duckdb

    from recsight.data.store import Store

PSEUDONYM_KEY_ENV = "RECSIGHT_PSEUDONYM_KEY"
#: Store metadata: the fingerprint of the pseudonym key (present = the store is pseudonymized).
META_FINGERPRINT = "pseudonym_key_fingerprint"
#: Hex characters kept of the HMAC (128 bits: collisions among billions of ids are negligible).
PSEUDONYM_HEX = 32


def keyed_hash(key: bytes, text: str, purpose: str) -> str:
    """HMAC-SHA256 of `text` under `key`, hex; `purpose` separates the uses of one key (a
    pseudonym never equals the erasure log's hash of the same id)."""
    return hmac.new(key, f"{purpose}\0{text}".encode(), hashlib.sha256).hexdigest()


def pseudonym(user_id: str, key: bytes, purpose: str = "pseudonym") -> str:
    """The pseudonym of `user_id` under `key` (the same id and key always give the same).
    Session ids, which logs often derive from user ids, are hashed with ``purpose="session"``."""
    return keyed_hash(key, str(user_id), purpose)[:PSEUDONYM_HEX]


def key_fingerprint(key: bytes) -> str:
    """A short digest that identifies a key without revealing it."""
    return hashlib.sha256(b"recsight-pseudonym-key-fingerprint\0" + key).hexdigest()[:16]


def pseudonym_key(required: bool = True) -> bytes | None:
    """The key from `RECSIGHT_PSEUDONYM_KEY` (None when unset and not `required`)."""
    value = os.environ.get(PSEUDONYM_KEY_ENV, "")
    if not value:
        if required:
            raise InputError(
                f"{PSEUDONYM_KEY_ENV} is not set: pseudonymized user ids need the key they were "
                "hashed with (set it to the same secret for every command on this store)"
            )
        return None
    return value.encode()


@dataclass(frozen=True)
class UserIds:
    """How the ids people give map to the ids a store holds: unchanged, or pseudonyms."""

    key: bytes | None = None

    @property
    def pseudonymized(self) -> bool:
        return self.key is not None

    def __call__(self, user_id: object) -> str:
        """The stored form of a user id given by a person."""
        text = str(user_id).strip()
        return text if self.key is None else pseudonym(text, self.key)

    def many(self, user_ids: list[str]) -> list[str]:
        return [self(u) for u in user_ids]

    def session(self, session_id: str | None) -> str | None:
        """The stored form of a session id (hashed too: logs often derive them from users)."""
        if session_id is None or self.key is None:
            return session_id
        return pseudonym(str(session_id).strip(), self.key, "session")

    @classmethod
    def for_fingerprint(cls, fingerprint: str | None, where: str) -> UserIds:
        """The mapping for data whose pseudonym key has `fingerprint` (None: plain ids); the
        key must be set and match. `where` names the store or model in messages."""
        if not fingerprint:
            return cls()
        key = pseudonym_key(required=False)
        if key is None:
            raise InputError(
                f"{where}: user ids are pseudonymized; set {PSEUDONYM_KEY_ENV} to the key "
                "they were hashed with"
            )
        if key_fingerprint(key) != fingerprint:
            raise InputError(
                f"{where}: {PSEUDONYM_KEY_ENV} is not the key this data was pseudonymized with "
                f"(fingerprint {key_fingerprint(key)}, expected {fingerprint})"
            )
        return cls(key)

    @classmethod
    def for_store(cls, store: Store) -> UserIds:
        """The mapping of an open store (checks the key against its fingerprint)."""
        return cls.for_fingerprint(store.meta(META_FINGERPRINT), str(store.path))


# -- ingest ---------------------------------------------------------------------------------


def check_ingest_key(
    store: Store, key: bytes | None, source_fingerprint: str | None = None
) -> None:
    """Refuse to mix plain and pseudonymized ids, or pseudonyms of two keys, in one store.
    `source_fingerprint`: the data's ids are pseudonyms already (an exported layout)."""
    fingerprint = store.meta(META_FINGERPRINT)
    if source_fingerprint:
        if fingerprint and fingerprint != source_fingerprint:
            raise InputError(
                f"{store.path}: the data's user ids are pseudonyms of another key than this "
                f"store's (fingerprint {source_fingerprint}, expected {fingerprint})"
            )
        if not fingerprint and store.count("user_map"):
            raise InputError(
                f"{store.path}: the data's user ids are pseudonyms but this store holds plain "
                "ids; ingest it into a new store"
            )
        if key is not None and key_fingerprint(key) != source_fingerprint:
            raise InputError(
                f"{PSEUDONYM_KEY_ENV} is not the key the data was pseudonymized with "
                f"(fingerprint {key_fingerprint(key)}, expected {source_fingerprint})"
            )
        return
    if fingerprint:
        if key is None:
            raise InputError(
                f"{store.path}: this store holds pseudonymized user ids: ingest with "
                f"--pseudonymize and {PSEUDONYM_KEY_ENV} set to its key"
            )
        if key_fingerprint(key) != fingerprint:
            raise InputError(
                f"{store.path}: {PSEUDONYM_KEY_ENV} is not the key this store was pseudonymized "
                f"with (fingerprint {key_fingerprint(key)}, expected {fingerprint})"
            )
    elif key is not None and store.count("user_map"):
        raise InputError(
            f"{store.path}: this store already holds plain user ids; --pseudonymize needs a new "
            "store (ingest every file into it with --pseudonymize)"
        )


def pseudonymize_column(
    con: duckdb.DuckDBPyConnection, table: str, column: str, key: bytes, purpose: str
) -> None:
    """Replace every value of `table.column` by its keyed hash, in place. The id -> pseudonym
    pairs exist only in this call's memory (DuckDB has no HMAC, so Python hashes each
    distinct id once)."""
    sql = f'SELECT DISTINCT "{column}" FROM {table} WHERE "{column}" IS NOT NULL'
    ids = [r[0] for r in con.execute(sql).fetchall()]
    if not ids:
        return
    pairs = pd.DataFrame({"_id": ids, "_p": [pseudonym(i, key, purpose) for i in ids]})
    con.register("_pseudonyms", pairs)
    try:
        con.execute(
            f'UPDATE {table} SET "{column}" = p._p FROM _pseudonyms p '
            f'WHERE {table}."{column}" = p._id'
        )
    finally:
        con.unregister("_pseudonyms")


def pseudonymize_frame(df: pd.DataFrame, column: str, key: bytes) -> pd.DataFrame:
    """A copy of `df` with `column` (user ids, trimmed as ingest trims them) hashed."""
    out = df.copy()
    ids = out[column]
    keep = ids.notna() & (ids.astype(str).str.strip() != "")
    out[column] = ids.astype(object)
    out.loc[keep, column] = [pseudonym(str(v).strip(), key) for v in ids[keep]]
    return out
