"""A pre-loaded process that forks one real ingest per request, for the kill -9 tests.

It imports Feldspar's retrieval stack once (no model session, no store opened), then
for each JSON line on stdin ``{"home", "root", "point", "nth", "reindex", "settings"}``
forks a child that arms ``crashpoints`` (or nothing when ``point`` is empty), builds the
service through the real composition root and ingests. An armed child kills itself with
SIGKILL at the named point; the parent answers one JSON line with how the child ended.
Forking a warm process makes 20 kill points cost seconds, not minutes of imports.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import chromadb  # noqa: F401  (warm imports, shared by every forked child)
import onnxruntime  # noqa: F401
import tokenizers  # noqa: F401

import feldspar.retrieval.ingest  # noqa: F401
from feldspar.compose import build_retrieval
from feldspar.retrieval import crashpoints
from feldspar.settings import load_settings


def child(request: dict) -> None:
    if request.get("point"):
        crashpoints.arm(request["point"], int(request.get("nth", 1)))
    service = build_retrieval(load_settings(home=request["home"], **request.get("settings", {})))
    service.ingest([request["root"]], reindex=bool(request.get("reindex")))


def main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                child(request)
            except BaseException:
                traceback.print_exc()
                code = 3
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        print(json.dumps({"signal": signal_number, "code": code}), flush=True)


if __name__ == "__main__":
    main()
