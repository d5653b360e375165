"""Which exceptions are user errors (one clear line, non-zero exit) rather than bugs.

Each layer defines its own error base so no layer imports the app; this module only
collects them for the CLI and UI.
"""

from __future__ import annotations


def user_error_types() -> tuple[type[BaseException], ...]:
    from app.settings import SettingsError

    types: list[type[BaseException]] = [SettingsError]
    for module, name in (
        ("model.errors", "ModelError"),
        ("retrieval.errors", "RetrievalError"),
        ("agents.errors", "AgentError"),
    ):
        try:
            mod = __import__(module, fromlist=[name])
        except ImportError:
            continue
        types.append(getattr(mod, name))
    return tuple(types)
