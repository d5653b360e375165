"""Feldspar installs as one `feldspar` package: a real wheel in a fresh venv, and a cheap import.

The wheel is built offline from a copy of the sources (no build isolation), installed with
``--no-deps`` into a new venv that sees this environment's site-packages for its
dependencies, and run from a folder that holds its own ``app.py`` and ``model/`` package:
the user's modules must not shadow Feldspar's, nor Feldspar's theirs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "app", "model", "retrieval", "agents", "ui", "bench")


def run(args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, src / name)
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)])
    return next(out.glob("feldspar-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding only the wheel; dependencies come from this environment by a .pth line."""
    env = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # Plain path lines: .pth files inside those folders (our editable install's finder) are not run.
    outer = [sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("site-packages"))]
    Path(site, "outer-environment.pth").write_text("\n".join(dict.fromkeys(outer)) + "\n", encoding="utf-8")
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return env


@pytest.fixture(scope="module")
def user_project(tmp_path_factory) -> Path:
    """A folder like a user's Streamlit/Flask project: its own app.py and model/ package."""
    folder = tmp_path_factory.mktemp("user-project")
    (folder / "app.py").write_text("raise SystemExit('the user app.py was imported')\n", encoding="utf-8")
    (folder / "model").mkdir()
    (folder / "model" / "__init__.py").write_text("raise SystemExit('the user model/ was imported')\n", encoding="utf-8")
    return folder


def test_the_wheel_holds_only_the_feldspar_package(wheel):
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"feldspar"}
    names = zipfile.ZipFile(wheel).namelist()
    assert "feldspar/model/templates/granite_chat.jinja" in names and "feldspar/__main__.py" in names
    assert {"feldspar/cli/__init__.py", "feldspar/serve/endpoints.py", "feldspar/webui/main.py"} <= set(names)


def test_the_installed_wheel_runs_beside_a_users_app_and_model(venv, user_project, tmp_path):
    python, script = venv / "bin" / "python", venv / "bin" / "feldspar"
    probe = textwrap.dedent("""
        import sys, feldspar, feldspar.model.catalog as catalog
        print(feldspar.__file__); print(catalog.__file__); print(feldspar.__version__)
        print(sorted(m for m in ("torch", "chromadb") if m in sys.modules))
    """)
    where, catalog, version, heavy = run([str(python), "-c", probe], cwd=user_project).stdout.split("\n")[:4]
    assert where.startswith(str(venv)) and catalog.startswith(str(venv)) and heavy == "[]"
    assert "Usage: feldspar" in run([str(script), "--help"], cwd=user_project).stdout
    assert run([str(python), "-m", "feldspar", "--version"], cwd=user_project).stdout.strip().endswith(version)
    names = [row["name"] for row in json.loads(run([str(script), "models", "--json"], cwd=user_project).stdout)]
    assert "granite-4.0-h-1b" in names
    # Package data (the chat template) travels in the wheel: a tiny checkpoint renders a prompt.
    run([str(script), "models", "random", "h-350m", str(tmp_path / "tiny"), "--tiny"], cwd=user_project)
    shown = run([str(script), "prompt", "Hi", "-m", str(tmp_path / "tiny")], cwd=user_project).stdout
    assert "<|start_of_role|>user<|end_of_role|>Hi<|end_of_text|>" in shown


def test_import_feldspar_is_cheap_and_exposes_the_entry_points():
    probe = textwrap.dedent("""
        import sys, feldspar
        cheap = sorted(m for m in ("torch", "chromadb", "transformers", "pydantic") if m in sys.modules)
        entry = [callable(getattr(feldspar, n)) for n in ("Settings", "load_settings", "build_engine", "build_retrieval")]
        print(cheap, all(entry), "torch" in sys.modules)
    """)
    assert run([sys.executable, "-c", probe], cwd=ROOT / "tests").stdout.split() == ["[]", "True", "False"]
