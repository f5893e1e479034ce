"""Request limits: a cap on body size (the size of an event batch is capped by its schema)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse


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
