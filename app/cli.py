"""Console entry point: imports every command module and turns user errors into one line.

A user error (bad model name, bad file, bad setting…) prints ``error: …`` on stderr and
exits 1; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from feldspar.cli_root import app
from feldspar.errors import user_error_types, user_message

COMMAND_MODULES = (
    "feldspar.cli_models", "feldspar.cli_model", "feldspar.cli_retrieval", "feldspar.cli_packs", "feldspar.cli_bench", "feldspar.cli_demo",
    "feldspar.cli_agent",
    "feldspar.cli_tools",
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
        app(prog_name="feldspar")
    except user_error_types() as exc:  # type: ignore[misc]
        print(f"error: {user_message(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
