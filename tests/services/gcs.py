"""A Google Cloud Storage emulator (``gcp-storage-emulator``) in a separate process."""

from __future__ import annotations

import http.client
import os
import sys
from typing import Any

from .base import Server, ServiceError

#: The environment variable that points google-cloud-storage at an emulator.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
#: The project the emulator's buckets are created in.
PROJECT = "queued-storage-tests"


class GCSServer(Server):
    """``gcp-storage-emulator`` serving the JSON and upload APIs from memory.

    google-cloud-storage talks to it when ``STORAGE_EMULATOR_HOST`` holds
    :attr:`endpoint_url` (see :meth:`environ`), and then needs no credentials;
    django-storages' ``GoogleCloudStorage`` builds its client that way, so the
    variable must be set before a storage first connects. Every bucket and
    object is lost when the server stops.
    """

    name = "gcs"
    default_start_timeout = 30.0

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
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def environ(self) -> dict[str, str]:
        """Return the environment variables that send clients to this server."""
        return {EMULATOR_ENV: self.endpoint_url}

    def _command(self) -> list[str]:
        return [
            self.python, "-m", "gcp_storage_emulator", "start",
            "--host", self.host,
            "--port", str(self.port),
            "--in-memory",
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
        try:
            connection.request("GET", "/storage/v1/b")
            response = connection.getresponse()
            response.read()
            return response.status == 200
        finally:
            connection.close()

    def client(self) -> Any:
        """Return an anonymous google-cloud-storage client of this server."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint_url},
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket *name* and return its name."""
        try:
            self.client().create_bucket(name)
        except Exception as exc:
            raise ServiceError(f"{self.name} could not create {name!r}: {exc}") from exc
        return name

    def start(self) -> GCSServer:
        super().start()
        return self

    def __enter__(self) -> GCSServer:
        return self.start()
