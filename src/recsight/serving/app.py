"""The FastAPI application: real-time events, recommendations with explanations, a dashboard.

The service is the store's only writer while it runs (DuckDB allows one writing process).
Every write goes through one lock and one transaction, and an event is acknowledged only
after its transaction committed, so a crash never loses an acknowledged event.
"""

from __future__ import annotations

import gc
import hmac
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from recsight.data.schema import canonical_event_type
from recsight.data.store import Store
from recsight.errors import InputError, RecsightError
from recsight.privacy.groups import DEFAULT_MIN_GROUP_SIZE
from recsight.privacy.keys import UserIds
from recsight.privacy.unlearn import pending_retrain
from recsight.serving.history import HistoryCache
from recsight.serving.pipeline import History, Pipeline, RecommendationList
from recsight.serving.schemas import (
    EventBatch,
    EventIn,
    EventsAck,
    HistoryRequest,
    RecommendationsOut,
    ReloadRequest,
)

log = logging.getLogger("recsight.serving")
T = TypeVar("T")

API_KEY_ENV = "RECSIGHT_API_KEY"
EXPOSURE_COLUMNS = ["request_id", "user_id", "item_id", "position", "model_version", "ts"]
DEFAULT_MAX_BODY = 1 << 20  # 1 MiB: a batch of ~5,000 events
CLUSTER_MIN_LAG = 100_000  # events past the by-user copy before it is rebuilt


class BodyLimit:
    """ASGI middleware capping request bodies at `max_bytes` (413): a declared
    Content-Length is refused before any read, and a body without one (chunked) is counted
    as the app reads it."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body over {self.max_bytes} bytes"
        size = dict(scope["headers"]).get(b"content-length")
        if size is not None and (not size.isdigit() or int(size) > self.max_bytes):
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # an HTTPException passes FastAPI's body parsing as it is (others become 400)
                raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


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


@dataclass
class Telemetry:
    """Prometheus metrics of one app instance (own registry, so apps in tests don't clash)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "recsight_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recsight_request_seconds",
            "Request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.events = Counter(
            "recsight_events_ingested_total", "Events persisted", registry=self.registry
        )
        self.recommendations = Counter(
            "recsight_recommendation_lists_total",
            "Recommendation lists served",
            ["source"],
            registry=self.registry,
        )


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


