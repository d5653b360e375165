"""Where the UI's pages find the application's services.

ui/ may not import the app (layers: app → ui), so the app's Streamlit entry
(app/webui/main.py) builds one services object from Settings through app/compose.py and
registers it here before any page runs; pages call ``services()``. This module knows
nothing of what the services are, only that one was registered for this process.
"""

from __future__ import annotations

from typing import Any

_SERVICES: dict[str, Any] = {}


class ServicesMissing(RuntimeError):
    """A page ran without the app's entry script registering its services first."""


def register_services(services: Any) -> None:
    _SERVICES["current"] = services


def services() -> Any:
    try:
        return _SERVICES["current"]
    except KeyError:
        raise ServicesMissing("the Feldspar UI pages run inside the app's entry script") from None
