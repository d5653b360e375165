"""State packs: create, list, load in a fresh process, and refuse anything unsafe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from feldspar.model.engine import Engine, EngineOptions, GenerationParams
from feldspar.model.errors import PromptError, StateError
from feldspar.model.packs import (
    DOCS_FILE, META_FILE, STATE_FILE, create_pack, install_pack, list_packs, load_pack, prefix_ids,
    question_ids, read_meta, remove_pack,
)
from feldspar.model.state_cache import PrefixStateCache
from feldspar.model.state_source import FreshState
from feldspar.model.snapshot import take_snapshot
from feldspar.pack_documents import read_pack_documents

from tests.model.logit_reference import assert_matches_scratch, assert_reuse_matches_scratch

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "Where is Quartzville?"


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    return Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32", prefill_chunk=64))


def write_sources(folder: Path) -> Path:
    """Three small source files (text, Markdown, Python) in ``folder``."""
    folder.mkdir(parents=True)
    (folder / "city.txt").write_text("Quartzville is the capital of Feldspar land. " * 6, encoding="utf-8")
    (folder / "notes.md").write_text("# Minerals\n\nMica is shiny and splits into sheets.\n", encoding="utf-8")
    (folder / "tool.py").write_text("def hardness(mineral):\n    return {'quartz': 7}[mineral]\n", encoding="utf-8")
    return folder


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    return write_sources(tmp_path / "docs")


@pytest.fixture
def packs_dir(tmp_path: Path) -> Path:
    return tmp_path / "packs"


def read_documents(paths):
    read = read_pack_documents(paths, 50 * 1024**2)
    return read.documents, read.sources


def make_pack(engine, packs_dir, name, paths, **options):
    """Read ``paths`` as the CLI does, then create the pack from the documents."""
    documents, recorded = read_documents(paths)
    return create_pack(engine, packs_dir, name, documents, recorded, **options)


def in_memory_answer(engine, documents):
    """Prepared state for QUESTION from a pack state that never left memory."""
    ids = prefix_ids(engine, documents)
    prepared = FreshState().prepare(engine.model, ids, chunk_size=len(ids))
    cache = PrefixStateCache(budget_bytes=1 << 30)
    cache.insert(ids, take_snapshot(prepared.state, prepared.logits), pinned=True)
    return cache.prepare(engine.model, question_ids(engine, documents, QUESTION), chunk_size=64)


FRESH_PROCESS = """
import json, sys
from pathlib import Path
from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.packs import install_pack, load_pack, question_ids
checkpoint, packs_dir, question = sys.argv[1:4]
engine = Engine.load(checkpoint, EngineOptions(device="cpu", dtype="float32", prefill_chunk=64))
pack = load_pack(engine, Path(packs_dir), "city")
install_pack(engine, pack)
prepared = engine.states.prepare(engine.model, question_ids(engine, pack.documents, question), chunk_size=64)
print(json.dumps({"logits": prepared.logits.tolist(), "reused": prepared.reused_tokens}))
"""


def test_documents_are_read_from_files_and_folders(sources):
    documents, recorded = read_documents([sources])
    assert [d["title"] for d in documents] == ["city.txt", "notes.md", "tool.py"]
    assert "Mica is shiny" in documents[1]["text"] and all(r["sha256"] for r in recorded)


def test_pack_prefix_is_everything_before_the_first_user_turn(engine, sources):
    documents, _ = read_documents([sources])
    ids = prefix_ids(engine, documents)
    text = engine.tokenizer.decode(ids)
    assert "Quartzville" in text and "<|start_of_role|>user" not in text
    assert question_ids(engine, documents, "anything else?")[: len(ids)] == ids


def test_a_pack_in_memory_matches_from_scratch(engine, sources):
    documents, _ = read_documents([sources])
    asked = in_memory_answer(engine, documents)
    assert asked.reused_tokens == len(prefix_ids(engine, documents))
    assert_reuse_matches_scratch(engine.model, question_ids(engine, documents, QUESTION), asked.state, asked.logits)


def test_a_pack_loaded_in_a_fresh_process_matches_from_scratch(engine, sources, packs_dir, tiny_checkpoint):
    meta = make_pack(engine, packs_dir, "city", [sources])
    documents = json.loads((packs_dir / "city" / DOCS_FILE).read_text(encoding="utf-8"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(tiny_checkpoint), str(packs_dir), QUESTION],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["reused"] == meta["tokens"]
    ids = question_ids(engine, documents, QUESTION)
    assert_matches_scratch(engine.model, ids, torch.tensor(loaded["logits"]), "pack loaded in a fresh process")


def test_questions_against_a_loaded_pack_match_from_scratch(engine, sources, packs_dir):
    make_pack(engine, packs_dir, "city", [sources])
    pack = load_pack(engine, packs_dir, "city")
    install_pack(engine, pack)
    for question in ("Where is Quartzville?", "Is mica shiny?"):
        ids = question_ids(engine, pack.documents, question)
        prepared = engine.states.prepare(engine.model, ids, chunk_size=engine.options.prefill_chunk)
        assert prepared.reused_tokens == len(pack.token_ids) and prepared.computed_tokens < 40
        tokens = assert_reuse_matches_scratch(engine.model, ids, prepared.state, prepared.logits, what="pack state")
        answer = engine.generate(ids, GenerationParams(max_new_tokens=len(tokens), reuse=True))
        assert answer.reused_tokens == len(ids) and answer.token_ids == tokens


def test_list_show_and_remove(engine, sources, packs_dir):
    assert list_packs(packs_dir) == []
    make_pack(engine, packs_dir, "city", [sources / "city.txt"])
    rows = list_packs(packs_dir)
    assert [r["name"] for r in rows] == ["city"] and rows[0]["documents"] == 1
    meta = read_meta(packs_dir, "city")
    assert meta["dtype"] == "float32" and meta["tokens"] > 0 and meta["sources"][0]["bytes"] > 0
    assert {"fingerprint", "torch", "transformers", "token_ids_sha256", "state_bytes"} <= set(meta)
    remove_pack(packs_dir, "city")
    assert list_packs(packs_dir) == []
    with pytest.raises(StateError, match="no pack named"):
        remove_pack(packs_dir, "city")


def test_name_collisions_and_bad_names_are_refused(engine, sources, packs_dir):
    make_pack(engine, packs_dir, "city", [sources / "city.txt"])
    with pytest.raises(StateError, match="already exists"):
        make_pack(engine, packs_dir, "city", [sources / "notes.md"])
    make_pack(engine, packs_dir, "city", [sources / "notes.md"], force=True)
    assert read_meta(packs_dir, "city")["sources"][0]["path"].endswith("notes.md")
    with pytest.raises(StateError, match="invalid pack name"):
        make_pack(engine, packs_dir, "../escape", [sources])
    assert sorted(p.name for p in packs_dir.iterdir()) == ["city"]


def test_missing_and_unsupported_files_are_refused(engine, sources, packs_dir, tmp_path):
    with pytest.raises(PromptError, match="no such file"):
        make_pack(engine, packs_dir, "x", [sources / "absent.txt"])
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01")
    with pytest.raises(PromptError, match="unsupported"):
        make_pack(engine, packs_dir, "x", [tmp_path / "blob.bin"])
    assert not (packs_dir / "x").exists()


def test_a_pack_over_the_context_window_is_refused_before_compute(tiny_checkpoint, sources, packs_dir):
    small = Engine.load(str(tiny_checkpoint), EngineOptions(device="cpu", dtype="float32"))
    small.model.config.max_position_embeddings = 64
    with pytest.raises(StateError, match=r"would need (more than )?[\d,]+ tokens .* 64-token context window"):
        make_pack(small, packs_dir, "big", [sources])
    assert not packs_dir.exists() or list(packs_dir.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "documents"])
def test_corrupt_or_truncated_packs_are_refused(engine, sources, packs_dir, damage):
    make_pack(engine, packs_dir, "city", [sources / "city.txt"])
    folder = packs_dir / "city"
    state = folder / STATE_FILE
    data = state.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        state.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "truncate":
        state.write_bytes(data[: len(data) - 100])
    elif damage == "meta":
        (folder / META_FILE).write_text("{not json", encoding="utf-8")
    else:
        (folder / DOCS_FILE).write_text("[", encoding="utf-8")
    cache = PrefixStateCache(budget_bytes=1 << 30)
    engine_states, engine.states = engine.states, cache
    try:
        with pytest.raises(StateError, match="corrupt|truncated"):
            install_pack(engine, load_pack(engine, packs_dir, "city"))
    finally:
        engine.states = engine_states
    assert cache.entries == []


def test_a_pack_from_another_model_dtype_or_version_is_refused(engine, sources, packs_dir, tiny_dense_checkpoint):
    make_pack(engine, packs_dir, "city", [sources / "city.txt"])
    other = Engine.load(str(tiny_dense_checkpoint), EngineOptions(device="cpu", dtype="float32"))
    with pytest.raises(StateError, match="made with model"):
        load_pack(other, packs_dir, "city")
    half = Engine.load(engine.resolved.source, EngineOptions(device="cpu", dtype="bfloat16"))
    with pytest.raises(StateError, match="made in float32"):
        load_pack(half, packs_dir, "city")
    meta_path = packs_dir / "city" / META_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "transformers": "4.0"}), encoding="utf-8")
    with pytest.raises(StateError, match="transformers 4.0"):
        load_pack(engine, packs_dir, "city")
