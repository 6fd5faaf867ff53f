"""A real ASGI server (uvicorn) serving the test project."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from .base import HOST, Server

ROOT = Path(__file__).resolve().parents[2]


class UvicornServer(Server):
    """``uvicorn tests.asgi:application`` on a free loopback port.

    It reads the test run's settings and, as a worker process does, its
    test database (``QS_TEST_WORKER``).
    """

    name = "uvicorn"

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "tests.asgi:application",
            "--host", HOST, "--port", str(self.port),
            "--lifespan", "off", "--no-access-log",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "QS_TEST_WORKER": "1", "PYTHONPATH": path}

    def _cwd(self) -> Path:
        return ROOT

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1):
            return True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
