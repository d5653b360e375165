"""Structured output for the langchain side: what a call asks for, and ``with_structured_output``.

``call_structure(kwargs, tools)`` reads a ChatGranite call's ``response_format`` (OpenAI's
shape), ``structure`` (a model/structure.py ``Structure``) and forcing ``tool_choice``
(``"required"``/``"any"``/a tool name/``{"type": "function", ...}``, with
``parallel_tool_calls``) into one ``Structure`` the backend constrains decoding with (forced
tools win). ``structured_runnable(model, schema, method, include_raw)`` is ChatGranite's
``with_structured_output``: ``json_schema`` (the default) binds a strict response_format and
parses the JSON into the pydantic class (or dict); ``function_calling`` forces the one tool.
A backend that cannot constrain (``constrains`` false) still validates what comes back.
Knows langchain-core's conventions and the Structure shape; nothing of tensors or grammars.
"""

from __future__ import annotations

from typing import Any

from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from pydantic import BaseModel

from feldspar.model.structure import Structure

STRUCTURE_KEYS = ("response_format", "structure", "parallel_tool_calls")


def _tool_names(choice: Any) -> list[str] | None | bool:
    """Names a tool_choice forces (None: any tool), or False when it forces nothing."""
    if choice in (None, False, "auto", "none"):
        return False
    if choice in (True, "required", "any"):
        return None
    if isinstance(choice, str):
        return [choice]
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        return [name] if isinstance(name, str) else False
    return False


def format_structure(response_format: dict[str, Any] | None) -> Structure | None:
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return Structure.json_object()
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        return Structure.json_schema(spec.get("schema") or {"type": "object"}, name=str(spec.get("name") or ""))
    return None


def call_structure(kwargs: dict[str, Any], tools: list[dict[str, Any]] | None) -> Structure | None:
    names = _tool_names(kwargs.get("tool_choice"))
    if tools and names is not False:
        return Structure.tool_calls(tools, names, kwargs.get("parallel_tool_calls") is not False)
    if kwargs.get("structure") is not None:
        return kwargs["structure"]
    return format_structure(kwargs.get("response_format"))


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and issubclass(schema, BaseModel)


def structured_runnable(model: Any, schema: Any, method: str = "json_schema", include_raw: bool = False):
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, parallel_tool_calls=False)
        parser = (PydanticToolsParser(tools=[schema], first_tool_only=True) if _is_pydantic(schema)
                  else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
    elif method in ("json_schema", "json_mode"):
        if method == "json_mode":
            llm = model.bind(response_format={"type": "json_object"})
        else:
            json_schema = convert_to_json_schema(schema)
            llm = model.bind(response_format={"type": "json_schema", "json_schema": {
                "name": json_schema.get("title", "output"), "schema": json_schema, "strict": True}})
        parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema) else JsonOutputParser()
    else:
        raise ValueError(f"method must be json_schema, function_calling or json_mode, not {method!r}")
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=lambda x: parser.invoke(x["raw"]), parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")
