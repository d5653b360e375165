"""Console entry point: imports every command module and turns user errors into one line.

Exit codes are the same for every command: a usage error (a bad flag value, a missing or
conflicting argument: Typer/Click's ``UsageError``, or ``typer.BadParameter`` raised by a
command) prints ``error: …`` on stderr and exits 2; a runtime user error (bad model, file,
pack, collection or setting: ``feldspar.errors.user_error_types``) prints ``error: …`` and
exits 1; Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

from feldspar.cli.root import app
from feldspar.errors import user_error_types, user_message

COMMAND_MODULES = (
    "feldspar.cli.models", "feldspar.cli.generate", "feldspar.cli.chat", "feldspar.cli.retrieval", "feldspar.cli.packs",
    "feldspar.cli.bench", "feldspar.cli.bench_memory", "feldspar.cli.bench_gpu", "feldspar.cli.demo", "feldspar.cli.agent", "feldspar.cli.tools",
    "feldspar.cli.summarize",
    "feldspar.cli.ui",
    "feldspar.cli.batch",
    "feldspar.cli.serve",
)
USAGE_EXIT = 2
RUNTIME_EXIT = 1
INTERRUPT_EXIT = 130


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def usage_line(exc: Exception) -> str:
    """A Click usage error as one line: its message, then where to read the usage."""
    message = " ".join(exc.format_message().split())  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


def _run() -> int:
    from feldspar.cli.output import quiet_libraries

    quiet_libraries()
    command = typer.main.get_command(app)
    outcome = command.main(prog_name="feldspar", standalone_mode=False)  # errors propagate to main()
    if outcome == INTERRUPT_EXIT:  # Typer turns KeyboardInterrupt into Exit(130)
        from feldspar.cli.interrupt import interrupted_line, leave

        line = interrupted_line()
        if line:
            print(line, file=sys.stderr)
        leave(INTERRUPT_EXIT)
    return outcome if isinstance(outcome, int) else 0


# Typer's Click exceptions, named through public classes (Typer vendors its own Click).
UsageError = typer.BadParameter.__mro__[1]
ClickException = UsageError.__mro__[1]


def main() -> None:
    from feldspar.cli.interrupt import ctrl_c_stops_generation

    _register_commands()
    with ctrl_c_stops_generation():
        _main()


def _main() -> None:
    try:
        sys.exit(_run())
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `feldspar` or `feldspar pack` alone: the help
            text = exc.format_message().strip()  # rich help prints itself and returns ""
            if text:
                print(text, file=sys.stderr)
            sys.exit(USAGE_EXIT)
        print(f"error: {usage_line(exc)}", file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except ClickException as exc:
        print(f"error: {' '.join(exc.format_message().split())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(RUNTIME_EXIT)
    except user_error_types() as exc:  # type: ignore[misc]
        print(f"error: {user_message(exc)}", file=sys.stderr)
        sys.exit(RUNTIME_EXIT)
    except KeyboardInterrupt:
        from feldspar.cli.interrupt import interrupted_line, leave

        print(interrupted_line() or "interrupted", file=sys.stderr)
        leave(INTERRUPT_EXIT)


if __name__ == "__main__":
    main()
