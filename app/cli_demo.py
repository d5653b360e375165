"""`feldspar demo`: the main job on embedded defaults, fully offline.

Shows the catalog, ingests the project's own docs and searches them, then answers a
question from the retrieved passages with the default Granite checkpoint when one can be
loaded. Without a real checkpoint it says so in one line with how to get one: it never
passes off random weights as an answer.
"""

from __future__ import annotations

from typing import Optional

import typer

from feldspar.cli_root import HomeOpt, ModelOpt, app, console, err_console, settings_from

QUESTION = "How does Feldspar reuse the state of a hybrid Granite model?"


def _catalog() -> None:
    from feldspar.cli_models import print_catalog

    print_catalog()


def _retrieval(settings):
    try:
        from feldspar.cli_retrieval import demo_retrieval
    except ImportError:
        console.print("[dim]retrieval is not available in this build[/dim]")
        return []
    return demo_retrieval(settings, console) or []


def _answer(settings, passages) -> None:
    from feldspar.cli_model import stream_to_terminal
    from feldspar.compose import build_engine
    from feldspar.model.checkpoint_random import is_random_checkpoint
    from feldspar.model.engine import GenerationParams
    from feldspar.model.errors import ModelError

    try:
        engine = build_engine(settings)
    except ModelError as exc:
        console.print(f"[yellow]No Granite checkpoint could be loaded for the chat step.[/yellow] {exc}")
        return
    if engine.resolved.local and is_random_checkpoint(engine.resolved.source):
        console.print(f"[yellow]{engine.resolved.source} holds random weights; not generating an answer from it.[/yellow]")
        return
    documents = [{"doc_id": i, "title": p.get("path", ""), "text": p.get("text", "")}
                 for i, p in enumerate(passages[:3], start=1)]
    console.print(f"[bold]you>[/bold] {QUESTION}")
    console.print("[bold]granite>[/bold] ", end="")
    result = stream_to_terminal(engine.chat([{"role": "user", "content": QUESTION}], documents=documents or None,
                                            params=GenerationParams(max_new_tokens=settings.max_new_tokens)))
    err_console.print(f"[dim]{result.prompt_tokens} prompt tokens · {result.completion_tokens} new · "
                      f"TTFT {result.ttft_s:.2f} s[/dim]")


@app.command()
def demo(model: ModelOpt = None, home: HomeOpt = None,
         max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", "-n")) -> None:
    """Catalog, ingest + search of the project's docs, and a grounded answer (when a checkpoint is available)."""
    settings = settings_from(home=home, model=model, max_new_tokens=max_new_tokens or 200)
    console.rule("Granite 4.0 models")
    _catalog()
    console.rule("Retrieval over the project's docs")
    passages = _retrieval(settings)
    console.rule(f"Grounded answer with {settings.model}")
    _answer(settings, passages)

