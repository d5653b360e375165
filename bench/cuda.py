"""GPU rows of the engine: bf16 prefill and decode per quantisation, with whichever Mamba kernels load.

``run_gpu_bench(GpuConfig)`` builds a random-weight preset on the device in bf16 and, for the
unquantised model and each quantisation (``model.quant`` on the device: int8 weights
dequantised into a bf16 ``F.linear``, int4 through ``torch._weight_int4pack_mm``), times
Feldspar's prefill at each prompt length and its greedy decode after the shortest (the fused
step eager, transformers' forward, and the compiled step when asked), every timing fenced by
``torch.cuda.synchronize`` and the best of ``repeats``. Beside the speed it checks what must stay
exact on the device: reuse (prefill of a prefix, then the rest on the same state) against a
full prefill of the same ids on the same model; the fused step's greedy tokens against
transformers' forward; and each quantisation's logits against the bf16 model's (random weights:
a sanity check of the kernels, not a quality figure). Peak device memory is per variant.

Which Mamba kernels transformers found (``mamba_ssm``'s Triton scan and state update,
``causal_conv1d``) is decided when transformers' Granite module is imported, so a comparison
with and without them is two processes (``kernels`` in the report says which this one had).
Off a GPU it runs on the CPU (the tests do, tiny); numbers from there are not GPU numbers.
Knows torch, transformers and ``model``; nothing of the CLI.
"""

from __future__ import annotations

import copy
import importlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

from feldspar.bench.engine import best_of, compiled_step, decode_step_mode, feldspar_prefill, random_ids
from feldspar.bench.variants import all_logits, weight_bytes
from feldspar.model import decode_step
from feldspar.model.generation import ModelState, decode_one, prefill
from feldspar.model.quant import load_quantized, quantize, save_quantized

KERNEL_MODULES = {"mamba_ssm": "mamba_ssm.ops.triton.ssd_combined", "causal_conv1d": "causal_conv1d"}
Log = Callable[[str], None]
SMOKE = {"tiny": True, "prefill_lengths": (64, 256), "decode_tokens": 8, "repeats": 1, "chunk_size": 128,
         "quality_tokens": 64}  # `--smoke`: the whole run in seconds on a CPU


@dataclass(frozen=True)
class GpuConfig:
    preset: str = "granite-4.0-h-350m"
    prefill_lengths: tuple[int, ...] = (1024, 4096, 32768)
    decode_tokens: int = 64
    quants: tuple[str, ...] = ("none", "int8", "int4")
    repeats: int = 3
    chunk_size: int = 8192
    compile: bool = False  # also the torch.compile'd decode step (its first call, which compiles, apart)
    quality_tokens: int = 256
    tiny: bool = False
    seed: int = 0


def kernels() -> dict[str, bool]:
    """Which of the optional Mamba kernel packages import in this process."""
    found = {}
    for name, module in KERNEL_MODULES.items():
        try:
            importlib.import_module(module)
            found[name] = True
        except Exception:  # noqa: BLE001 - a broken install is as good as none
            found[name] = False
    return found


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """``engine.best_of`` of ``fn`` fenced by ``sync`` on both sides, after one untimed call."""
    def fenced():
        sync()
        result = fn()
        sync()
        return result

    fn()
    sync()  # the untimed call's device work stays out of the first timing
    return best_of(fenced, repeats)


def greedy(model, prepared: tuple[ModelState, torch.Tensor], steps: int) -> list[int]:
    """Greedy tokens from a copy of a prefilled state (one forward each)."""
    state, logits = prepared
    state = ModelState(cache=copy.deepcopy(state.cache), length=state.length)
    tokens = []
    for _ in range(steps):
        tokens.append(int(torch.argmax(logits)))
        logits = decode_one(model, state, tokens[-1])
    return tokens


def decode_rows(model, prepared, cfg: GpuConfig) -> list[dict[str, Any]]:
    """Decode tok/s of the fused step (eager, and compiled when asked) and of transformers' forward."""
    rows = []
    for way, mode, compiled in [("fused step", "fast", False), ("transformers forward", "ref", False)] + \
            ([("fused step, compiled", "fast", True)] if cfg.compile else []):
        with decode_step_mode(mode), compiled_step(compiled):
            started = time.perf_counter()
            greedy(model, prepared, 2)
            first_s = time.perf_counter() - started
            seconds, _ = best(lambda: greedy(model, prepared, cfg.decode_tokens), cfg.repeats)
        rows.append({"row": f"decode after {prepared[0].length}", "way": way, "tokens": cfg.decode_tokens,
                     "seconds": round(seconds, 4), "tokens_per_s": round(cfg.decode_tokens / seconds, 1),
                     "first_call_s": round(first_s, 2)})
    return rows


