"""A real ``db_worker`` process of django-tasks-db for the test suite."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Mapping
from typing import NoReturn

from .base import ServiceError
from .process import ChildProcess, make_temporary_dir


class TasksWorkerProcess:
    """``manage.py db_worker`` of django-tasks-db, in its own process group.

    It runs ``django-admin db_worker`` with *settings* in *cwd*, for the
    ``TASKS`` alias *backend* and every queue, polling every *interval*
    seconds; *env* is added to the environment and *extra_args* to the
    command (``("--batch",)`` runs what is due, then exits).
    """

    def __init__(
        self,
        settings: str,
        *,
        backend: str = "default",
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        interval: float = 0.1,
        queues: str = "*",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.interval = interval
        self.queues = queues
        self.extra_args = list(extra_args)
        self.cwd = cwd
        self.name = f"db-worker-{uuid.uuid4().hex[:8]}"
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env["DJANGO_SETTINGS_MODULE"] = settings
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.log_path = make_temporary_dir("db-worker") / f"{self.name}.log"
        self._child = ChildProcess(self.log_path)

    @property
    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "django", "db_worker",
            "--backend", self.backend,
            "--queue-name", self.queues,
            "--interval", str(self.interval),
            "--no-startup-delay", "--no-reload", "--verbosity", "2",
            *self.extra_args,
        ]  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def is_running(self) -> bool:
        return self._child.is_running()

    def start(self, timeout: float = 30.0) -> TasksWorkerProcess:
        """Start the worker and wait until it says it is polling."""
        self._child.spawn(self.command, env=self.env, cwd=self.cwd)
        try:
            self.wait_for_log(r"Starting worker", timeout=timeout)
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
            if self._child.returncode is not None:
                self._fail(f"exited before logging {pattern!r}")
            if time.monotonic() > deadline:
                self._fail(f"did not log {pattern!r} within {timeout:g} s")
            time.sleep(0.05)

    def _fail(self, what: str) -> NoReturn:
        raise ServiceError(
            f"db_worker {self.name} {what}.\ncommand: {shlex.join(self.command)}\n"
            f"--- last lines of {self.log_path} ---\n{self._child.log_tail()}"
        )

    def log_text(self) -> str:
        """Return what the worker has logged since it was last started."""
        return self._child.log_text()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finish (SIGTERM), then SIGKILL what is left."""
        self._child.stop(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the worker at once, as a crash would."""
        self._child.kill()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<TasksWorkerProcess {self.name} --backend {self.backend} {state}>"
