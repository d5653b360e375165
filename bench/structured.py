"""`feldspar bench structured`: what grammar-constrained decoding costs and what it buys.

Side by side in one run, on random weights (CPU, fp32), with Granite-shaped tokenizers built
locally (model/tokenizer_build.py: the tiny vocabulary, and the full 100K one for the preset):
  - validity: the share of outputs that are JSON valid against their schema, constrained vs
    free, sampled from the preset's miniature over a fixed set of schemas and seeds;
  - per-token decode time at the preset's shape, free vs constrained with the next mask
    overlapping the forward vs constrained in line (the same prompt, greedy; runs interleaved),
    the mask step alone (mask + advance) per token, and one in-line decode split into its parts
    (forward, llguidance mask, apply + pick, advance: seconds per token each);
  - grammar compile time for a 50-property schema at the full vocabulary, and the one-time
    tokenizer view llguidance builds;
  - extract rows valid on the first try, constrained vs the unconstrained retry path.
Random weights: the numbers are about speed and validity, never about answers. Knows the
engine's public API, model/constrained.py and agents/extract.py; prints nothing (the CLI does).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model import cpu
from feldspar.model.loader import Resolved
from feldspar.model.structure import Structure

Log = Callable[[str], None]
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]},
    {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                                      "ok": {"type": "boolean"}}, "required": ["tags", "ok"]},
    {"type": "object", "properties": {"kind": {"enum": ["bug", "feature", "question"]},
                                      "where": {"type": "object", "properties": {"file": {"type": "string"},
                                                                                 "line": {"type": "integer"}},
                                                "required": ["file", "line"]}}, "required": ["kind", "where"]},
    {"type": "object", "properties": {"price": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR", "USD"]},
                                      "date": {"type": "string", "format": "date"}}, "required": ["price", "currency", "date"]},
]
WIDE = {"type": "object", "properties": {f"field_{i:02d}": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"},
                                                             {"type": "array", "items": {"type": "number"}},
                                                             {"enum": ["a", "b", "c"]}][i % 5] for i in range(50)},
        "required": [f"field_{i:02d}" for i in range(50)], "additionalProperties": False}


@dataclass(frozen=True)
class StructuredBenchConfig:
    preset: str = "granite-4.0-h-350m"
    seeds: int = 3  # sampled outputs per schema for the validity rows
    max_new_tokens: int = 64
    decode_tokens: int = 48  # per-token timing rows
    repeats: int = 2
    extract_docs: int = 4
    full: bool = True  # also the preset's real shape (100K vocabulary); False: the miniature only


def cpu_flags() -> str:
    """The vector-instruction flags of this CPU (what the timings depend on)."""
    flags = cpu.cpu_flags()
    if not flags:  # /proc/cpuinfo unreadable (every Linux CPU lists some flags)
        return "unknown"
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))) or "none"


def engine_for(preset: str, tiny: bool) -> Engine:
    from feldspar.model.presets import build_random_model
    from feldspar.model.tokenizer_build import build_tokenizer

    model = build_random_model(preset, tiny=tiny, dtype="float32", seed=0)
    return Engine(model, build_tokenizer("tiny" if tiny else "full"), Resolved(source=f"random:{preset}", local=False),
                  EngineOptions(device="cpu", dtype="float32", reuse=False))


def validity(engine: Engine, cfg: StructuredBenchConfig) -> dict[str, Any]:
    counts = {"constrained": [0, 0], "free": [0, 0]}
    for schema in SCHEMAS:
        structure = Structure.json_schema(schema)
        for seed in range(cfg.seeds):
            for mode in counts:
                params = GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=1.0, seed=seed,
                                          structure=structure if mode == "constrained" else None)
                text = engine.generate("Reply with JSON.", params).text
                counts[mode][0] += not structure.validate(text)
                counts[mode][1] += 1
    return {mode: {"valid": v, "outputs": n, "share": v / n} for mode, (v, n) in counts.items()}


def per_token(engine: Engine, structure: Structure, cfg: StructuredBenchConfig) -> dict[str, float]:
    """Seconds per decoded token, free and constrained (overlapped, and in line), interleaved
    run by run so load changes hit every mode alike; the best run of each counts."""
    import os

    best = {"free": float("inf"), "constrained": float("inf"), "in_line": float("inf")}
    saved = os.environ.get("FELDSPAR_GRAMMAR_OVERLAP")
    try:
        for _ in range(cfg.repeats):
            for mode in best:
                os.environ["FELDSPAR_GRAMMAR_OVERLAP"] = "0" if mode == "in_line" else "1"
                params = GenerationParams(max_new_tokens=cfg.decode_tokens, structure=None if mode == "free" else structure)
                result = engine.generate("Describe the item as JSON.", params)
                best[mode] = min(best[mode], result.decode_s / max(result.completion_tokens - 1, 1))
    finally:
        if saved is None:
            os.environ.pop("FELDSPAR_GRAMMAR_OVERLAP", None)
        else:
            os.environ["FELDSPAR_GRAMMAR_OVERLAP"] = saved
    return best


def step_costs(engine: Engine, structure: Structure, steps: int) -> dict[str, float]:
    """Seconds per token of each part of one constrained decode, in line: the model's forward, the
    llguidance mask, applying it and picking (greedy), and advancing the grammar."""
    import torch

    from feldspar.model.constrained import constraint_for
    from feldspar.model.generation import Sampling, decode_one, new_state, prefill

    model = engine.model
    constraint = constraint_for(engine.tokenizer, structure, model.config.vocab_size, 10 * steps, overlap=False)
    state = new_state(model)
    with torch.inference_mode():
        logits = prefill(model, state, engine.encode("Describe the item as JSON."), chunk_size=256)
        totals, done = {"forward": 0.0, "mask": 0.0, "apply_pick": 0.0, "advance": 0.0}, 0
        while done < steps and not constraint.complete:
            marks = [time.perf_counter()]
            constraint.compute()
            marks.append(time.perf_counter())
            token = constraint.pick(logits, Sampling())
            marks.append(time.perf_counter())
            constraint.advance(token)
            marks.append(time.perf_counter())
            logits = decode_one(model, state, token)
            marks.append(time.perf_counter())
            for key, start, end in zip(("mask", "apply_pick", "advance", "forward"), marks, marks[1:]):
                totals[key] += end - start
            done += 1
    return {key: value / max(done, 1) for key, value in totals.items()} | {"steps": done}


def mask_step(engine: Engine, structure: Structure, steps: int = 64) -> float:
    """Seconds per token of the constraint alone: mask the logits, then advance with the pick."""
    import torch

    from feldspar.model.constrained import constraint_for

    constraint = constraint_for(engine.tokenizer, structure, engine.model.config.vocab_size, steps)
    logits = torch.randn(engine.model.config.vocab_size, generator=torch.Generator().manual_seed(0))
    done, started = 0, time.perf_counter()
    while done < steps and not constraint.complete:
        token = int(torch.argmax(constraint.mask(logits)))
        constraint.advance(token)
        done += 1
    return (time.perf_counter() - started) / max(done, 1)


def compile_times(engine: Engine) -> dict[str, float]:
    from feldspar.model import constrained

    vocab = engine.model.config.vocab_size
    started = time.perf_counter()
    constrained.ll_tokenizer(engine.tokenizer, vocab)
    view_s = time.perf_counter() - started
    started = time.perf_counter()
    constrained.constraint_for(engine.tokenizer, Structure.json_schema(WIDE), vocab, 512)
    return {"tokenizer_view_s": view_s, "compile_50_properties_s": time.perf_counter() - started}


def extract_rows_compared(engine: Engine, cfg: StructuredBenchConfig) -> dict[str, Any]:
    from feldspar.agents.chat_model import ChatGranite
    from feldspar.agents.extract import ExtractOptions, extract_rows
    from feldspar.agents.summarize import SourceText
    from feldspar.model.chat_backend import LocalChatBackend

    docs = [SourceText(path=f"doc{i}.txt", text=f"Ticket {i}: the parser crashes on line {10 + i} of main.py.",
                       title=f"doc{i}.txt") for i in range(cfg.extract_docs)]
    out = {}
    for mode in ("constrained", "retry"):
        rows: list[dict[str, Any]] = []
        options = ExtractOptions(retries=2, max_new_tokens=cfg.max_new_tokens, constrained=mode == "constrained")
        report = extract_rows(ChatGranite(backend=LocalChatBackend(engine)), SCHEMAS[2], docs, options, rows.append)
        out[mode] = {"rows": len(rows), "valid_first_try": sum(r["ok"] and r["attempts"] == 1 for r in rows),
                     "valid": report["valid"], "model_calls": report["model_calls"]}
    return out


def run_structured_bench(cfg: StructuredBenchConfig, log: Log | None = None) -> dict[str, Any]:
    log = log or (lambda _msg: None)
    started = time.perf_counter()
    log("building the miniature")
    tiny = engine_for(cfg.preset, tiny=True)
    report: dict[str, Any] = {"config": asdict(cfg), "validity": validity(tiny, cfg)}
    log("extract rows")
    report["extract"] = extract_rows_compared(tiny, cfg)
    shapes = [("tiny", tiny)]
    if cfg.full:
        log(f"building {cfg.preset} (random weights, 100K vocabulary)")
        shapes.append(("full", engine_for(cfg.preset, tiny=False)))
    report["decode"] = []
    for label, engine in shapes:
        log(f"decode timing: {label}")
        structure = Structure.json_schema(SCHEMAS[0])
        compiled = compile_times(engine)  # first: the tokenizer view is built once per tokenizer
        timed = per_token(engine, structure, cfg)
        report["decode"].append({"shape": label, "vocab": engine.model.config.vocab_size,
                                 "free_s_per_token": timed["free"], "constrained_s_per_token": timed["constrained"],
                                 "in_line_s_per_token": timed["in_line"], "slowdown": timed["constrained"] / timed["free"] - 1,
                                 "mask_s_per_token": mask_step(engine, structure),
                                 "step_costs": step_costs(engine, structure, cfg.decode_tokens), **compiled})
    report["elapsed_s"] = time.perf_counter() - started
    return report
