"""Embedder precisions: int8 (ONNX Runtime) close to fp32, fp16 runs, each collection records
how its vectors were made and a mismatch is refused like a different model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from tests.retrieval.retrieval_helpers import store_ids

from feldspar.errors import user_message
from feldspar.retrieval.embeddings import Embedder, resolve_precision
from feldspar.retrieval.errors import EmbeddingPrecisionMismatch
from feldspar.retrieval.store import MODEL_KEY

TEXTS = ["Granite is an igneous rock rich in quartz and feldspar.",
         "The prefix state cache reuses the Mamba state of a long prompt.",
         "def zircon_counter(rocks): return sum(r == 'zircon' for r in rocks)",
         "Chroma stores the vectors; BM25 scores the words; reciprocal rank fusion merges them."]


def test_int8_vectors_match_fp32_closely(embedder, fp32_embedder):
    assert embedder.precision == "int8"
    int8, fp32 = embedder.embed(TEXTS), fp32_embedder.embed(TEXTS)
    assert int8.shape == fp32.shape and np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert (int8 * fp32).sum(axis=1).min() > 0.95
    ranking = lambda vectors: np.argsort(-(vectors @ vectors[0]))  # noqa: E731
    assert list(ranking(int8)) == list(ranking(fp32))
    assert [embedder.token_len(t) for t in TEXTS] == [fp32_embedder.token_len(t) for t in TEXTS]
    assert embedder.max_tokens == fp32_embedder.max_tokens and embedder.dimension == fp32_embedder.dimension
    assert np.allclose(embedder.embed_query(TEXTS[1]), int8[1], atol=0.05)


def test_int8_texts_run_in_parallel_get_the_vectors_they_get_one_at_a_time(embedder):
    texts = [f"{text} Variant {i}." * (1 + i % 3) for i in range(6) for text in TEXTS]  # mixed lengths
    serial = Embedder(precision="int8", cache_dir=embedder.cache_dir, threads=1)
    parallel = Embedder(precision="int8", cache_dir=embedder.cache_dir, threads=3)
    assert serial.int8.workers == 1 and parallel.int8.workers == 3
    one_at_a_time = np.stack([serial.embed([text])[0] for text in texts])
    assert np.array_equal(parallel.embed(texts), one_at_a_time)  # same vectors, in input order
    assert np.array_equal(serial.embed(texts), one_at_a_time)


def test_the_embed_threads_setting_sets_how_many_texts_run_at_once(embedder):
    from feldspar.compose import build_retrieval
    from feldspar.retrieval.onnx_int8 import available_cores
    from feldspar.settings import load_settings

    for threads, workers in ((1, 1), (0, available_cores())):
        service = build_retrieval(load_settings(embed_threads=threads, embed_cache_dir=embedder.cache_dir))
        try:
            assert service.embedder_for("int8").int8.workers == workers
        finally:
            service.close()


def test_available_cores_follow_affinity_and_a_cgroup_quota(tmp_path):
    from feldspar.retrieval.onnx_int8 import available_cores

    visible = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    for text, expected in (("max 100000", visible), ("50000 100000", 1), ("150000 100000", min(2, visible)),
                           ("garbage", visible)):
        quota.write_text(text + "\n")
        assert available_cores(quota) == expected, text
    assert available_cores(tmp_path / "absent") == visible


def test_building_the_int8_model_is_announced_and_loading_a_built_one_is_not(embedder, tmp_path):
    told: list[str] = []
    Embedder(precision="int8", cache_dir=embedder.cache_dir, announce=told.append).load()  # built already
    assert told == []
    Embedder(precision="int8", cache_dir=tmp_path / "empty-cache", announce=told.append)._announce_build()
    assert len(told) == 1 and "building the int8 embedder" in told[0] and "first use only" in told[0]


def test_a_forked_child_embeds_with_its_own_threads(embedder):
    """Pool threads do not survive fork(): a child reusing the parent's pool would wait forever."""
    script = """
import os, sys
from pathlib import Path
import numpy as np
from feldspar.retrieval.embeddings import Embedder
parent = Embedder(precision="int8", cache_dir=Path(sys.argv[1]), threads=2)
before = parent.embed(["one text", "two texts", "three"])
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(parent.embed(["one text", "two texts", "three"]), before) else 3)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""
    done = subprocess.run([sys.executable, "-c", script, str(embedder.cache_dir)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_fp16_path_runs_in_half_precision():
    half = Embedder(precision="fp16")
    vectors = half.embed(TEXTS[:2])
    assert next(half.model.parameters()).dtype.__str__() == "torch.float16"
    full = Embedder(precision="fp32").embed(TEXTS[:2])
    assert (vectors * full).sum(axis=1).min() > 0.999


def test_auto_precision_choice():
    assert resolve_precision("auto", cuda=False) == "int8"
    assert resolve_precision("auto", cuda=True) == "fp16"
    assert resolve_precision("auto", recorded="fp32", cuda=False) == "fp32"
    assert resolve_precision("fp32", recorded="int8") == "fp32"


def test_collection_records_precision_and_refuses_another(make_service, fp32_embedder, tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "a.md").write_text("# Granite\n\nQuartz and feldspar.\n")
    built = make_service()
    built.ingest([root])
    assert [row["embedding_precision"] for row in built.collections()] == ["int8"]
    explicit = make_service(embed_precision="fp32")
    explicit.use_embedder(fp32_embedder)
    with pytest.raises(EmbeddingPrecisionMismatch) as info:
        explicit.search("granite")
    assert "--" not in str(info.value)
    assert "embed_precision" in user_message(info.value) and "--reindex" in user_message(info.value)
    with pytest.raises(EmbeddingPrecisionMismatch):
        explicit.ingest([root])
    assert explicit.ingest([root], reindex=True).indexed == 1  # re-index makes it fp32
    follower = make_service()  # auto follows what the collection was built with
    follower.use_embedder(fp32_embedder)
    assert follower.search("granite quartz")[0].path == "a.md"
    assert store_ids(follower)


def test_collections_from_before_the_record_count_as_fp32(service):
    service.store.client.get_or_create_collection("legacy", metadata={MODEL_KEY: service.embedder.name},
                                                  embedding_function=None)
    assert service.store.recorded("legacy") == (service.embedder.name, "fp32")
    with pytest.raises(EmbeddingPrecisionMismatch):
        service.store.open("legacy", service.embedder.name, create=False, precision="int8")


def test_building_the_int8_model_leaves_the_hosts_logging_as_it_was(tmp_path):
    """ONNX Runtime's quantiser calls logging.basicConfig when imported: that must not stick."""
    script = """
import logging, sys
from pathlib import Path
import onnx
from onnx import TensorProto, helper
from feldspar.retrieval.onnx_int8 import _quantise
weight = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], [0.1 * i for i in range(16)])
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weight])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[1])
_quantise(Path(sys.argv[1]), Path(sys.argv[2]))
root = logging.getLogger()
assert Path(sys.argv[2]).is_file()
assert root.handlers == [] and root.level == logging.WARNING, (root.handlers, root.level)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
