"""The FastAPI application: real-time events, recommendations with explanations, a dashboard.

`create_app` assembles the pieces: the service object (`recsight.serving.service`) opened
at start-up and closed at shutdown, one router per resource (`recsight.serving.routes`),
the API key as a route dependency (`recsight.serving.deps`), and the body limit and
request telemetry as middleware.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import recsight
from recsight.errors import RecsightError
from recsight.serving.limits import BodyLimit
from recsight.serving.routes import admin, dashboard, events, recommendations, users
from recsight.serving.schemas import BODY_TAGS, ErrorOut
from recsight.serving.service import Service, ServiceConfig
from recsight.serving.telemetry import RequestMetrics

#: The error responses every route may give, declared so the OpenAPI schema holds them.
_ERRORS: dict[int | str, dict] = {
    400: {"model": ErrorOut, "description": "input the service cannot use, named"},
    413: {"model": ErrorOut, "description": "request body over the limit"},
    422: {"model": ErrorOut, "description": "a field fails validation, named once"},
}


def create_app(config: ServiceConfig) -> FastAPI:
    """The app for one pipeline and one store (opened at start-up, closed at shutdown)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = Service(config)
        svc.exposures.start()
        app.state.service = svc
        try:
            yield
        finally:
            svc.close()

    app = FastAPI(
        title="recsight",
        description="Real-time recommendations with grounded explanations.",
        version=recsight.__version__,
        lifespan=lifespan,
        responses=_ERRORS,
    )
    for module in (events, recommendations, users, admin, dashboard):
        app.include_router(module.router)

    def telemetry():
        svc = getattr(app.state, "service", None)
        return svc.telemetry if svc is not None else None

    # the last added is the outermost: telemetry sees every request, 413s included
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    app.add_middleware(RequestMetrics, telemetry=telemetry)

    @app.exception_handler(RecsightError)
    async def recsight_error(_: Request, exc: RecsightError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = [f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(msgs[:20]), "errors": msgs}, status_code=422)

    return app


def _where(loc: tuple) -> str:
    """An error's location as the client wrote it (`events.3.value`), without FastAPI's
    `body` and the union branch tags of the events body."""
    parts = [str(p) for i, p in enumerate(loc) if not (i == 0 and p == "body")]
    if len(loc) > 1 and loc[0] == "body" and loc[1] in BODY_TAGS:
        parts = parts[1:]
    return ".".join(parts) or "body"
