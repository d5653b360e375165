"""The `feldspar serve` app assembled from Settings: the served models and the OpenAI-compatible routes.

``build_server(settings, ...)`` asks the composition root (feldspar.compose) for the engines,
backends and agents and wraps them as ``ServedModel``/``AgentModel`` for ``create_app``.
"""

from __future__ import annotations

from feldspar.compose import build_agent, build_engine, build_remote_backend, build_remote_chat_model, remote_target
from feldspar.model.chat_backend import LocalChatBackend
from feldspar.serve.endpoints import create_app
from feldspar.serve.models import AgentModel, ServedModel
from feldspar.settings import Settings


def build_server(settings: Settings, models: list[str] | None = None, *, agent: bool = True, pack: str | None = None,
                 queue: int | None = None, extra_models: list | None = None):
    """The `feldspar serve` app: each model (default ``settings.model``) on its own engine, the
    ``feldspar-agent`` model over the first one (collection ``settings.collection`` or ``pack``
    by default), plus ``extra_models`` (already built ServedModel/AgentModel objects)."""
    remote = not models and remote_target(settings) is not None  # a proxy: Granite runs on another server
    if remote:
        backend = build_remote_backend(settings)
        served: list = [ServedModel(backend.name, backend, None, default_max_tokens=settings.max_new_tokens)]
    else:
        engines = [build_engine(settings, name) for name in models or [settings.model]]
        served = [ServedModel(engine.name, LocalChatBackend(engine), engine, default_max_tokens=settings.max_new_tokens)
                  for engine in engines]
    if agent:
        first = served[0]
        approve = "always" if settings.approve == "always" else "never"  # nobody to ask over HTTP

        def build(collection: str | None, pack_name: str | None):
            chosen = settings.model_copy(update={"collection": collection}) if collection else settings
            if remote:
                return build_agent(chosen, chat_model=build_remote_chat_model(chosen), pack=pack_name, approve=approve)
            return build_agent(chosen, first.engine, pack=pack_name, approve=approve)

        served.append(AgentModel(build, first.backend, settings.collection, pack, lane_key=first.engine))
    served += list(extra_models or [])
    return create_app(served, api_key=settings.api_key, queue=settings.serve_queue if queue is None else queue,
                      max_body=settings.serve_max_body_bytes)
