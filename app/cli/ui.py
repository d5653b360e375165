"""`feldspar ui`: start the Streamlit app on this machine's Settings and data home.

Checks the flags and the settings first (one `error: …` line, exit 1 or 2), then replaces
this process with ``python -m streamlit run <feldspar/webui/main.py>`` bound to 127.0.0.1 by
default, headless and without usage statistics. The flags reach the app's entry script
through ``FELDSPAR_*`` environment variables, so it loads the same Settings as the CLI.
Knows Streamlit's command line; nothing of the pages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from feldspar.cli.generate import DeviceOpt, DtypeOpt
from feldspar.cli.root import HomeOpt, ModelOpt, app, err_console, in_range, settings_from

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501


def streamlit_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(entry_script_path()),
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "minimal"]


def entry_script_path() -> Path:
    """Where feldspar/webui/main.py is installed, found without running it."""
    import importlib.util

    spec = importlib.util.find_spec("feldspar.webui.main")
    if spec is None or spec.origin is None:  # pragma: no cover - a broken install
        raise RuntimeError("feldspar.webui.main is not installed")
    return Path(spec.origin).resolve()


def ui_environment(settings, tools_module: Path | None) -> dict[str, str]:
    """This process's environment plus the settings the flags chose, as FELDSPAR_* variables."""
    env = dict(os.environ)
    env.update(FELDSPAR_HOME=str(settings.home), FELDSPAR_MODEL=settings.model, FELDSPAR_DEVICE=settings.device,
               FELDSPAR_DTYPE=settings.dtype, FELDSPAR_COLLECTION=settings.collection)
    if tools_module is not None:
        env["FELDSPAR_TOOLS_MODULE"] = str(tools_module.expanduser().resolve())
    return env


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="address to listen on (default: this machine only)")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option("--port", callback=in_range(1, 65535), help="port to listen on")] = DEFAULT_PORT,
    collection: Annotated[Optional[str], typer.Option("--collection", "-c", help="collection chat opens on")] = None,
    tools_module: Annotated[Optional[Path], typer.Option("--tools-module", help="Python file defining extra tools")] = None,
    model: ModelOpt = None, device: DeviceOpt = None, dtype: DtypeOpt = None, home: HomeOpt = None,
) -> None:
    """Start the web app (Streamlit): chat with sources and traces, documents, packs, models."""
    from feldspar.home import require_writable

    settings = settings_from(home=home, model=model, device=device, dtype=dtype, collection=collection)
    require_writable(settings.home)
    if tools_module is not None and not tools_module.expanduser().is_file():
        raise typer.BadParameter(f"no such file: {tools_module}", param_hint="--tools-module")
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]listening on {host}: anyone who can reach it can read your documents "
                          f"and run your tools[/yellow]")
    err_console.print(f"Feldspar UI on http://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port} "
                      f"(data home {settings.home}); Ctrl-C stops it")
    command = streamlit_command(host, port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, ui_environment(settings, tools_module))
