"""The service's two write paths besides erasure: events in group commits, exposures in
buffered batches. Both go through the store's one write lock (DuckDB allows one writer)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

log = logging.getLogger("recsight.serving")


class ExposureLog:
    """Buffers served recommendations and writes them in batches (one transaction per flush).

    Exposures are telemetry, not acknowledged data: flushing every `interval` seconds keeps
    the request path free of disk writes; a crash can lose the last interval's exposures.
    """

    def __init__(self, write: Callable[[list[tuple]], None], interval: float = 0.5):
        self._write = write
        self._rows: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, args=(interval,))

    def start(self) -> None:
        self._thread.start()

    def add(self, rows: list[tuple]) -> None:
        with self._lock:
            self._rows.extend(rows)

    def discard_user(self, user_id: str) -> None:
        """Drop the buffered exposures of one user (an erasure is under way)."""
        with self._lock:
            self._rows = [r for r in self._rows if r[1] != user_id]

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
        if rows:
            self._write(rows)

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
