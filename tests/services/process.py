"""Child processes and temporary directories that outlive no test run.

Every child runs in its own session (process group), so that stopping it
also ends whatever it forked; whatever is still running, and every
temporary directory, is cleaned up when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


_running: set[ChildProcess] = set()
_temporary_dirs: set[Path] = set()


@atexit.register
def _clean_up() -> None:
    for child in list(_running):
        with contextlib.suppress(Exception):
            child.kill()
    for directory in list(_temporary_dirs):
        shutil.rmtree(directory, ignore_errors=True)


def make_temporary_dir(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"queued-storage-{prefix}-"))
    _temporary_dirs.add(directory)
    return directory


def remove_temporary_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    _temporary_dirs.discard(directory)


class ChildProcess:
    """One child process in its own session, logging to a file."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_offset = 0
        self.command: list[str] = []

    def spawn(
        self,
        command: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.command = command
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log: IO[bytes]
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        _running.add(self)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_text(self) -> str:
        """Return what the current run has logged so far."""
        return _read_from(self.log_path, self.log_offset)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of the current run's log."""
        tail = self.log_text().splitlines()[-lines:]
        return "\n".join(tail) or "(the log is empty)"

    def send_signal(self, signum: int) -> None:
        if self.is_running():
            assert self.popen is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signum)

    def _signal_group(self, signum: int) -> None:
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Send *signum*, wait up to *timeout* seconds, then kill the group."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            # A paused (SIGSTOP) process only handles the signal once resumed.
            self._signal_group(signal.SIGCONT)
            self.send_signal(signum)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the child."""
        if self.popen is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        # Grandchildren (a worker's pool, PostgreSQL's backends) die a moment
        # later; wait for them so that the port and the broker are free.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                os.killpg(self.popen.pid, 0)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.02)
        _running.discard(self)
