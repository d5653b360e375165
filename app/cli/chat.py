"""`feldspar chat`: an interactive, streaming, multi-turn conversation that is never lost.

A turn the engine refuses (over the context window, a bad prompt) or that Ctrl-C stops is
reported and the conversation goes on. Lines starting with ``/`` are commands (/help,
/reset asks first, /save FILE, /exit); an unknown command is an error and is not sent to
the model (``//`` sends a line that starts with ``/``). ``--resume FILE`` continues a saved
conversation. Knows the terminal and the commands; the history lives in app/chat_session.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from feldspar.inputs import read_json_list
from feldspar.cli.generate import (
    CompileOpt, DeviceOpt, DocFilesOpt, DocsOpt, DtypeOpt, MaxNewOpt, NoReuseOpt, QuantOpt, SeedOpt, SystemOpt,
    TempOpt, ToolsOpt, TopPOpt, VerboseOpt, _documents, _params, label_random, print_stats, stream_to_terminal,
)
from feldspar.cli.output import quiet_libraries
from feldspar.cli.progress import prefill_progress
from feldspar.cli.root import HomeOpt, ModelOpt, app, console, err_console, settings_from
from feldspar.compose import build_runtime

COMMANDS = {
    "/help": "list these commands",
    "/reset": "clear the conversation (asks first; the system prompt stays)",
    "/save FILE": "save the conversation as JSON; continue it later with `feldspar chat --resume FILE`",
    "/exit": "quit (also /quit or Ctrl-D)",
}
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="continue a conversation saved with /save FILE")]


@app.command()
def chat(
    system: SystemOpt = None, tools: ToolsOpt = None, documents: DocsOpt = None, doc: DocFilesOpt = None,
    resume: ResumeOpt = None,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None, top_p: TopPOpt = None,
    seed: SeedOpt = None, no_reuse: NoReuseOpt = False, verbose: VerboseOpt = False,
    device: DeviceOpt = None, dtype: DtypeOpt = None, quant: QuantOpt = None, compile: CompileOpt = None,
    home: HomeOpt = None,
) -> None:
    """Interactive multi-turn chat with streaming; /help lists the commands (/reset, /save FILE, /exit)."""
    from feldspar.chat_session import ChatSession, read_saved

    quiet_libraries(verbose)
    settings = settings_from(home=home, model=model, device=device, dtype=dtype, quant=quant, compile=compile)
    saved = read_saved(resume) if resume is not None else None  # a bad file fails before the model loads
    tool_list, docs = read_json_list(tools, "tools"), _documents(documents, doc)
    if saved is not None:
        tool_list, docs = tool_list or saved.get("tools"), docs or saved.get("documents")
    engine = build_runtime(settings).generator()
    session = ChatSession(engine, system, tool_list, docs, _params(settings, max_new_tokens, temperature, top_p, seed,
                                                                   no_reuse))
    if saved is not None:
        session.resume(saved)
        err_console.print(f"[dim]resumed {session.turns} message(s) from {escape(str(resume))}[/dim]")
    label_random(engine)
    err_console.print(f"[dim]{escape(engine.name)} · /help lists the commands, /exit or Ctrl-D quits[/dim]")
    while True:
        try:
            line = console.input("[bold]you>[/bold] ")
        except EOFError:
            console.out("")
            return
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("/") and not stripped.startswith("//"):
            if _command(session, stripped) == "exit":
                return
            continue
        _turn(session, line[line.index("/") + 1:] if stripped.startswith("//") else line, verbose)


def _turn(session, text: str, verbose: bool) -> None:
    """One exchange; a refused or interrupted turn is reported and the conversation kept."""
    from feldspar.agents.errors import AgentError
    from feldspar.errors import user_message
    from feldspar.model.errors import ModelError

    label = "(random weights) granite>" if session.engine.random_weights else "granite>"
    try:
        with prefill_progress() as progress:
            stream = session.send(text, progress)
            console.print(f"[bold]{label}[/bold] ", end="")
            result = stream_to_terminal(stream)
    except (ModelError, AgentError) as exc:  # AgentError: a remote server refused or failed
        session.take_back()  # a reply cut off mid-stream leaves its question behind
        err_console.print(f"error: {escape(user_message(exc))}", highlight=False)
        err_console.print(f"[dim]the message was not added; the conversation ({session.turns} message(s)) is kept. "
                          "Send a shorter message, or /save FILE and /reset to start over.[/dim]")
        return
    except KeyboardInterrupt:
        session.take_back()
        console.out("")
        err_console.print("[dim]reply interrupted; the message was not added, the conversation is kept[/dim]")
        return
    session.record(result)
    for err in result.tool_turn(session.tools).errors:
        err_console.print(f"[yellow]malformed tool call:[/yellow] {escape(err.message)}")
    if verbose:
        print_stats(result, session.engine.random_weights)


def _command(session, line: str) -> str | None:
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit"):
        return "exit"
    if name == "/help":
        for usage, what in COMMANDS.items():
            console.print(f"  {usage:<12}{what}", markup=False, highlight=False, soft_wrap=True)
        console.print("  a line starting with // is sent as a message that starts with /", style="dim", markup=False)
    elif name == "/reset":
        _reset(session)
    elif name == "/save":
        _save(session, argument)
    else:
        err_console.print(f"error: unknown command {escape(name)}; /help lists the commands", highlight=False)
    return None


def _reset(session) -> None:
    if not session.turns:
        console.print("nothing to clear")
        return
    try:
        answer = console.input(f"clear {session.turns} message(s) of this conversation? {escape('[y/N]')} ")
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        session.reset()
        console.print("conversation cleared" + (" (the system prompt stays)" if session.system else ""))
    else:
        console.print("kept the conversation")


def _save(session, argument: str) -> None:
    from feldspar.errors import user_message
    from feldspar.model.errors import ModelError

    if not argument:
        err_console.print("error: /save needs a file name: /save FILE", highlight=False)
        return
    try:
        path = session.save(Path(argument))
    except (ModelError, OSError) as exc:
        reason = user_message(exc) if isinstance(exc, ModelError) else f"cannot write {argument}: {exc.strerror or exc}"
        err_console.print(f"error: {escape(reason)}", highlight=False)
        return
    console.print(f"saved {session.turns} message(s) to {path}; continue with `feldspar chat --resume {path}`",
                  markup=False, highlight=False, soft_wrap=True)
