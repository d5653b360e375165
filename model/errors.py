"""User-facing errors of the model layer: each message is one line that says what went wrong.

How to fix it depends on the front end (a CLI flag, a setting, a UI control), so an error
names its remedy as a key (``fix``) with the values it needs (``details``) and the app layer
words it for its users. This module knows no flags, commands or environment variables.
"""

from __future__ import annotations


class ModelError(Exception):
    """Base class: anything a user can fix (a name, a file, a prompt, a setting)."""

    def __init__(self, message: str = "", *, fix: str | None = None, **details: object) -> None:
        super().__init__(message)
        self.fix = fix
        self.details = details


class ModelNotFoundError(ModelError):
    """No checkpoint could be found or fetched for the requested model."""


class CheckpointError(ModelError):
    """A checkpoint exists but its config, weights or tokenizer cannot be read."""


class ContextOverflowError(ModelError):
    """Prompt plus requested new tokens do not fit the model's context window."""


class PromptError(ModelError):
    """A prompt, message list or input file cannot be rendered."""


class StateError(ModelError):
    """A saved state (snapshot or pack) cannot be used with this model."""
