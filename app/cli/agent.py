"""`feldspar ask` (the agent's front door) and `feldspar threads list|show|rm|export`.

Turns flags into Settings, takes the agent from the runtime app/compose.py builds, streams its answer
and prints sources, the trace and reuse statistics (or all of it with --json). Approval
of side-effecting tools: a y/n question when interactive, else --approve. Knows the
agent's events and answer dicts; nothing of how the graph works inside.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from feldspar.agents.configuration import Approval, Policy
from feldspar.cli.generate import DeviceOpt, DtypeOpt, MaxNewOpt, NoReuseOpt, SeedOpt, TempOpt, TopPOpt, VerboseOpt
from feldspar.cli.root import (
    PLAIN_HELP, RANDOM_LABEL, HomeOpt, JsonOpt, ModelOpt, app, console, err_console, print_json, print_table,
    settings_from,
)

threads_app = typer.Typer(**PLAIN_HELP, help="Persistent agent threads (the same ones the UI shows).", no_args_is_help=True)
app.add_typer(threads_app, name="threads")

PolicyOpt = Annotated[Optional[Policy], typer.Option("--policy", help="when the agent retrieves")]
ApproveOpt = Annotated[Optional[Approval], typer.Option("--approve", help="side-effecting tools (default: ask when "
                                                        "interactive, else never)")]

INTERRUPTED = "interrupted; the thread keeps its last completed turn"


def _pack_defaults(flags: dict[str, Any], pack: str | None) -> dict[str, Any]:
    """A pack's own model and dtype are the default when not given."""
    if pack is None:
        return flags
    from feldspar.model.packs import read_meta  # imports torch: only when a pack is named

    meta = read_meta(settings_from(home=flags.get("home")).packs_dir, pack)
    return {**flags, "model": flags.get("model") or meta.get("model_source"), "dtype": flags.get("dtype") or meta.get("dtype")}


def _thread_defaults(home, thread: str, **given: str | None) -> tuple[str, tuple[str | None, ...]]:
    """The thread's full id and the model, collection and pack it was asked with, unless given;
    a flag that changes what the thread recorded wins and the change is said."""
    store = _store(home)
    thread = store.resolve(thread)
    recorded = store.meta(thread)
    chosen = dict(given)
    source_given = given["collection"] is not None or given["pack"] is not None
    for key in ("model", "collection", "pack"):
        was = recorded.get(key)
        if given[key] is None:
            if key == "model" or not source_given:
                chosen[key] = was
            elif was is not None:
                err_console.print(f"[yellow]thread {thread} was asked with {key} {escape(str(was))}; this turn "
                                  f"does not use it[/yellow]", soft_wrap=True)
        elif was is not None and given[key] != was:
            err_console.print(f"[yellow]thread {thread} was asked with {key} {escape(str(was))}; "
                              f"this turn uses {escape(str(given[key]))}[/yellow]", soft_wrap=True)
    return thread, (chosen["model"], chosen["collection"], chosen["pack"])


def _approver(mode: str | None, json_out: bool):
    """The approval callback for side-effecting tools, or None to let the graph refuse/wait."""
    if (mode or ("ask" if sys.stdin.isatty() else "never")) != "ask":
        return None
    if json_out or not sys.stdin.isatty():
        raise typer.BadParameter("--approve ask needs an interactive terminal; use --approve always or never",
                                 param_hint="--approve")

    def ask_user(request: dict[str, Any]) -> bool:
        err_console.print(f"\n[yellow]The agent wants to run {escape(request['tool'])}({escape(str(request['args']))}).[/yellow]")
        return typer.confirm("Allow it?", default=False, err=True)

    return ask_user


def print_sources(answer: dict[str, Any]) -> None:
    for source in answer.get("sources", []):
        where = f"p{source['page']} " if source.get("page") else ""
        heading = f" · {source['heading']}" if source.get("heading") else ""
        score = f" · score {source['score']:.3f}" if isinstance(source.get("score"), (int, float)) else ""
        console.print(f"  [{source['doc_id']}] {escape(str(source.get('path')))} {where}chars "
                      f"{source.get('start')}-{source.get('end')}{escape(heading)}{score}", markup=False)
    if answer.get("unknown_citations"):
        err_console.print(f"[yellow]dropped citations of ids never given to the model: {answer['unknown_citations']}[/yellow]")


