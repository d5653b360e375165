"""`feldspar serve`: Feldspar as an OpenAI-compatible server (docs/serve.md).

Turns flags into Settings, builds the app through app/compose.py (each ``--model`` on its
own engine, plus the ``feldspar-agent`` model over a collection or a state pack) and runs
it with uvicorn, on 127.0.0.1 unless ``--host`` says otherwise. The bearer token comes from
the settings (``api_key``, ``FELDSPAR_API_KEY``), never from the command line, where other
users could read it. Knows flags and what to print; nothing of how requests are served.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from feldspar.cli.generate import CompileOpt, DeviceOpt, DtypeOpt, MaxNewOpt, QuantOpt, VerboseOpt
from feldspar.cli.root import HomeOpt, app, err_console, settings_from, usage_error

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@app.command()
def serve(
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="model to serve (repeatable; default: "
                                                       "the configured model)")] = None,
    host: Annotated[str, typer.Option("--host", help="address to bind (default loopback only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one)")] = 8000,
    queue: Annotated[Optional[int], typer.Option("--queue", min=0, help="requests waiting per engine before 429 "
                                                 "(default: serve_queue, 8)")] = None,
    collection: Annotated[Optional[str], typer.Option("--collection", "-c", help="feldspar-agent's default "
                                                      "collection")] = None,
    pack: Annotated[Optional[str], typer.Option("--pack", help="feldspar-agent answers from this state pack "
                                                "by default")] = None,
    no_agent: Annotated[bool, typer.Option("--no-agent", help="do not serve the feldspar-agent model")] = False,
    served_name: Annotated[Optional[list[str]], typer.Option("--served-name", help="the name clients see for "
                                                             "each --model, in order (default: the catalog name or "
                                                             "the checkpoint folder's name)")] = None,
    max_new_tokens: MaxNewOpt = None, verbose: VerboseOpt = False, device: DeviceOpt = None, dtype: DtypeOpt = None,
    quant: QuantOpt = None, compile: CompileOpt = None, home: HomeOpt = None,
) -> None:
    """Serve the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /health) over Granite."""
    from feldspar.cli.output import quiet_libraries
    from feldspar.serve.server import build_server
    from feldspar.serve.run import bind_or_refuse, serve_forever

    quiet_libraries(verbose)
    if pack and (collection or no_agent):
        raise usage_error("choose --collection or --pack, not both" if collection
                          else "--pack is the agent's; drop --no-agent or --pack")
    settings = settings_from(home=home, collection=collection, device=device, dtype=dtype, quant=quant, compile=compile,
                             max_new_tokens=max_new_tokens)
    _check_exposure(settings, host, model, served_name)
    sock = bind_or_refuse(host, port)  # a port in use fails here, not after the models have loaded
    err_console.print("[dim]loading models …[/dim]")
    try:
        server = build_server(settings, model or None, agent=not no_agent, pack=pack, queue=queue,
                              served_names=served_name)
    except BaseException:
        sock.close()
        raise
    announce = _announce(server, settings.serve_queue if queue is None else queue, bool(settings.api_key))
    serve_forever(server, host, port, log_level="info" if verbose else "warning", announce=announce, sock=sock)


def _check_exposure(settings, host: str, model: list[str] | None, served_name: list[str] | None) -> None:
    """A warning when serving beyond loopback without an API key; too many --served-name refused."""
    if host not in LOOPBACK_HOSTS and not settings.api_key:
        err_console.print(f"[yellow]warning: serving on {host} without an API key: anyone who can reach this "
                          "machine can use it; set FELDSPAR_API_KEY[/yellow]")
    if served_name and len(served_name) > len(model or [settings.model]):
        raise usage_error("give at most one --served-name per --model")


def _announce(server, waiting: int, token: bool):
    """Name each served model now (random weights said so); the returned function prints the address once bound."""
    for served in server.state.feldspar.models.values():
        label = " (RANDOM WEIGHTS: its text is noise)" if served.random_weights else ""
        err_console.print(f"model [bold]{escape(served.id)}[/bold]{label}", highlight=False, soft_wrap=True)
    required = ", bearer token required" if token else ""

    def announce(url: str) -> None:
        err_console.print(f"serving the OpenAI API on {url}/v1 ({waiting} waiting per engine{required}); Ctrl-C stops",
                          highlight=False, soft_wrap=True)  # one line: scripts read the address from it

    return announce
