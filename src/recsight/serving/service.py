"""The service object: the state the routes share (store, pipeline, history cache,
telemetry, write paths) and the operations on it.

The service is the store's only writer while it runs (DuckDB allows one writing process).
Every write goes through one lock and one transaction, and an event is acknowledged only
after its transaction committed, so a crash never loses an acknowledged event.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from recsight.data.histories import HistorySnapshot, events_after, write_history_snapshot
from recsight.data.pseudonyms import UserIds
from recsight.data.schema import canonical_event_type
from recsight.data.store import Store
from recsight.data.validation import EventRules, check_event, stored_scale
from recsight.privacy import DEFAULT_MIN_GROUP_SIZE
from recsight.privacy.unlearn import pending_retrain
from recsight.serving.batching import MicroBatcher
from recsight.serving.history import HistoryCache, StoredHistories
from recsight.serving.pipeline import History, Pipeline, RecommendationList, RecommendRequest
from recsight.serving.schemas import EventIn, EventsAck
from recsight.serving.telemetry import Telemetry
from recsight.serving.writes import ExposureLog, GroupCommit

log = logging.getLogger("recsight.serving")
T = TypeVar("T")

API_KEY_ENV = "RECSIGHT_API_KEY"
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a batch of ~5,000 events
CLUSTER_MIN_LAG = 100_000  # events past the by-user copy before it is rebuilt
#: events past the history snapshot before it is rebuilt, at least (else 1% of the events):
#: those are read into memory at start-up (~1M at 100M events: ~2 s, ~200 MB)
SNAPSHOT_MIN_LAG = 100_000


_EPOCH, _MICROSECOND = datetime(1970, 1, 1), timedelta(microseconds=1)


#: request ids: unique, not secret (they join exposures to later events)
_REQUEST_IDS = random.Random()


def snapshot_max_lag(n_events: int) -> int:
    """Events past the history snapshot beyond which it is rebuilt (and not used at start)."""
    return max(SNAPSHOT_MIN_LAG, n_events // 100)


@dataclass
class ServiceConfig:
    model: Path
    db: Path
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    snapshot_dir: Path | None = None
    leaderboard: Path | None = None
    report_dir: Path | None = None
    history_events: int = 200
    min_group_size: int = DEFAULT_MIN_GROUP_SIZE  # the dashboard hides smaller groups
    show_examples: bool = False  # the dashboard lists sample (single) users
    history_users: int = 100_000  # users whose histories stay in memory (least recent evicted)
    llm: Any = None  # a recsight.llm generator for reworded explanations, when configured
    torch_threads: int = 1  # torch's intra-op threads, set once at start-up (torch models)
    # how long a recommendation request waits for others; 0: none, requests that arrive while
    # a pass runs share the next (measured: a 2-ms wait cost ALS 6 ms of p50 at 200 req/s)
    batch_window_ms: float = 0.0
    max_batch: int = 64  # recommendation requests scored in one pass at most


class Service:
    """State shared by the request handlers."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.store = Store(config.db)
        # only ingest sets the scale, and ingest cannot open a store the service holds
        self.rating_scale = stored_scale(self.store)
        # clients send their own ids; a pseudonymized store holds keyed hashes of them
        self.user_ids = UserIds.for_store(self.store)
        self.write_lock = threading.Lock()
        self.store.con.execute(
            "CREATE TABLE IF NOT EXISTS exposures (request_id VARCHAR, user_id VARCHAR, "
            "item_id VARCHAR, position INTEGER, model_version VARCHAR, ts TIMESTAMP)"
        )
        self._threads = ExitStack()
        self._threads_fixed = False
        self.pipeline = self._load(config.model, self.store.items_frame())
        # histories are read by user on first request, each thread on its own connection
        self._readers = threading.local()
        self._reader_stores: list[Store] = []
        self._readers_lock = threading.Lock()
        # an erasure rewrites the store file: it waits for reads in flight and holds new ones
        # back, then every thread opens a new read connection (`_generation` moved on)
        self._gate = threading.Condition()
        self._active_reads = 0
        self._rewriting = 0
        self._generation = 0
        # misses read the store's history snapshot (no query), else query the store
        self.stored_histories = StoredHistories(
            lambda user, n: self.read(lambda store: store.recent_events(user, n))
        )
        self._install_snapshot(HistorySnapshot.current(self.store), self.store, self._generation)
        self.histories = HistoryCache(
            self.stored_histories,
            max_events=config.history_events,
            max_users=config.history_users,
        )
        self._clusterer_store: Store | None = None
        self._clusterer = self._start_clusterer()
        # the model is long-lived millions of objects: move them out of the garbage
        # collector's reach, or every full collection pauses requests for 100s of ms
        gc.collect()
        gc.freeze()
        self.telemetry = Telemetry()
        self.exposures = ExposureLog(self._write_exposures)
        self.commits = GroupCommit(self._append_events, self.write_lock)
        self.batcher: MicroBatcher[tuple[str | None, RecommendRequest], RecommendationList] = (
            MicroBatcher(
                self._recommend_many,
                window=config.batch_window_ms / 1000,
                max_batch=config.max_batch,
            )  # fmt: skip
        )
        self.started = time.time()

    async def recommend_user(
        self, user_id: str, k: int, exclude_seen: bool, category: str | None, explain: bool
    ) -> RecommendationList:
        """A (pseudonymized) user's recommendations. A history not in the cache is read on
        the micro-batch thread when the snapshot holds it (memory reads): a hop to the thread
        pool and back cost more CPU than the read (0.8-0.9 CPU ms a miss against 0.3 for the
        read at 10M events). Store queries, which let go of the GIL and so run beside the
        batches, still go to the thread pool (never the event loop)."""
        history = self.histories.cached(user_id)
        if history is None and self.stored_histories.snapshot is None:
            history = await run_in_threadpool(self.histories.get, user_id)
        placeholder = History(user_id) if history is None else history
        request = RecommendRequest(placeholder, k, exclude_seen, category, explain)
        return await self.batcher.submit((user_id if history is None else None, request))

    def _recommend_many(
        self, batch: Sequence[tuple[str | None, RecommendRequest]]
    ) -> list[RecommendationList | Exception]:
        """The micro-batcher's pass: the histories of requests that name a user to read
        (`recommend_user`) read first, then the pipeline's answers; a failed read fails its
        own request only."""
        out: list[RecommendationList | Exception | None] = [None] * len(batch)
        ready, where = [], []
        for n, (user_id, request) in enumerate(batch):
            if user_id is not None:
                try:
                    request = replace(request, history=self.histories.get(user_id))
                except Exception as exc:  # the request's own failure, like a thread pool's
                    out[n] = exc
                    continue
            ready.append(request)
            where.append(n)
        for n, answer in zip(where, self.pipeline.recommend_many(ready), strict=True):
            out[n] = answer
        return out  # type: ignore[return-value]

    def _start_clusterer(self) -> threading.Thread:
        thread = threading.Thread(target=self._cluster_by_user, daemon=True, name="cluster-by-user")
        thread.start()
        return thread

    def _cluster_by_user(self) -> None:
        """Keep the store's by-user copy (see `Store.cluster_by_user`) and history snapshot
        (`recsight.data.histories`) fresh: rebuilt in the background when missing or when
        too many events came after them (a tenth for the copy, `snapshot_max_lag` for the
        snapshot), so start-up never waits for them; until they are ready, history loads
        query the store (the copy, else a scan of the event table)."""
        generation = self._generation
        store = self._clusterer_store = self.store.reader()
        try:
            n_events = store.count("event_log")
            # the snapshot first: it serves the misses, the copy only when there is none
            current = self.stored_histories.snapshot
            if current is None or self.stored_histories.tail_events > snapshot_max_lag(n_events):
                t0 = time.perf_counter()
                snapshot = write_history_snapshot(store, current=False)
                if self._install_snapshot(snapshot, store, generation):
                    log.info("history snapshot of %d events written in %.1f s",
                             snapshot.n_events, time.perf_counter() - t0)  # fmt: skip
            lag = store.by_user_lag()
            if lag is None or lag > max(CLUSTER_MIN_LAG, n_events // 10):
                t0 = time.perf_counter()
                n = store.cluster_by_user()
                log.info("by-user copy of %d events built in %.1f s", n, time.perf_counter() - t0)
        except (duckdb.Error, OSError):  # interrupted at shutdown or by an erasure: next time
            log.warning("by-user copy or history snapshot not built; history loads query "
                        "the store", exc_info=True)  # fmt: skip
        finally:
            store.close()

    def _install_snapshot(
        self, snapshot: HistorySnapshot | None, store: Store, generation: int
    ) -> bool:
        """Serve history misses from `snapshot` plus the events stored after it, unless
        too many came after it, or an erasure happened since it was read (`generation`
        moved on: it may hold erased users; its files are deleted). Under the write lock,
        so that no event is committed between reading the later events and installing."""
        if snapshot is None:
            return False
        with self.write_lock:
            if generation != self._generation:
                shutil.rmtree(snapshot.path, ignore_errors=True)
                return False
            lag = int(store.con.execute(
                "SELECT count(*) FROM event_log WHERE seq > ?", [snapshot.upto]
            ).fetchall()[0][0])  # fmt: skip
            if lag > snapshot_max_lag(snapshot.n_events + lag):
                return False
            snapshot.make_current(store)
            self.stored_histories.install(snapshot, events_after(store, snapshot.upto))
        return True

    def _append_events(self, records: list[dict]) -> list[dict[str, Any]]:
        """Store a batch of events (under the write lock) and hand the stored ones to the
        history snapshot's in-memory tail, exactly as stored (the store checks them by the
        same rules, at the same `now`); past `snapshot_max_lag` a rebuild starts."""
        rules = EventRules(rating_scale=self.rating_scale)
        results = self.store.append_events(records, rules)
        histories = self.stored_histories
        snapshot = histories.snapshot
        if snapshot is None:
            return results
        for i, (rec, res) in enumerate(zip(records, results, strict=True)):
            if res["status"] == "stored":
                row = check_event(i, rec, rules)
                ts = (row["timestamp"] - _EPOCH) // _MICROSECOND
                event = (res["seq"], row["item_id"], row["event_type"], row["value"], ts)
                histories.record(row["user_id"], event)
        lag = histories.tail_events
        if lag > snapshot_max_lag(snapshot.n_events + lag) and not self._clusterer.is_alive():
            self._clusterer = self._start_clusterer()
        return results

    def reader(self) -> Store:
        """This thread's read connection to the store: reads on it never take the write
        lock, so analytics and history loads neither wait for nor delay event ingest."""
        entry = getattr(self._readers, "entry", None)
        if entry is None or entry[0] != self._generation:
            entry = self._readers.entry = (self._generation, self.store.reader())
            with self._readers_lock:
                self._reader_stores.append(entry[1])
        return entry[1]

    def read(self, fn: Callable[[Store], T]) -> T:
        """`fn` on this thread's read connection, unless an erasure is rewriting the store
        file (then it waits for it)."""
        with self._gate:
            while self._rewriting:
                self._gate.wait()
            self._active_reads += 1
        try:
            return fn(self.reader())
        finally:
            with self._gate:
                self._active_reads -= 1
                self._gate.notify_all()

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """No read in flight nor starting, and the read connections closed: the store file
        can be rewritten (`Store.compact`)."""
        with self._gate:
            self._rewriting += 1
            while self._active_reads:
                self._gate.wait()
        try:
            if self._clusterer.is_alive() and self._clusterer_store is not None:
                self._clusterer_store.con.interrupt()  # its copy may predate the erasure
            self._clusterer.join(timeout=30)
            with self._readers_lock:
                for reader in self._reader_stores:
                    reader.close()
                self._reader_stores.clear()
            self._generation += 1
            yield
        finally:
            with self._gate:
                self._rewriting -= 1
                self._gate.notify_all()

    def _write_exposures(self, table: pa.Table) -> None:
        # one columnar insert: DuckDB's executemany runs row by row and would hold the
        # write lock (and so every POST /events) for seconds after a busy interval
        with self.write_lock:
            self.store.con.register("_exposures_batch", table)
            try:
                self.store.con.execute("INSERT INTO exposures SELECT * FROM _exposures_batch")
            finally:
                self.store.con.unregister("_exposures_batch")

    def _load(self, folder: Path, items: pd.DataFrame) -> Pipeline:
        """Load a pipeline; the first time a torch model is loaded, fix torch's thread count
        for the service's life (`fixed_torch_threads`): models then never change it on the
        request path, where concurrent requests would race on the process-wide setting."""
        pipeline = Pipeline.load(folder, items, self.config.llm)
        if "torch" in sys.modules and not self._threads_fixed:
            from recsight.models.neural.training import fixed_torch_threads

            self._threads.enter_context(fixed_torch_threads(self.config.torch_threads))
            self._threads_fixed = True
        for model in (pipeline.main, *pipeline.fallbacks):
            # sequence models score through a traced network: less CPU per pass, the same
            # scores (`SequenceRecommender.trace_scoring` checks them)
            trace = getattr(model, "trace_scoring", None)
            if trace is not None and not trace():
                log.warning("%s: scoring stays eager (the trace did not match)", model.name)
        return pipeline

    def close(self) -> None:
        if self._clusterer.is_alive() and self._clusterer_store is not None:
            self._clusterer_store.con.interrupt()
        self._clusterer.join(timeout=10)
        self.batcher.close()
        self.commits.stop()
        self.exposures.stop()
        for reader in self._reader_stores:
            reader.close()
        self.store.close()
        self._threads.close()

    def persist(self, events: list[EventIn]) -> EventsAck:
        """Store events by the contract file ingest applies (`recsight.data.validation`): a
        record that breaks it raises `EventError` naming it and the field, nothing stored."""
        records = [e.model_dump() for e in events]
        rules = EventRules(rating_scale=self.rating_scale)
        for i, rec in enumerate(records):
            check_event(i, rec, rules)
        for rec in records:
            rec["user_id"] = self.user_ids(rec["user_id"])
            rec["session_id"] = self.user_ids.session(rec.get("session_id"))
        results = self.commits.submit(records)
        for rec, res in zip(records, results, strict=True):
            if res["status"] == "stored":  # the next recommendation sees this event
                etype = canonical_event_type(rec["event_type"])
                self.histories.add(rec["user_id"], res["seq"], rec["item_id"], etype, rec["value"])
        stored = sum(r["status"] == "stored" for r in results)
        self.telemetry.events.inc(stored)
        return EventsAck(stored=stored, duplicates=len(results) - stored, results=results)

    def forget(self, user_id: str) -> dict[str, Any]:
        """Erase a user from the store, the history cache and the served models (saved and
        loaded); answers the same shape, with zeros, for a user the service never had."""
        from recsight.privacy.erasure import erase_users
        from recsight.privacy.unlearn import forget_in_folder, model_dirs

        user_id = self.user_ids(user_id)
        self.exposures.flush()  # buffered exposures of the user are written, then deleted
        with self._exclusive(), self.write_lock:
            self.exposures.discard_user(user_id)  # any served since the flush
            erased = erase_users(self.store, [user_id])  # deletes the history snapshot too
            self.stored_histories.drop()  # misses query the store until a new one is built
            self.histories.evict(user_id)
            pipeline = self.pipeline
            loaded = [pipeline.main, *pipeline.fallbacks]
            if len(loaded) != len(model_dirs(self.config.model)):
                loaded = None  # not the folder's models: let the unlearning load them
            models = [
                {k: v for k, v in asdict(m).items() if k != "path"}
                for m in forget_in_folder(self.config.model, [user_id], models=loaded)
            ]
            self.pipeline = self._load(self.config.model, self.store.items_frame())
        if not self._clusterer.is_alive():  # a snapshot without the erased user
            self._clusterer = self._start_clusterer()
        user = erased.users[0]
        return {
            "removed": {
                "events": user.events,
                "exposures": user.exposures,
                "profile_rows": user.profile_rows,
                "other_rows": user.other_rows,
            },
            "models": models,
            "stale_exports": erased.stale_exports,
            "erasures_pending_retrain": pending_retrain(self.pipeline.manifest),
        }

    def reload(self, folder: Path) -> dict[str, Any]:
        """Load the model or pipeline in `folder` and swap it in; requests in flight finish
        on the old one (the swap is one reference assignment)."""
        new = self._load(folder, self.read(lambda store: store.items_frame()))
        old_version, self.pipeline = self.pipeline.version, new
        self.config.model = folder
        return {"previous": old_version, "current": new.version, "manifest": new.manifest}

    def respond(self, user_id: str | None, recs: RecommendationList) -> dict[str, Any]:
        """The response body of a recommendation list (`RecommendationsOut`'s fields, in
        its order, as plain JSON values), its exposures logged."""
        # 128 random bits from the seeded generator, not uuid4: uuid4 reads os.urandom, a
        # syscall that lets go of the GIL on every request, and under load taking it back
        # from the micro-batch thread waits up to the interpreter's switch interval
        request_id = f"{_REQUEST_IDS.getrandbits(128):032x}"
        version = self.pipeline.version
        now = datetime.now(UTC).replace(tzinfo=None)
        self.exposures.add(request_id, user_id, [r.item_id for r in recs.items], version, now)
        self.telemetry.recommendations.labels(recs.source).inc()
        return {
            "request_id": request_id,
            "user_id": user_id,
            "model_version": version,
            "source": recs.source,
            "recommendations": [r.__dict__ for r in recs.items],
        }


def config_from_env(model: Path, db: Path, **kwargs: Any) -> ServiceConfig:
    """A config whose API key comes from RECSIGHT_API_KEY."""
    return ServiceConfig(model=model, db=db, api_key=os.environ.get(API_KEY_ENV), **kwargs)
