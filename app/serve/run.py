"""Run the server app with uvicorn: in the foreground (the CLI) or in a thread (tests, benchmarks).

``serve_in_thread(app)`` binds a loopback socket on a port the OS chooses *before* uvicorn
starts, so the address is known at once and early connections simply wait in the listen
backlog (no polling for readiness); leaving the context stops the server. Knows uvicorn
and sockets; nothing of what the app serves.
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from feldspar.settings import SettingsError

LOOPBACK = "127.0.0.1"


def bind(host: str = LOOPBACK, port: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class PortUnavailable(SettingsError):
    """The address to serve on cannot be bound (in use, not ours, not an address of this machine)."""


def bind_or_refuse(host: str, port: int) -> socket.socket:
    """``bind`` with a failure as one line naming the address and the fix."""
    try:
        return bind(host, port)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise PortUnavailable(f"cannot serve on {host}:{port} ({reason}); pass another --port "
                              "(0: any free one) or stop what is using it") from None


def make_server(app: Any, log_level: str = "warning"):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=2,
                            timeout_keep_alive=5)
    return uvicorn.Server(config)


@contextmanager
def serve_in_thread(app: Any, host: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Serve ``app`` from a background thread; yields the base URL (``http://127.0.0.1:PORT``)."""
    sock = bind(host, port)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="feldspar-serve", daemon=True)
    thread.start()
    try:
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(app: Any, host: str, port: int, log_level: str = "info",
                  announce: Callable[[str], None] | None = None, sock: socket.socket | None = None) -> None:
    """Serve in the foreground until Ctrl-C (uvicorn handles the signals); ``announce(base_url)`` once bound.
    ``sock``: a socket the caller bound already (before loading models, so a busy port fails at once)."""
    sock = sock or bind_or_refuse(host, port)
    if announce is not None:
        announce(base_url(sock))
    try:
        make_server(app, log_level).run(sockets=[sock])
    finally:
        sock.close()
