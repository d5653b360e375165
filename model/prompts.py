"""Prompt rendering through the checkpoint's own chat template, and FIM prompts.

Production code never re-implements Granite's format: chat prompts come from
``tokenizer.apply_chat_template`` with ``tools=`` and ``documents=`` passed natively. This
module also knows where message boundaries fall in rendered token ids (each message ends
with ``<|end_of_text|>`` and a newline), which state reuse uses as snapshot points.
``chat_token_ids`` is the one way a chat prompt becomes token ids: control-token strings
inside messages, tools and documents are encoded as plain text (model/control_tokens.py),
so only the template's own structure is control; ``fim_ids`` does the same for FIM prompts. Knows tokenizers and message dicts;
nothing of models or generation.
"""

from __future__ import annotations

from typing import Any, Sequence

from feldspar.model.control_tokens import guarded_chat_ids, plain_text_ids
from feldspar.model.errors import PromptError
from feldspar.model.text_checks import check_text

FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"
END_OF_TEXT = "<|end_of_text|>"

Message = dict[str, Any]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def validate_messages(messages: Sequence[Message]) -> None:
    if not messages:
        raise PromptError("no messages to render")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise PromptError(f"message {i} has no 'role'")
        if message["role"] not in ("system", "user", "assistant", "tool"):
            raise PromptError(f"message {i} has unknown role {message['role']!r}")


def render_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    documents: Sequence[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """The exact prompt text the checkpoint's template produces."""
    if not has_chat_template(tokenizer):
        raise PromptError(
            "this checkpoint has no chat template (a -base model): use plain completion "
            "or fill-in-the-middle instead of chat", fix="base_model")
    validate_messages(messages)
    try:
        return tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            documents=list(documents) if documents else None,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    except Exception as exc:  # jinja errors come in many classes
        raise PromptError(f"the chat template could not render these messages: {exc}") from None


def chat_token_ids(
    tokenizer: Any,
    messages: Sequence[Message],
    tools: Sequence[dict[str, Any]] | None = None,
    documents: Sequence[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """The exact ids the model sees for a chat: ``render_chat`` text, with untrusted text neutralised.

    Decoding the ids gives back ``render_chat``'s text; only the ids of control-token strings
    that came from the data differ from a plain ``encode`` (they are ordinary text ids).
    """
    for param, value in (("messages", messages), ("tools", tools), ("documents", documents)):
        check_text(list(value) if value else None, param)
    return guarded_chat_ids(tokenizer, render_chat, messages, tools, documents, add_generation_prompt)


def fim_prompt(prefix: str, suffix: str) -> str:
    """Fill-in-the-middle prompt: the model generates the text between prefix and suffix."""
    return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}"


def fim_ids(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """The ids of ``fim_prompt(prefix, suffix)`` with the code kept as text.

    The three FIM tokens are spliced in by id; control strings inside ``prefix`` or ``suffix``
    (code that mentions ``<|fim_middle|>`` or ``<|end_of_text|>``) are ordinary text ids.
    """
    check_fim_support(tokenizer)
    check_text(prefix, "prompt")
    check_text(suffix, "suffix")
    vocab = tokenizer.get_vocab()
    return ([vocab[FIM_PREFIX]] + plain_text_ids(tokenizer, prefix) + [vocab[FIM_SUFFIX]]
            + plain_text_ids(tokenizer, suffix) + [vocab[FIM_MIDDLE]])


def check_fim_support(tokenizer: Any) -> None:
    vocab = tokenizer.get_vocab()
    missing = [t for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE) if t not in vocab]
    if missing:
        raise PromptError(f"this tokenizer has no fill-in-the-middle tokens ({', '.join(missing)})")


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` exactly as written: no BOS or other tokens added."""
    check_text(text, "prompt")
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def message_boundaries(ids: Sequence[int], end_of_text_id: int, newline_ids: frozenset[int]) -> list[int]:
    """Positions just after each ``<|end_of_text|>`` (and its trailing newline token)."""
    cuts = []
    for i, token in enumerate(ids):
        if token == end_of_text_id:
            cut = i + 1
            if cut < len(ids) and ids[cut] in newline_ids:
                cut += 1
            cuts.append(cut)
    return cuts
