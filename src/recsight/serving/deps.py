"""FastAPI dependencies of the routes: the running service, and the API key on writes."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from recsight.serving.schemas import ErrorOut
from recsight.serving.service import API_KEY_ENV, Service


def get_service(request: Request) -> Service:
    """The service the app's lifespan started."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


def require_key(request: Request, svc: ServiceDep) -> None:
    """Refuse (401) a request without the service's API key, sent as
    ``Authorization: Bearer <key>`` or ``X-API-Key``; every write and admin route has it."""
    expected = svc.config.api_key
    if not expected:
        raise HTTPException(401, f"writes are disabled: start the service with {API_KEY_ENV} set")
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)"
        )


#: Route dependencies of every write and admin route.
KEY_REQUIRED = [Depends(require_key)]
#: What those routes declare for it in the OpenAPI schema.
KEY_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorOut, "description": "missing or wrong API key"}
}
