"""A real PostgreSQL server for the tests: `initdb` in a temporary folder, `pg_ctl start` on a free
port of 127.0.0.1 (and a socket in that folder), stopped at the end of the session, or by a
watchdog once the test process is gone however it ended (a SIGKILL runs no atexit). Run as the
`postgres` user when the tests run as root (PostgreSQL refuses root). Where no PostgreSQL is
installed, `why_not()` says so in one line and the tests skip with it (`make postgres` installs
Debian's package)."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "chatbot"


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="chatbot-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]
        self._databases = 0
        self._watchdog: subprocess.Popen | None = None

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.run_as, *args], capture_output=True, text=True, timeout=120, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {(done.stderr or done.stdout).strip()[-500:]}")

    def start(self) -> PostgresServer:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C.UTF-8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "-t", "60", "start")
        atexit.register(self.stop)
        self._watch(os.getpid())
        return self

    def _stop_command(self) -> list[str]:
        return [*self.run_as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]

    def _watch(self, pid: int) -> None:
        """A shell in its own session (a kill of our process group leaves it) that waits for `pid`
        to end, then stops the server and removes its folder: pg_ctl's server is not our child,
        so nothing else ends it when the tests are killed."""
        stop = " ".join(shlex.quote(part) for part in self._stop_command())
        script = (f"while kill -0 {pid} 2>/dev/null; do sleep 1; done; cd /; {stop} >/dev/null 2>&1; "
                  f"rm -rf {shlex.quote(str(self.folder))}")
        self._watchdog = subprocess.Popen(["sh", "-c", script], start_new_session=True, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(self._stop_command(), capture_output=True, timeout=60, cwd=self.folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._watchdog is not None and self._watchdog.poll() is None:
            self._watchdog.kill()
            self._watchdog.wait()

    def new_database(self) -> str:
        """A fresh, empty database's SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"chat_{self._databases}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"


_server: PostgresServer | None = None
_failure: str | None = None


def why_not() -> str | None:
    """None when a server can be had; else one line saying why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "PostgreSQL tests skipped: psycopg is not installed (pip install 'psycopg[binary]')"
    if _bin_dir() is None:
        return ("PostgreSQL tests skipped: no PostgreSQL server here (no initdb/pg_ctl on PATH or in "
                "/usr/lib/postgresql); `make postgres` installs Debian's postgresql package")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "PostgreSQL tests skipped: running as root and no runuser to start PostgreSQL as another user"
    return _failure


def server() -> PostgresServer:
    """The session's server, started on first use (once per process)."""
    global _server, _failure
    if _server is None:
        try:
            _server = PostgresServer(_bin_dir()).start()
        except (RuntimeError, KeyError, OSError, subprocess.SubprocessError) as exc:
            _failure = f"PostgreSQL tests skipped: the server would not start ({exc})"
            raise
    return _server