class Service:
    """State shared by the request handlers."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.store = Store(config.db)
        # clients send their own ids; a pseudonymized store holds keyed hashes of them
        self.user_ids = UserIds.for_store(self.store)
        self.write_lock = threading.Lock()
        self.store.con.execute(
            "CREATE TABLE IF NOT EXISTS exposures (request_id VARCHAR, user_id VARCHAR, "
            "item_id VARCHAR, position INTEGER, model_version VARCHAR, ts TIMESTAMP)"
        )
        self.pipeline = Pipeline.load(config.model, self.store.items_frame(), config.llm)
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
        self.histories = HistoryCache(
            lambda user, n: self.read(lambda store: store.recent_events(user, n)),
            max_events=config.history_events,
            max_users=config.history_users,
        )
        self._clusterer = threading.Thread(
            target=self._cluster_by_user, daemon=True, name="cluster-by-user"
        )
        self._clusterer_store: Store | None = None
        self._clusterer.start()
        # the model is long-lived millions of objects: move them out of the garbage
        # collector's reach, or every full collection pauses requests for 100s of ms
        gc.collect()
        gc.freeze()
        self.telemetry = Telemetry()
        self.exposures = ExposureLog(self._write_exposures)
        self.commits = GroupCommit(self.store.append_events, self.write_lock)
        self.started = time.time()

    def _cluster_by_user(self) -> None:
        """Keep the store's by-user copy fresh (see `Store.cluster_by_user`): rebuilt in the
        background when missing or when a tenth of the events came after it, so start-up
        never waits for it; until it is ready, history loads scan the event table."""
        store = self._clusterer_store = self.store.reader()
        try:
            lag = store.by_user_lag()
            if lag is None or lag > max(CLUSTER_MIN_LAG, store.count("event_log") // 10):
                t0 = time.perf_counter()
                n = store.cluster_by_user()
                log.info("by-user copy of %d events built in %.1f s", n, time.perf_counter() - t0)
        except duckdb.Error:  # interrupted at shutdown, or the store is busy: next start
            log.warning("by-user copy not built; history loads scan the events", exc_info=True)
        finally:
            store.close()

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

    def _write_exposures(self, rows: list[tuple]) -> None:
        # one columnar insert: DuckDB's executemany runs row by row and would hold the
        # write lock (and so every POST /events) for seconds after a busy interval
        frame = pd.DataFrame(rows, columns=EXPOSURE_COLUMNS)
        with self.write_lock:
            self.store.con.register("_exposures_df", frame)
            try:
                self.store.con.execute("INSERT INTO exposures SELECT * FROM _exposures_df")
            finally:
                self.store.con.unregister("_exposures_df")

    def close(self) -> None:
        if self._clusterer.is_alive() and self._clusterer_store is not None:
            self._clusterer_store.con.interrupt()
        self._clusterer.join(timeout=10)
        self.commits.stop()
        self.exposures.stop()
        for reader in self._reader_stores:
            reader.close()
        self.store.close()

    def persist(self, events: list[EventIn]) -> EventsAck:
        records = [e.model_dump() for e in events]
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
        from recsight.privacy.unlearn import RetrainRequired, forget_in_folder, model_dirs

        user_id = self.user_ids(user_id)
        self.exposures.flush()  # buffered exposures of the user are written, then deleted
        with self._exclusive(), self.write_lock:
            self.exposures.discard_user(user_id)  # any served since the flush
            erased = erase_users(self.store, [user_id])
            self.histories.evict(user_id)
            pipeline = self.pipeline
            loaded = [pipeline.main, *pipeline.fallbacks]
            try:
                if len(loaded) != len(model_dirs(self.config.model)):
                    loaded = None  # not the folder's models: let the unlearning load them
                models = [
                    {k: v for k, v in asdict(m).items() if k != "path"}
                    for m in forget_in_folder(self.config.model, [user_id], models=loaded)
                ]
            except RetrainRequired as exc:
                models = [{"status": "retrain required", "detail": str(exc)}]
            self.pipeline = Pipeline.load(self.config.model, self.store.items_frame(),
                                          self.config.llm)  # fmt: skip
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

    def respond(self, user_id: str | None, recs: RecommendationList) -> RecommendationsOut:
        request_id = uuid.uuid4().hex
        version = self.pipeline.version
        now = datetime.now(UTC).replace(tzinfo=None)
        self.exposures.add(
            [
                (request_id, user_id, r.item_id, pos, version, now)
                for pos, r in enumerate(recs.items)
            ]
        )
        self.telemetry.recommendations.labels(recs.source).inc()
        return RecommendationsOut(
            request_id=request_id,
            user_id=user_id,
            model_version=version,
            source=recs.source,
            recommendations=[r.__dict__ for r in recs.items],
        )


def create_app(config: ServiceConfig) -> FastAPI:
    """The app for one pipeline and one store (opened at start-up, closed at shutdown)."""
    from contextlib import asynccontextmanager

    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = Service(config)
        svc.exposures.start()
        holder["svc"] = svc
        app.state.service = svc
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(
        title="recsight",
        description="Real-time recommendations with grounded explanations.",
        version=__import__("recsight").__version__,
        lifespan=lifespan,
    )

    def svc() -> Service:
        return holder["svc"]

    def require_key(request: Request) -> None:
        expected = config.api_key
        if not expected:
            raise _HTTPError(401, f"writes are disabled: start the service with {API_KEY_ENV} set")
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _HTTPError(
                401, "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)"
            )

    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)

    @app.middleware("http")
    async def request_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        if "svc" in holder:
            tel = holder["svc"].telemetry
            tel.requests.labels(request.method, path, str(response.status_code)).inc()
            tel.latency.labels(path).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(_HTTPError)
    async def http_error(_: Request, exc: _HTTPError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RecsightError)
    async def recsight_error(_: Request, exc: RecsightError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        ]
        return JSONResponse({"detail": "; ".join(msgs[:20]), "errors": msgs}, status_code=422)

    @app.post("/events", response_model=EventsAck, dependencies=[Depends(require_key)])
    def post_events(body: EventIn | EventBatch | list[EventIn]) -> EventsAck:
        """Persist one event, a list, or ``{"events": [...]}``; acknowledged once durable."""
        events = (
            body.events
            if isinstance(body, EventBatch)
            else (body if isinstance(body, list) else [body])
        )
        if not events:
            raise _HTTPError(422, "no events in the request")
        return svc().persist(events)

    # async: the scoring runs on the event loop, not in the thread pool, since it is CPU-bound
    # and short; threads would only add hand-offs and GIL contention to the tail latency
    @app.get("/recommendations/{user_id}", response_model=RecommendationsOut)
    async def get_recommendations(
        user_id: str,
        k: int = Query(10, ge=1, le=1000),
        exclude_seen: bool = True,
        category: str | None = None,
        explain: bool = False,
    ) -> RecommendationsOut:
        """Recommendations for a user; an unknown user gets the cold-start path."""
        s = svc()
        user_id = s.user_ids(user_id)
        recs = s.pipeline.recommend(s.histories.get(user_id), k, exclude_seen, category, explain)
        return s.respond(user_id, recs)

    @app.post("/recommendations", response_model=RecommendationsOut)
    def post_recommendations(body: HistoryRequest) -> RecommendationsOut:
        """Cold start: recommendations for an anonymous history and/or a free-text interest."""
        s = svc()
        if body.text:
            recs = _text_recommendations(s, body)
        else:
            history = History(
                items=body.history,
                types=["view"] * len(body.history),
                values=[None] * len(body.history),
            )
            recs = s.pipeline.recommend(
                history, body.k, body.exclude_seen, body.category, body.explain
            )
        return s.respond(None, recs)

    @app.get("/items/{item_id}/similar")
    def similar(item_id: str, k: int = Query(10, ge=1, le=1000)) -> dict[str, Any]:
        """Items most similar to an item."""
        items = svc().pipeline.similar_items(item_id, k)
        return {"item_id": item_id, "similar": [r.__dict__ for r in items]}

    @app.get("/users/{user_id}/profile")
    def profile(user_id: str) -> dict[str, Any]:
        """A user's event count, interest profile and summary."""
        from recsight.analysis.profile import user_profile
        from recsight.analysis.source import from_store

        s = svc()
        user_id = s.user_ids(user_id)
        try:  # on this thread's read connection: ingest goes on meanwhile
            prof = s.read(lambda store: user_profile(from_store(store), user_id))
        except InputError:
            return {
                "user_id": user_id,
                "n_events": 0,
                "known": False,
                "summary": "no events yet: recommendations follow popularity",
            }
        return {**prof.model_dump(), "known": True}

    @app.delete("/users/{user_id}", dependencies=[Depends(require_key)])
    def delete_user(user_id: str) -> dict[str, Any]:
        """Erase a user (right to erasure): events, exposures, profile and cached history from
        the store, and the user's state from the served models. Answers 200 with what was
        removed, zeros for an unknown user (the answer does not reveal who exists)."""
        return svc().forget(user_id)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness plus the manifest of what is served."""
        s = svc()
        return {
            "status": "ok",
            "uptime_s": round(time.time() - s.started, 1),
            "manifest": s.pipeline.manifest,
            "users_in_memory": len(s.histories),
            "history_cache": {"hits": s.histories.hits, "misses": s.histories.misses},
            "writes_enabled": bool(config.api_key),
            "erasures_pending_retrain": pending_retrain(s.pipeline.manifest),
        }

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(svc().telemetry.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/snapshot", dependencies=[Depends(require_key)])
    def snapshot() -> dict[str, Any]:
        """Export the store to Parquet files that `recsight train` can read meanwhile."""
        s = svc()
        out = config.snapshot_dir or Path(config.db).with_suffix("").parent / "snapshot"
        with s.write_lock:
            files = s.store.export_parquet(out)
        return {"snapshot": str(out), "files": files}

    @app.post("/admin/reload", dependencies=[Depends(require_key)])
    def reload(body: ReloadRequest | None = None) -> dict[str, Any]:
        """Load a newly trained model or pipeline and swap it in; requests in flight finish
        on the old one (the swap is one reference assignment)."""
        s = svc()
        folder = Path(body.model) if body and body.model else config.model
        new = Pipeline.load(folder, s.read(lambda store: store.items_frame()), config.llm)
        old_version, s.pipeline = s.pipeline.version, new
        config.model = folder
        return {"previous": old_version, "current": new.version, "manifest": new.manifest}

    @app.get("/", response_class=HTMLResponse)
    def dashboard() -> str:
        """The dashboard page for people."""
        from recsight.serving.dashboard import render_dashboard

        return render_dashboard()

    @app.get("/api/dashboard")
    def dashboard_data() -> dict[str, Any]:
        """Data behind the dashboard: store overview, leaderboard, live CTR, sample users."""
        from recsight.serving.dashboard import dashboard_data

        s = svc()
        s.exposures.flush()  # so live CTR counts what was just served
        return s.read(lambda _store: dashboard_data(s, config))

    return app


def _text_recommendations(s: Service, body: HistoryRequest) -> RecommendationList:
    """A free-text interest: served by the first pipeline model that reads text."""
    from recsight.llm.content import recommend_for_text

    for model in [s.pipeline.main, *s.pipeline.fallbacks]:
        if hasattr(model, "recommend_text"):
            allowed = s.pipeline._candidates(model, body.category)
            ids, scores = recommend_for_text(model, body.text or "", k=body.k, candidates=allowed)
            return RecommendationList(s.pipeline._build(ids, scores), model.name)
    raise InputError(
        "free-text interests need a text-aware model in the pipeline (e.g. "
        "`content`); this pipeline has none"
    )


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        self.status, self.detail = status, detail


def config_from_env(model: Path, db: Path, **kwargs: Any) -> ServiceConfig:
    """A config whose API key comes from RECSIGHT_API_KEY."""
    return ServiceConfig(model=model, db=db, api_key=os.environ.get(API_KEY_ENV), **kwargs)
