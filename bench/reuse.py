"""`feldspar bench reuse`: time to first token of a follow-up question after a long context.

Side by side in one run, on random weights at a preset's shape (fp32, CPU):
  (a) recompute — the transformers model-card way: ``model.generate`` over context + question;
  (b) Feldspar — ``PrefixStateCache.prepare`` on context + question after the context was seen;
  (c) the bare forward over only the question's tokens from a warm state (the physical limit);
plus pack reload from disk (verified read + insert + follow-up) vs re-prefilling the context,
bytes of state per 1K tokens, and a long-context run on the tiny preset in a subprocess
(its peak RSS is that process's own). Random ids stand in for text: timings do not depend
on token values. Knows models, caches and files; prints nothing (the CLI does).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from feldspar.model.generation import forward
from feldspar.model.snapshot import kv_bytes_per_token, mamba_bytes, restore
from feldspar.model.state_cache import PrefixStateCache
from feldspar.model.loader import quiet_cpu_kernel_advice

Log = Callable[[str], None]
BIG_BUDGET = 1 << 40
REPEATS = 2
TARGETS = {"a_over_b_8192": 150.0, "a_over_b_32768": 500.0, "b_over_c": 1.25, "reload_32768": 50.0}


@dataclass(frozen=True)
class ReuseBenchConfig:
    preset: str = "granite-4.0-h-350m"
    contexts: tuple[int, ...] = (2048, 8192, 32768)
    pack_contexts: tuple[int, ...] = (8192, 32768)
    new_tokens: int = 30
    tiny_context: int = 131072
    peak_context: int = 0  # also run the preset itself at this length in a child process (peak RSS)
    chunk_size: int = 2048
    baseline: bool = True
    tiny: bool = False  # the main rows on the preset's miniature (smoke runs)
    seed: int = 0


def random_ids(count: int, vocab: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab - 512, (count,), generator=generator).tolist()


def first_token(logits: torch.Tensor) -> int:
    return int(torch.argmax(logits))


def time_recompute(model, ids: list[int]) -> float:
    """(a): model.generate for one new token over the whole prompt, as the model card does."""
    tensor = torch.tensor([ids])
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=1, do_sample=False)
    return time.perf_counter() - started


def time_reuse(model, cache: PrefixStateCache, context: list[int], follow: list[int], chunk: int) -> float:
    """(b): the engine's path: prepare(context + question) then pick the first token."""
    started = time.perf_counter()
    prepared = cache.prepare(model, context + follow, chunk_size=chunk)
    first_token(prepared.logits)
    return time.perf_counter() - started


def time_bare(model, snapshot, follow: list[int]) -> float:
    """(c): one forward over only the question from a restored state (restore not timed)."""
    state = restore(snapshot, model)
    tensor = torch.tensor([follow])
    started = time.perf_counter()
    first_token(forward(model, state, tensor))
    return time.perf_counter() - started


def best_of(run: Callable[[int], float], repeats: int = REPEATS) -> float:
    return min(run(i) for i in range(repeats))


def context_row(model, length: int, cfg: ReuseBenchConfig, log: Log) -> dict[str, Any]:
    vocab = model.config.vocab_size
    context = random_ids(length, vocab, cfg.seed + length)
    follows = [random_ids(cfg.new_tokens, vocab, cfg.seed + length + 1 + i) for i in range(REPEATS + 1)]
    cache = PrefixStateCache(budget_bytes=BIG_BUDGET, snapshot_interval=4096)
    log(f"{length}: prefilling the context once")
    prefill_s = cache.prepare(model, context, chunk_size=cfg.chunk_size).prefill_s
    snapshot = next(e.snapshot for e in cache.entries if e.snapshot.length == length)
    time_bare(model, snapshot, follows[-1])  # warm-up of the short-forward shapes
    bare = best_of(lambda i: time_bare(model, snapshot, follows[i]))
    reuse = best_of(lambda i: time_reuse(model, cache, context, follows[i], cfg.chunk_size))
    row = {"context": length, "prefill_s": prefill_s, "reuse_s": reuse, "bare_s": bare, "b_over_c": reuse / bare,
           "state_bytes": snapshot.nbytes, "recompute_s": None, "a_over_b": None}
    if cfg.baseline:
        log(f"{length}: recompute with model.generate")
        row["recompute_s"] = time_recompute(model, context + follows[0])
        row["a_over_b"] = row["recompute_s"] / reuse
    if length in cfg.pack_contexts:
        row.update(pack_reload(model, snapshot, context, follows[-1], cfg, log))
    return row


def pack_reload(model, snapshot, context, follow, cfg: ReuseBenchConfig, log: Log) -> dict[str, Any]:
    """Write the state as a pack file, then time: verified read + insert + follow-up TTFT."""
    from feldspar.model.pack_identity import file_sha256, ids_sha256
    from feldspar.model.packs import read_state_file, write_state_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.safetensors"
        write_state_file(path, snapshot, context)
        meta = {"name": "bench", "tokens": len(context), "token_ids_sha256": ids_sha256(context),
                "state_bytes": path.stat().st_size, "state_file_sha256": file_sha256(path)}
        log(f"{len(context)}: pack reload from disk")
        started = time.perf_counter()
        ids, loaded = read_state_file(path, meta, model)
        cache = PrefixStateCache(budget_bytes=BIG_BUDGET)
        cache.insert(ids, loaded, pinned=True)
        loaded_s = time.perf_counter() - started
        ttft = time_reuse(model, cache, context, follow, cfg.chunk_size)
    return {"pack_file_bytes": meta["state_bytes"], "pack_load_s": loaded_s, "pack_ttft_s": loaded_s + ttft}


