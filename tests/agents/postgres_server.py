"""A real, throwaway PostgreSQL server for tests: Debian's binaries, a tmp cluster, a loopback port.

``PostgresServer()`` finds ``initdb``/``pg_ctl`` under ``/usr/lib/postgresql/<version>/bin``
(newest version first; ``FELDSPAR_PG_BIN`` names another folder), creates a cluster in a
fresh temporary folder with trust authentication for the user ``feldspar``, and starts it
listening on 127.0.0.1 at a port the OS just had free, with its unix socket in the same
folder. ``pg_ctl start -w`` returns once the server accepts connections, so no polling.
PostgreSQL refuses to run as root: when the tests run as root, the cluster folder is given
to the ``postgres`` user (or ``nobody``) and both programs run as that user via ``runuser``.
``stop()`` shuts it down fast and removes the folder. ``binaries()`` is None when no
server binaries are installed (the only reason the tests skip).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.agents.remote_server import free_port

SKIP_REASON = ("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (Debian's postgresql "
               "package; .ci/run installs it)")


def binaries() -> Path | None:
    given = os.environ.get("FELDSPAR_PG_BIN")
    candidates = [given] if given else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                              key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                                              reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists to run PostgreSQL")


class PostgresServer:
    def __init__(self) -> None:
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError(SKIP_REASON)
        self.prefix = _run_as()
        self.folder = Path(tempfile.mkdtemp(prefix="feldspar-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        if self.prefix:
            user = pwd.getpwnam(self.prefix[2])
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "feldspar", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w",
                  "-t", "120", "start")

    @property
    def url(self) -> str:
        return f"postgresql://feldspar@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.prefix, str(self.bin / program), *args], capture_output=True, text=True,
                              timeout=180, cwd=self.folder)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}\n{tail}")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
