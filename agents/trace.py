"""The agent's trace: one plain dict per step, stored with the thread, shown by CLI and UI.

Step kinds (agents/steps.py, the same names as the graph's nodes and the streamed events):
``begin`` (the retrieval mode and why), ``retrieve`` (query, hits), ``model`` (prompt/reused/
computed tokens, TTFT, raw text, parsed calls, repairs, parse errors), ``tool`` (name, validated
args, result or error, duration), ``approve``, ``compact`` (tokens before/after) and ``finalize``
(why the turn stopped, citations). Every step has ``turn``, ``node``, ``started``, ``ended`` and
``duration_s``; records saved under earlier names are shown under today's. Knows dicts and text;
nothing of graphs or models.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from feldspar.agents.steps import (
    APPROVE, BEGIN, COMPACT, FINALIZE, MODEL, RETRIEVE, TOOL, current_name, current_steps,
)


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")


@contextmanager
def step(node: str, turn: int, **fields: Any) -> Iterator[dict[str, Any]]:
    """A trace step timed around the ``with`` body; the body fills in the details."""
    started = time.time()
    record: dict[str, Any] = {"turn": turn, "node": node, **fields}
    try:
        yield record
    finally:
        ended = time.time()
        record.update(started=_stamp(started), ended=_stamp(ended), duration_s=round(ended - started, 4))


def turn_steps(trace: list[dict[str, Any]], turn: int) -> list[dict[str, Any]]:
    """The steps of one turn, under today's names."""
    return current_steps(s for s in trace if s.get("turn") == turn)


def _short(text: Any, width: int = 100) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _count(value: Any) -> str:
    """A token count with thousands separators (``1,355``); "?" when the step has none."""
    return f"{value:,}" if isinstance(value, int) else "?"


def arguments(args: Any) -> str:
    """Tool-call arguments as ``name="value", n=3`` (JSON values), not a Python dict repr."""
    if not isinstance(args, dict):
        return json.dumps(args, ensure_ascii=False, default=str)
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False, default=str)}" for k, v in args.items())


def describe(s: dict[str, Any]) -> str:
    """One readable line (plus indented detail lines) for a step."""
    node = current_name(s.get("node"))
    head = f"[{s.get('duration_s', 0):.2f}s] {node}"
    if node == RETRIEVE:
        hits = "\n".join(f"    [{h.get('doc_id')}] {h.get('path')} p{h.get('page') or '-'} "
                         f"{h.get('start')}-{h.get('end')} score {h.get('score', 0):.3f}" for h in s.get("hits", []))
        return f"{head} query={_short(s.get('query'), 60)!r} hits={len(s.get('hits', []))} ({s.get('mode', '')})" + (
            "\n" + hits if hits else "")
    if node == MODEL:
        calls = ", ".join(f"{c['name']}({_short(arguments(c.get('args')), 60)})" for c in s.get("tool_calls", []))
        extra = (f" calls: {calls}" if calls else "") + (
            f" repairs: {'; '.join(map(str, s['repairs']))}" if s.get("repairs") else "") + (
            f" parse errors: {len(s['parse_errors'])}" if s.get("parse_errors") else "")
        counts = (f"prompt {_count(s.get('prompt_tokens'))} (reused {_count(s.get('reused_tokens'))}, "
                  f"computed {_count(s.get('computed_tokens'))})")
        return (f"{head} {counts} ttft {s.get('ttft_s', 0):.2f}s finish {s.get('finish_reason')}{extra}"
                f"\n    raw: {_short(s.get('raw_text'), 160)}")
    if node == TOOL:
        outcome = f"error: {_short(s['error'])}" if s.get("error") else f"-> {_short(s.get('result'))}"
        return f"{head} {s.get('name')}({_short(arguments(s.get('args')), 80)}) {outcome}"
    if node == APPROVE:
        return f"{head} {s.get('name')}: {'approved' if s.get('approved') else 'refused'} ({s.get('how')})"
    if node == COMPACT:
        return (f"{head} {s.get('messages')} messages summarised: prompt {_count(s.get('tokens_before'))} -> "
                f"{_count(s.get('tokens_after'))} tokens")
    if node == FINALIZE:
        unknown = f"; dropped unknown ids {', '.join(map(str, s['unknown_ids']))}" if s.get("unknown_ids") else ""
        cited = ", ".join(f"[{i}]" for i in s.get("cited") or []) or "no passage"
        return f"{head} stop: {s.get('stop_reason')}; cited {cited}{unknown}"
    if node == BEGIN:
        return f"{head} {s.get('mode')}: {s.get('why')}"
    return f"{head} {_short({k: v for k, v in s.items() if k not in ('started', 'ended')})}"


def format_trace(steps: list[dict[str, Any]]) -> str:
    return "\n".join(f"turn {s.get('turn')} {describe(s)}" for s in steps)
