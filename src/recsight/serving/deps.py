"""FastAPI dependencies of the routes: the running service, and the API key on writes."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.routing import APIRoute

from recsight.serving.schemas import ErrorOut
from recsight.serving.service import API_KEY_ENV, Service


# async, like every dependency here: FastAPI runs a plain `def` dependency in its thread pool,
# a thread hop (and its wake-ups) on every request for what is an attribute read
async def get_service(request: Request) -> Service:
    """The service the app's lifespan started."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


async def require_key(request: Request, svc: ServiceDep) -> None:
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


class KeyFirstRoute(APIRoute):
    """A route that checks the API key before the request body is read, when it requires
    the key (`require_key` among its dependencies): FastAPI parses the body before it solves
    dependencies, so a caller without the key would otherwise get 400/422 for a bad body,
    learning about the route instead of being refused. The routers of write and admin routes
    use it; the dependency stays, so the requirement is declared once, on the route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if not any(d.dependency is require_key for d in self.dependencies):
            return handler

        async def key_first(request: Request) -> Response:
            await require_key(request, request.app.state.service)
            return await handler(request)

        return key_first


#: Route dependencies of every write and admin route (their router's `route_class` is
#: `KeyFirstRoute`).
KEY_REQUIRED = [Depends(require_key)]
#: What those routes declare for it in the OpenAPI schema.
KEY_RESPONSES: dict[int | str, dict] = {
    401: {"model": ErrorOut, "description": "missing or wrong API key"}
}
