"""`feldspar ui`: the Streamlit command line, the settings it passes on, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_feldspar(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "feldspar", *args], capture_output=True, text=True, timeout=120)


def test_streamlit_command_runs_the_installed_entry_on_loopback():
    from feldspar.cli.ui import streamlit_command

    command = streamlit_command("127.0.0.1", 8765)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    entry = Path(command[4])
    assert entry.parts[-2:] == ("webui", "main.py") and entry.is_file() and "st.navigation" in entry.read_text()
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.address"] == "127.0.0.1" and options["--server.port"] == "8765"
    assert options["--server.headless"] == "true" and options["--browser.gatherUsageStats"] == "false"


def test_flags_reach_the_app_as_the_same_settings(tmp_path):
    from feldspar.cli.ui import ui_environment
    from feldspar.settings import load_settings

    tools = tmp_path / "tools.py"
    settings = load_settings(home=tmp_path / "home", model="h-350m", collection="manuals", device="cpu")
    env = ui_environment(settings, tools)
    import os

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        again = load_settings()  # what app/webui/main.py does in the Streamlit process
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert (again.home, again.model, again.collection, again.device) == (tmp_path / "home", "h-350m", "manuals", "cpu")
    assert again.tools_module == tools.resolve()


def test_bad_flags_are_one_line_errors(tmp_path):
    bad_port = run_feldspar("ui", "--port", "70000")
    assert bad_port.returncode == 2 and bad_port.stderr.startswith("error: ") and "Traceback" not in bad_port.stderr
    (tmp_path / "file").write_text("x")
    bad_home = run_feldspar("ui", "--home", str(tmp_path / "file"))
    assert bad_home.returncode == 1 and "is a file" in bad_home.stderr and "Traceback" not in bad_home.stderr
    no_tools = run_feldspar("ui", "--home", str(tmp_path / "h"), "--tools-module", str(tmp_path / "nope.py"))
    assert no_tools.returncode == 2 and "nope.py" in no_tools.stderr


def test_entry_script_opens_on_the_chat_page(ingested_home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from feldspar.cli.ui import entry_script_path

    monkeypatch.setenv("FELDSPAR_HOME", str(ingested_home))
    monkeypatch.setenv("FELDSPAR_COLLECTION", "docs")
    at = AppTest.from_file(str(entry_script_path()), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Chat"]
    assert at.sidebar.selectbox(key="collection").value == "docs"
