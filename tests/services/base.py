"""The life cycle shared by the test servers, and their common helpers."""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

from .process import ChildProcess, make_temporary_dir, remove_temporary_dir

HOST = "127.0.0.1"

#: Dummy credentials accepted by the moto S3 endpoint.
AWS_ACCESS_KEY_ID = "testing"
AWS_SECRET_ACCESS_KEY = "testing"
AWS_REGION = "us-east-1"


class ServiceError(RuntimeError):
    """A test server could not be started or did not answer."""


def free_port(host: str = HOST) -> int:
    """Return a TCP port on *host* that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Server:
    """Common life cycle of a server bound to ``127.0.0.1:port``."""

    name = "server"
    stop_signal: int = signal.SIGTERM
    default_start_timeout = 20.0

    def __init__(self, port: int | None = None, *, start_timeout: float | None = None):
        self.host = HOST
        # A port chosen here may be taken by someone else before the server
        # binds it; only then is another one tried. A port given by the caller,
        # or one the server has run on before, is kept.
        self._port_is_fixed = port is not None
        self.port = port if port is not None else free_port()
        self.start_timeout = (
            start_timeout if start_timeout is not None else self.default_start_timeout
        )
        self.tmpdir: Path | None = None
        self._child: ChildProcess | None = None

    # -- hooks for subclasses ------------------------------------------------

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str] | None:
        return None

    def _cwd(self) -> Path | None:
        return self.tmpdir

    def _prepare(self) -> None:
        """Set up the temporary directory before the first start."""

    def _answers(self) -> bool:
        """Return True once the server answers a request."""
        raise NotImplementedError

    # -- public API -----------------------------------------------------------

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def is_running(self) -> bool:
        return self._child is not None and self._child.is_running()

    def log_text(self) -> str:
        """Return what the server has logged since it was last started."""
        return self._child.log_text() if self._child is not None else ""

    def start(self) -> Server:
        """Start the server (again) and wait until it answers; return self."""
        if self.is_running():
            return self
        if self.tmpdir is None:
            self.tmpdir = make_temporary_dir(self.name)
            try:
                self._prepare()
            except BaseException:
                self.close()
                raise
        attempts = 1 if self._port_is_fixed else 3
        for attempt in range(1, attempts + 1):
            child = self._child = ChildProcess(self.log_path)
            child.spawn(self._command(), env=self._env(), cwd=self._cwd())
            try:
                self._wait_until_answering(child)
            except ServiceError:
                child.kill()
                port_taken = "in use" in child.log_text().lower()
                if attempt < attempts and port_taken:
                    self.port = free_port()
                    continue
                raise
            break
        self._port_is_fixed = True
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server; the directory and port stay for a later start()."""
        if self._child is not None:
            self._child.stop(self.stop_signal, timeout)

    def kill(self) -> None:
        """End the server at once with SIGKILL, as a crash would."""
        if self._child is not None:
            self._child.kill()

    def restart(self) -> Server:
        """Stop the server and start it again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        self.stop()
        if self.tmpdir is not None:
            remove_temporary_dir(self.tmpdir)
            self.tmpdir = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"

    # -- internals ------------------------------------------------------------

    def _wait_until_answering(self, child: ChildProcess) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = child.returncode
            if code is not None:
                self._fail(child, f"exited with status {code} while starting")
            try:
                if self._answers():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self._fail(
                    child,
                    f"did not answer on {self.host}:{self.port} "
                    f"within {self.start_timeout:g} s",
                )
            time.sleep(0.05)

    def _fail(self, child: ChildProcess, what: str) -> NoReturn:
        raise ServiceError(
            f"{self.name} {what}.\n"
            f"command: {shlex.join(child.command)}\n"
            f"--- last lines of {child.log_path} ---\n{child.log_tail()}"
        )

    def _exchange(self, request: bytes, timeout: float = 1.0) -> bytes:
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(request)
            return s.recv(256)


def require_binary(name: str, package: str, candidates: Iterable[str] = ()) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    raise ServiceError(
        f"{name} is not installed; install the Debian package {package!r} "
        "(scripts/test does this)."
    )


def unprivileged_user(names: Iterable[str]) -> str | None:
    for name in names:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None
