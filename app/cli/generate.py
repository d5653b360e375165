"""CLI commands that talk to the Granite engine: generate and prompt (chat: app/cli/chat.py).

Turns flags into Settings and GenerationParams, streams deltas to the terminal and prints
reuse statistics with --verbose or as JSON with --json. Output from a random-weight
checkpoint is labelled in every mode. Knows nothing about how the engine works inside.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from feldspar.settings import Device, Dtype, Quant
from feldspar.inputs import documents_from_files, read_json_list, read_text_file
from feldspar.cli.root import (
    RANDOM_LABEL, HomeOpt, JsonOpt, ModelOpt, app, console, err_console, in_range, print_json, settings_from,
    usage_error,
)
from feldspar.cli.output import quiet_libraries
from feldspar.cli.structure import ChoiceOpt, RegexOpt, SchemaOpt, structure_from_flags
from feldspar.cli.progress import prefill_progress
from feldspar.compose import build_runtime, refuse_remote

MaxNewOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", "-n", min=1, help="tokens to generate")]
TempOpt = Annotated[Optional[float], typer.Option("--temperature", "-t", min=0.0, help="0 = greedy")]
TopPOpt = Annotated[Optional[float], typer.Option("--top-p", callback=in_range(0.0, 1.0, low_open=True),
                                                  help="nucleus sampling, 0 < p <= 1")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="print token counts, reuse, timings and library logs")]
NoReuseOpt = Annotated[bool, typer.Option("--no-reuse", help="compute the whole prompt (no state reuse)")]
SystemOpt = Annotated[Optional[str], typer.Option("--system", help="system prompt")]
ToolsOpt = Annotated[Optional[Path], typer.Option("--tools", help="JSON file: list of OpenAI function schemas")]
DocsOpt = Annotated[Optional[Path], typer.Option("--documents", help="JSON file: list of documents (dicts)")]
DocFilesOpt = Annotated[Optional[list[Path]], typer.Option("--doc", help="text file to pass as a document (repeatable)")]
DeviceOpt = Annotated[Optional[Device], typer.Option("--device", help="where the model runs")]
DtypeOpt = Annotated[Optional[Dtype], typer.Option("--dtype", help="weight dtype")]
QuantOpt = Annotated[Optional[Quant], typer.Option("--quant", help="weight quantisation (auto: int8 on CPUs with VNNI or AVX2)")]
CompileOpt = Annotated[Optional[bool], typer.Option("--compile/--no-compile",
                                                    help="torch.compile the decode step and the prefill scan (eager "
                                                         "if it fails; default: setting compile, auto = the step "
                                                         "only, on CPU with a C++ compiler)")]


def _params(settings, max_new_tokens, temperature, top_p, seed, no_reuse):
    from feldspar.model.engine import GenerationParams

    return GenerationParams(
        max_new_tokens=settings.max_new_tokens if max_new_tokens is None else max_new_tokens,
        temperature=settings.temperature if temperature is None else temperature,
        top_p=settings.top_p if top_p is None else top_p,
        seed=settings.seed if seed is None else seed,
        reuse=False if no_reuse else None,
    )


def _documents(documents: Path | None, doc_files: list[Path] | None) -> list[dict[str, Any]] | None:
    docs = (read_json_list(documents, "documents") or []) + documents_from_files(doc_files or [])
    return docs or None


def _messages(text: str, system: str | None) -> list[dict[str, Any]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]


def print_stats(result, random_weights: bool = False) -> None:
    err_console.print(
        ("[bold yellow]RANDOM WEIGHTS[/bold yellow] · " if random_weights else "")
        + f"[dim]{'~' if getattr(result, 'estimated', False) else ''}prompt {result.prompt_tokens} tok"
        f"{' (estimated: the server sent no usage)' if getattr(result, 'estimated', False) else ''} (reused {result.reused_tokens}, computed {result.computed_tokens}) · "
        f"{result.completion_tokens} new tok · finish {result.finish_reason} · restore {result.restore_s * 1000:.1f} ms · "
        f"prefill {result.prefill_s:.2f} s ({result.prefill_tokens_per_s:.0f} tok/s) · "
        f"TTFT {result.ttft_s:.2f} s · decode {result.decode_tokens_per_s:.1f} tok/s[/dim]"
    )


def label_random(engine, show: bool = True) -> bool:
    """Print the random-weights marker (stdout, before the text) when ``engine`` has random weights."""
    if show and engine.random_weights:
        console.print(RANDOM_LABEL, style="bold yellow", markup=False, highlight=False)
    return engine.random_weights


def stream_to_terminal(stream, show: bool = True):
    for delta in stream:
        if show:
            console.out(delta, end="", highlight=False)
    if show:
        console.out("")
    return stream.result


def _prompt_text(text: Optional[str], file: Optional[Path]) -> str:
    if file is not None and text is not None:
        raise usage_error("give the prompt as an argument or with --file, not both")
    if file is not None:
        return read_text_file(file, "prompt")
    if text is None:
        raise usage_error("give the prompt as an argument or with --file")
    return text


@app.command()
def generate(
    text: Annotated[Optional[str], typer.Argument(help="prompt text")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="read the prompt from a UTF-8 file")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="plain completion even for a chat model")] = False,
    fim_prefix: Annotated[Optional[str], typer.Option("--fim-prefix", help="fill-in-the-middle: text before")] = None,
    fim_suffix: Annotated[Optional[str], typer.Option("--fim-suffix", help="fill-in-the-middle: text after")] = None,
    fim_prefix_file: Annotated[Optional[Path], typer.Option("--fim-prefix-file")] = None,
    fim_suffix_file: Annotated[Optional[Path], typer.Option("--fim-suffix-file")] = None,
    system: SystemOpt = None, tools: ToolsOpt = None, documents: DocsOpt = None, doc: DocFilesOpt = None,
    model: ModelOpt = None, max_new_tokens: MaxNewOpt = None, temperature: TempOpt = None, top_p: TopPOpt = None,
    seed: SeedOpt = None, no_reuse: NoReuseOpt = False, verbose: VerboseOpt = False, json_out: JsonOpt = False,
    device: DeviceOpt = None, dtype: DtypeOpt = None, quant: QuantOpt = None, compile: CompileOpt = None,
    home: HomeOpt = None,
    json_schema: SchemaOpt = None, regex: RegexOpt = None, choice: ChoiceOpt = None,
) -> None:
    """One-shot generation: a chat turn (instruct models), plain completion (--raw, base models) or FIM.

    --json-schema / --regex / --choice constrain decoding: the output has that structure."""
    quiet_libraries(verbose)
    settings = settings_from(home=home, model=model, device=device, dtype=dtype, quant=quant, compile=compile)
    fim, prefix, suffix = _fim_parts(fim_prefix, fim_suffix, fim_prefix_file, fim_suffix_file,
                                     given_prompt=text is not None or file is not None)
    prompt = None if fim else _prompt_text(text, file)
    tool_list, docs = read_json_list(tools, "tools"), _documents(documents, doc)
    structure = structure_from_flags(json_schema, regex, choice)
    engine = build_runtime(settings).generator()
    params = replace(_params(settings, max_new_tokens, temperature, top_p, seed, no_reuse), structure=structure)
    random_weights = label_random(engine, show=not json_out)
    with prefill_progress(not json_out) as progress:
        if fim:
            stream = engine.fill_in_middle(prefix, suffix, params, progress)
        elif raw or not engine.is_chat:
            stream = engine.complete(prompt, params, progress)
        else:
            stream = engine.chat(_messages(prompt, system), tool_list, docs, params, progress)
        result = stream_to_terminal(stream, show=not json_out)
    _print_generated(result, engine.name, tool_list, random_weights, json_out, verbose)


def _print_generated(result, model: str, tool_list, random_weights: bool, json_out: bool, verbose: bool) -> None:
    """--json: the result with its tool calls; --verbose: the statistics line (the text is streamed already)."""
    if json_out:
        turn = result.tool_turn(tool_list)
        print_json({**result.to_dict(), "model": model, "random_weights": random_weights,
                    "tool_calls": [c.to_openai() for c in turn.calls],
                    "tool_call_errors": [e.message for e in turn.errors], "tool_call_repairs": turn.repairs})
    elif verbose:
        print_stats(result, random_weights)


def _fim_parts(fim_prefix: str | None, fim_suffix: str | None, fim_prefix_file: Path | None,
               fim_suffix_file: Path | None, given_prompt: bool) -> tuple[bool, str, str]:
    """(fill-in-the-middle?, prefix, suffix) from the --fim-* flags; mixing them with a prompt is refused."""
    fim = any(x is not None for x in (fim_prefix, fim_suffix, fim_prefix_file, fim_suffix_file))
    if fim and given_prompt:
        raise usage_error("fill-in-the-middle takes --fim-prefix/--fim-suffix, not a prompt argument or --file")
    for given, from_file, flag in ((fim_prefix, fim_prefix_file, "--fim-prefix"), (fim_suffix, fim_suffix_file, "--fim-suffix")):
        if given is not None and from_file is not None:
            raise usage_error(f"give {flag} or {flag}-file, not both")
    prefix = read_text_file(fim_prefix_file, "FIM prefix") if fim_prefix_file else (fim_prefix or "")
    suffix = read_text_file(fim_suffix_file, "FIM suffix") if fim_suffix_file else (fim_suffix or "")
    return fim, prefix, suffix


@app.command()
def prompt(
    text: Annotated[Optional[str], typer.Argument(help="user message")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="read the user message from a file")] = None,
    messages: Annotated[Optional[Path], typer.Option("--messages", help="JSON file: full message list")] = None,
    system: SystemOpt = None, tools: ToolsOpt = None, documents: DocsOpt = None, doc: DocFilesOpt = None,
    raw: Annotated[bool, typer.Option("--raw", help="no chat template: the text as given")] = False,
    model: ModelOpt = None, json_out: JsonOpt = False, home: HomeOpt = None,
) -> None:
    """Print the exact prompt the model would see, and its token count (--json: also its token ids)."""
    from feldspar.model.loader import load_tokenizer, resolve
    from feldspar.model.prompts import chat_token_ids, encode, render_chat

    settings = settings_from(home=home, model=model)
    refuse_remote(settings.model)  # the exact prompt needs the checkpoint's own tokenizer here
    if messages is not None and (text is not None or file is not None or system is not None):
        raise usage_error("--messages holds the whole conversation: give it without a prompt, --file or --system")
    tokenizer = load_tokenizer(resolve(settings.model))
    if raw:
        rendered = _prompt_text(text, file)
        ids = encode(tokenizer, rendered)
    else:
        msgs = read_json_list(messages, "messages") if messages else _messages(_prompt_text(text, file), system)
        tool_list, docs = read_json_list(tools, "tools"), _documents(documents, doc)
        rendered = render_chat(tokenizer, msgs, tool_list, docs)
        ids = chat_token_ids(tokenizer, msgs, tool_list, docs)
    if json_out:
        print_json({"prompt": rendered, "tokens": len(ids), "token_ids": ids})
        return
    console.out(rendered, highlight=False)
    err_console.print(f"[dim]{len(ids)} tokens[/dim]")
