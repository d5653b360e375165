"""Each of these once ended in a traceback (some only after the model had loaded): now one
`error: …` line, exit 1, found before any slow work."""

from __future__ import annotations

import socket

from tests.app.cli_runner import assert_one_error_line, run_cli
from tests.app.test_cli_usage import read_only_folder  # noqa: F401 - a fixture


def test_a_data_home_that_is_a_file_fails_threads_list_and_ask_before_the_model(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    listed = run_cli(["threads", "list", "--home", str(home)], capsys, monkeypatch)
    assert_one_error_line(listed, 1, "is a file, not a directory")
    asked = run_cli(["ask", "q", "--home", str(home), "-m", str(tmp_path / "no-model-here")], capsys, monkeypatch)
    assert_one_error_line(asked, 1, "is a file, not a directory")  # the home, not the missing model: checked first


def test_an_unwritable_data_home_fails_threads_list_in_one_line(read_only_folder, capsys, monkeypatch):
    result = run_cli(["threads", "list", "--home", str(read_only_folder / "home")], capsys, monkeypatch)
    assert_one_error_line(result, 1, "not writable")


def test_serve_on_a_port_in_use_fails_before_loading_a_model(tmp_path, capsys, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = run_cli(["serve", "--port", port, "-m", str(tmp_path / "no-model-here")], capsys, monkeypatch)
    line = assert_one_error_line(result, 1, f"cannot serve on 127.0.0.1:{port}")
    assert "--port" in line


def test_models_random_into_a_read_only_folder_is_one_line(read_only_folder, capsys, monkeypatch):
    result = run_cli(["models", "random", "h-tiny", str(read_only_folder / "ckpt"), "--tiny"], capsys, monkeypatch)
    assert_one_error_line(result, 1, "output")
