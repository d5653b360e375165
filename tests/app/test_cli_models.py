"""`feldspar models` (table and --json) and `feldspar models random` through Typer's runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import feldspar.cli.models  # noqa: F401  (registers the commands)
from feldspar.errors import user_message
from feldspar.cli.root import app
from feldspar.model.checkpoint_random import is_random_checkpoint
from feldspar.model.errors import CheckpointError, ModelNotFoundError

runner = CliRunner()


def test_models_json_lists_the_catalog_with_exact_counts():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 16
    by_name = {row["name"]: row for row in rows}
    tiny = by_name["granite-4.0-h-tiny"]
    assert tiny["hub_id"] == "ibm-granite/granite-4.0-h-tiny"
    assert (tiny["params"], tiny["active_params"]) == (6_939_037_248, 1_465_470_528)
    assert (tiny["kind"], tiny["context"], tiny["base"]) == ("moe-hybrid", 131072, False)
    assert (tiny["attention_layers"], tiny["mamba_layers"]) == (4, 36)
    h350 = by_name["granite-4.0-h-350m-base"]
    assert (h350["params"], h350["base"], h350["context"]) == (340_332_224, True, 32768)
    dense = by_name["granite-4.0-1b"]
    assert (dense["kind"], dense["attention_layers"], dense["mamba_layers"]) == ("dense", 40, 0)
    for row in rows:
        assert isinstance(row["params"], int) and isinstance(row["active_params"], int)


def test_models_table_shows_names_and_sizes():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for text in ("granite-4.0-h-small", "granite-4.0-h-350m-base", "340.3M", "6.9B", "1.5B", "moe-hybrid",
                 "4/36", "28/0", "granite-4.0-h-1b *"):
        assert text in result.stdout


def test_models_random_writes_a_loadable_tiny_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    result = runner.invoke(app, ["models", "random", "h-1b", str(target), "--tiny", "--seed", "5",
                                 "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "RANDOM WEIGHTS" in result.stdout
    assert is_random_checkpoint(target)
    marker = json.loads((target / "feldspar_random.json").read_text())
    summary = (marker["model"], marker["seed"], marker["dtype"], marker["tiny"])
    assert summary == ("granite-4.0-h-1b", 5, "bfloat16", True)


def test_models_random_unknown_name_raises_model_error(tmp_path):
    result = runner.invoke(app, ["models", "random", "h-1bb", str(tmp_path / "x"), "--tiny"])
    assert isinstance(result.exception, ModelNotFoundError)
    assert "granite-4.0-h-1b" in str(result.exception)


def test_models_random_refuses_non_empty_dir_unless_forced(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    result = runner.invoke(app, ["models", "random", "350m", str(tmp_path), "--tiny"])
    assert isinstance(result.exception, CheckpointError)
    assert "--force" in user_message(result.exception)
    forced = runner.invoke(app, ["models", "random", "350m", str(tmp_path), "--tiny", "--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "config.json").is_file() and (tmp_path / "keep.txt").is_file()


def test_models_random_refuses_huge_without_allow_large(tmp_path):
    result = runner.invoke(app, ["models", "random", "h-small", str(tmp_path / "big")])
    assert isinstance(result.exception, CheckpointError)
    assert not (tmp_path / "big").exists()


@pytest.mark.parametrize("args", [["models", "--json"]])
def test_console_entry_point_prints_json(args):
    exe = Path(sys.executable).with_name("feldspar")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 16


def test_console_entry_point_unknown_model_is_one_line_error(tmp_path):
    exe = Path(sys.executable).with_name("feldspar")
    proc = subprocess.run([str(exe), "models", "random", "nope-model", str(tmp_path / "x"), "--tiny"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: unknown Granite 4.0 model 'nope-model'")
    assert proc.stderr.count("\n") == 1


def test_models_says_what_the_local_engine_would_choose_and_why(monkeypatch):
    result = runner.invoke(app, ["models"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "compiled decode off (as configured)" in " ".join(result.stdout.split())
    from feldspar.model import onednn_linear
    blas = "oneDNN" if onednn_linear.ENABLED else "MKL"
    assert f"fp32 prefill matmuls by {blas}" in " ".join(result.stdout.split())  # the machine's kernels too
    from feldspar.model import int8_gemv
    assert int8_gemv.describe() in " ".join(result.stdout.split())
    monkeypatch.setenv("FELDSPAR_COMPILE", "auto")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    result = runner.invoke(app, ["models"], terminal_width=200)
    assert "compiled decode off (auto: no C++ compiler (no-such-compiler-here) for torch.compile), compiled " \
        "prefill scan off" in " ".join(result.stdout.split())
    monkeypatch.setenv("FELDSPAR_COMPILE", "on")  # "on" compiles the prefill scan too
    result = runner.invoke(app, ["models"], terminal_width=200)
    assert "compiled decode on (as configured), compiled prefill scan on" in " ".join(result.stdout.split())


@pytest.mark.parametrize("given, meant", [(True, "on"), (False, "off"), ("true", "on"), ("0", "off"),
                                          ("auto", "auto")])
def test_the_compile_setting_takes_the_old_booleans(given, meant):
    from feldspar.settings import Settings

    assert Settings(compile=given).compile == meant
