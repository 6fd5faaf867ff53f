"""Redis and memcached servers for the test suite."""

from __future__ import annotations

import os
import signal

from .base import Server, require_binary, unprivileged_user


class RedisServer(Server):
    """``redis-server`` without persistence, in a temporary directory.

    ``pause()`` freezes the server with SIGSTOP: the kernel still accepts
    connections but nothing answers them, as with a hung server.
    ``resume()`` lets it go on. ``stop()`` followed by ``start()`` is an
    outage; the data does not survive it.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        binary: str | None = None,
    ):
        super().__init__(port, start_timeout=start_timeout)
        self.binary = binary or require_binary(
            "redis-server", "redis-server", ["/usr/bin/redis-server"]
        )

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def url_for(self, db: int) -> str:
        """Return the URL of logical database *db*."""
        return f"{self.url}/{db}"

    def _command(self) -> list[str]:
        assert self.tmpdir is not None
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.tmpdir),
            "--daemonize", "no",
        ]  # fmt: skip

    def _answers(self) -> bool:
        return self._exchange(b"PING\r\n").startswith(b"+PONG")

    def pause(self) -> None:
        """Freeze the server: connections are accepted but never answered."""
        if self._child is not None:
            self._child.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server answer again."""
        if self._child is not None:
            self._child.send_signal(signal.SIGCONT)

    def start(self) -> RedisServer:
        super().start()
        return self

    def __enter__(self) -> RedisServer:
        return self.start()


class MemcachedServer(Server):
    """``memcached`` on TCP only, with 64 MB of memory."""

    name = "memcached"

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        binary: str | None = None,
    ):
        super().__init__(port, start_timeout=start_timeout)
        self.binary = binary or require_binary(
            "memcached", "memcached", ["/usr/bin/memcached"]
        )

    @property
    def location(self) -> str:
        """Return ``host:port``, the form Django's cache LOCATION takes."""
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        command = [
            self.binary,
            "-l", self.host,
            "-p", str(self.port),
            "-U", "0",
            "-m", "64",
            "-t", "2",
        ]  # fmt: skip
        if os.geteuid() == 0:
            # memcached refuses to run as root unless told which user to be.
            command += ["-u", unprivileged_user(["nobody"]) or "root"]
        return command

    def _answers(self) -> bool:
        return self._exchange(b"version\r\n").startswith(b"VERSION")

    def start(self) -> MemcachedServer:
        super().start()
        return self

    def __enter__(self) -> MemcachedServer:
        return self.start()
