"""Azurite's Blob service, the Azure Storage emulator, run with Node.js."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import Server, ServiceError, require_binary

#: The development account every Azurite accepts (documented by Microsoft as
#: the emulator's fixed, public credentials).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw=="
)
#: The npm package installed when no Azurite is found.
AZURITE_PACKAGE = "azurite@3"
# Below pytest-timeout's 300 s, so that this error, not a timeout, is reported.
INSTALL_TIMEOUT = 240.0
_MAIN = Path("node_modules", "azurite", "dist", "src", "blob", "main.js")


def azurite_dir() -> Path:
    """Return the directory that holds (or will hold) Azurite's node_modules.

    ``QS_TEST_AZURITE_DIR`` chooses it; the default is kept across runs in
    the user's cache directory, so that npm downloads Azurite only once.
    """
    chosen = os.environ.get("QS_TEST_AZURITE_DIR")
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache, "queued-storage", "azurite")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install_azurite(directory: Path | None = None) -> Path:
    """Return the path of Azurite's blob ``main.js``, installing it if missing.

    The install runs ``npm install azurite@3`` into *directory* (by default
    :func:`azurite_dir`), one process at a time.
    """
    directory = directory or azurite_dir()
    script = directory / _MAIN
    if script.is_file():
        return script
    npm = require_binary("npm", "npm")
    with _locked(directory):
        if script.is_file():
            return script
        command = [
            npm, "install", "--prefix", str(directory), "--no-audit", "--no-fund",
            "--no-save", "--loglevel=error", AZURITE_PACKAGE,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServiceError(
                f"npm did not install {AZURITE_PACKAGE} within {INSTALL_TIMEOUT:g} s."
            ) from exc
        if result.returncode != 0 or not script.is_file():
            output = result.stdout.decode("utf-8", "replace")[-4000:]
            raise ServiceError(
                f"npm could not install {AZURITE_PACKAGE} into {directory} "
                f"(status {result.returncode}):\n{output}"
            )
    return script


class AzuriteServer(Server):
    """Azurite's Blob service, keeping its data in the temporary directory.

    Azurite is looked for in :func:`azurite_dir` and installed there with npm
    on first use; Node.js (Debian's ``nodejs``) runs it. Blobs survive
    ``stop()``/``start()``; ``close()`` removes them.
    """

    name = "azurite"
    default_start_timeout = 60.0

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        script: str | os.PathLike[str] | None = None,
    ):
        super().__init__(port, start_timeout=start_timeout)
        self.node = require_binary("node", "nodejs")
        self.script = Path(script) if script else None

    @property
    def endpoint_url(self) -> str:
        """Return the Blob endpoint of the development account."""
        return f"http://{self.host}:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.endpoint_url};"
        )

    def _prepare(self) -> None:
        if self.script is None:
            self.script = install_azurite()

    def _command(self) -> list[str]:
        assert self.tmpdir is not None and self.script is not None
        data = self.tmpdir / "data"
        data.mkdir(exist_ok=True)
        return [
            self.node, str(self.script),
            "--blobHost", self.host,
            "--blobPort", str(self.port),
            "--location", str(data),
            # Newer azure-storage-blob releases send API versions that an
            # older Azurite does not know yet.
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--loose",
            "--silent",
        ]  # fmt: skip

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
        try:
            connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
            response = connection.getresponse()
            response.read()
            # Unauthenticated, so refused: but it is Azurite that refuses.
            return response.status < 500
        finally:
            connection.close()

    def client(self) -> Any:
        """Return an azure-storage-blob ``BlobServiceClient`` of this server."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    def make_container(self, name: str, *, public: bool = False) -> str:
        """Create container *name*, readable anonymously if *public*."""
        self.client().create_container(name, public_access="blob" if public else None)
        return name

    def start(self) -> AzuriteServer:
        super().start()
        return self

    def __enter__(self) -> AzuriteServer:
        return self.start()
