"""The web app's words for a user error's fix: its pages, buttons and fields, never a CLI flag.

The lower layers' errors state the fact and carry a remedy key (``exc.fix``, with
``details``); app/errors.py words each key for a terminal. ``WEB_REMEDIES`` words the same
keys for a person in the browser, and ``web_message`` is ``user_message`` with them: the
one line every page, job and outcome of the web app shows. A fix the browser has no way
to do says what to change (a setting, the server's start) without command-line syntax.
"""

from __future__ import annotations

from feldspar.errors import user_message

_SETTING = "in config.toml (or its FELDSPAR_ environment variable) and restart the app"

WEB_REMEDIES = {
    "overwrite": "or empty it first",
    "allow_large": "writing one this large has to be allowed from the command line",
    "use_cpu": f"set device = \"cpu\" {_SETTING}",
    "catalog": "the Models page lists the catalog",
    "base_model": "a base model completes text rather than chats; choose an instruct model",
    "get_checkpoint": ("set model to a local checkpoint folder " + _SETTING + "; or, on a machine with network, "
                       "download {hub_id} into the Hugging Face cache first"),
    "list_packs": "the Packs page lists them",
    "list_threads": "the thread list in the sidebar shows them",
    "remove_pack": "delete it on the Packs page",
    "recreate_pack": "create it again on the Packs page with \"Replace a pack of that name\" ticked",
    "replace_pack": "pick another name, tick \"Replace a pack of that name\", or delete {name} on the Packs page",
    "pack_dtype": "set dtype = \"{dtype}\" " + _SETTING + ", or re-create the pack on the Packs page",
    "pack_quant": "set quant = \"{quant}\" " + _SETTING + ", or re-create the pack on the Packs page",
    "pack_model": "start the app with model {model_source}, or re-create the pack on the Packs page",
    "cache_budget": f"raise cache_budget_bytes {_SETTING}",
    "embedding_mismatch": ("set embedding_model to {indexed_with!r} " + _SETTING
                           + ", or re-index the collection {collection} with the configured model"),
    "embedding_precision": ("set embed_precision to {indexed_with!r} or \"auto\" " + _SETTING
                            + ", or re-index the collection {collection}"),
    "embed_fp32": f"set embed_precision = \"fp32\" {_SETTING}",
    "scale_out": "or, for several writers, run a Chroma server and set chroma_host " + _SETTING,
    "rebuild_store": ("the store has to be rebuilt from the manifest and your files (rebuild-store on the "
                      "command line; the damaged store is moved aside, not deleted)"),
    "ingest_first": "ingest a folder or upload files into {collection} on the Documents page first",
    "cache_budget_or_no_reuse": f"raise cache_budget_bytes {_SETTING}",
    "remote_unreachable": ("start the Granite server, or fix its address (the model setting, "
                           "openai:<base-url>#<model>) " + _SETTING + "; docs/remote.md has the commands"),
    "remote_timeout": f"raise remote_timeout_s {_SETTING}, or check the server's load",
    "remote_api_key": f"set the server's key as remote_api_key {_SETTING}",
    "remote_model": "set the model to one of them (openai:{url}#<model>) " + _SETTING,
    "remote_url": "check the server's base URL in the model setting: it usually ends with /v1",
    "remote_tools": ("start the server with tool calling on (docs/remote.md has the options), "
                     "or choose no tools for the chat"),
    "remote_status": "see the server's log; docs/remote.md lists the setups Feldspar is tested with",
    "postgres_url": f"start the PostgreSQL server or fix postgres_url {_SETTING}",
    "summary_tokens": "lower the answer length (max new tokens) or use a model with a larger context window",
    "map_reduce": "choose the map-reduce mode (or auto)",
    "output_path": "choose another output file",
    "home": "start the app with a writable data home (FELDSPAR_HOME)",
    "remote_overflow": ("ask a shorter question or lower max new tokens, or restart the server with a bigger "
                        "context window (or fewer parallel slots)"),
}


def web_message(exc: BaseException) -> str:
    """A user error's one line for the browser: its fact and, when known, the fix in the app's words."""
    return user_message(exc, WEB_REMEDIES)
