"""The dashboard page and the data behind it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from recsight.serving.deps import ServiceDep

router = APIRouter(tags=["dashboard"])


@router.get("/", response_class=HTMLResponse)
def dashboard() -> str:
    """The dashboard page for people."""
    from recsight.serving.dashboard import render_dashboard

    return render_dashboard()


@router.get("/api/dashboard")
def dashboard_data(svc: ServiceDep) -> dict[str, Any]:
    """Data behind the dashboard: store overview, leaderboard, live CTR, sample users."""
    from recsight.serving.dashboard import dashboard_data

    svc.exposures.flush()  # so live CTR counts what was just served
    return svc.read(lambda _store: dashboard_data(svc, svc.config))