def exactness(model, cfg: GpuConfig) -> dict[str, Any]:
    """Reuse against recompute, and the fused step's tokens against transformers' forward."""
    ids = random_ids(600, model.config.vocab_size, cfg.seed + 3)
    state, _ = feldspar_prefill(model, ids[:400], cfg.chunk_size)
    reused = prefill(model, state, ids[400:], cfg.chunk_size).float()
    _, fresh = feldspar_prefill(model, ids, cfg.chunk_size)
    prepared = feldspar_prefill(model, ids[:64], cfg.chunk_size)
    tokens = {}
    for mode in ("fast", "ref"):
        with decode_step_mode(mode):
            tokens[mode] = greedy(model, prepared, 32)
    same = sum(a == b for a, b in zip(tokens["fast"], tokens["ref"]))
    return {"reuse_max_logit_diff": round((reused - fresh.float()).abs().max().item(), 5),
            "logit_scale": round(fresh.float().abs().max().item(), 3),
            "fused_vs_forward_tokens": f"{same}/32"}


def round_trip(model, quality_ids: list[int]) -> float:
    """Max logit difference between ``model`` and its save_quantized/load_quantized copy on its device."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        save_quantized(model, None, folder)
        loaded = load_quantized(folder, next(model.parameters()).device)
    return round((all_logits(loaded, quality_ids) - all_logits(model, quality_ids)).abs().max().item(), 6)


def variant_report(model, quant: str, reference: torch.Tensor, quality_ids: list[int], cfg: GpuConfig,
                   log: Log) -> dict[str, Any]:
    vocab = model.config.vocab_size
    rows, prepared = [], None
    for n in sorted(cfg.prefill_lengths):
        log(f"{quant}: prefill {n}")
        ids = random_ids(n, vocab, cfg.seed)  # drawn outside the timing
        seconds, result = best(lambda: feldspar_prefill(model, ids, cfg.chunk_size), cfg.repeats)
        rows.append({"row": f"prefill {n}", "way": "feldspar", "tokens": n, "seconds": round(seconds, 4),
                     "tokens_per_s": round(n / seconds, 1)})
        prepared = prepared or result
    if cfg.decode_tokens:
        log(f"{quant}: decode {cfg.decode_tokens}")
        rows += decode_rows(model, prepared, cfg)
    logits = all_logits(model, quality_ids)
    saved = {} if quant == "none" else {"reload_max_logit_diff": round_trip(model, quality_ids)}
    diff = (logits - reference).abs()
    return {"quant": quant, "rows": rows, **exactness(model, cfg), **saved,
            "max_logit_diff_vs_bf16": round(diff.max().item(), 4),
            "greedy_agreement_vs_bf16": round((logits.argmax(-1) == reference.argmax(-1)).float().mean().item(), 4),
            "weight_bytes": weight_bytes(model)}


def run_gpu_bench(cfg: GpuConfig, log: Log | None = None,
                  partial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every variant's rows and checks (see the module docstring), with the device and kernels;
    ``partial`` gets the report so far after each variant (a run cut short keeps those)."""
    from feldspar.model.presets import build_random_model

    log = log or (lambda _msg: None)
    started, dev = time.perf_counter(), device()
    found = kernels()
    log(f"building random {cfg.preset} on {dev} in bf16 (kernels: {found})")
    base = build_random_model(cfg.preset, tiny=cfg.tiny, device=str(dev), dtype="bfloat16", seed=cfg.seed)
    quality_ids = random_ids(cfg.quality_tokens, base.config.vocab_size, cfg.seed + 7)
    reference = all_logits(base, quality_ids)
    variants: list[dict[str, Any]] = []
    report = {"config": asdict(cfg), "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
              "torch": torch.__version__, "kernels": found, "variants": variants}
    for quant in cfg.quants:
        model = base if quant == "none" else quantize(copy.deepcopy(base), quant)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        variant = variant_report(model, quant, reference, quality_ids, cfg, log)
        variant["peak_device_bytes"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
        variants.append(variant)
        decode_step.set_compiled(False)
        del model
        report["elapsed_s"] = round(time.perf_counter() - started, 1)
        if partial:
            partial(report)
    return report


def table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per timing: variant, row, way, tok/s, and its ratio to the bf16 row."""
    base = {(r["row"], r["way"]): r["tokens_per_s"] for r in report["variants"][0]["rows"]}
    return [{"quant": v["quant"], "row": r["row"], "way": r["way"], "tokens_per_s": r["tokens_per_s"],
             "vs_bf16": round(r["tokens_per_s"] / base[(r["row"], r["way"])], 2)
             if base.get((r["row"], r["way"])) else None}
            for v in report["variants"] for r in v["rows"]]


def main() -> None:  # pragma: no cover - the GPU machine's entry point
    """``python -m feldspar.bench.cuda OUT.json [preset] [--compile]`` where only torch + transformers are."""
    import json
    import sys

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    cfg = GpuConfig(preset=args[1] if len(args) > 1 else GpuConfig.preset, compile="--compile" in sys.argv,
                    **(SMOKE if "--smoke" in sys.argv else {}))
    def save(report: dict[str, Any]) -> None:
        with open(args[0], "w") as out:
            json.dump(report, out, indent=1)

    report = run_gpu_bench(cfg, log=lambda msg: print(msg, file=sys.stderr, flush=True), partial=save)
    for row in table(report):
        print(row)


if __name__ == "__main__":
    main()
