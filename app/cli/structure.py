"""CLI flags that ask for structured output: --json-schema FILE, --regex, --choice a,b,c.

``structure_from_flags`` turns them into a ``Structure`` (model/structure.py) for the engine's
constrained decoding, or None when none is given; a bad flag is one clear line. Knows flags
and files; nothing of how the constraint works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from feldspar.inputs import read_text_file
from feldspar.cli.root import usage_error
from feldspar.model.structure import Structure, StructureError

SchemaOpt = Annotated[Optional[Path], typer.Option("--json-schema", help="JSON Schema file: the output is JSON matching it")]
RegexOpt = Annotated[Optional[str], typer.Option("--regex", help="the output matches this regular expression")]
ChoiceOpt = Annotated[Optional[str], typer.Option("--choice", help="the output is one of these comma-separated options")]


def read_schema(path: Path) -> dict:
    try:
        schema = json.loads(read_text_file(path, "JSON Schema"))
    except ValueError as exc:
        raise usage_error(f"{path} is not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise usage_error(f"{path}: a JSON Schema must be a JSON object")
    return schema


def structure_from_flags(json_schema: Path | None, regex: str | None, choice: str | None) -> Structure | None:
    given = [flag for flag, value in (("--json-schema", json_schema), ("--regex", regex), ("--choice", choice))
             if value is not None]
    if len(given) > 1:
        raise usage_error(f"give one of {', '.join(given)}, not several")
    try:
        if json_schema is not None:
            return Structure.json_schema(read_schema(json_schema))
        if regex is not None:
            return Structure.regex(regex)
        if choice is not None:
            return Structure.choice([c.strip() for c in choice.split(",")])
    except StructureError as exc:
        raise usage_error(f"{given[0]}: {exc}") from None
    return None
