"""Engine benchmark: Feldspar's prefill/decode against plain ``model.generate``, on a roofline.

Builds a random-weight Granite preset at its real shape (``model.presets``), measures the
machine (``bench.roofline``), then times, on random token ids:
  * Feldspar prefill (``generation.prefill`` with chunking) at each prompt length, eager and with
    the torch.compile'd chunk scan (``compile_s`` likewise);
  * Feldspar decode (a greedy ``decode_one`` loop after the shortest prompt), eager and with
    the torch.compile'd step (its first call, which compiles, reported apart as ``compile_s``);
  * the model-card baseline, ``model.generate(..., do_sample=False)``: time to first token
    is ``generate`` with one new token, its decode rate is (t(N) - t(1)) / (N - 1).
Each timing is the best of ``repeats`` runs (fewer once a row has used ``row_budget_s``).
Prefill rows are compared with matmul FLOP/s, decode rows with memory bandwidth. ``min_new_tokens`` keeps ``generate`` from stopping at
an end-of-text that random weights may pick; the Feldspar loop never stops early either.

It knows nothing about tokenizers, chat templates, trained weights or the CLI, and a
number is only as steady as the machine: other processes on it show up in every timing.
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from feldspar.bench import roofline
from feldspar.bench.roofline import Machine, ModelCost
from feldspar.model import decode_step, prefill_scan
from feldspar.model.generation import ModelState, chunk_ends, decode_one, greedy, new_state, prefill
from feldspar.model.loader import quiet_cpu_kernel_advice

Log = Callable[[str], None]
FELDSPAR, BASELINE = "feldspar", "model.generate"


@dataclass(frozen=True)
class BenchConfig:
    preset: str = "granite-4.0-h-350m"
    dtype: str = "float32"
    prefill_lengths: tuple[int, ...] = (1024, 4096)
    decode_tokens: int = 64
    repeats: int = 2
    row_budget_s: float = 20.0  # stop repeating a row once its runs took this long
    chunk_size: int = 2048
    baseline: bool = True
    tiny: bool = False
    seed: int = 0
    quants: tuple[str, ...] = ("int8", "int4")  # variants beside the base (bench/variants.py)
    quality_tokens: int = 256
    peer_urls: tuple[str, ...] = ()  # running llama.cpp servers, URL or LABEL=URL (bench/peer.py)
    decode_steps: tuple[str, ...] = ("fast",)  # "fast": model/decode_step.py; "ref": transformers' forward
    prefills: tuple[str, ...] = ("fast",)  # "fast": model/prefill_scan.py's mixer; "ref": transformers'
    compile: bool = True  # also the torch.compile'd decode step and prefill scan (set_compiled in both)

    @property
    def decode_prompt(self) -> int:
        return min(self.prefill_lengths)


@dataclass
class Timing:
    """One measured row before it is put on the roofline."""

    row: str
    impl: str
    kind: str  # "prefill" | "decode"
    tokens: int
    seconds: float
    work: float  # useful FLOPs (prefill) or bytes read (decode), for all ``tokens``
    extra: dict[str, Any] = field(default_factory=dict)


def random_ids(count: int, vocab_size: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (count,), generator=generator).tolist()


def best_of(fn: Callable[[], Any], repeats: int, budget_s: float = float("inf")) -> tuple[float, Any]:
    """(fastest seconds, result of the last call) over up to ``repeats`` calls, fewer once
    the calls so far took ``budget_s`` in all."""
    best, spent, result = float("inf"), 0.0, None
    for _ in range(max(repeats, 1)):
        started = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - started
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget_s:
            break
    return best, result


def feldspar_prefill(model, ids: Sequence[int], chunk_size: int) -> tuple[ModelState, torch.Tensor]:
    state = new_state(model)
    logits = prefill(model, state, ids, chunk_size)
    return state, logits


@contextmanager
def env_mode(variable: str, mode: str):
    """Run with the environment switch ``variable`` (FELDSPAR_DECODE_STEP, FELDSPAR_PREFILL) = ``mode``."""
    saved = os.environ.get(variable)
    os.environ[variable] = mode
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved


def decode_step_mode(mode: str):
    """Run ``decode_one`` with the fused step ("fast") or transformers' forward ("ref")."""
    return env_mode("FELDSPAR_DECODE_STEP", mode)


def prefill_mode(mode: str):
    """Run ``prefill`` with model/prefill_scan.py's mixer ("fast") or transformers' ("ref")."""
    return env_mode("FELDSPAR_PREFILL", mode)


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeats: int,
                        budget_s: float = float("inf")) -> dict[str, tuple[float, Any]]:
    """``best_of`` for several functions, their calls interleaved round by round (one load for all)."""
    best = {name: (float("inf"), None) for name in fns}
    spent = 0.0
    for _ in range(max(repeats, 1)):
        for name, fn in fns.items():
            seconds, result = best_of(fn, 1)
            best[name] = (min(best[name][0], seconds), result)
            spent += seconds
        if spent >= budget_s * len(fns):
            break
    return best


