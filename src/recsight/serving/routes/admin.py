"""Operations: health and metrics (open), snapshot and reload (API key)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsight.privacy.unlearn import pending_retrain
from recsight.serving.deps import KEY_REQUIRED, KEY_RESPONSES, KeyFirstRoute, ServiceDep
from recsight.serving.schemas import ReloadRequest

router = APIRouter(tags=["admin"])
admin = APIRouter(
    prefix="/admin",
    dependencies=KEY_REQUIRED,
    responses=KEY_RESPONSES,
    route_class=KeyFirstRoute,
)


@router.get("/health")
def health(svc: ServiceDep) -> dict[str, Any]:
    """Liveness plus the manifest of what is served."""
    return {
        "status": "ok",
        "uptime_s": round(time.time() - svc.started, 1),
        "manifest": svc.pipeline.manifest,
        "users_in_memory": len(svc.histories),
        "history_cache": {"hits": svc.histories.hits, "misses": svc.histories.misses},
        "writes_enabled": bool(svc.config.api_key),
        "erasures_pending_retrain": pending_retrain(svc.pipeline.manifest),
    }


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(svc: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(generate_latest(svc.telemetry.registry), media_type=CONTENT_TYPE_LATEST)


@admin.post("/snapshot")
def snapshot(svc: ServiceDep) -> dict[str, Any]:
    """Export the store to Parquet files that `recsight train` can read meanwhile."""
    config = svc.config
    out = config.snapshot_dir or Path(config.db).with_suffix("").parent / "snapshot"
    with svc.write_lock:
        files = svc.store.export_parquet(out)
    return {"snapshot": str(out), "files": files}


@admin.post("/reload")
def reload(svc: ServiceDep, body: ReloadRequest | None = None) -> dict[str, Any]:
    """Load a newly trained model or pipeline and swap it in; requests in flight finish
    on the old one (the swap is one reference assignment)."""
    return svc.reload(Path(body.model) if body and body.model else svc.config.model)


router.include_router(admin)
