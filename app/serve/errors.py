"""Errors of `feldspar serve` as OpenAI error objects: every exception becomes an ``ApiError``
(404 for what a client named and does not exist, 400 for other user errors, 429 for a full
queue, 500 for bugs, which are logged), with server paths cut from messages.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from feldspar.serve.lanes import LaneFull
from feldspar.serve.protocol import ApiError, error_body

log = logging.getLogger("feldspar.serve")


def not_found_types() -> tuple[type[Exception], ...]:
    """The user errors a client gets as 404: what it named does not exist."""
    from feldspar.agents.errors import UnknownThread
    from feldspar.model.errors import ModelNotFoundError
    from feldspar.retrieval.errors import UnknownCollection

    return (UnknownCollection, UnknownThread, ModelNotFoundError)


def as_api_error(exc: BaseException) -> ApiError:
    """Any exception as the error object the client gets (500 for bugs, which are logged)."""
    from feldspar.errors import user_error_types, user_message

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LaneFull):
        return ApiError(429, f"{exc}; the server runs one request at a time per model and its queue is full",
                        "rate_limit_error", code="queue_full", headers={"Retry-After": str(exc.retry_after)})
    from feldspar.model.errors import ContextOverflowError

    name = type(exc).__name__
    if isinstance(exc, ContextOverflowError):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, user_error_types()):
        param = (getattr(exc, "details", None) or {}).get("param")
        return ApiError(404 if isinstance(exc, not_found_types()) else 400, without_paths(user_message(exc)),
                        param=param if isinstance(param, str) else None, code=_snake(name))
    log.error("internal error while serving a request", exc_info=exc)
    return ApiError(500, f"internal server error ({name}); the server log has the details", "server_error")


_PATH = re.compile(r"(?<![\w:/.~-])~?/(?:[^\s'\"(),;:/]+/)+([^\s'\"(),;:/]*)")


def without_paths(message: str) -> str:
    """``message`` with each absolute path of this machine cut to its last part (no server paths leak)."""
    return _PATH.sub(lambda m: m.group(1) or "…", message)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def error_response(exc: BaseException) -> JSONResponse:
    error = as_api_error(exc)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        message = f"the request body is not valid JSON ({detail.get('ctx', {}).get('error', detail.get('msg'))})"
        return JSONResponse(error_body(message, code="invalid_json"), status_code=400)
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return JSONResponse(error_body(message, param=param, code="invalid_value"), status_code=400)


def api_errors(endpoint):
    """Endpoint errors (user errors of the layers below included) become ApiErrors, answered by the handler."""
    @functools.wraps(endpoint)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await endpoint(*args, **kwargs)
        except ApiError:
            raise
        except Exception as exc:
            raise as_api_error(exc) from None

    return wrapper


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, lambda _r, exc: validation_response(exc))
    app.add_exception_handler(HTTPException, lambda _r, exc: JSONResponse(
        error_body(str(exc.detail), "invalid_request_error" if exc.status_code < 500 else "server_error",
                   code="not_found" if exc.status_code == 404 else None),
        status_code=exc.status_code, headers=getattr(exc, "headers", None)))
    app.add_exception_handler(Exception, lambda _r, exc: error_response(exc))
    app.add_exception_handler(ApiError, lambda _r, exc: error_response(exc))
