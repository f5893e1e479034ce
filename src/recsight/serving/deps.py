"""FastAPI dependencies of the routes: the running service, and the API key on writes."""

from __future__ import annotations

import copy
import hmac
import inspect
import typing
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
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


#: Parameter types `LeanRoute` reads itself (single values: no lists, models or bodies).
_SCALARS = (str, int, float, bool, str | None, int | None, float | None, bool | None)


class LeanRoute(APIRoute):
    """A route that reads its path and query parameters itself, each validated by the
    field FastAPI built for it (the same coercion, defaults, constraints and 422 errors),
    gives `ServiceDep` the running service and awaits the endpoint, whose `Response` it
    returns as is. FastAPI's generic dependency solving costs ~0.4 CPU ms a request on a
    route with five parameters, a third of the event loop's work for a recommendation. The
    route is declared as usual, so the OpenAPI schema is FastAPI's. Routes of any other
    shape (headers, bodies, other dependencies, lists, a sync endpoint or one that returns
    something else than a `Response`, a required query parameter) get FastAPI's handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        plan = self._plan()
        if plan is None:
            return super().get_route_handler()
        fields, service_param, endpoint = plan

        async def lean(request: Request) -> Response:
            values: dict[str, Any] = {}
            errors: list[Any] = []
            sources = {"path": request.path_params, "query": request.query_params}
            for field, where in fields:
                raw = sources[where].get(field.alias)
                loc = (where, field.alias)
                if raw is not None:
                    value, errs = field.validate(raw, values, loc=loc)
                else:  # an optional query parameter (path parameters are always there)
                    value, errs = copy.deepcopy(field.default), []
                    if field.field_info.validate_default:
                        value, errs = field.validate(value, values, loc=loc)
                if errs:
                    errors.extend(errs)
                else:
                    values[field.name] = value
            if errors:
                raise RequestValidationError(errors)
            if service_param is not None:
                values[service_param] = request.app.state.service
            return await endpoint(**values)

        return lean

    def _plan(self) -> tuple[list[tuple[Any, str]], str | None, Callable[..., Any]] | None:
        """(fields and where each is read, the `ServiceDep` parameter, the endpoint) when
        the route has the shape `lean` handles, else None."""
        d = self.dependant
        if (
            d.header_params or d.cookie_params or d.body_params or d.request_param_name
            or d.websocket_param_name or d.http_connection_param_name
            or d.response_param_name or d.background_tasks_param_name
            or d.security_scopes_param_name or not inspect.iscoroutinefunction(d.call)
        ):  # fmt: skip
            return None
        if len(d.dependencies) > 1 or any(
            sub.call is not get_service or sub.dependencies for sub in d.dependencies
        ):
            return None
        returns = typing.get_type_hints(d.call).get("return")
        if not (inspect.isclass(returns) and issubclass(returns, Response)):
            return None
        fields = [(f, "path") for f in d.path_params] + [(f, "query") for f in d.query_params]
        if any(f.field_info.annotation not in _SCALARS for f, _ in fields) or any(
            f.field_info.is_required() for f in d.query_params
        ):
            return None
        service_param = d.dependencies[0].name if d.dependencies else None
        return fields, service_param, d.call
