"""A throw-away PostgreSQL cluster for the test suite."""

from __future__ import annotations

import glob
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from .base import Server, ServiceError, require_binary, unprivileged_user


def _postgres_bindir() -> Path:
    """Return the directory of the newest PostgreSQL server binaries."""

    def version(path: str) -> tuple[int, ...]:
        digits = re.findall(r"\d+", Path(path).parent.name)
        return tuple(int(d) for d in digits)

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for directory in debian:
        if os.access(os.path.join(directory, "initdb"), os.X_OK):
            return Path(directory)
    for name in ("initdb", "postgres"):
        found = shutil.which(name)
        if found and os.access(Path(found).with_name("initdb"), os.X_OK):
            return Path(found).parent
    raise ServiceError(
        "PostgreSQL server binaries (initdb, postgres) were not found in "
        "/usr/lib/postgresql/*/bin or on PATH; install the Debian package "
        "'postgresql' (scripts/test does this)."
    )


class PostgresServer(Server):
    """A throw-away PostgreSQL cluster with trust authentication.

    ``initdb`` runs once, into the temporary directory; the server listens on
    ``127.0.0.1:port`` and keeps its Unix socket in that directory too.
    Durability is switched off for speed, so a killed server may lose data.
    PostgreSQL refuses to run as root: under root, ``initdb`` and
    ``postgres`` run as the ``postgres`` system user (or ``nobody``).
    """

    name = "postgres"
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for clients.
    stop_signal = signal.SIGINT
    default_start_timeout = 30.0

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        bindir: str | os.PathLike[str] | None = None,
    ):
        super().__init__(port, start_timeout=start_timeout)
        self.bindir = Path(bindir) if bindir else _postgres_bindir()
        self.user = "postgres"
        self._run_as: str | None = None
        if os.geteuid() == 0:
            self._run_as = unprivileged_user(["postgres", "nobody"])
            if self._run_as is None:
                raise ServiceError(
                    "PostgreSQL cannot run as root and neither the 'postgres' "
                    "nor the 'nobody' user exists; create one, e.g. "
                    "'useradd --system postgres'."
                )

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/postgres"

    def database_settings(self, name: str = "queued_storage") -> dict[str, Any]:
        """Return a Django ``DATABASES`` entry for database *name*."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": self.user,
            "PASSWORD": "",
            "HOST": self.host,
            "PORT": str(self.port),
        }

    def create_database(self, name: str) -> None:
        """Create database *name* (the server must be running)."""
        self._run([str(self.bindir / "createdb"), *self._client_args(), name])

    def _client_args(self) -> list[str]:
        return ["-h", self.host, "-p", str(self.port), "-U", self.user]

    def _as_server_user(self, command: list[str]) -> list[str]:
        if self._run_as is None:
            return command
        setpriv = shutil.which("setpriv")
        if setpriv:
            # setpriv execs in place, so signals reach the postmaster itself.
            return [
                setpriv,
                f"--reuid={self._run_as}",
                f"--regid={self._run_as}",
                "--init-groups",
                *command,
            ]
        runuser = require_binary("runuser", "util-linux")
        return [runuser, "-u", self._run_as, "--", *command]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LC_ALL="C", LANG="C")
        env.pop("PGDATA", None)
        return env

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._env(),
            cwd=self.tmpdir,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout.decode("utf-8", "replace")
            raise ServiceError(
                f"{shlex.join(command)} failed with status "
                f"{result.returncode}:\n{output[-4000:]}"
            )

    def _prepare(self) -> None:
        assert self.tmpdir is not None
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.tmpdir, entry.pw_uid, entry.pw_gid)
        initdb = [
            str(self.bindir / "initdb"),
            "--pgdata", str(self.datadir),
            "--username", self.user,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        ]  # fmt: skip
        self._run(self._as_server_user(initdb))

    def _command(self) -> list[str]:
        assert self.tmpdir is not None
        command = [
            str(self.bindir / "postgres"),
            "-D", str(self.datadir),
            "-h", self.host,
            "-p", str(self.port),
            "-k", str(self.tmpdir),
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "max_connections=100",
            "-c", "shared_buffers=64MB",
        ]  # fmt: skip
        return self._as_server_user(command)

    def _answers(self) -> bool:
        assert self._child is not None
        # The port opens before recovery ends; the log line marks readiness.
        if "ready to accept connections" not in self._child.log_text():
            return False
        socket.create_connection((self.host, self.port), timeout=1.0).close()
        return True

    def start(self) -> PostgresServer:
        super().start()
        return self

    def __enter__(self) -> PostgresServer:
        return self.start()
