"""The int8 CPU path of a sentence-transformers model: ONNX Runtime with dynamic quantisation.

On first use the model's transformer is exported to ONNX by ``torch.onnx.export`` (eager
attention, so ONNX Runtime's BERT optimizer can fuse attention and GELU), optimised by
``onnxruntime.transformers.optimizer`` into separate Q/K/V projections feeding a
``MultiHeadAttention`` op, and quantised with ``onnxruntime.quantization.quantize_dynamic``
(int8 weights, per channel, for every weight MatMul including Q/K/V; activations quantised
per run; the attention itself, scores and softmax, stays fp32). Residual adds and layer
norms stay separate ``Add`` + ``LayerNormalization`` ops (offline and in the session):
ONNX Runtime's fused ``SkipLayerNormalization`` CPU kernel cost 4x as much here. The
attention ops then lose their padding-mask input, which lets ONNX Runtime use its CPU
flash-attention kernel, so the encoder runs one text per session call (no padding to mask;
each text's activations are quantised on their own, so a vector does not depend on its batch
companions). Those calls run single-threaded, several at once (one per core by default):
texts in parallel use two cores better than one text's small matrices split across them.
Models the optimizer cannot fuse keep their mask and run padded batches on a multi-threaded
session. The result is cached under ``cache_dir`` keyed by the
model's files and the recipe, built once under a file lock and moved in atomically, so
parallel processes share it. Running needs only ``tokenizers``, ``onnxruntime`` and
numpy: torch and sentence-transformers are imported for the export alone.

The sentence-transformers pipeline is reproduced from the model's own config files:
tokenizer.json with ``max_seq_length`` truncation (and ``do_lower_case``), then mean or
CLS pooling, then L2 normalisation. Models with other modules or pooling modes raise
``EmbeddingModelUnavailable`` (use fp32 for them).

This module does not know about collections, precision choices or timing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from feldspar.retrieval.errors import EmbeddingModelUnavailable

RECIPE = "int8-dynamic-per-channel-qkv-int8-flash-attention-fp32-plain-layernorm-v5"
# Attention scores and softmax stay fp32: quantising the fused Attention op (QAttention) cost the
# most retrieval quality on the Python reference corpus (MRR 0.88 vs 0.90 fp32). The Q/K/V
# projections are plain weight MatMuls here (MultiHeadAttention fusion) and are int8 like the
# other dense layers. With the padding mask removed, ONNX Runtime's CPU MultiHeadAttention runs
# its flash-attention kernel: about 40 % of int8 time was the unfused attention before (v3).
KEEP_FP32_OPS = {"Attention", "MultiHeadAttention"}
MASK_INPUT_OF = {"MultiHeadAttention": 4}  # key_padding_mask
OPTIMIZABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert"}
SUPPORTED_MODULES = {"Transformer", "Pooling", "Normalize"}
# Residual add + layer norm as two plain ops: ONNX Runtime's SkipLayerNormalization CPU kernel took
# about 7 ms per 230-token text where Add + LayerNormalization take under 2 ms (single thread).
UNFUSED_OPTIMIZERS = ["SkipLayerNormFusion"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class PipelineConfig:
    """What sentence-transformers would do with this model folder, read from its files."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        modules = _read_json(model_dir / "modules.json") or [{"type": "Transformer", "path": ""}]
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        unsupported = sorted(set(kinds) - SUPPORTED_MODULES)
        if unsupported:
            raise EmbeddingModelUnavailable(
                f"the int8 embedder supports Transformer, Pooling and Normalize modules, not {unsupported}",
                fix="embed_fp32")
        pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), None)
        pooling = _read_json(model_dir / pooling_dir / "config.json") if pooling_dir else {}
        self.pooling = "cls" if pooling.get("pooling_mode_cls_token") else "mean"
        other_modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v
                       and k not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token")]
        if other_modes:
            raise EmbeddingModelUnavailable(f"the int8 embedder does not support pooling {other_modes}",
                                            fix="embed_fp32")
        bert_config = _read_json(model_dir / "sentence_bert_config.json")
        model_config = _read_json(model_dir / "config.json")
        self.max_seq_length = int(bert_config.get("max_seq_length") or model_config.get("max_position_embeddings", 512))
        self.lower_case = bool(bert_config.get("do_lower_case", False))
        self.model_type = model_config.get("model_type", "")
        self.heads = int(model_config.get("num_attention_heads", 0))
        self.hidden = int(model_config.get("hidden_size", 0))
        if not (model_dir / "tokenizer.json").is_file():
            raise EmbeddingModelUnavailable(f"the int8 embedder needs {model_dir / 'tokenizer.json'}",
                                            fix="embed_fp32")

    def cache_key(self) -> str:
        """Changes when the model's files or the recipe change; cheap (stats, not hashes)."""
        import onnxruntime

        digest = hashlib.sha256(f"{RECIPE}|{onnxruntime.__version__}".encode())
        for path in sorted(self.model_dir.glob("*")):
            if path.is_file():
                stat = path.stat()
                digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:16]


def built_model_path(config: PipelineConfig, cache_dir: Path) -> Path:
    """Where the int8 ONNX file for the model and recipe lives (it may not be built yet)."""
    return cache_dir / f"{config.model_dir.name}-{config.cache_key()}" / "model-int8.onnx"


def quantised_model(config: PipelineConfig, cache_dir: Path) -> Path:
    """The cached int8 ONNX file for the model, built on first use."""
    from filelock import FileLock

    target = built_model_path(config, cache_dir)
    folder = target.parent
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / "build.lock")):
        if not target.is_file():
            _build(config, folder, target)
    return target


