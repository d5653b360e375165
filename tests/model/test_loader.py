"""Loading checkpoints: every failure a user can fix is one clear ModelError line."""

from __future__ import annotations

import json
import shutil

import pytest

from feldspar.errors import user_message
from feldspar.model.engine import Engine, EngineOptions
from feldspar.model.errors import CheckpointError, ModelNotFoundError
from feldspar.model.loader import resolve

CPU = EngineOptions(device="cpu", dtype="float32")


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def checkpoint_copy(tiny_checkpoint, tmp_path):
    target = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, target)
    return target


def test_catalog_names_resolve_to_hub_ids():
    assert resolve("h-350m").source == "ibm-granite/granite-4.0-h-350m"
    assert resolve("granite-4.0-h-tiny-base").source == "ibm-granite/granite-4.0-h-tiny-base"


def test_unknown_model_names_a_close_match():
    with pytest.raises(ModelNotFoundError, match="granite-4.0-h-tiny"):
        Engine.load("granite-4.0-h-tinny", CPU)


def test_missing_model_offline_names_the_fixes(empty_hf_cache):
    with pytest.raises(ModelNotFoundError) as info:
        Engine.load("granite-4.0-h-350m", CPU)
    assert "HF_HUB_OFFLINE" not in str(info.value)  # the model layer words no flags or variables
    message = user_message(info.value)
    assert "\n" not in message
    for fix in ("local checkpoint directory", "HF_HUB_OFFLINE", "network", "hf download ibm-granite/granite-4.0-h-350m"):
        assert fix in message


def test_local_dir_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        Engine.load(str(tmp_path / "empty"), CPU)


def test_corrupt_config_is_refused(checkpoint_copy):
    (checkpoint_copy / "config.json").write_text("{ not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        Engine.load(str(checkpoint_copy), CPU)


def test_other_architectures_are_refused(checkpoint_copy):
    config = json.loads((checkpoint_copy / "config.json").read_text())
    config["model_type"] = "llama"
    (checkpoint_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Granite 4.0"):
        Engine.load(str(checkpoint_copy), CPU)


def test_truncated_weights_are_refused(checkpoint_copy):
    weights = sorted(checkpoint_copy.glob("*.safetensors"))[0]
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        Engine.load(str(checkpoint_copy), CPU)


def test_garbage_weights_are_refused(checkpoint_copy):
    weights = sorted(checkpoint_copy.glob("*.safetensors"))[0]
    weights.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError):
        Engine.load(str(checkpoint_copy), CPU)


def test_a_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="is a file"):
        Engine.load(str(path), CPU)
