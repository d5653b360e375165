"""The ASGI gate in front of `feldspar serve`: bearer token, body size, JSON bodies.

Runs before FastAPI sees a request: under /v1 a missing or wrong bearer token (the key, or
one of several comma-separated keys, one per client) is 401 before
anything else; a POST body over the limit is 413, decided from Content-Length or while the
body arrives, before more than the limit is held; every POST body is read as JSON whatever
its Content-Type, and one that plainly holds too many messages is refused before it is parsed. Knows ASGI and the OpenAI error shape; nothing of models or lanes.
"""

from __future__ import annotations

import secrets
from typing import Any

from fastapi.responses import JSONResponse

from feldspar.serve.protocol import ApiError
from feldspar.serve.validate import bound_messages


def _refuse(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class Gate:
    """ASGI middleware: the bearer token is checked before anything else under /v1 (so an
    anonymous client learns nothing, not even whether its body is valid), a POST body over
    ``max_body`` bytes is refused with 413 before it is held in memory (declared length or
    counted as it arrives), and a POST body is read as JSON whatever its Content-Type (curl -d
    sends a form type)."""

    def __init__(self, app: Any, api_key: str | None, max_body: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body
        self.keys = [k.strip().encode() for k in (api_key or "").split(",") if k.strip()]  # one per client

    def authorised(self, scope: dict) -> bool:
        header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode("latin-1")
        matches = [secrets.compare_digest(given, key) for key in self.keys]  # every key compared: no timing hint
        return scheme.lower() == "bearer" and any(matches)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        if self.api_key and scope.get("path", "").startswith("/v1") and not self.authorised(scope):
            error = ApiError(401, "missing or wrong API key: send the header Authorization: Bearer <key>",
                             code="invalid_api_key")
            return await _refuse(error)(scope, receive, send)
        if scope.get("method") == "POST":
            body = await self.read_body(scope, receive)
            if body is None:
                error = ApiError(413, f"the request body is over the {self.max_body:,}-byte limit of this server "
                                 "(serve_max_body_bytes)", code="request_too_large")
                return await _refuse(error)(scope, receive, send)
            too_many = bound_messages(body)
            if too_many is not None:
                return await _refuse(too_many)(scope, receive, send)
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
            scope = {**scope, "headers": headers + [(b"content-type", b"application/json")]}
            receive = replay(body, receive)
        await self.app(scope, receive, send)

    async def read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        declared = dict(scope.get("headers", [])).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(parts)  # the client left: the app sees an empty body and the disconnect
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)


def replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that hands the buffered body over once, then listens for the disconnect."""
    sent = False

    async def again() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
