"""The declared tools, as the tool-call parser sees them: names and argument schemas.

``ToolTable`` reads OpenAI function schemas (``{"type": "function", "function": {...}}``)
or bare function dicts, skipping entries it cannot read. ``check`` turns a parsed call
into an error the model can correct when the tool does not exist or its arguments fail
the tool's JSON schema (validated with ``jsonschema``; a tool whose own schema is invalid
is not validated). Knows JSON schemas; nothing of how tools run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

MAX_SCHEMA_CHARS = 1200
MAX_ERRORS = 3


@dataclass(frozen=True)
class ToolSpec:
    name: str
    parameters: dict[str, Any]

    @property
    def parameter_names(self) -> list[str]:
        properties = self.parameters.get("properties")
        return list(properties) if isinstance(properties, dict) else []


def _spec(tool: Any) -> ToolSpec | None:
    if not isinstance(tool, dict):
        return None
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    parameters = function.get("parameters")
    return ToolSpec(name, parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}})


@lru_cache(maxsize=256)
def _validator(schema_json: str):
    from jsonschema import exceptions, validators

    schema = json.loads(schema_json)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError:
        return None
    return cls(schema)


def schema_errors(parameters: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """Up to MAX_ERRORS readable messages for ``arguments`` against ``parameters``; [] when valid."""
    try:
        validator = _validator(json.dumps(parameters, sort_keys=True, default=str))
        if validator is None:
            return []
        errors = sorted(validator.iter_errors(arguments), key=lambda e: [str(p) for p in e.absolute_path])
    except Exception:  # a schema jsonschema cannot apply ($ref it cannot resolve, …) is not the model's fault
        return []
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {e.message[:200]}"
            for e in errors[:MAX_ERRORS]]


class ToolTable:
    """The tools declared for one turn, by name."""

    def __init__(self, tools: Sequence[Any] | None) -> None:
        self.specs: dict[str, ToolSpec] = {}
        for tool in tools if isinstance(tools, (list, tuple)) else ():
            spec = _spec(tool)
            if spec is not None and spec.name not in self.specs:
                self.specs[spec.name] = spec

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def resolve(self, name: str) -> str | None:
        """A declared name for ``name``: itself, or the last part of a dotted name (``functions.x``)."""
        if name in self.specs:
            return name
        last = name.rsplit(".", 1)[-1]
        return last if last in self.specs else None

    def parameters(self, name: str) -> dict[str, Any]:
        return self.specs[name].parameters

    def schema_text(self, name: str) -> str:
        text = json.dumps(self.specs[name].parameters, ensure_ascii=False)
        return text if len(text) <= MAX_SCHEMA_CHARS else text[:MAX_SCHEMA_CHARS] + " …"
