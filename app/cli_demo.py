"""`feldspar demo`: the main job on embedded defaults, fully offline.

Shows the catalog, ingests the project's own docs and searches them, then runs the agent
(retrieval policy ``always``: the passages reach the prompt as a search response) for a
cited answer with the default Granite checkpoint when one can be loaded. Without a real checkpoint it says so in one line with how to get one: it never
passes off random weights as an answer.
"""

from __future__ import annotations

from typing import Optional

import typer

from feldspar.cli_root import HomeOpt, ModelOpt, app, console, settings_from

QUESTION = "How does Feldspar reuse the state of a hybrid Granite model?"


def _catalog() -> None:
    from feldspar.cli_models import print_catalog

    print_catalog()


def _retrieval(settings) -> None:
    from feldspar.cli_retrieval import demo_retrieval

    demo_retrieval(settings, console)


def answer_question(agent, question: str = QUESTION) -> dict:
    """Ask the agent one question, streaming its answer and listing its sources."""
    from feldspar.cli_agent import print_sources, print_usage, stream_answer

    console.print(f"[bold]you>[/bold] {question}")
    console.print("[bold]granite>[/bold] ", end="")
    answer = stream_answer(agent, question, None, approve=None, show=True)
    print_sources(answer)
    print_usage(answer)
    return answer


def _answer(settings) -> None:
    from feldspar.compose import build_agent, build_engine
    from feldspar.errors import user_message
    from feldspar.model.checkpoint_random import is_random_checkpoint
    from feldspar.model.errors import ModelError

    try:
        engine = build_engine(settings)
    except ModelError as exc:
        console.print(f"[yellow]No Granite checkpoint could be loaded for the answer step.[/yellow] {user_message(exc)}")
        return
    if engine.resolved.local and is_random_checkpoint(engine.resolved.source):
        console.print(f"[yellow]{engine.resolved.source} holds random weights; not generating an answer from it.[/yellow]")
        return
    answer_question(build_agent(settings.model_copy(update={"collection": "docs"}), engine, approve="never"))


@app.command()
def demo(model: ModelOpt = None, home: HomeOpt = None,
         max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n")) -> None:
    """Catalog, ingest + search of the project's docs, and a grounded answer (when a checkpoint is available)."""
    settings = settings_from(home=home, model=model, max_new_tokens=max_new_tokens or 200)
    console.rule("Granite 4.0 models")
    _catalog()
    console.rule("Retrieval over the project's docs")
    _retrieval(settings)
    console.rule(f"The agent's grounded answer with {settings.model}")
    _answer(settings)

