"""Embedded PostgreSQL (the ``pgserver`` wheel) for users who set no ``DATABASE_URL``.

The server lives in a persistent data directory and is shared, not owned:

- Any number of processes (Ray workers, CLIs, a test run) may hold a handle on the same data dir.
  pgserver records each holder's pid in ``<pgdata>/.handle_pids.json`` under an inter-process lock;
  the first holder runs ``initdb``/``pg_ctl start``, later ones attach to the running postmaster
  (found through ``postmaster.pid``) instead of starting a second server on the same files.
- The *last* holder to let go stops the server (``pg_ctl stop``, a clean shutdown), also at
  interpreter exit through pgserver's ``atexit`` hook. So the process that started the server stops
  it, unless other processes still use it; then the last of them does.
- A holder that died without letting go (SIGKILL, OOM) would otherwise pin the server forever, so
  dead pids are pruned from the handle list before attaching.

The server listens on a Unix socket inside the data dir only (no TCP port), with ``trust``
authentication for the local ``postgres`` role: it is reachable by processes on this machine that
can enter the data dir, which is how a single-user embedded database should behave.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

if TYPE_CHECKING:
    from kalshiflow.config import StorageConfig

log = logging.getLogger("kalshiflow.storage")

APP_NAME = "kalshiflow"
DATA_DIR_ENV = "KALSHIFLOW_DATA_DIR"


def data_root(environ: Mapping[str, str] | None = None) -> Path:
    """The root of everything kalshiflow keeps on disk (pgdata, spill files, ...).

    ``$KALSHIFLOW_DATA_DIR`` when set, else the platform's user data dir + ``/kalshiflow``
    (``$XDG_DATA_HOME`` or ``~/.local/share`` on Linux). Not created here.
    """
    env = os.environ if environ is None else environ
    explicit = env.get(DATA_DIR_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser().resolve()
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:
        base = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return (base / APP_NAME).resolve()


def pgdata_dir(config: StorageConfig, environ: Mapping[str, str] | None = None) -> Path:
    """``StorageConfig.data_dir`` when set (it is the more specific setting), else <data root>/pgdata."""
    if config.data_dir.strip():
        return Path(config.data_dir.strip()).expanduser().resolve()
    return data_root(environ) / "pgdata"


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database (path component replaced)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started; the message points at its log file."""


def _import_pgserver() -> Any:
    # Imported lazily: importing pgserver evaluates a runtime-dir path (and warns when
    # XDG_RUNTIME_DIR is unset, as in containers); nothing should happen at our import time.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    # Its INFO lines print every pg_ctl command line with its output (a dozen lines a start);
    # ours say what matters. A level the user set is kept.
    quiet = logging.getLogger("pgserver")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    return pgserver


