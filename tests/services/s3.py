"""moto's S3 endpoint in a separate process."""

from __future__ import annotations

import http.client
import os
import sys
from typing import Any

from .base import (
    AWS_ACCESS_KEY_ID,
    AWS_REGION,
    AWS_SECRET_ACCESS_KEY,
    Server,
    ServiceError,
)


class S3Server(Server):
    """moto's S3 (and other AWS APIs) in server mode, in a separate process.

    A separate process can be stopped and started again for outage tests
    and does not compete with the tests for the GIL. moto keeps everything
    in memory: after ``stop()``/``start()`` or ``restart()`` the endpoint is
    the same but every bucket and object is gone; call ``make_bucket()``
    again.
    """

    name = "s3"
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

    def _command(self) -> list[str]:
        return [self.python, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=AWS_ACCESS_KEY_ID,
            AWS_SECRET_ACCESS_KEY=AWS_SECRET_ACCESS_KEY,
            AWS_DEFAULT_REGION=AWS_REGION,
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            PYTHONUNBUFFERED="1",
        )
        return env

    def _request(self, method: str, path: str) -> int:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=2.0)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    def _answers(self) -> bool:
        return self._request("GET", "/moto-api/") < 500

    def reset(self) -> None:
        """Forget every bucket and object without restarting the server."""
        status = self._request("POST", "/moto-api/reset")
        if status >= 300:
            raise ServiceError(f"moto reset answered HTTP {status}")

    def client(self, service: str = "s3") -> Any:
        """Return a boto3 client for *service* on this endpoint."""
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=AWS_ACCESS_KEY_ID,
            aws_secret_access_key=AWS_SECRET_ACCESS_KEY,
            region_name=AWS_REGION,
        )

    def make_bucket(self, name: str) -> str:
        """Create bucket *name* and return its name."""
        self.client().create_bucket(Bucket=name)
        return name

    def start(self) -> S3Server:
        super().start()
        return self

    def restart(self) -> S3Server:
        """Stop and start again on the same port; all buckets are lost."""
        super().restart()
        return self

    def __enter__(self) -> S3Server:
        return self.start()
