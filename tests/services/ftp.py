"""An FTP server (pyftpdlib) in a separate process."""

from __future__ import annotations

import ftplib
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .base import Server

USERNAME = "queued"
PASSWORD = "queued-storage-tests"


class FTPServer(Server):
    """pyftpdlib's FTP server, with one user who may write to :attr:`root`.

    Passive data connections use ports the system chooses on the same
    loopback address. Files survive ``stop()``/``start()``.
    """

    name = "ftp"
    default_start_timeout = 20.0

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        python: str | None = None,
    ):
        super().__init__(port, start_timeout=start_timeout)
        self.python = python or sys.executable

    @property
    def root(self) -> Path:
        """Return the directory the server serves as ``/``."""
        assert self.tmpdir is not None
        return self.tmpdir / "root"

    def location(self, path: str = "") -> str:
        """Return the ``FTPStorage`` location of directory *path* on this server."""
        return f"ftp://{USERNAME}:{PASSWORD}@{self.host}:{self.port}/{path}"

    def _prepare(self) -> None:
        self.root.mkdir()

    def _command(self) -> list[str]:
        return [
            self.python, "-m", "pyftpdlib",
            "--interface", self.host,
            "--port", str(self.port),
            "--directory", str(self.root),
            "--username", USERNAME,
            "--password", PASSWORD,
            "--write",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"220")

    def client(self) -> Any:
        """Return an ``ftplib.FTP`` logged in to this server."""
        # Plain FTP on loopback: the protocol under test, not a choice.
        ftp = ftplib.FTP(timeout=10)  # noqa: S321
        ftp.connect(self.host, self.port)
        ftp.login(USERNAME, PASSWORD)
        return ftp

    def start(self) -> FTPServer:
        super().start()
        return self

    def __enter__(self) -> FTPServer:
        return self.start()