def print_usage(answer: dict[str, Any]) -> None:
    usage = answer.get("usage") or {}
    ttft = usage.get("ttft_s")
    random = "RANDOM WEIGHTS · " if usage.get("random_weights") else ""
    err_console.print(f"[dim]{random}{usage.get('model_calls', 0)} model call(s) · prompt {'~' if usage.get('estimated_tokens') else ''}"
                      f"{usage.get('prompt_tokens', 0)} tok{' (estimated)' if usage.get('estimated_tokens') else ''} "
                      f"(reused {usage.get('reused_tokens', 0)}, computed {usage.get('computed_tokens', 0)}) · "
                      f"TTFT {ttft if ttft is None else round(ttft, 2)} s · stop: {answer.get('stop_reason')} · "
                      f"thread {answer.get('thread_id')}[/dim]")


def stream_answer(agent, question: str, thread_id: str | None, approve, show: bool) -> dict[str, Any]:
    from feldspar.agents.steps import APPROVE, COMPACT, RETRIEVE, TOKEN, TOOL
    from feldspar.agents.trace import describe

    def on_event(event) -> None:
        if not show:
            return
        if event.kind == TOKEN:
            console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
        elif event.kind in (RETRIEVE, TOOL, COMPACT, APPROVE):
            err_console.print(f"[dim]{escape(describe(event.data).splitlines()[0])}[/dim]")

    answer = agent.ask(question, thread_id, approve=approve, on_event=on_event)
    if show:
        console.print()
    return answer


