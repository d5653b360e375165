"""User-facing errors of the agent layer: one line each; the app words the remedy (``fix``)."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every agent error a user can cause and fix."""

    def __init__(self, message: str = "", *, fix: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.fix = fix
        self.details = details


class UnknownThread(AgentError):
    """No thread with that id exists in the thread store."""
