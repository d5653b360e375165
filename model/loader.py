"""Find and load a Granite checkpoint: catalog name, hub id or local directory.

Resolves the name, honours HF_HUB_OFFLINE and the Hugging Face cache, picks device and
dtype, and turns every failure a user can fix into one ``ModelError`` line that names the
fixes. Knows checkpoints and files; nothing of prompts, generation or state reuse.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch

from feldspar.model.cpu import cpu_flags
from feldspar.model.errors import CheckpointError, ModelError, ModelNotFoundError
from feldspar.model.names import Resolved, offline, resolve  # noqa: F401  (re-exported)

GRANITE_MODEL_TYPE = "granitemoehybrid"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CheckpointError("device 'cuda' was requested but no CUDA GPU is available", fix="use_cpu")
    return torch.device(device)


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def dtype_choice(dtype: str, device: torch.device) -> tuple[torch.dtype, str]:
    """(dtype, why): ``auto`` is bf16 on CUDA and on CPUs with native bf16 matmuls (where
    ``feldspar bench engine`` measures it several times faster than fp32), else fp32."""
    if dtype != "auto":
        try:
            return _DTYPES[dtype], "as configured"
        except KeyError:
            raise CheckpointError(f"unknown dtype {dtype!r}; choose one of {', '.join(_DTYPES)}") from None
    if device.type == "cuda":
        return torch.bfloat16, "auto: CUDA"
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in cpu_flags()]
    if native:
        return torch.bfloat16, f"auto: the CPU has native bf16 ({', '.join(native)})"
    return torch.float32, "auto: the CPU has no native bf16 (no avx512_bf16/amx_bf16)"


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    return dtype_choice(dtype, device)[0]


def quant_choice(quant: str, device: torch.device) -> tuple[str, str]:
    """(none|int8|int4, why): ``auto`` is int8 on CPUs with int8 dot products or AVX2 (decode
    reads a quarter of fp32's bytes, through Feldspar's one-row int8 kernels), none on CPUs with
    neither (int8 matmuls are slower than fp32 there) and none on CUDA (bf16 is fast there)."""
    from feldspar.model.int8_gemv import AVX2_INSTRUCTIONS
    from feldspar.model.quant import QUANTS, int8_dot_flags

    if quant == "auto" and device.type == "cpu":
        fast = int8_dot_flags() or sorted(AVX2_INSTRUCTIONS & cpu_flags())  # the AVX2 int8 kernel's CPUs
        return ("int8", f"auto: int8 matmuls with {', '.join(fast)}") if fast else \
            ("none", "auto: the CPU has no int8 dot products or AVX2")
    if quant == "auto":
        return "none", "auto: CUDA runs bf16"
    if quant not in QUANTS:
        raise CheckpointError(f"unknown quantisation {quant!r}; choose one of {', '.join(QUANTS)} or auto")
    return quant, "as configured"


COMPILES = ("auto", "on", "off")


def compile_choice(setting: str, device: torch.device) -> tuple[bool, str]:
    """(compile the decode step?, why): ``auto`` compiles on CPU when a C++ compiler is there
    for inductor (``feldspar bench engine`` measures the compiled step 1.5x the eager one; the
    first step of a process pays the compilation, seconds once inductor's cache holds it) and
    not on CUDA, where it has not been measured."""
    if setting not in COMPILES:
        raise CheckpointError(f"unknown compile setting {setting!r}; choose one of {', '.join(COMPILES)}")
    if setting != "auto":
        return setting == "on", "as configured"
    if device.type != "cpu":
        return False, "auto: eager on CUDA (the compiled step is measured on CPU only)"
    compiler = os.environ.get("CXX") or "g++"
    if shutil.which(compiler) is None:
        return False, f"auto: no C++ compiler ({compiler}) for torch.compile"
    return True, "auto: CPU with a C++ compiler"


def compiles_scan(setting: str, step_compiled: bool) -> bool:
    """Whether the prefill scan is compiled too: only where ``setting`` is ``on`` (its ~20-40 s
    first compile pays off in a long-running server, not in a one-shot command; ``auto`` is
    the decode step only)."""
    return step_compiled and setting == "on"


def kernel_choice(device: torch.device) -> str:
    """The machine-dependent CPU kernels the engine uses here, in a few words (measured choices:
    model/onednn_linear.py, model/int4.py, model/int8_gemv.py, model/int4_gemv.py, model/attend.py,
    model/decode_step.py;
    docs/benchmarks.md)."""
    if device.type != "cpu":
        return "CUDA kernels"
    from feldspar.model import attend, decode_step, int4, int4_gemv, int8_gemv, onednn_linear

    return "; ".join([
        f"fp32 prefill matmuls by {'oneDNN (AMD CPU, where MKL is slower)' if onednn_linear.in_use() else 'MKL'}",
        f"int4 prefill matmuls in {'bf16' if int4.DEQUANT_BF16 else 'fp32'}",
        int8_gemv.describe(),
        int4_gemv.describe(),
        f"fp32 decode attention by {attend.describe(torch.float32)}",
        f"bf16 decode attention by {attend.describe(torch.bfloat16) if decode_step.BMM_ATTENTION_BF16 else 'the fused kernel'}"])


def _not_found(resolved: Resolved, detail: str) -> ModelNotFoundError:
    hub_id = resolved.source
    return ModelNotFoundError(
        f"cannot load {hub_id}: it is not in the local Hugging Face cache"
        f"{' and offline mode is on' if offline() else ' and the hub could not be reached'} ({detail})",
        fix="get_checkpoint", hub_id=hub_id, name=hub_id.split("/")[-1],
    )


def _check_local_dir(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} does not hold a JSON object")
    return config


def _check_model_type(config: Any, where: str) -> None:
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    if model_type != GRANITE_MODEL_TYPE:
        raise CheckpointError(
            f"{where} is a {model_type or 'unknown'} model; Feldspar runs Granite 4.0 ({GRANITE_MODEL_TYPE}) checkpoints"
        )


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so a machine without network fails in seconds, not minutes."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _fetch(load: Callable[..., Any], resolved: Resolved, what: str) -> Any:
    """Run ``load(local_files_only=...)``: cache first, then the hub if allowed and reachable."""
    try:
        return load(local_files_only=True)
    except OSError as exc:
        if resolved.local:
            raise CheckpointError(f"cannot read the {what} in {resolved.source}: {_first_line(exc)}") from None
        if offline():
            raise _not_found(resolved, f"no cached {what}") from None
    if not hub_reachable():
        raise _not_found(resolved, "no network connection to the hub") from None
    try:
        return load(local_files_only=False)
    except OSError as exc:
        raise _not_found(resolved, _first_line(exc)) from None


def load_tokenizer(resolved: Resolved):
    from transformers import AutoTokenizer

    try:
        return _fetch(lambda **kw: AutoTokenizer.from_pretrained(resolved.source, **kw), resolved, "tokenizer")
    except (ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"the tokenizer of {resolved.source} is corrupt: {_first_line(exc)}") from None


def load_model(resolved: Resolved, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    def load(**kw: Any) -> torch.nn.Module:
        config = AutoConfig.from_pretrained(resolved.source, **kw)
        _check_model_type(config, resolved.source)
        return AutoModelForCausalLM.from_pretrained(resolved.source, config=config, dtype=dtype, **kw)

    try:
        model = _fetch(load, resolved, "weights")
    except ModelError:
        raise
    except Exception as exc:  # safetensors, torch and transformers raise many classes for bad files
        raise CheckpointError(f"the checkpoint {resolved.source} is corrupt or incomplete: {_first_line(exc)}") from None
    return model.to(device).eval()


class _CpuKernelAdviceFilter(logging.Filter):
    """On CPU the Mamba CUDA kernels cannot help, so transformers' advice to install them is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "falling back to its reference PyTorch implementation" not in record.getMessage()


def quiet_cpu_kernel_advice() -> None:
    hub_logger = logging.getLogger("transformers.integrations.hub_kernels")
    if not any(isinstance(f, _CpuKernelAdviceFilter) for f in hub_logger.filters):
        hub_logger.addFilter(_CpuKernelAdviceFilter())


def load_checkpoint(name: str, device: str = "auto", dtype: str = "auto", quant: str = "none"):
    """Return (model, tokenizer, resolved) ready for inference on the chosen device.

    ``quant`` (none|int8|int4|auto) quantises the linear layers at load, layer by layer from
    safetensors (``model.layerwise``: never the whole model in full precision); a directory written
    by ``quant.save_quantized`` loads as it was saved. ``model.feldspar_choice`` says
    which dtype and quantisation were chosen and why.
    """
    from feldspar.model import quant as quantization
    from feldspar.model.onednn_linear import use_onednn

    resolved = resolve(name)
    if resolved.local:
        _check_model_type(_check_local_dir(Path(resolved.source)), resolved.source)
    torch_device = pick_device(device)
    if torch_device.type == "cpu":
        quiet_cpu_kernel_advice()
    tokenizer = load_tokenizer(resolved)
    if resolved.local and quantization.is_quantized_dir(resolved.source):
        model = _load_saved_quantized(resolved, torch_device)
        mode, why_quant = quantization.quant_name(model), "saved quantised checkpoint"
        why_dtype = "saved quantised checkpoint"
    else:
        torch_dtype, why_dtype = dtype_choice(dtype, torch_device)
        mode, why_quant = quant_choice(quant, torch_device)
        model = _load_quantizing(resolved, torch_device, torch_dtype, mode) if mode != "none" else None
        if model is None:
            model = quantization.quantize(load_model(resolved, torch_device, torch_dtype), mode)
    if torch_device.type == "cpu":
        use_onednn(model)  # fp32 prefill matmuls by oneDNN where MKL's are slow (AMD)
    model.feldspar_choice = {"dtype": quantization.float_dtype(model), "dtype_reason": why_dtype,
                             "quant": mode, "quant_reason": why_quant, "kernels": kernel_choice(torch_device)}
    return model, tokenizer, resolved


def _load_quantizing(resolved: Resolved, device: torch.device, dtype: torch.dtype, mode: str):
    """Quantise a local (or cached) safetensors checkpoint layer by layer as it loads, so memory
    holds the quantised model plus one full-precision layer; None where that cannot be done."""
    from feldspar.model.layerwise import load_quantizing

    path = Path(resolved.source) if resolved.local else _cached_snapshot(resolved.source)
    if path is None:
        return None
    _check_model_type(_check_local_dir(path), resolved.source)
    try:
        return load_quantizing(path, device, dtype, mode)
    except Exception as exc:  # safetensors, torch and transformers raise many classes for bad files
        raise CheckpointError(f"the checkpoint {resolved.source} is corrupt or incomplete: {_first_line(exc)}") from None


def _cached_snapshot(hub_id: str) -> Path | None:
    """The local snapshot directory of a hub checkpoint already in the cache (None: not there)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id, local_files_only=True))
    except Exception:  # not cached, or partly: the whole-model path fetches and reports
        return None


def _load_saved_quantized(resolved: Resolved, device: torch.device) -> torch.nn.Module:
    from feldspar.model.quant import load_quantized

    try:
        return load_quantized(resolved.source, device)
    except Exception as exc:  # safetensors and torch raise many classes for bad files
        raise CheckpointError(f"the quantised checkpoint {resolved.source} is corrupt or incomplete: "
                              f"{_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
