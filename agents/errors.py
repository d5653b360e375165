"""User-facing agent errors: each one is a single clear line for the CLI/UI.

Everything here derives from ``AgentError`` so the app turns it into ``error: …`` and a
non-zero exit (app/errors.py finds this base by name). Like the lower layers, these
errors name no CLI flag or environment variable: ``fix`` is a remedy key the app words.

Problems while *running* a tool are not errors: ``tools.run_tool`` turns them into an
error text that goes back to the model.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every agent error a user can cause and fix."""

    def __init__(self, message: str = "", *, fix: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.fix = fix
        self.details = details


class ToolDefinitionError(AgentError, ValueError):
    """A tool is defined wrongly (bad name, empty description, unusable schema …)."""


class UnknownTool(AgentError):
    """A tool name that is not among the available tools."""


class ToolsModuleError(AgentError):
    """A user's tools module is missing, fails to import or defines no tools."""


class McpError(AgentError):
    """An MCP server could not be started, reached or listed."""


class InvalidToolArguments(AgentError, ValueError):
    """Arguments that do not fit a tool's schema (returned to the model by ``run_tool``)."""


class UnknownThread(AgentError):
    """No thread with that id exists in the thread store."""
