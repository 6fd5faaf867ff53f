"""A real Celery worker process for the test suite."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import NoReturn

from .base import ServiceError
from .process import ChildProcess, make_temporary_dir


class CeleryWorkerProcess:
    """A real ``celery worker`` in its own process group.

    *app* is the module (or ``module:attribute``) passed to ``celery -A``;
    *env* is added to (or, with ``inherit_env=False``, replaces) the
    environment, and *cwd* is where the worker runs, so that *app* imports.
    The worker logs to ``log_path``; ``start()`` waits for its "ready" line.
    """

    def __init__(
        self,
        app: str,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pool: str = "prefork",
        concurrency: int = 1,
        queues: str | Iterable[str] | None = None,
        hostname: str | None = None,
        loglevel: str = "INFO",
        extra_args: Iterable[str] = (),
        inherit_env: bool = True,
        log_path: str | os.PathLike[str] | None = None,
        python: str | None = None,
    ):
        self.app = app
        self.pool = pool
        self.concurrency = concurrency
        if isinstance(queues, str):
            queues = [queues]
        self.queues = list(queues) if queues is not None else []
        self.name = hostname or f"worker-{uuid.uuid4().hex[:8]}"
        self.hostname = self.name if "@" in self.name else f"{self.name}@%h"
        self.loglevel = loglevel
        self.extra_args = list(extra_args)
        self.cwd = cwd
        self.python = python or sys.executable
        self.env = dict(os.environ) if inherit_env else {}
        self.env.update(env or {})
        if len(self.queues) == 1:
            # Its dispatcher sends to the queue it consumes, as the test does.
            self.env.setdefault("QS_TEST_QUEUE", self.queues[0])
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        if log_path is None:
            # Removed when the interpreter exits, so a failing test can
            # still show the log.
            log_path = make_temporary_dir("celery") / f"{self.name}.log"
        self.log_path = Path(log_path)
        self._child = ChildProcess(self.log_path)

    @property
    def nodename(self) -> str:
        """Return the node name the worker answers to, e.g. for ``inspect``."""
        return self.hostname.replace("%h", socket.gethostname())

    @property
    def command(self) -> list[str]:
        command = [
            self.python, "-m", "celery",
            "-A", self.app,
            "worker",
            "--pool", self.pool,
            "--concurrency", str(self.concurrency),
            "--hostname", self.hostname,
            "--loglevel", self.loglevel,
            "--without-gossip",
            "--without-mingle",
        ]  # fmt: skip
        if self.queues:
            command += ["-Q", ",".join(self.queues)]
        return command + self.extra_args

    @property
    def pid(self) -> int | None:
        return self._child.pid

    @property
    def returncode(self) -> int | None:
        return self._child.returncode

    def is_running(self) -> bool:
        return self._child.is_running()

    def start(
        self, wait_ready: bool = True, timeout: float = 30.0
    ) -> CeleryWorkerProcess:
        """Start the worker; with *wait_ready*, wait for its "ready" line."""
        if self.is_running():
            return self
        self._child.spawn(self.command, env=self.env, cwd=self.cwd)
        if wait_ready:
            try:
                self.wait_for_log(r"\bready\.", timeout=timeout)
            except ServiceError:
                self.kill()
                raise
        return self

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the worker's log matches regular expression *pattern*."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            code = self.returncode
            if code is not None:
                self._fail(f"exited with status {code} before logging {pattern!r}")
            if time.monotonic() > deadline:
                self._fail(f"did not log {pattern!r} within {timeout:g} s")
            time.sleep(0.05)

    def _fail(self, what: str) -> NoReturn:
        raise ServiceError(
            f"celery worker {self.name} {what}.\n"
            f"command: {shlex.join(self.command)}\n"
            f"--- last lines of {self.log_path} ---\n{self._child.log_tail()}"
        )

    def log_text(self) -> str:
        """Return what the worker has logged since it was last started."""
        return self._child.log_text()

    def stop(self, timeout: float = 15.0) -> None:
        """Ask for a warm shutdown (SIGTERM), then SIGKILL what is left."""
        self._child.stop(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once, as a crash would."""
        self._child.kill()

    def __enter__(self) -> CeleryWorkerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<CeleryWorkerProcess {self.name} -A {self.app} {state}>"
