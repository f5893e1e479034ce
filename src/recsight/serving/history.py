"""Users' recent histories, kept in memory so a new event changes the next recommendation.

Loaded from the store in one query at start-up (the last `max_events` events per user) and
appended to as the service persists new events, so a request never scans the event table.
"""

from __future__ import annotations

import threading
from collections import deque

import duckdb

from recsight.serving.pipeline import History


class HistoryCache:
    """Thread-safe per-user deques of (item, type, value), oldest first."""

    def __init__(self, max_events: int = 200):
        self.max_events = max_events
        self._lock = threading.Lock()
        self._users: dict[str, deque[tuple[str, str, float | None]]] = {}

    def load(self, con: duckdb.DuckDBPyConnection) -> int:
        """Fill from the store's events; returns the number of users loaded."""
        rows = con.execute(
            f"""
            SELECT user_id, item_id, event_type, value FROM (
                SELECT user_id, item_id, event_type, value, "timestamp", seq,
                       row_number() OVER (PARTITION BY user_id
                                          ORDER BY "timestamp" DESC NULLS LAST, seq DESC) AS r
                FROM events)
            WHERE r <= {int(self.max_events)}
            ORDER BY user_id, "timestamp" NULLS FIRST, seq
            """
        ).fetchall()
        users: dict[str, deque[tuple[str, str, float | None]]] = {}
        for user, item, etype, value in rows:
            users.setdefault(user, deque(maxlen=self.max_events)).append((item, etype, value))
        with self._lock:
            self._users = users
        return len(users)

    def add(self, user_id: str, item_id: str, event_type: str, value: float | None) -> None:
        with self._lock:
            dq = self._users.setdefault(user_id, deque(maxlen=self.max_events))
            dq.append((item_id, event_type, value))

    def get(self, user_id: str) -> History:
        """The user's history (empty for an unknown user)."""
        with self._lock:
            events = list(self._users.get(user_id, ()))
        return History(
            user_id=user_id,
            items=[e[0] for e in events],
            types=[e[1] for e in events],
            values=[e[2] for e in events],
        )

    def __contains__(self, user_id: str) -> bool:
        with self._lock:
            return user_id in self._users

    def __len__(self) -> int:
        with self._lock:
            return len(self._users)