def _build(config: PipelineConfig, folder: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=folder) as work:
        exported = Path(work) / "model.onnx"
        try:
            names = _export(config.model_dir, exported)
            source = _optimise(config, exported, Path(work) / "optimised.onnx")
            _quantise(source, Path(work) / "int8.onnx")
            unpadded = _drop_padding_masks(Path(work) / "int8.onnx")
        except EmbeddingModelUnavailable:
            raise
        except Exception as exc:  # exporter/optimiser errors of many kinds
            raise EmbeddingModelUnavailable(f"cannot build the int8 embedder for {config.model_dir.name}: "
                                            f"{type(exc).__name__}: {exc}", fix="embed_fp32") from None
        (folder / "inputs.json").write_text(json.dumps({"inputs": names, "one_text_per_run": unpadded}))
        os.replace(Path(work) / "int8.onnx", target)


def _export(model_dir: Path, out: Path) -> list[str]:
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    sample = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True,
                       return_tensors="pt")
    names = [n for n in tokenizer.model_input_names if n in sample]

    class HiddenStates(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(HiddenStates(), tuple(sample[n] for n in names), str(out), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return names


def _optimise(config: PipelineConfig, exported: Path, out: Path) -> Path:
    if config.model_type not in OPTIMIZABLE or not config.heads:
        return exported
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(OPTIMIZABLE[config.model_type])
    options.use_multi_head_attention = True  # Q/K/V as weight MatMuls (quantisable) + MultiHeadAttention
    options.enable_skip_layer_norm = False  # see UNFUSED_OPTIMIZERS
    optimised = optimize_model(str(exported), model_type=OPTIMIZABLE[config.model_type],
                               num_heads=config.heads, hidden_size=config.hidden, optimization_options=options)
    optimised.save_model_to_file(str(out))
    return out


def _quantise(source: Path, out: Path) -> None:
    import logging

    import onnx

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:  # importing the quantiser calls logging.basicConfig(INFO), and it logs at INFO: keep the host's logging
        root.setLevel(max(level, logging.ERROR))
        from onnxruntime.quantization import QuantType, quantize_dynamic

        keep = [node.name for node in onnx.load(str(source), load_external_data=False).graph.node
                if node.op_type in KEEP_FP32_OPS]
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _drop_padding_masks(model_path: Path) -> bool:
    """Remove the attention ops' padding-mask input (enables flash attention); False if none fused.

    The caller must then run one text per call: nothing masks padding any more.
    """
    import onnx

    model = onnx.load(str(model_path))
    attention = [node for node in model.graph.node if node.op_type in MASK_INPUT_OF]
    if not attention:
        return False
    for node in attention:
        at = MASK_INPUT_OF[node.op_type]
        if len(node.input) > at:
            node.input[at] = ""
    onnx.save(model, str(model_path))
    return True


class OnnxInt8Encoder:
    """Tokenise, run the int8 model, pool and normalise: the sentence-transformers pipeline.

    ``threads``: cores to use, 0 for all this process may run on. An unpadded model runs that
    many single-threaded session calls at once (one text each); a padded one gives them to
    one call's matrices.
    """

    def __init__(self, model_dir: str | Path, cache_dir: Path, threads: int = 0) -> None:
        from tokenizers import Tokenizer

        self.config = PipelineConfig(Path(model_dir))
        model_path = quantised_model(self.config, cache_dir)
        layout = json.loads((model_path.parent / "inputs.json").read_text())
        self.input_names = layout["inputs"]
        self.one_text_per_run = bool(layout["one_text_per_run"])
        self.tokenizer = Tokenizer.from_file(str(self.config.model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.config.max_seq_length)
        self.tokenizer.no_padding()
        self.workers = max(1, threads or available_cores()) if self.one_text_per_run else 1
        self.session = _session(model_path, 1 if self.one_text_per_run else threads)
        self.dimension = int(self.session.get_outputs()[0].shape[-1] or self.config.hidden)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    @property
    def max_seq_length(self) -> int:
        return self.config.max_seq_length

    def _text(self, text: str) -> str:
        return text.lower() if self.config.lower_case else text

    def token_len(self, text: str) -> int:
        return len(self.tokenizer.encode(self._text(text), add_special_tokens=False).ids)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Normalised vectors in input order; batches hold texts of similar length (less padding).

        An unpadded model (see ``_drop_padding_masks``) runs one text per session call, up to
        ``workers`` calls at once.
        """
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if self.one_text_per_run:
            encodings = self.tokenizer.encode_batch([self._text(t) for t in texts])
            rows = map(self._one, encodings) if len(encodings) == 1 else self._executor().map(self._one, encodings)
            for row, vector in enumerate(rows):
                out[row] = vector
            return out
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for at in range(0, len(order), batch_size):
            rows = order[at : at + batch_size]
            out[rows] = self._batch([texts[i] for i in rows])
        return out

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child has none of the threads
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="feldspar-int8")
                self._pool_pid = os.getpid()
            return self._pool

    def _one(self, encoding: Any) -> np.ndarray:
        return self._run([encoding])[0]

    def _batch(self, texts: list[str]) -> np.ndarray:
        return self._run(self.tokenizer.encode_batch([self._text(t) for t in texts]))

    def _run(self, encodings: list[Any]) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        feeds = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in self.input_names}
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            for name, values in (("input_ids", encoding.ids), ("attention_mask", encoding.attention_mask),
                                 ("token_type_ids", encoding.type_ids)):
                if name in feeds:
                    feeds[name][row, :n] = values
        hidden = self.session.run(None, feeds)[0]
        if self.config.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (a container allowed 2 CPUs of a 64-core host gets 2)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota file, or one we cannot read
        pass
    return cores


def _session(model_path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared CPUs: no busy-wait
    return onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=UNFUSED_OPTIMIZERS)
