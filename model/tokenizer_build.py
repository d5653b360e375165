"""Build a Granite-4.0-shaped tokenizer locally, with no download.

The real Granite 4.0 tokenizer is a byte-level BPE derived from cl100k_base: regular ids
0..100255, then 28 added tokens at 100256..100283 (shared/granite-models.md). This module
trains a small byte-level BPE on a built-in English/code corpus, pads the regular vocabulary
with unreachable filler entries up to the wanted size, then adds the 28 tokens in Granite's
order with Granite's "special" flags. ``size="full"`` reproduces the real ids exactly;
``size="tiny"`` has ``TINY_REGULAR_SIZE`` regular ids and the same added tokens after them.

What it does not know: the real merges. Token boundaries differ from the real tokenizer, so
token counts of real text are only roughly comparable; any UTF-8 text still round-trips
exactly because every byte is in the base alphabet. The chat template is package data
(model/templates/granite_chat.jinja) and reproduces shared/granite-format.md.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import TYPE_CHECKING

from feldspar.model.control_tokens import GRANITE_CONTROL_STRINGS
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FULL_REGULAR_SIZE = 100256
TINY_REGULAR_SIZE = 1024
TRAIN_VOCAB_SIZE = 1024  # merges learnt from the corpus; the rest of a full vocab is filler
FILLER_FORMAT = "<|feldspar_filler_{:06d}|>"
TEMPLATE_FILE = "granite_chat.jinja"

BOS_TOKEN = EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"

# Added tokens in id order (granite-models.md). Tool-call/response and FIM tokens are added
# but not "special", so decode(skip_special_tokens=True) keeps them for tool-call parsers.
_NOT_SPECIAL = {
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
}
ADDED_TOKEN_NAMES = GRANITE_CONTROL_STRINGS
ADDED_TOKENS: tuple[tuple[str, bool], ...] = tuple((t, t not in _NOT_SPECIAL) for t in ADDED_TOKEN_NAMES)

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A hybrid language model mixes state space layers
with attention layers, so most of its memory is a fixed-size state instead of a growing cache.
You are a helpful assistant. Please ensure responses are professional, accurate, and safe.
Answer the question using only the documents below. If the answer is not in the documents,
say that the question cannot be answered from the available data. Cite the document title.
The weather today is sunny with a light breeze from the west, and the temperature will reach
twenty degrees in the afternoon. Tomorrow there will be rain in the morning and clouds later.
Retrieval finds the passages that are most similar to the question, then the model writes an
answer grounded in those passages. Each chunk keeps its source, its page and its position.
The user asked for a summary of the report. The report describes revenue, costs and growth
for the first quarter of the year, compared with the same quarter of the previous year.
Please call the function with the right arguments and return the result to the user.
def fibonacci(n: int) -> int:
    \"\"\"Return the n-th Fibonacci number.\"\"\"
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Stack:
    def __init__(self) -> None:
        self.items: list[int] = []

    def push(self, item: int) -> None:
        self.items.append(item)

    def pop(self) -> int:
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()


import json
from pathlib import Path

def load_config(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)

for i in range(10):
    print(f"value {i}: {i * i}")
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"type": "function", "function": {"name": "search", "description": "Search the web",
"parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}
SELECT name, count(*) FROM users WHERE active = 1 GROUP BY name ORDER BY name;
<html><body><p>Hello, world!</p></body></html>
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2024 2025 3.14159 42 -7 1e-5.
Café, naïve, résumé, Straße, Ελληνικά, русский, 日本語, 中文, 한국어, हिन्दी, emoji 🙂🚀.
"""


def _train_base(train_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=train_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    lines = _CORPUS.splitlines(keepends=True)
    tokenizer.train_from_iterator(lines * 4, trainer=trainer)
    return tokenizer


def _padded_bpe(base: Tokenizer, regular_size: int) -> Tokenizer:
    """Copy ``base`` with filler entries appended so the regular ids are exactly 0..size-1."""
    state = json.loads(base.to_str())
    vocab: dict[str, int] = dict(state["model"]["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["model"]["merges"]]
    if len(vocab) > regular_size:
        raise ValueError(f"trained vocabulary ({len(vocab)}) is larger than {regular_size}")
    for filler in range(len(vocab), regular_size):
        vocab[FILLER_FORMAT.format(filler)] = filler
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _add_granite_tokens(tokenizer: Tokenizer, first_id: int) -> None:
    for offset, (content, special) in enumerate(ADDED_TOKENS):
        token = AddedToken(content, special=special, normalized=False, lstrip=False, rstrip=False)
        if special:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        if tokenizer.token_to_id(content) != first_id + offset:
            raise RuntimeError(f"added token {content} did not land at id {first_id + offset}")


def regular_size(size: str) -> int:
    """Number of regular (BPE) ids of a tokenizer size: "full" or "tiny"."""
    sizes = {"full": FULL_REGULAR_SIZE, "tiny": TINY_REGULAR_SIZE}
    if size not in sizes:
        raise ValueError(f"unknown tokenizer size {size!r}: use 'full' or 'tiny'")
    return sizes[size]


def default_chat_template() -> str:
    """The bundled Granite 4.0 chat template (Jinja source)."""
    return resources.files("feldspar.model").joinpath("templates", TEMPLATE_FILE).read_text(encoding="utf-8")


def build_raw_tokenizer(size: str = "tiny") -> Tokenizer:
    """The `tokenizers` object: byte-level BPE plus Granite's 28 added tokens."""
    n_regular = regular_size(size)
    tokenizer = _padded_bpe(_train_base(min(TRAIN_VOCAB_SIZE, n_regular)), n_regular)
    _add_granite_tokens(tokenizer, n_regular)
    return tokenizer


def build_tokenizer(
    size: str = "tiny",
    chat_template: str | None = None,
    with_chat_template: bool = True,
    model_max_length: int = 131072,
) -> PreTrainedTokenizerFast:
    """A transformers fast tokenizer shaped like Granite 4.0's.

    ``chat_template`` None means the bundled Granite template; ``with_chat_template=False``
    leaves the template out (base models have none). No BOS is prepended.
    """
    from transformers import PreTrainedTokenizerFast

    template = (chat_template if chat_template is not None else default_chat_template()) if with_chat_template else None
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_raw_tokenizer(size),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        padding_side="left",
    )
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer
