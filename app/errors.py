"""Which exceptions are user errors (one clear line, non-zero exit) and how to word them.

Each layer defines its own error base so no layer imports the app; this module collects
them for the CLI, UI and server, and turns a lower layer's remedy key (``exc.fix``) into
the words a Feldspar user acts on. ``REMEDIES`` words them for a terminal (flags, commands,
settings and environment variables: the CLI and the server it starts); another front end passes
its own table to ``user_message`` (the web app's names its buttons and fields). The lower
layers' messages state the fact only and never name a flag.
"""

from __future__ import annotations

REMEDIES = {
    "overwrite": "pass --force to overwrite it",
    "allow_large": "pass --allow-large to write it",
    "use_cpu": "use --device cpu (or FELDSPAR_DEVICE=cpu)",
    "catalog": "run `feldspar models` for the catalog",
    "base_model": "`feldspar generate --raw` or --fim-prefix/--fim-suffix work with base models",
    "get_checkpoint": (
        "Fixes: pass a local checkpoint directory (--model /path/to/{name}); or, on a machine with network, "
        "run `hf download {hub_id}` to fill the cache, then use it here with HF_HUB_OFFLINE=1; "
        "or connect to the network and unset HF_HUB_OFFLINE"
    ),
    "list_packs": "see `feldspar pack list`",
    "list_threads": "see `feldspar threads list`",
    "remove_pack": "remove it with `feldspar pack rm {name}`",
    "recreate_pack": "re-create it with `feldspar pack create {name} … --force`",
    "replace_pack": "pick another name, pass --force, or run `feldspar pack rm {name}`",
    "pack_dtype": "pass --dtype {dtype} or re-create the pack",
    "pack_quant": "pass --quant {quant} (FELDSPAR_QUANT) or re-create the pack",
    "pack_model": "run `feldspar ask --model {model_source}` or re-create the pack with this model",
    "cache_budget": "raise cache_budget_bytes (FELDSPAR_CACHE_BUDGET_BYTES or config.toml)",
    "embedding_mismatch": ("use --embedding-model {indexed_with!r}, or re-index with "
                           "`feldspar ingest PATH --collection {collection} --reindex`"),
    "embedding_precision": ("set embed_precision to {indexed_with!r} or \"auto\" (FELDSPAR_EMBED_PRECISION or "
                            "config.toml), or re-index with `feldspar ingest PATH --collection {collection} --reindex`"),
    "embed_fp32": "set embed_precision = \"fp32\" (FELDSPAR_EMBED_PRECISION=fp32 or config.toml)",
    "scale_out": "or, for several writers, run a Chroma server and set chroma_host (FELDSPAR_CHROMA_HOST)",
    "rebuild_store": ("rebuild it from the manifest and your files with `feldspar rebuild-store` "
                      "(the damaged store is moved aside, not deleted)"),
    "ingest_first": "ingest something first (`feldspar ingest PATH --collection {collection}`)",
    "cache_budget_or_no_reuse": "raise cache_budget_bytes (FELDSPAR_CACHE_BUDGET_BYTES) or turn reuse off (--no-reuse)",
    "remote_unreachable": ("start the server or fix the address in --model openai:<base-url>#<model> "
                           "(FELDSPAR_MODEL, or remote_url); docs/remote.md has the commands"),
    "remote_timeout": "raise remote_timeout_s (FELDSPAR_REMOTE_TIMEOUT_S) or check the server's load",
    "remote_api_key": "set the server's key in FELDSPAR_API_KEY (or OPENAI_API_KEY, or remote_api_key in config.toml)",
    "remote_model": "pick one of them: --model openai:{url}#<model> (or remote_model)",
    "remote_url": "check the base URL in --model openai:<base-url>#<model>: it usually ends with /v1",
    "remote_tools": ("start it with tool calling on (vLLM: --enable-auto-tool-choice --tool-call-parser hermes; "
                     "llama-server: --jinja), or ask without tools (--policy always, no --tools)"),
    "remote_status": "see the server's log; docs/remote.md lists the setups Feldspar is tested with",
    "postgres_url": ("start the PostgreSQL server or fix postgres_url (FELDSPAR_POSTGRES_URL or config.toml); "
                     "unset it to keep threads in threads.sqlite"),
    "summary_tokens": "lower --max-new-tokens or use a model with a larger context window",
    "map_reduce": "use --mode map-reduce (or auto)",
    "output_path": "choose another output file (--out)",
    "home": "pass --home DIR or set FELDSPAR_HOME to a writable directory",
    "remote_overflow": ("use fewer --workers, a shorter question or max-new-tokens, or restart the server "
                        "with a bigger -c (or fewer --parallel slots)"),
}


def user_error_types() -> tuple[type[BaseException], ...]:
    from feldspar.agents.errors import AgentError
    from feldspar.model.errors import ModelError
    from feldspar.retrieval.errors import RetrievalError
    from feldspar.settings import SettingsError

    return (SettingsError, ModelError, RetrievalError, AgentError)


def user_message(exc: BaseException, remedies: dict[str, str] | None = None) -> str:
    """The error's own message plus its remedy (from ``remedies``, default the terminal's
    ``REMEDIES``), on one line. A fix the table does not word adds nothing."""
    table = REMEDIES if remedies is None else remedies
    message = str(exc)
    fix = getattr(exc, "fix", None)
    if fix in table:
        message = f"{message}; {table[fix].format(**getattr(exc, 'details', {}))}"
    return message
