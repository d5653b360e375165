"""The `feldspar serve` app assembled from Settings: the served models and the OpenAI-compatible routes.

``build_server(settings, ...)`` asks the composition root (feldspar.compose) for one Runtime
(app/runtime.py) per served model and wraps each as a ``ServedModel``, plus the ``AgentModel``
over the first one's agents, for ``create_app``. Whether a model runs here or on another
server is the runtime's (compose's) decision, not this module's.
"""

from __future__ import annotations

from feldspar.compose import build_runtime
from feldspar.serve.endpoints import create_app
from feldspar.serve.models import AgentModel, ServedModel, served_name
from feldspar.settings import Settings


def build_server(settings: Settings, models: list[str] | None = None, *, agent: bool = True, pack: str | None = None,
                 queue: int | None = None, extra_models: list | None = None, served_names: list[str] | None = None):
    """The `feldspar serve` app: each model (default ``settings.model``) on its own engine, the
    ``feldspar-agent`` model over the first one (collection ``settings.collection`` or ``pack``
    by default), plus ``extra_models`` (already built ServedModel/AgentModel objects). Models are
    served under ``served_names`` (in order), else ``served_name``: ids, /health and errors hold no paths."""
    runtimes = [build_runtime(settings, name) for name in models] if models else [build_runtime(settings)]
    chosen_ids = list(served_names or [])
    served: list = [served_model(runtime, chosen_ids[i] if i < len(chosen_ids) else None)
                    for i, runtime in enumerate(runtimes)]
    if agent:
        first = served[0]
        approve = "always" if settings.approve == "always" else "never"  # nobody to ask over HTTP
        agents = runtimes[0].agents(approve=approve).shared()
        served.append(AgentModel(agents, first.backend, settings.collection, pack, lane_key=first.lane_key))
    served += list(extra_models or [])
    return create_app(served, api_key=settings.api_key, queue=settings.serve_queue if queue is None else queue,
                      max_body=settings.serve_max_body_bytes)


def served_model(runtime, id_: str | None = None) -> ServedModel:
    """The runtime's chat model as a ServedModel (completions too when its engine runs here)."""
    backend = runtime.backend()  # loads the engine, or connects the remote server, now
    engine = runtime.local_engine()
    id_ = id_ or (served_name(engine) if engine is not None else backend.name)
    return ServedModel(id_, backend, engine, default_max_tokens=runtime.settings.max_new_tokens)
