"""Memory benchmark: does a quantised Granite model load and answer within a machine's RAM?

For each quantisation (int8, int4) of a preset, with random weights, it makes sure a checkpoint
exists in ``checkpoints`` (writing it layer by layer, ``model.layerwise``, when missing), then
runs each variant in a fresh Python subprocess (``python -m feldspar.bench.memory``), which:
loads it with ``loader.load_checkpoint`` (timed), prefills a short chat prompt and greedily
decodes ``new_tokens`` tokens (time to first token, decode tokens/s), and reports its peak
resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) after loading and at the end.
``at_load`` adds rows that quantise a full-precision (``dtype``) checkpoint while loading.
A fresh process per row keeps one row's memory out of the next. Random weights say nothing
of answer quality; the text is shown only to prove an answer came out.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

Log = Callable[[str], None]
PROMPT = "In one sentence: what is feldspar?"


@dataclass(frozen=True)
class MemoryConfig:
    preset: str = "granite-4.0-h-tiny"
    checkpoints: str = "."
    quants: tuple[str, ...] = ("int8", "int4")
    dtype: str = "bfloat16"
    tiny: bool = False
    seed: int = 0
    new_tokens: int = 16
    at_load: bool = False  # also quantise a full-precision checkpoint while loading
    allow_large: bool = False  # may write a full-precision checkpoint over 8 GiB (at_load)


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def checkpoint_dir(cfg: MemoryConfig, quant: str) -> Path:
    from feldspar.model.catalog import get_spec

    name = get_spec(cfg.preset).name.removeprefix("granite-4.0-")
    return Path(cfg.checkpoints) / f"{name}{'-tiny' if cfg.tiny else ''}-{cfg.dtype}-{quant}-seed{cfg.seed}"


def ensure_checkpoint(cfg: MemoryConfig, quant: str, log: Log) -> tuple[Path, dict[str, Any] | None]:
    """(directory, build row or None when it already existed): written in a fresh process too."""
    out = checkpoint_dir(cfg, quant)
    if (out / "config.json").is_file():
        return out, None
    log(f"writing {out} layer by layer (random weights, {cfg.dtype}, {quant})")
    args = ["build", cfg.preset, str(out), quant, cfg.dtype, str(cfg.seed), str(int(cfg.tiny)),
            str(int(cfg.allow_large))]
    return out, {"step": "build", **run_child(args)}


def run_child(args: list[str]) -> dict[str, Any]:
    """Run this module in a fresh interpreter; its last stdout line is a JSON report."""
    done = subprocess.run([sys.executable, "-m", "feldspar.bench.memory", *args], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the benchmark subprocess failed ({done.returncode}): {tail}")
    return json.loads(lines[-1])


def run_memory_bench(cfg: MemoryConfig, log: Log | None = None) -> dict[str, Any]:
    """Build what is missing, measure every variant in its own process; the report."""
    from feldspar.bench.variants import cpu_header

    log = log or (lambda _msg: None)
    Path(cfg.checkpoints).mkdir(parents=True, exist_ok=True)
    plan = [(quant, quant, "none") for quant in cfg.quants]
    if cfg.at_load:
        plan += [(f"{quant} at load from {cfg.dtype}", "none", quant) for quant in cfg.quants]
    builds, rows = [], []
    for variant, stored, at_load in plan:
        path, build = ensure_checkpoint(cfg, stored, log)
        if build:
            builds.append({"variant": stored, **build})
        log(f"{variant}: load and answer in a fresh process")
        row = run_child(["measure", str(path), at_load, cfg.dtype, str(cfg.new_tokens)])
        rows.append({"variant": variant, "checkpoint": str(path), "disk_bytes": dir_bytes(path), **row})
    return {"config": asdict(cfg), "preset": cfg.preset, "tiny": cfg.tiny, **cpu_header(), "rows": rows,
            "builds": builds, "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


# ---- the subprocess -----------------------------------------------------------------------
def child_build(preset: str, out: str, quant: str, dtype: str, seed: str, tiny: str, allow_large: str) -> dict:
    from feldspar.model.checkpoint_random import write_random_checkpoint

    started = time.perf_counter()
    write_random_checkpoint(preset, out, tiny=tiny == "1", seed=int(seed), dtype=dtype, quant=quant,
                            allow_large=allow_large == "1")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_bytes": peak_rss_bytes()}


def child_measure(path: str, quant: str, dtype: str, new_tokens: str) -> dict[str, Any]:
    """Load ``path`` (quantising at load unless ``quant`` is none), answer PROMPT, time it."""
    import torch

    from feldspar.model.generation import decode_one, new_state, prefill
    from feldspar.model.loader import load_checkpoint

    started = time.perf_counter()
    model, tokenizer, _ = load_checkpoint(path, "cpu", dtype, quant)
    load_s, load_rss = time.perf_counter() - started, peak_rss_bytes()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    with torch.inference_mode():
        started = time.perf_counter()
        state = new_state(model)
        token = int(torch.argmax(prefill(model, state, list(ids), 2048)))
        ttft, answer = time.perf_counter() - started, [token]
        started = time.perf_counter()
        for _ in range(int(new_tokens) - 1):
            answer.append(int(torch.argmax(decode_one(model, state, answer[-1]))))
        decode_s = time.perf_counter() - started
    return {"quant": model.feldspar_choice["quant"], "dtype": model.feldspar_choice["dtype"],
            "load_s": round(load_s, 2), "load_peak_rss_bytes": load_rss, "peak_rss_bytes": peak_rss_bytes(),
            "prompt_tokens": len(ids), "ttft_s": round(ttft, 3), "decode_tokens": len(answer) - 1,
            "decode_tok_s": round((len(answer) - 1) / decode_s, 2) if len(answer) > 1 else None,
            "answer": tokenizer.decode(answer), "threads": torch.get_num_threads()}


def main(argv: list[str]) -> None:
    command, args = argv[0], argv[1:]
    report = child_build(*args) if command == "build" else child_measure(*args)
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