def step_impl(impl: str, mode: str) -> str:
    return impl if mode == "fast" else f"{impl} (ref step)"


def feldspar_decode(model, state: ModelState, logits: torch.Tensor, steps: int) -> None:
    """Greedy decode of ``steps`` tokens from a copy of ``state`` (one forward each)."""
    state = ModelState(cache=copy.deepcopy(state.cache), length=state.length)
    for _ in range(steps):
        logits = decode_one(model, state, greedy(logits))


@torch.inference_mode()
def generate(model, ids: Sequence[int], new_tokens: int) -> int:
    """The model-card way; returns how many tokens it generated."""
    input_ids = torch.tensor([list(ids)], dtype=torch.long)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    return int(out.shape[-1] - input_ids.shape[-1])


def warm_up(model, vocab_size: int, baseline: bool) -> None:
    """Run every code path once at a small size so first-call costs stay out of timings."""
    ids = random_ids(128, vocab_size, seed=1)
    with prefill_mode("ref"):
        feldspar_prefill(model, ids, chunk_size=64)
    state, logits = feldspar_prefill(model, ids, chunk_size=64)
    for mode in ("fast", "ref"):
        with decode_step_mode(mode):
            feldspar_decode(model, state, logits, steps=2)
    if baseline:
        generate(model, ids, new_tokens=2)


def time_prefill(model, cost: ModelCost, ids: list[int], cfg: BenchConfig,
                 impl: str = FELDSPAR) -> tuple[list[Timing], Any]:
    """Feldspar (and, for the base, baseline) prefill rows for one prompt; also the last Feldspar state+logits."""
    n = len(ids)

    def timed(mode: str, compiled: bool) -> Callable[[], Any]:
        def run():
            with prefill_mode(mode), compiled_scan(compiled):
                return feldspar_prefill(model, ids, cfg.chunk_size)
        return run

    ways = [(mode, False) for mode in cfg.prefills] + ([("fast", True)] if cfg.compile else [])
    first_s = {}
    if cfg.compile:  # the first compiled call compiles (or finds inductor's cache): its own figure
        first_s = {"compile_s": round(best_of(timed("fast", True), 1)[0], 2)}
    timings = best_of_interleaved({w: timed(*w) for w in ways}, cfg.repeats, cfg.row_budget_s)
    prepared = timings[ways[0]][1]
    ends = chunk_ends(0, n, cfg.chunk_size)
    flops = roofline.prefill_flops(cost, ends)
    rows = [Timing(f"prefill {n}", (impl if mode == "fast" else f"{impl} (ref prefill)")
                   + (", compiled" if compiled else ""), "prefill", n, timings[(mode, compiled)][0],
                   sum(flops.values()),
                   {"forwards": len(ends), "prefill": mode, "compiled": compiled, **(first_s if compiled else {}),
                    "gflop_by_part": {k: round(v / 1e9, 3) for k, v in flops.items()}})
            for mode, compiled in ways]
    if cfg.baseline and impl == FELDSPAR:
        seconds, _ = best_of(lambda: generate(model, ids, 1), cfg.repeats, cfg.row_budget_s)
        flops = roofline.prefill_flops(cost, [n])
        rows.append(Timing(f"prefill {n}", BASELINE, "prefill", n, seconds, sum(flops.values()),
                           {"forwards": 1, "note": "generate(max_new_tokens=1): time to first token"}))
    return rows, prepared


