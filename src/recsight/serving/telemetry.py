"""Prometheus metrics of the service, and the middleware that counts and times requests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


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


class RequestMetrics:
    """ASGI middleware counting requests by method, route template and status, and timing
    them by route. A plain ASGI wrapper rather than `@app.middleware("http")`, whose
    per-request task and body streaming add to every request's latency."""

    def __init__(self, app: Any, telemetry: Callable[[], Telemetry | None]):
        self.app = app
        self.telemetry = telemetry  # the running service's, None before start-up

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            tel = self.telemetry()
            if tel is not None:
                # the router puts the matched route into the scope it was given
                path = getattr(scope.get("route"), "path", "unmatched")
                tel.requests.labels(scope["method"], path, str(status)).inc()
                tel.latency.labels(path).observe(time.perf_counter() - t0)
