"""The Typer application objects and shared CLI options; commands live in app/cli_*.py.

Knows how to turn flags into Settings and print tables/JSON; knows nothing of models,
stores or agents beyond calling the composition root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from feldspar.settings import Settings, load_settings

app = typer.Typer(
    name="feldspar",
    help="Run IBM Granite 4.0 for retrieval-augmented answers and agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="The Granite 4.0 catalog and random-weight checkpoints.")
bench_app = typer.Typer(help="Benchmarks (print a table; --json for machines).", no_args_is_help=True)
pack_app = typer.Typer(help="State packs: preloaded documents saved as model state.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluations.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(pack_app, name="pack")
app.add_typer(eval_app, name="eval")

console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[Optional[Path], typer.Option("--home", help="data home (default: FELDSPAR_HOME or user data dir)")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="catalog name, hub id or local path")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

_ROOT_OVERRIDES: dict[str, Any] = {}


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


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str | None = None) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)