def time_decode(model, cost: ModelCost, ids: list[int], prepared, ttft_s: float | None,
                cfg: BenchConfig, impl: str = FELDSPAR) -> list[Timing]:
    """Feldspar decode rows after the prompt ``ids`` (each step asked for, and the compiled
    step when ``cfg.compile``, their runs interleaved), and the baseline's."""
    state, logits = prepared
    steps = cfg.decode_tokens
    per_token = roofline.decode_bytes(cost, roofline.tensor_bytes(state.cache))
    label = f"decode after {len(ids)}"
    ways = [(mode, False) for mode in cfg.decode_steps] + ([("fast", True)] if cfg.compile else [])
    first_s = {}
    if cfg.compile:  # the first compiled call compiles (or finds inductor's cache): its own figure
        with compiled_step(True):
            first_s = {"compile_s": round(best_of(lambda: feldspar_decode(model, state, logits, 2), 1)[0], 2)}

    def way(mode: str, compiled: bool) -> Callable[[], Any]:
        def run():
            with decode_step_mode(mode), compiled_step(compiled):
                return feldspar_decode(model, state, logits, steps)
        return run

    timings = best_of_interleaved({w: way(*w) for w in ways}, cfg.repeats, cfg.row_budget_s)
    rows = [Timing(label, step_impl(impl, mode) + (", compiled" if compiled else ""), "decode", steps,
                   timings[(mode, compiled)][0], per_token * steps,
                   {"state_bytes": int(per_token - cost.active_bytes), "decode_step": mode, "compiled": compiled,
                    **(first_s if compiled else {})})
            for mode, compiled in ways]
    if cfg.baseline and impl == FELDSPAR and ttft_s is not None and steps > 1:
        total, made = best_of(lambda: generate(model, ids, steps), cfg.repeats, cfg.row_budget_s)
        if made != steps:
            raise RuntimeError(f"model.generate made {made} tokens, expected {steps}")
        rows.append(Timing(label, BASELINE, "decode", steps - 1, max(total - ttft_s, 1e-6),
                           per_token * (steps - 1), {"note": "(t(N) - t(1)) / (N - 1)", "generate_s": total}))
    return rows


@contextmanager
def compiled_part(part, enabled: bool):
    """Run with ``part`` (model/decode_step.py's regions or model/prefill_scan.py's chunk scan)
    torch.compile'd (or eager), then eager."""
    part.set_compiled(enabled)
    try:
        yield
    finally:
        part.set_compiled(False)


def compiled_step(enabled: bool):
    return compiled_part(decode_step, enabled)


def compiled_scan(enabled: bool):
    return compiled_part(prefill_scan, enabled)


def place(timing: Timing, machine: Machine) -> dict[str, Any]:
    """A JSON row: rate, achieved FLOP/s or bytes/s and its share of the roofline."""
    rate = timing.work / timing.seconds
    roof = (machine.matmul_flops * timing.extra.pop("matmul_scale", 1.0) if timing.kind == "prefill"
            else machine.bandwidth)
    row = {
        "row": timing.row, "impl": timing.impl, "kind": timing.kind, "tokens": timing.tokens,
        "seconds": round(timing.seconds, 6), "tokens_per_s": round(timing.tokens / timing.seconds, 2),
        "achieved": round(rate / 1e9, 2), "achieved_unit": "GFLOP/s" if timing.kind == "prefill" else "GB/s",
        "roofline_pct": round(100 * rate / roof, 1), "vs_baseline": None,
    }
    row.update(timing.extra)
    return row


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Tokens/s over model.generate's (``vs_baseline``, Feldspar rows) and over the base
    Feldspar row's (``vs_feldspar``, every other row: variants and the peer)."""
    base = {r["row"]: r["tokens_per_s"] for r in rows if r["impl"] == BASELINE}
    ours = {r["row"]: r["tokens_per_s"] for r in rows if r["impl"] == FELDSPAR}
    for r in rows:
        if r["impl"].startswith(FELDSPAR) and base.get(r["row"]):
            r["vs_baseline"] = round(r["tokens_per_s"] / base[r["row"]], 2)
        r["vs_feldspar"] = round(r["tokens_per_s"] / ours[r["row"]], 2) if r["impl"] != FELDSPAR and \
            ours.get(r["row"]) else None


def build_model(cfg: BenchConfig):
    from feldspar.model.onednn_linear import use_onednn
    from feldspar.model.presets import build_random_model, count_params

    model = build_random_model(cfg.preset, tiny=cfg.tiny, dtype=cfg.dtype, seed=cfg.seed)
    use_onednn(model)  # as model.loader does on CPU
    model.generation_config.pad_token_id = model.config.pad_token_id
    return model, roofline.model_cost(model, count_params(cfg.preset, tiny=cfg.tiny)[1])


def measure_rows(model, cost: ModelCost, cfg: BenchConfig, log: Log, impl: str = FELDSPAR) -> list[Timing]:
    vocab = model.config.vocab_size
    timings: list[Timing] = []
    baseline = cfg.baseline and impl == FELDSPAR
    for n in sorted(set(cfg.prefill_lengths)):
        log(f"{impl}: prefill {n} tokens (chunk {cfg.chunk_size}{', and model.generate' if baseline else ''})")
        ids = random_ids(n, vocab, cfg.seed)
        rows, prepared = time_prefill(model, cost, ids, cfg, impl)
        timings += rows
        if n == cfg.decode_prompt and cfg.decode_tokens > 0:
            log(f"{impl}: decode {cfg.decode_tokens} tokens after {n}")
            ttft = rows[len(cfg.prefills)].seconds if baseline else None
            timings += time_decode(model, cost, ids, prepared, ttft, cfg, impl)
    return timings


