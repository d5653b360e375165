"""How one agent run behaves: retrieval policy, stop conditions, budgets, approval; and the choices
of the document summariser's mode (agents/summarize.py), so a command line can offer them cheaply.

Plain values only, built by app/compose.py from Settings (or by a script directly). The
graph reads them; nothing here knows models, stores or LangGraph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

Policy = Literal["always", "auto", "pack", "none"]
Approval = Literal["ask", "always", "never"]
POLICIES: tuple[str, ...] = get_args(Policy)
APPROVALS: tuple[str, ...] = get_args(Approval)
SummaryMode = Literal["auto", "map-reduce", "long-context"]
SUMMARY_MODES: tuple[str, ...] = get_args(SummaryMode)


@dataclass(frozen=True)
class AgentConfig:
    policy: Policy = "always"          # always: search before every answer; auto: the model decides
    k: int = 4                         # passages per search
    max_steps: int = 6                 # model turns per question
    max_tool_calls: int = 8            # tool calls per question
    max_new_tokens: int = 512
    summary_share: float = 0.5         # summarise older turns when the prompt passes this share of the window
    keep_last_turns: int = 2           # user turns kept verbatim when summarising
    approve: Approval = "ask"          # side-effecting tools: ask (interrupt), always, never
    system_prompt: str | None = None   # None: the built-in prompt (agents/prompts.py)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown retrieval policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if self.approve not in APPROVALS:
            raise ValueError(f"unknown approval mode {self.approve!r}; choose one of {', '.join(APPROVALS)}")
        if self.k < 1 or self.max_steps < 1 or self.max_tool_calls < 0 or self.max_new_tokens < 1:
            raise ValueError("k, max_steps and max_new_tokens must be at least 1, max_tool_calls at least 0")
        if not 0.05 <= self.summary_share <= 0.95:
            raise ValueError("summary_share must be between 0.05 and 0.95")
