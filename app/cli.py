"""Console entry point: imports every command module and turns user errors into one line.

A user error (bad model name, bad file, bad setting…) prints ``error: …`` on stderr and
exits 1; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from app.cli_root import app
from app.errors import user_error_types

COMMAND_MODULES = (
    "app.cli_models", "app.cli_model", "app.cli_retrieval", "app.cli_packs", "app.cli_bench", "app.cli_demo",
)


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main() -> None:
    _register_commands()
    try:
        app()
    except user_error_types() as exc:  # type: ignore[misc]
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