def measure_variants(base, cost: ModelCost, cfg: BenchConfig, machine: Machine,
                     matmul_by_dtype: dict[str, float], log: Log):
    """Rows of every variant (base first) and each variant's quality against fp32."""
    from feldspar.bench import variants as v

    quality_ids = random_ids(cfg.quality_tokens, base.config.vocab_size, cfg.seed + 7)
    reference = v.all_logits(base if cfg.dtype == "float32" else copy.deepcopy(base).float(), quality_ids)
    timings, quality = [], []
    base_bytes = v.weight_bytes(base)
    for variant in v.variants(cfg.dtype, cfg.quants):
        model = v.derive(base, variant)
        impl = FELDSPAR if model is base else variant.label
        scaled = replace(cost, active_bytes=int(cost.active_bytes * v.weight_bytes(model) / base_bytes))
        if model is not base:
            warm_up(model, model.config.vocab_size, baseline=False)
        rows = measure_rows(model, scaled, cfg, log, impl)
        if variant.dtype != machine.dtype:  # prefill % is of the matmul roofline in the row's own dtype
            for row in rows:
                row.extra["matmul_scale"] = matmul_by_dtype[variant.dtype] / machine.matmul_flops
        timings += rows
        quality.append({"impl": impl, "dtype": variant.dtype, "quant": variant.quant,
                        "weight_bytes": v.weight_bytes(model), **v.quality(reference, model, quality_ids)})
        del model
    return timings, quality


def run_bench(cfg: BenchConfig, log: Log | None = None) -> dict[str, Any]:
    """Measure the machine and the model; return the report (see ``docs/benchmarks.md``)."""
    log = log or (lambda _msg: None)
    quiet_cpu_kernel_advice()  # CPU benchmarks: the CUDA-kernel install advice is noise
    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    from feldspar.model.presets import resolve_dtype

    dtype = resolve_dtype(cfg.dtype)
    log(f"measuring matmul ({dtype}) and memory bandwidth on {torch.get_num_threads()} threads")
    machine = roofline.measure_machine(dtype, quick=cfg.tiny)
    matmul_by_dtype = other_matmuls(cfg, machine, log)
    log(f"building random {cfg.preset}{' (tiny)' if cfg.tiny else ''} in {cfg.dtype}")
    model, cost = build_model(cfg)
    warm_up(model, model.config.vocab_size, cfg.baseline)
    before = peer_round(cfg, model.config.vocab_size, log, "before")
    timings, quality = measure_variants(model, cost, cfg, machine, matmul_by_dtype, log)
    rows = [place(t, machine) for t in timings]
    if cfg.peer_urls:
        from feldspar.bench.peer import fastest_rows

        rows += fastest_rows(before, peer_round(cfg, model.config.vocab_size, log, "after"))
    add_ratios(rows)
    from feldspar.bench.variants import cpu_header

    return {
        "preset": cfg.preset, "tiny": cfg.tiny, "dtype": cfg.dtype, "config": asdict(cfg), **cpu_header(),
        "machine": {**machine.to_dict(), "matmul_gflops_by_dtype": {k: round(v / 1e9, 2) for k, v in
                                                                    matmul_by_dtype.items()}},
        "model": cost.to_dict(), "rows": rows, "quality": quality,
        "torch": torch.__version__, "elapsed_s": round(time.perf_counter() - started, 1),
    }


def peer_round(cfg: BenchConfig, vocab_size: int, log: Log, when: str) -> list[dict[str, Any]]:
    """Every peer's rows, measured once ``before`` or ``after`` Feldspar's: a machine whose
    speed drifts during the run (other tenants) then weighs on both sides alike."""
    from feldspar.bench.peer import peer_rows

    rows: list[dict[str, Any]] = []
    for spec in cfg.peer_urls:
        log(f"peer {spec} ({when} Feldspar's rows): prompts of {', '.join(map(str, cfg.prefill_lengths))} "
            f"tokens, {cfg.decode_tokens} decoded after the shortest")
        rows += peer_rows(spec, list(cfg.prefill_lengths), cfg.decode_tokens, vocab_size, cfg.repeats)
    return rows


def other_matmuls(cfg: BenchConfig, machine: Machine, log: Log) -> dict[str, float]:
    """Matmul FLOP/s in every variant's dtype (the base one is the machine's)."""
    from feldspar.bench.variants import variants

    found = {machine.dtype: machine.matmul_flops}
    for variant in variants(cfg.dtype, cfg.quants):
        if variant.dtype not in found:
            log(f"measuring matmul ({variant.dtype})")
            found[variant.dtype] = roofline.measure_matmul(getattr(torch, variant.dtype),
                                                           max_size=256 if cfg.tiny else 4096,
                                                           repeats=1 if cfg.tiny else 4)
    return found
