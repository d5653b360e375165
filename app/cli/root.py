"""The Typer application objects and shared CLI options; the commands live in the other app/cli/ modules.

Knows how to turn flags into Settings, refuse bad flag values as usage errors (exit 2:
``usage_error``, ``in_range``; a choice is a ``Literal`` type, which Typer checks itself) and
print tables (control characters escaped, no markup) and JSON. --help is Typer's plain
(Click-style) help: every group is made with ``PLAIN_HELP``. Knows nothing of models, stores
or agents beyond calling the composition root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from feldspar.labels import RANDOM_LABEL  # noqa: F401  (re-exported for the command modules)
from feldspar.settings import Settings, load_settings

# Typer's plain help (Click's layout): flags show no type and lines wrap to the terminal's width.
PLAIN_HELP: dict[str, Any] = {"rich_markup_mode": None}

app = typer.Typer(
    **PLAIN_HELP,
    name="feldspar",
    help="Run IBM Granite 4.0 for retrieval-augmented answers and agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(**PLAIN_HELP, help="The Granite 4.0 catalog and random-weight checkpoints.")
bench_app = typer.Typer(**PLAIN_HELP, help="Benchmarks (print a table; --json for machines).", no_args_is_help=True)
pack_app = typer.Typer(**PLAIN_HELP, help="State packs: preloaded documents saved as model state.", no_args_is_help=True)
eval_app = typer.Typer(**PLAIN_HELP, help="Evaluations.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(pack_app, name="pack")
app.add_typer(eval_app, name="eval")

console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="data home (default: FELDSPAR_HOME or user data dir)")]

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="catalog name, hub id or local path "
                                                 "(or openai:<base-url>#<model>: a remote server)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

_ROOT_OVERRIDES: dict[str, Any] = {}

# Typer's Click UsageError (exit 2); Typer vendors Click and does not export it by name.
UsageError: type[Exception] = typer.BadParameter.__mro__[1]


def usage_error(message: str) -> Exception:
    """A usage error (exit 2, one line) worded as given: conflicting or missing arguments."""
    return UsageError(message)


def in_range(low: float, high: float | None = None, low_open: bool = False) -> Any:
    """An option callback refusing numbers outside ``low..high`` (``low`` excluded when ``low_open``)."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        if value < low or (low_open and value == low) or (high is not None and value > high):
            bounds = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
            raise typer.BadParameter(f"{value} is out of range: it must be {bounds}")
        return value

    return check


def _print_version(value: bool) -> None:
    if value:
        from feldspar import __version__

        console.print(f"feldspar {__version__}")
        raise typer.Exit()


VersionOpt = Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")]


@app.callback()
def _root(home: HomeOpt = None, version: VersionOpt = False) -> None:
    """Feldspar: Granite 4.0 with hybrid state reuse, retrieval and agents."""
    _ROOT_OVERRIDES.clear()
    if home is not None:
        _ROOT_OVERRIDES["home"] = home


def settings_from(**flags: Any) -> Settings:
    """Settings with root options and this command's flags applied on top."""
    return load_settings(**{**_ROOT_OVERRIDES, **{k: v for k, v in flags.items() if v is not None}})


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


_CONTROL = {code: f"\\x{code:02x}" for code in range(32)} | {9: "\\t", 10: "\\n", 13: "\\r", 127: "\\x7f"}


def cell(value: Any) -> Text:
    """A table cell shown as given: control characters (a newline in a file name) escaped, no markup."""
    return Text("" if value is None else str(value).translate(_CONTROL))


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None,
                whole: tuple[str, ...] = ()) -> None:
    """Rows as a table; ``whole`` columns (ids a user pastes) are never wrapped or cut short."""
    table = Table(title=title)
    for col in columns:
        if col in whole:
            width = max([len(col), *(len(cell(row.get(col))) for row in rows)])
            table.add_column(col, no_wrap=True, min_width=width, overflow="fold")
        else:
            table.add_column(col)
    for row in rows:
        table.add_row(*(cell(row.get(c)) for c in columns))
    if console.is_terminal:
        console.print(table)
        return
    # piped or redirected: as wide as the table needs, never cut short
    width = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(file=console.file, width=max(console.width, width)).print(table)


def short_paths(paths: list[str], room: int) -> list[str]:
    """Each path cut to about ``room`` characters in the middle, keeping its start and its file
    name; paths that would then look alike keep more (up to all) of themselves, so different
    paths never show the same."""
    def cut(path: str, width: int) -> str:
        if len(path) <= width:
            return path
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        tail = max(len(name) + 1, width - width // 3 - 1)
        head = max(width - tail - 1, 0)
        return path if head + 1 + tail >= len(path) else path[:head] + "…" + path[-tail:]

    widths = [room] * len(paths)
    while True:
        shown = [cut(p, w) for p, w in zip(paths, widths)]
        groups: dict[str, set[str]] = {}
        for path, text in zip(paths, shown):
            groups.setdefault(text, set()).add(path)
        clashing = [i for i, text in enumerate(shown) if len(groups[text]) > 1]
        if not clashing:
            return shown
        for i in clashing:
            widths[i] += max(room // 4, 4)
