"""What went wrong talking to a remote OpenAI-compatible Granite server, in one line each.

``remote_error(exc, url, model, models)`` turns an exception of the official ``openai``
client into an ``AgentError`` (or ``ContextOverflowError`` for a prompt the server finds
too long) whose ``fix`` key app/errors.py words for users: ``remote_unreachable``,
``remote_timeout``, ``remote_api_key``, ``remote_model`` (with the server's model list),
``remote_url``, ``remote_tools`` (a server that refuses ``tools``) and ``remote_status``
(any other 4xx/5xx, with the server's own message, or a connection that broke mid-answer). Knows the openai client's exception
classes and the usual error bodies of vLLM, llama-server, Ollama and Docker Model Runner;
nothing of the CLI.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import httpx
import openai

from feldspar.agents.errors import AgentError
from feldspar.model.errors import ContextOverflowError

_CONTEXT = re.compile(r"context (length|window|size)|maximum context|too many tokens|exceeds? the (available )?context|"
                      r"prompt is too long|n_ctx", re.IGNORECASE)
_TOOLS = re.compile(r"\btools?\b|tool[_ ]choice|function call", re.IGNORECASE)
_MODEL = re.compile(r"\bmodel\b", re.IGNORECASE)


class RemoteServerError(AgentError):
    """A remote Granite server could not be reached or refused a request."""


def server_message(exc: BaseException) -> str:
    """The server's own words: ``{"error": {"message"}}``, ``{"detail"}``, ``{"message"}`` or the body text."""
    body: Any = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            body = inner.get("message") or inner.get("detail") or inner.get("msg") or inner
        else:
            body = inner
        if isinstance(body, dict) and "detail" in body:
            body = body["detail"]
    if body is None or body == "":
        response = getattr(exc, "response", None)
        body = getattr(response, "text", "") or str(exc)
    text = body if isinstance(body, str) else str(body)
    return " ".join(text.split())[:300]


def server_code(exc: BaseException) -> str | None:
    """The OpenAI error ``code`` of the answer (``context_length_exceeded`` …), when it has one."""
    body: Any = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) else None


def _names(models: Sequence[str] | None) -> str:
    return ", ".join(models) if models else "(the server lists none)"


def unknown_model(url: str, model: str, models: Sequence[str] | None) -> RemoteServerError:
    what = f"has no model {model!r}" if model else "serves several models (or lists none) and none was named"
    return RemoteServerError(f"the Granite server at {url} {what}; it serves: {_names(models)}",
                             fix="remote_model", url=url, model=model, models=_names(models))


def overflow_advice(error: Exception, slots: int | None) -> Exception:
    """A server's "context size exceeded" with the facts a fix needs (the app words the fix:
    fewer workers, or a bigger window on the server)."""
    if not isinstance(error, ContextOverflowError):
        return error
    shared = f" (its window is shared by {slots} slots: each request gets 1/{slots} of it)" if slots and slots > 1 else ""
    return ContextOverflowError(f"{error}; the prompt and the answer exceed the server's per-request window{shared}",
                                fix="remote_overflow", slots=slots or 1)


def remote_error(exc: BaseException, url: str, model: str, models: Sequence[str] | None = None,
                 midway: bool = False) -> Exception:
    """The one-line error for a failed request to ``url``; ``models`` is the server's list when known;
    ``midway``: raised while a streamed answer was being read."""
    broke = isinstance(exc, httpx.HTTPError) or isinstance(exc, openai.APIConnectionError) and midway
    if broke and not isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        cause = exc.__cause__ or exc.__context__ or exc
        reason = " ".join(str(cause).split())[:200] or type(cause).__name__
        return RemoteServerError(f"the connection to the Granite server at {url} broke mid-answer ({reason})",
                                 fix="remote_status", url=url)
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return RemoteServerError(f"the Granite server at {url} did not answer in time", fix="remote_timeout", url=url)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = " ".join(str(cause or exc).split())[:200]
        return RemoteServerError(f"cannot reach the Granite server at {url} ({reason})", fix="remote_unreachable",
                                 url=url)
    if not isinstance(exc, openai.APIStatusError):
        if isinstance(exc, openai.OpenAIError) and _CONTEXT.search(server_message(exc)):  # an error event mid-stream
            return ContextOverflowError(f"the Granite server at {url} refused the prompt as too long: "
                                        f"{server_message(exc)}")
        if isinstance(exc, openai.OpenAIError):  # e.g. an error event inside the stream
            return RemoteServerError(f"the Granite server at {url} failed: {server_message(exc)}",
                                     fix="remote_status", url=url)
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    status, said = exc.status_code, server_message(exc)
    if status in (401, 403):
        return RemoteServerError(f"the Granite server at {url} refused the API key ({status}: {said})",
                                 fix="remote_api_key", url=url)
    if status == 404:
        if models is not None and model not in models or _MODEL.search(said):
            return unknown_model(url, model, models)
        return RemoteServerError(f"the Granite server at {url} answered 404 ({said})", fix="remote_url", url=url)
    if status in (400, 413, 422, 500) and (_CONTEXT.search(said) or server_code(exc) == "context_length_exceeded"):
        return ContextOverflowError(f"the Granite server at {url} refused the prompt as too long: {said}")
    if status in (400, 422, 501) and _TOOLS.search(said):
        return RemoteServerError(f"the Granite server at {url} does not accept tools ({status}: {said})",
                                 fix="remote_tools", url=url)
    return RemoteServerError(f"the Granite server at {url} answered {status}: {said}", fix="remote_status", url=url)