@app.command()
def ask(
    questions: Annotated[list[str], typer.Argument(help="one or more questions, asked in turn in one thread")],
    collection: Annotated[Optional[str], typer.Option("--collection", "-c", help="collection to search")] = None,
    pack: Annotated[Optional[str], typer.Option("--pack", help="answer from this state pack")] = None,
    thread: Annotated[Optional[str], typer.Option("--thread", help="continue this thread (see `feldspar threads list`)")] = None,
    policy: PolicyOpt = None, approve: ApproveOpt = None,
    tools_module: Annotated[Optional[Path], typer.Option("--tools-module", help="Python file defining extra tools")] = None,
    trace: Annotated[bool, typer.Option("--trace", help="print every step of each turn")] = False,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None, top_p: TopPOpt = None,
    seed: SeedOpt = None, no_reuse: NoReuseOpt = False, verbose: VerboseOpt = False, json_out: JsonOpt = False,
    device: DeviceOpt = None, dtype: DtypeOpt = None, home: HomeOpt = None,
) -> None:
    """Ask the agent: retrieval, tools and a cited answer; several questions share one thread and its state."""
    from feldspar.agents.trace import format_trace
    from feldspar.cli.interrupt import on_interrupt
    from feldspar.cli.output import quiet_libraries
    from feldspar.compose import build_runtime, check_thread_store

    quiet_libraries(verbose)
    on_interrupt(INTERRUPTED)
    if pack and collection:
        raise typer.BadParameter("choose --collection or --pack, not both", param_hint="--pack")
    if thread is not None:  # before any model or collection is loaded
        thread, (model, collection, pack) = _thread_defaults(home, thread, model=model, collection=collection, pack=pack)
    _check_pack_policy(policy, pack)
    flags = _pack_defaults({"home": home, "model": model, "device": device, "dtype": dtype, "collection": collection,
                            "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}, pack)
    settings = settings_from(**flags)
    check_thread_store(settings)  # an unusable data home fails before the model loads
    approver = _approver(approve, json_out)
    agent = build_runtime(settings).agent(None, pack, policy=policy, approve=approve or ("ask" if approver else "never"),
                                          tools_module=tools_module, no_reuse=no_reuse)
    random_weights = bool(getattr(agent.deps.chat_model.backend, "random_weights", False))
    _say_pack_loaded(agent, pack, show=(verbose or trace) and not json_out)
    answers, thread_id = _ask_in_turn(agent, questions, thread, approver, random_weights, json_out,
                                      show_usage=verbose or trace, trace=trace)
    _report_answers(agent, answers, thread_id, pack, random_weights, json_out, quiet=not verbose and not trace)


def _report_answers(agent, answers: list[dict[str, Any]], thread_id: str | None, pack: str | None,
                    random_weights: bool, json_out: bool, quiet: bool) -> None:
    """The answers as JSON (--json), else how to continue the thread; exit 1 when none fit the window."""
    if json_out:
        print_json({"model": agent.meta.get("model"), "thread_id": thread_id, "pack": pack,
                    "pack_load_s": agent.meta.get("pack_load_s"), "random_weights": random_weights, "answers": answers})
    elif quiet:
        err_console.print(f"[dim]thread {thread_id} (continue with --thread {thread_id})[/dim]")
    if any(a.get("stop_reason") == "context_window" for a in answers):
        raise typer.Exit(1)  # no answer: the conversation does not fit the window


def _check_pack_policy(policy: str | None, pack: str | None) -> None:
    if policy == "pack" and not pack:
        raise typer.BadParameter("--policy pack answers from a state pack: give --pack NAME "
                                 "(see `feldspar pack list`)", param_hint="--policy")


def _say_pack_loaded(agent, pack: str | None, show: bool) -> None:
    if pack and show:
        err_console.print(f"[dim]pack {pack!r}: {agent.meta['pack_tokens']:,} tokens loaded in "
                          f"{agent.meta['pack_load_s']:.2f} s[/dim]")


def _ask_in_turn(agent, questions: list[str], thread_id: str | None, approver, random_weights: bool, json_out: bool,
                 show_usage: bool, trace: bool) -> tuple[list[dict[str, Any]], str | None]:
    """Each question in one thread, streamed and followed by its sources (unless --json); (answers, thread id)."""
    from feldspar.agents.trace import format_trace

    answers = []
    for question in questions:
        if not json_out and len(questions) > 1:
            console.print(f"[bold]Q:[/bold] {escape(question)}")
        if random_weights and not json_out:  # before the text, as everywhere a random-weight answer is shown
            console.print(RANDOM_LABEL, style="bold yellow", markup=False)
        answer = stream_answer(agent, question, thread_id, approver, show=not json_out)
        thread_id = answer["thread_id"]
        answers.append({"question": question, **answer, "random_weights": random_weights})
        if not json_out:
            print_stop(answer)
            print_sources(answer)
            if trace:
                console.print(format_trace(answer["trace"]), markup=False, highlight=False)
            if show_usage:
                print_usage(answer)
    return answers, thread_id


def print_stop(answer: dict[str, Any]) -> None:
    """Why the agent stopped without answering (the note is not streamed as model text)."""
    if answer.get("stop_reason") in (None, "answered", "awaiting_approval"):
        return
    note = (answer.get("text") or "").strip().splitlines()
    err_console.print(f"stopped ({answer['stop_reason']}): {note[-1] if note else 'no answer'}", style="yellow",
                      markup=False, highlight=False, soft_wrap=True)


# ---- threads ---------------------------------------------------------------------------
def _store(home):
    from feldspar.compose import build_thread_store

    return build_thread_store(settings_from(home=home))  # PostgreSQL when postgres_url is set


@threads_app.command("list")
def threads_list(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """Threads, most recently used first."""
    rows = _store(home).list()
    if json_out:
        print_json(rows)
    elif not rows:
        console.print("no threads yet: `feldspar ask \"…\"` starts one")
    else:
        print_table(rows, ["thread_id", "title", "turns", "updated", "model", "collection", "pack"], whole=("thread_id",))


@threads_app.command("show")
def threads_show(thread_id: Annotated[str, typer.Argument(help="thread id (or a unique start of one)")], trace: Annotated[bool, typer.Option(
        "--trace", help="also print every step")] = False, json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """The whole conversation of a thread (nothing is ever deleted by summarisation)."""
    from feldspar.agents.trace import format_trace

    store = _store(home)
    exported = store.export(store.resolve(thread_id))
    if json_out:
        print_json(exported)
        return
    for message in exported["messages"]:
        calls = "".join(f"\n  → {c['name']}({c['args']})" for c in message.get("tool_calls") or [])
        console.print(f"[bold]{message['role']}>[/bold] {escape(str(message['content']))}{escape(calls)}")
    if trace:
        console.print(format_trace(exported["trace"]), markup=False, highlight=False)


@threads_app.command("export")
def threads_export(thread_id: Annotated[str, typer.Argument(help="thread id (or a unique start of one)")], home: HomeOpt = None) -> None:
    """The thread as JSON: messages, summary, passages, last answer and trace."""
    store = _store(home)
    print_json(store.export(store.resolve(thread_id)))


@threads_app.command("rm")
def threads_rm(thread_id: Annotated[str, typer.Argument(help="thread id (or a unique start of one)")], home: HomeOpt = None) -> None:
    """Delete a thread and its saved model state."""
    from feldspar.model.thread_states import remove_thread_state

    settings = settings_from(home=home)
    store = _store(home)
    thread_id = store.resolve(thread_id)
    store.remove(thread_id)
    remove_thread_state(settings.thread_states_dir, thread_id)
    console.print(f"removed thread {thread_id}")
