"""The `feldspar serve` app assembled from Settings: the served models and the OpenAI-compatible routes.

``build_server(settings, ...)`` asks the composition root (feldspar.compose) for the engines,
backends and agents and wraps them as ``ServedModel``/``AgentModel`` for ``create_app``.
"""

from __future__ import annotations

from feldspar.agents.remote_backend import parse_model_spec
from feldspar.compose import build_agent, build_engine, build_remote_backend, build_remote_chat_model, remote_target
from feldspar.model.chat_backend import LocalChatBackend
from feldspar.serve.endpoints import create_app
from feldspar.serve.models import AgentModel, ServedModel, served_name
from feldspar.settings import Settings


def build_server(settings: Settings, models: list[str] | None = None, *, agent: bool = True, pack: str | None = None,
                 queue: int | None = None, extra_models: list | None = None, served_names: list[str] | None = None):
    """The `feldspar serve` app: each model (default ``settings.model``) on its own engine, the
    ``feldspar-agent`` model over the first one (collection ``settings.collection`` or ``pack``
    by default), plus ``extra_models`` (already built ServedModel/AgentModel objects). Models are
    served under ``served_names`` (in order), else ``served_name``: ids, /health and errors hold no paths."""
    names = models or [settings.model]
    targets = [parse_model_spec(name) for name in names]
    if not models and targets[0] is None:
        targets = [remote_target(settings)]
    chosen_ids = list(served_names or [])
    served: list = []
    for index, (name, target) in enumerate(zip(names, targets)):
        if target is not None:  # a proxy: Granite runs on another server
            backend = build_remote_backend(settings, target)
            id_ = chosen_ids[index] if index < len(chosen_ids) else backend.name
            served.append(ServedModel(id_, backend, None, default_max_tokens=settings.max_new_tokens))
        else:
            engine = build_engine(settings, name)
            id_ = chosen_ids[index] if index < len(chosen_ids) else served_name(engine)
            served.append(ServedModel(id_, LocalChatBackend(engine), engine, default_max_tokens=settings.max_new_tokens))
    remote = targets[0] is not None
    if agent:
        first = served[0]
        remote_settings = settings.model_copy(update={"model": names[0]}) if remote and models else settings
        approve = "always" if settings.approve == "always" else "never"  # nobody to ask over HTTP

        def build(collection: str | None, pack_name: str | None):
            chosen = remote_settings.model_copy(update={"collection": collection}) if collection else remote_settings
            if remote:
                return build_agent(chosen, chat_model=build_remote_chat_model(chosen), pack=pack_name, approve=approve)
            return build_agent(chosen, first.engine, pack=pack_name, approve=approve)

        served.append(AgentModel(build, first.backend, settings.collection, pack, lane_key=first.engine))
    served += list(extra_models or [])
    return create_app(served, api_key=settings.api_key, queue=settings.serve_queue if queue is None else queue,
                      max_body=settings.serve_max_body_bytes)
