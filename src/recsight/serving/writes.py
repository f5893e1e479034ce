"""The service's two write paths besides erasure: events in group commits, exposures in
buffered batches. Both go through the store's one write lock (DuckDB allows one writer)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime

import pyarrow as pa

log = logging.getLogger("recsight.serving")

#: The exposures table: one row per recommended item per served list.
EXPOSURE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("position", pa.int32()),
        ("model_version", pa.string()),
        ("ts", pa.timestamp("us")),
    ]
)
EXPOSURE_COLUMNS = EXPOSURE_SCHEMA.names


class ExposureLog:
    """Buffers served recommendations and writes them in batches (one transaction per flush).

    Exposures are telemetry, not acknowledged data: flushing every `interval` seconds keeps
    the request path free of disk writes; a crash can lose the last interval's exposures.
    Rows are buffered by column and written as one Arrow table: building a pandas frame from
    row tuples and a commit every half second took about a third of the service's CPU at
    200 requests/s.
    """

    def __init__(self, write: Callable[[pa.Table], None], interval: float = 2.0):
        self._write = write
        self._cols: dict[str, list] = {c: [] for c in EXPOSURE_COLUMNS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, args=(interval,))

    def start(self) -> None:
        self._thread.start()

    def add(
        self,
        request_id: str,
        user_id: str | None,
        item_ids: list[str],
        model_version: str,
        ts: datetime,
    ) -> None:
        """Buffer one served list: `item_ids` in the order shown (position 0 first)."""
        k = len(item_ids)
        with self._lock:
            c = self._cols
            c["request_id"].extend([request_id] * k)
            c["user_id"].extend([user_id] * k)
            c["item_id"].extend(item_ids)
            c["position"].extend(range(k))
            c["model_version"].extend([model_version] * k)
            c["ts"].extend([ts] * k)

    def discard_user(self, user_id: str) -> None:
        """Drop the buffered exposures of one user (an erasure is under way)."""
        with self._lock:
            keep = [i for i, u in enumerate(self._cols["user_id"]) if u != user_id]
            self._cols = {name: [col[i] for i in keep] for name, col in self._cols.items()}

    def flush(self) -> None:
        with self._lock:
            cols, self._cols = self._cols, {c: [] for c in EXPOSURE_COLUMNS}
        if cols["request_id"]:
            self._write(pa.table(cols, schema=EXPOSURE_SCHEMA))

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # keep serving; the next flush retries nothing lost twice
                log.exception("writing exposures failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()


class GroupCommit:
    """Persists the event batches of concurrent requests in one transaction.

    A DuckDB commit costs ~20 ms here whatever it holds, so one transaction per request caps
    single-event posts at ~45/s. Requests queue their batches; one writer thread takes all
    that are waiting, appends them in one transaction (later batches see earlier ones, so
    duplicate event ids across requests resolve as if sent one after another) and then
    answers each request with its own results: still acknowledged only after the commit.
    """

    def __init__(self, append: Callable[[list[dict]], list[dict]], lock: threading.Lock):
        self._append = append
        self._lock = lock  # the store's write lock, shared with the other writers
        self._queue: list[tuple[list[dict], Future]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True, name="group-commit")
        self._thread.start()

    def submit(self, records: list[dict]) -> list[dict]:
        """Append `records` (validated by the store); returns once they are committed."""
        done: Future = Future()
        with self._cond:
            if self._stop:
                raise RuntimeError("the service is shutting down")
            self._queue.append((records, done))
            self._cond.notify()
        return done.result()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            self._commit(batch)

    def _commit(self, batch: list[tuple[list[dict], Future]]) -> None:
        merged = [r for records, _ in batch for r in records]
        try:
            with self._lock:
                results = self._append(merged)
        except Exception as exc:  # the transaction rolled back: nothing of it was stored
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
            else:
                # one request's bad record failed them all: retry one by one, so each request
                # gets its own outcome and an error names that request's own record numbers
                for item in batch:
                    self._commit([item])
            return
        start = 0
        for records, done in batch:
            done.set_result(results[start : start + len(records)])
            start += len(records)

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
