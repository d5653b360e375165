"""`feldspar demo`: the main job on embedded defaults, fully offline.

Shows the catalog, ingests the project's own docs and searches them, then runs the agent
(retrieval policy ``always``: the passages reach the prompt as a search response) for a
cited answer with the default Granite checkpoint when one can be loaded. Without a real
checkpoint it says so in one line with how to get one: it never passes off random weights
as an answer. It ends with what to do next: where the data went, how to try the pipeline
without weights (random, labelled) and on one's own folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from feldspar.cli.root import HomeOpt, ModelOpt, app, console, settings_from

QUESTION = "How does Feldspar reuse the state of a hybrid Granite model?"


def _catalog() -> None:
    from feldspar.cli.models import print_catalog

    print_catalog()


def _retrieval(settings) -> None:
    from feldspar.cli.retrieval import demo_retrieval

    demo_retrieval(settings, console)


def answer_question(agent, question: str = QUESTION) -> dict:
    """Ask the agent one question, streaming its answer and listing its sources."""
    from feldspar.cli.agent import print_sources, print_usage, stream_answer

    console.print(f"[bold]you>[/bold] {question}")
    console.print("[bold]granite>[/bold] ", end="")
    answer = stream_answer(agent, question, None, approve=None, show=True)
    print_sources(answer)
    print_usage(answer)
    return answer


def _answer(settings) -> None:
    from feldspar.compose import build_runtime
    from feldspar.errors import user_message
    from feldspar.model.errors import ModelError

    runtime = build_runtime(settings.model_copy(update={"collection": "docs"}))
    try:
        engine = runtime.engine()
    except ModelError as exc:
        console.print("[yellow]No Granite checkpoint could be loaded for the answer step:[/yellow] "
                      + escape(user_message(exc)))
        return
    if engine.random_weights:
        console.print(f"[yellow]{engine.resolved.source} holds random weights; not generating an answer from it.[/yellow]")
        return
    answer_question(runtime.agent(approve="never"))


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (as a user would type it)."""
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else Path(relative).as_posix()


def next_steps(settings) -> list[tuple[str, str]]:
    """(what, command) lines printed after the demo."""
    from feldspar.cli.retrieval import REPO_DOCS

    questions = _shown_path(REPO_DOCS / "eval" / "docs_questions.jsonl")
    return [
        ("Your data", f"{settings.home} (store, manifest, packs); the docs are the collection 'docs'"),
        ("List the files", "feldspar sources --collection docs"),
        ("Search them", 'feldspar search "how are state packs checked?" --collection docs'),
        ("Ask the agent", 'feldspar ask "how are state packs checked?" --collection docs --trace'),
        ("Measure retrieval", f"feldspar eval retrieval {questions} --collection docs"),
        ("In the browser", "feldspar ui --collection docs"),
        ("As an OpenAI API", "feldspar serve --collection docs   (model `feldspar-agent` answers with citations)"),
        ("Your own folder", "feldspar ingest ~/notes --collection notes --reasons"),
        ("", 'feldspar search "your question" --collection notes'),
        ("", 'feldspar pack create notes ~/notes && feldspar ask --pack notes "your question"'),
        ("No weights at hand", "feldspar models random h-1b ./h-1b-random --tiny"),
        ("", "feldspar chat -m ./h-1b-random"),
        ("", "(RANDOM WEIGHTS: the whole pipeline runs; every answer is noise and labelled so)"),
    ]


def _print_next_steps(settings) -> None:
    console.rule("What next")
    for what, command in next_steps(settings):
        console.print(f"[bold]{escape(what):<20}[/bold]{escape(command)}", highlight=False, soft_wrap=True)
    console.print("[dim](the commands need the virtual environment: `. .venv/bin/activate` after `make demo`)[/dim]",
                  soft_wrap=True)


@app.command()
def demo(model: ModelOpt = None, home: HomeOpt = None,
         max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n", min=1)) -> None:
    """Catalog, ingest + search of the project's docs, and a grounded answer (when a checkpoint is available)."""
    from feldspar.cli.output import quiet_libraries
    from feldspar.home import require_writable

    quiet_libraries()
    settings = settings_from(home=home, model=model, max_new_tokens=max_new_tokens or 200)
    require_writable(settings.home)
    console.rule("Granite 4.0 models")
    _catalog()
    console.rule("Retrieval over the project's docs")
    _retrieval(settings)
    console.rule(f"The agent's grounded answer with {settings.model}")
    _answer(settings)
    _print_next_steps(settings)

