"""User-facing errors of the model layer: each message is one line that says what to do."""

from __future__ import annotations


class ModelError(Exception):
    """Base class: anything a user can fix (a name, a file, a prompt, a setting)."""


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