def pid_alive(pid: int) -> bool:
    """Running and not a zombie (a dead child nobody reaped still has a pid: common in containers
    whose init does not reap, where a stopped postmaster lingers as <defunct>)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except psutil.Error:
        return False


def is_postgres_process(pid: int) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and "postgres" in proc.name()
    except psutil.AccessDenied:
        return True  # cannot tell: assume it is, never delete a live server's lock file
    except psutil.Error:
        return False


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _repair_before_attach(pgserver: Any, pgdata: Path) -> None:
    """Undo leftovers that would make pgserver attach to nothing or never stop the server.

    Runs under pgserver's own inter-process lock, so no other pgserver user starts or stops this
    server meanwhile.
    """
    from pgserver.utils import DiskList

    server_cls = pgserver.PostgresServer
    with server_cls._lock:
        # 1. pgserver keeps a per-process instance after this process let go while others still
        #    held the server; reusing it would skip re-registering our pid. Forget it.
        stale = server_cls._instances.get(pgdata)
        if stale is not None and stale._count <= 0:
            del server_cls._instances[pgdata]
            atexit.unregister(stale._cleanup)
        # 2. Pids of holders that died (SIGKILL, OOM) would pin the server forever.
        handles = pgdata / ".handle_pids.json"
        if handles.exists():
            disk = DiskList(handles)
            try:
                pids = disk.get()
            except ValueError:  # torn write from a killed process: start the list afresh
                pids = []
            alive = [pid for pid in pids if pid_alive(pid)]
            if alive != pids:
                dead = len(pids) - len(alive)
                log.info("embedded PostgreSQL: dropping %d dead handle(s) in %s", dead, pgdata)
                disk.put(alive)
        # 3. After a crash or reboot postmaster.pid may name a pid now used by another program;
        #    pgserver checks only that the pid exists and would hand out a dead socket.
        pid = postmaster_pid(pgdata)
        if pid is not None and not is_postgres_process(pid):
            log.warning("embedded PostgreSQL: removing stale postmaster.pid (pid %d) in %s", pid, pgdata)
            (pgdata / "postmaster.pid").unlink(missing_ok=True)


class EmbeddedPostgres:
    """A handle on the embedded server in ``pgdata``; use as a (async) context manager.

    ``start()`` / ``stop()`` nest: each start takes one reference (in this process) and each stop
    drops one; the process lets go of the server when its count reaches zero. ``keep_running=True``
    leaves the server running even when this is the last holder (a long-lived dev database).
    """

    def __init__(self, pgdata: str | Path, *, keep_running: bool = False) -> None:
        self.pgdata = Path(pgdata).expanduser().resolve()
        self.keep_running = keep_running
        self._server: Any = None
        self._refs = 0
        self._guard = threading.Lock()
        self.started_here = False  # whether this process launched the postmaster

    @classmethod
    def from_config(cls, config: StorageConfig, environ: Mapping[str, str] | None = None) -> EmbeddedPostgres:
        return cls(pgdata_dir(config, environ))

    # -- lifecycle (blocking: initdb / pg_ctl take ~0.1-1 s; async callers use the async CM) --

    def start(self) -> EmbeddedPostgres:
        with self._guard:
            if self._refs == 0:
                self._server = self._acquire()
            self._refs += 1
        return self

    def stop(self) -> None:
        with self._guard:
            if self._refs == 0:
                return
            self._refs -= 1
            if self._refs == 0:
                server, self._server = self._server, None
                server.__exit__(None, None, None)
                log.info("embedded PostgreSQL: released %s", self.pgdata)

    def _acquire(self) -> Any:
        pgserver = _import_pgserver()
        # pgserver's own mkdir(exist_ok=False) races when several processes start on a fresh dir
        # at once (Ray workers); an existing empty dir is fine for it (and for initdb).
        self.pgdata.mkdir(parents=True, exist_ok=True)
        _repair_before_attach(pgserver, self.pgdata)
        was_running = self.is_running()
        mode = None if self.keep_running else "stop"
        try:
            server = pgserver.get_server(self.pgdata, cleanup_mode=mode)
        except Exception as err:  # initdb / pg_ctl failures surface as CalledProcessError etc.
            raise EmbeddedPostgresError(
                f"could not start embedded PostgreSQL in {self.pgdata} ({type(err).__name__}: {err}); "
                f"see its log at {self.pgdata / 'log'}"
            ) from err
        # pgserver counts `with` entries per instance; enter once per acquire so that another
        # EmbeddedPostgres on the same dir in this process keeps the shared instance alive.
        server.__enter__()
        self.started_here = not was_running
        log.info(
            "embedded PostgreSQL %s %s (pid %s)",
            "started in" if self.started_here else "attached to running server in",
            self.pgdata,
            server.get_pid(),
        )
        return server

    def is_running(self) -> bool:
        """Whether a postmaster is running on this data dir (whoever started it)."""
        pid = postmaster_pid(self.pgdata)
        return pid is not None and is_postgres_process(pid)

    @property
    def pid(self) -> int | None:
        return None if self._server is None else int(self._server.get_pid())

    def uri(self, database: str = "postgres") -> str:
        """Connection URI (Unix socket, no password) for ``database`` on the running server."""
        if self._server is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not started")
        return with_database(self._server.get_uri(), database)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedPostgres:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.pgdata)!r}, refs={self._refs})"
