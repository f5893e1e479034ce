"""Micro-batching: concurrent recommendation requests answered by one model pass, off the
event loop.

Requests queue up; one worker thread takes every request waiting once the first has waited
`window` seconds (or `max_batch` are waiting) and answers them with one call, so a burst of
requests costs one forward pass instead of one each, and the event loop never runs model
code (it goes on accepting and answering requests meanwhile). While the worker is busy the
next batch gathers by itself: under load no request waits for the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Q = TypeVar("Q")
A = TypeVar("A")


class MicroBatcher(Generic[Q, A]):
    """Answers requests of type Q with `run(requests) -> answers` (one answer per request,
    in order; an answer that is an exception is raised to its own request only)."""

    def __init__(
        self,
        run: Callable[[Sequence[Q]], Sequence[A | Exception]],
        window: float = 0.002,
        max_batch: int = 64,
    ):
        if window < 0 or max_batch < 1:
            raise ValueError("window must be >= 0 and max_batch >= 1")
        self._run = run
        self.window = window
        self.max_batch = max_batch
        self._queue: list[tuple[float, Q, asyncio.Future, asyncio.AbstractEventLoop]] = []
        self._cond = threading.Condition()
        self._stop = False
        self.batches = 0  # passes run, and requests answered by them
        self.requests = 0
        self._thread = threading.Thread(target=self._work, daemon=True, name="micro-batch")
        self._thread.start()

    async def submit(self, request: Q) -> A:
        """The answer to `request`, computed on the worker thread with others waiting."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._cond:
            if self._stop:
                raise RuntimeError("the service is shutting down")
            self._queue.append((time.perf_counter(), request, future, loop))
            self._cond.notify()
        return await future

    def _take(self) -> list[tuple[float, Q, asyncio.Future, asyncio.AbstractEventLoop]] | None:
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if not self._queue:
                return None
            # the window runs from the first request's arrival, so it bounds its wait
            deadline = self._queue[0][0] + self.window
            while len(self._queue) < self.max_batch and not self._stop:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            try:
                answers = list(self._run([b[1] for b in batch]))
                if len(answers) != len(batch):
                    raise RuntimeError(f"{len(answers)} answers for {len(batch)} requests")
            except Exception as exc:  # the pass failed: every request in it gets the error
                answers = [exc] * len(batch)
            self.batches += 1
            self.requests += len(batch)
            for (_, _, future, loop), answer in zip(batch, answers, strict=True):
                # a closed loop (RuntimeError): that request's client is gone, nobody waits
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, future, answer)

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def _settle(future: asyncio.Future, answer: object) -> None:
    if future.done():  # the client went away and its request was cancelled
        return
    if isinstance(answer, Exception):
        future.set_exception(answer)
    else:
        future.set_result(answer)
