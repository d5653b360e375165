"""Grammar-constrained decoding: mask each step's logits to what a ``Structure`` allows.

Contract: ``constraint_for(tokenizer, structure, vocab_size, budget)`` compiles the structure
with llguidance against the tokenizer (the llguidance view of a tokenizer is built once and
cached, ~0.5 s at Granite's 100K vocabulary) and returns a ``GrammarConstraint``. The decode
loop calls ``pick(logits, sampling)`` (``sample`` over the masked logits: tokens the grammar
forbids get -inf; once the grammar is complete only end-of-text is left, so generation ends
there; greedy skips the mask when the unmasked argmax is allowed) and ``advance(token)`` after,
which starts the next mask on a worker thread so it overlaps the model's forward
(FELDSPAR_GRAMMAR_OVERLAP=0 computes it in line; the tokens are the same either way). Special tokens never appear inside JSON or regex text (llguidance matches them only
where a grammar names them, e.g. ``<tool_call>``). Only decoded tokens are constrained, so a
reused prompt state is untouched. Budget: in the last quarter of ``budget`` tokens, allowed
tokens that close a string/array/object or end the text are preferred when there are any
(still the model's pick among them), so a structure completes within max_tokens wherever it
can; where it cannot, generation stops at the limit (finish reason "length"), nothing added.
Knows tokenizers, grammars and logits; nothing of prompts, HTTP or the CLI.
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feldspar.model.structure import Structure, StructureError, locate, shortest_text

_lock = threading.Lock()
_tokenizers: "weakref.WeakKeyDictionary[Any, dict[int, Any]]" = weakref.WeakKeyDictionary()
_pool: ThreadPoolExecutor | None = None


def _llg():
    import llguidance

    return llguidance


def ll_tokenizer(tokenizer: Any, vocab_size: int):
    """The llguidance tokenizer for a transformers fast tokenizer (cached per vocab size)."""
    with _lock:
        per_size = _tokenizers.setdefault(tokenizer, {})
        if vocab_size not in per_size:
            import llguidance.hf

            per_size[vocab_size] = (llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size),
                                    _vocabulary(tokenizer, vocab_size))
        return per_size[vocab_size]


@dataclass(frozen=True)
class Vocabulary:
    """What the budget rule needs of each token: its text and the first-character classes."""

    texts: tuple[str, ...]
    quote_first: torch.Tensor  # boolean [vocab]: text starts with '"'
    close_first: torch.Tensor  # '}' or ']'
    comma_first: torch.Tensor
    end: torch.Tensor  # end of text


def _vocabulary(tokenizer: Any, vocab_size: int) -> Vocabulary:
    known = min(vocab_size, len(tokenizer))
    texts = list(tokenizer.batch_decode([[i] for i in range(known)])) + [""] * (vocab_size - known)

    def first(chars: str) -> torch.Tensor:
        return torch.tensor([bool(t) and t[0] in chars for t in texts], dtype=torch.bool)

    end = torch.zeros(vocab_size, dtype=torch.bool)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id < vocab_size:
        end[tokenizer.eos_token_id] = True
    return Vocabulary(tuple(texts), first('"'), first("}]"), first(","), end)


class JsonDepth:
    """Where emitted JSON text stands: inside a string or not, and how many brackets are open."""

    def __init__(self) -> None:
        self.in_string = self.escaped = False
        self.open = 0

    def push(self, text: str) -> None:
        for char in text:
            if self.in_string:
                escaping = not self.escaped and char == "\\"
                self.in_string = self.escaped or escaping or char != '"'
                self.escaped = escaping
            elif char == '"':
                self.in_string = True
            elif char in "{[":
                self.open += 1
            elif char in "}]":
                self.open = max(0, self.open - 1)


def _error(grammar: str, lltok: Any) -> str:
    return _llg().LLMatcher.validate_grammar(grammar, lltok)


def check_compiles(structure: Structure, tokenizer: Any, vocab_size: int) -> str:
    """The grammar text of ``structure``; raises ``StructureError`` naming what cannot compile."""
    lltok, _ = ll_tokenizer(tokenizer, vocab_size)
    grammar = bind(tokenizer, structure).grammar()
    message = _error(grammar, lltok)
    if not message:
        return grammar
    schema = structure.schema()
    if schema is None:
        raise StructureError(_first_line(message))
    where = locate(schema, lambda sub: bool(_error(Structure.json_schema(sub).grammar(), lltok)))
    part = schema if where == "/" else _at(schema, where)
    raise StructureError(_first_line(_error(Structure.json_schema(part).grammar(), lltok) or message), where)


def _at(schema: dict[str, Any], pointer: str) -> Any:
    node: Any = schema
    for raw in pointer.strip("/").split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("error:")), "")
    return (lines[0] + (f" ({detail})" if detail and detail != lines[0] else "")) if lines else "cannot compile"


def _cpu_values(logits: torch.Tensor) -> np.ndarray | None:
    """The logits as a numpy view (no copy) where they are fp32/fp64 on the CPU, else None."""
    if logits.device.type == "cpu" and logits.dtype in (torch.float32, torch.float64):
        return logits.detach().numpy()
    return None


def overlap_enabled() -> bool:
    """Next mask on a worker thread during the forward, unless FELDSPAR_GRAMMAR_OVERLAP=0."""
    return os.environ.get("FELDSPAR_GRAMMAR_OVERLAP", "1").strip() != "0"


def _workers() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feldspar-grammar")
        return _pool


class GrammarConstraint:
    """One generation's grammar state: ``pick(logits, sampling)`` (or ``mask``), then ``advance(id)``.

    The mask for the next step is computed into a reused bitmask: with overlap, ``advance``
    starts it on a worker thread (llguidance drops the GIL) so it runs during the model's
    forward, and the next ``pick``/``mask`` waits for it; every other use of the matcher waits
    first too, so the matcher is never touched by two threads at once.
    """

    def __init__(self, matcher: Any, vocabulary: Vocabulary, vocab_size: int, budget: int,
                 json_text: bool = True, needed: int = 0, overlap: bool | None = None) -> None:
        self.matcher = matcher
        self.json_text = json_text
        self.vocabulary = vocabulary
        self.vocab_size = vocab_size
        self.budget = budget
        self.steps = 0
        self.reserve = max(8, budget // 4, needed + 8)
        self.depth = JsonDepth()
        self.overlap = overlap_enabled() if overlap is None else overlap
        self._bitmask = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        self._words = self._bitmask.view(np.uint32)
        self._fresh = False  # the bitmask is the mask of the matcher's current state
        self._pending: Future | None = None

    def _compute(self) -> None:
        self.matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)

    def _settle(self) -> None:
        """Wait for a mask being computed on the worker (its errors raise here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
            self._fresh = True

    def _bits(self) -> np.ndarray:
        self._settle()
        if not self._fresh:
            self._compute()
            self._fresh = True
        return self._words

    def compute(self) -> None:
        """The mask of the current state, now (otherwise computed on first use, or by ``advance``)."""
        self._bits()

    @property
    def complete(self) -> bool:
        self._settle()
        return self.matcher.is_accepting()

    def allowed(self) -> np.ndarray:
        """Boolean [vocab]: the tokens the grammar allows next."""
        return np.unpackbits(self._bits().view(np.uint8), bitorder="little")[: self.vocab_size].view(np.bool_)

    def allows(self, token_id: int) -> bool:
        return 0 <= token_id < self.vocab_size and bool((self._bits()[token_id >> 5] >> (token_id & 31)) & 1)

    @property
    def short(self) -> bool:
        """In the last ``reserve`` tokens of the budget (the closing preference applies)."""
        return self.budget - self.steps <= self.reserve

    def _closing(self, allowed: np.ndarray) -> np.ndarray:
        """Allowed tokens that bring the structure nearest its end, when the budget runs short."""
        v = self.vocabulary
        if not self.json_text:
            tiers = [v.end]
        elif self.depth.in_string:
            tiers = [v.end, v.quote_first]
        else:
            tiers = [v.end, v.close_first, v.comma_first]
        for tier in tiers:
            preferred = allowed & tier.numpy()
            if preferred.any():
                return preferred
        return allowed

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """A copy of ``logits`` with every token the grammar forbids at -inf.

        On CPU in numpy, one single-threaded pass: torch would split a 100K-element op across
        its intra-op threads, which costs far more than the op when the cores are busy."""
        allowed = self.allowed()
        if self.short:
            allowed = self._closing(allowed)
        values = _cpu_values(logits)
        if values is not None:
            return torch.from_numpy(np.where(allowed, values, values.dtype.type(-np.inf)))
        return logits.masked_fill(~torch.from_numpy(allowed).to(logits.device), float("-inf"))

    def pick(self, logits: torch.Tensor, sampling: Any, generator: torch.Generator | None = None) -> int:
        """The token ``sample`` picks from the masked logits. Greedy: the unmasked argmax when the
        grammar allows it (the masked argmax is then the same token), so no mask is applied."""
        from feldspar.model.generation import greedy, sample

        if sampling.temperature <= 0 and not self.short:
            token = greedy(logits)
            if self.allows(token):
                return token
        return sample(self.mask(logits), sampling, generator)

    def advance(self, token_id: int) -> None:
        self._settle()
        self.steps += 1
        self._fresh = False
        if not self.matcher.consume_token(token_id):
            raise StructureError(f"the grammar rejected token {token_id}: {self.matcher.get_error()}")
        if token_id < len(self.vocabulary.texts):
            self.depth.push(self.vocabulary.texts[token_id])
        if self.overlap and not self.matcher.is_stopped():
            self._pending = _workers().submit(self._compute)


def constraint_for(tokenizer: Any, structure: Structure, vocab_size: int, budget: int,
                   overlap: bool | None = None) -> GrammarConstraint:
    structure = bind(tokenizer, structure)
    grammar = check_compiles(structure, tokenizer, vocab_size)
    lltok, vocabulary = ll_tokenizer(tokenizer, vocab_size)
    matcher = _llg().LLMatcher(lltok, grammar, log_level=0)
    if matcher.is_error():
        raise StructureError(_first_line(matcher.get_error()))
    return GrammarConstraint(matcher, vocabulary, vocab_size, budget, structure.kind not in ("regex", "choice"),
                             shortest_text(structure), overlap)


def tool_structure(tokenizer: Any, tools: list[dict[str, Any]], names: list[str] | None,
                   parallel: bool) -> Structure:
    """Forced Granite tool calls bound to this tokenizer's ``<tool_call>`` token ids."""
    return bind(tokenizer, Structure.tool_calls(tools, names, parallel))


def bind(tokenizer: Any, structure: Structure) -> Structure:
    from feldspar.model.toolcalls import CLOSE, OPEN

    return structure.with_token_ids(tokenizer.convert_tokens_to_ids(OPEN), tokenizer.convert_tokens_to_ids(CLOSE))