# ---- long context in a child process (its own peak memory) -----------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def long_context_child(preset: str, tiny: bool, tokens: int, chunk: int, new_tokens: int) -> dict[str, Any]:
    from feldspar.model.presets import build_random_model

    model = build_random_model(preset, tiny=tiny, device="cpu")
    before = rss_bytes()
    context = random_ids(tokens, model.config.vocab_size, 7)
    cache = PrefixStateCache(budget_bytes=BIG_BUDGET, snapshot_interval=4096)
    prefill_s = cache.prepare(model, context, chunk_size=chunk).prefill_s
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    follow = random_ids(new_tokens, model.config.vocab_size, 8)
    reuse_s = time_reuse(model, cache, context, follow, chunk)
    return {"preset": preset, "tiny": tiny, "tokens": tokens, "prefill_s": prefill_s, "follow_up_s": reuse_s,
            "rss_after_model_bytes": before, "peak_rss_bytes": peak, "peak_over_model_bytes": peak - before,
            "cache_bytes": cache.total_bytes, "snapshots": len(cache.entries)}


def run_long_context(preset: str, tiny: bool, tokens: int, chunk: int, new_tokens: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "feldspar.bench.reuse", preset, str(int(tiny)), str(tokens), str(chunk), str(new_tokens)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"long-context run failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the whole run -----------------------------------------------------------------------
def state_sizes(model) -> dict[str, int]:
    dtype = next(model.parameters()).dtype
    return {"mamba_state_bytes": mamba_bytes(model.config, dtype),
            "kv_bytes_per_1k_tokens": kv_bytes_per_token(model.config, dtype) * 1024,
            "bf16_mamba_state_bytes": mamba_bytes(model.config, torch.bfloat16),
            "bf16_kv_bytes_per_1k_tokens": kv_bytes_per_token(model.config, torch.bfloat16) * 1024}


def run_reuse_bench(cfg: ReuseBenchConfig, log: Log = lambda _msg: None) -> dict[str, Any]:
    from feldspar.model.presets import build_random_model

    quiet_cpu_kernel_advice()  # CPU benchmarks: the CUDA-kernel install advice is noise
    started = time.perf_counter()
    long_run = None
    if cfg.tiny_context:
        log(f"tiny preset: {cfg.tiny_context} tokens in a child process")
        long_run = run_long_context(cfg.preset, True, cfg.tiny_context, cfg.chunk_size, cfg.new_tokens)
    peak_run = None
    if cfg.peak_context:
        log(f"{cfg.preset}: {cfg.peak_context} tokens in a child process (peak memory)")
        peak_run = run_long_context(cfg.preset, False, cfg.peak_context, cfg.chunk_size, cfg.new_tokens)
    model = build_random_model(cfg.preset, tiny=cfg.tiny, device="cpu")
    rows = [context_row(model, n, cfg, log) for n in cfg.contexts]
    return {"config": asdict(cfg), "threads": torch.get_num_threads(), "rows": rows, "sizes": state_sizes(model),
            "long_context": long_run, "peak_run": peak_run, "targets": TARGETS, "elapsed_s": time.perf_counter() - started}


def ratio_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One printable row per context, with ratios and their targets."""
    out = []
    for r in report["rows"]:
        target_a = TARGETS.get(f"a_over_b_{r['context']}")
        reload = r["prefill_s"] / r["pack_ttft_s"] if r.get("pack_ttft_s") else None
        target_reload = TARGETS.get(f"reload_{r['context']}")
        out.append({
            "context": r["context"], "(a) recompute s": _num(r["recompute_s"]), "(b) reuse s": _num(r["reuse_s"]),
            "(c) bare s": _num(r["bare_s"]), "a/b": _ratio(r["a_over_b"], target_a, at_least=True),
            "b/c": _ratio(r["b_over_c"], TARGETS["b_over_c"], at_least=False),
            "re-prefill s": _num(r["prefill_s"]), "pack reload s": _num(r.get("pack_ttft_s")),
            "prefill/reload": _ratio(reload, target_reload, at_least=True),
            "state MiB": f"{r['state_bytes'] / 2**20:.1f}",
        })
    return out


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _ratio(value: float | None, target: float | None, at_least: bool) -> str:
    if value is None:
        return ""
    if target is None:
        return f"{value:.2f}x"
    ok = value >= target if at_least else value <= target
    return f"{value:.2f}x ({'>=' if at_least else '<='}{target:g} {'ok' if ok else 'MISSED'})"


if __name__ == "__main__":  # child process of run_long_context
    preset_arg, tiny_arg, tokens_arg, chunk_arg, new_arg = sys.argv[1:6]
    print(json.dumps(long_context_child(preset_arg, tiny_arg == "1", int(tokens_arg), int(chunk_arg), int(new_arg))))
