"""`feldspar serve` from the command line: a real process on a free loopback port, and its usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from tests.app.cli_runner import assert_one_error_line, run_cli


def test_serve_starts_announces_its_address_and_requires_the_key(tiny_checkpoint):
    command = [sys.executable, "-m", "feldspar", "serve", "-m", str(tiny_checkpoint), "--port", "0", "--no-agent",
               "--device", "cpu", "--dtype", "float32", "-n", "2", "--served-name", "granite-test"]
    env = {**os.environ, "FELDSPAR_API_KEY": "k-123"}
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        lines = []
        for line in process.stderr:  # ends (and the test fails) if the process dies
            lines.append(line)
            if "serving the OpenAI API on" in line:
                break
        announced = "".join(lines)
        assert "RANDOM WEIGHTS" in announced and "bearer token required" in announced, announced
        url = announced.split("serving the OpenAI API on ")[1].split("/v1")[0]
        assert url.startswith("http://127.0.0.1:")
        health = httpx.get(url + "/health", timeout=60)
        assert health.json()["models"] == ["granite-test"] and str(tiny_checkpoint.parent) not in health.text
        assert httpx.get(url + "/v1/models", timeout=60).status_code == 401
        listed = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer k-123"}, timeout=60).json()
        assert listed["data"][0]["random_weights"] is True and str(tiny_checkpoint.parent) not in json.dumps(listed)
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_serve_usage_errors(capsys, monkeypatch):
    result = run_cli(["serve", "--collection", "a", "--pack", "b"], capsys, monkeypatch)
    assert_one_error_line(result, 2, "--collection or --pack")
    result = run_cli(["serve", "--port", "70000"], capsys, monkeypatch)
    assert result.code == 2
