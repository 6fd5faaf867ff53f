"""A private RabbitMQ node for the test suite.

Debian's ``rabbitmq-server`` package runs one node as the ``rabbitmq`` user;
its wrappers switch to that user. This node is the test run's own: it is
started from ``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly, with its own
node name, AMQP, distribution and epmd ports on 127.0.0.1, and its data, logs
and configuration in a temporary directory. Its epmd is started first, by
this class, so that both processes are children stopped by their PIDs.

*consumer_timeout* (milliseconds) sets how long the node lets a consumer keep
a delivery unacknowledged before it closes the channel; the node checks it
every second, where a default node checks every minute.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from .base import Server, ServiceError, free_port, require_binary
from .process import ChildProcess

SERVER_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"


class RabbitMQServer(Server):
    """A RabbitMQ node listening on ``127.0.0.1:port``, guest/guest."""

    name = "rabbitmq"
    default_start_timeout = 90.0

    def __init__(
        self,
        port: int | None = None,
        *,
        start_timeout: float | None = None,
        consumer_timeout: int | None = None,
    ) -> None:
        super().__init__(port, start_timeout=start_timeout)
        if not os.access(SERVER_SCRIPT, os.X_OK):
            raise ServiceError(
                "rabbitmq-server is not installed; install the Debian package "
                "'rabbitmq-server' (scripts/test does this)."
            )
        self.epmd_binary = require_binary("epmd", "erlang-base", ["/usr/bin/epmd"])
        self.consumer_timeout = consumer_timeout
        self.epmd_port = free_port()
        self.dist_port = free_port()
        self.nodename = f"qs-{uuid.uuid4().hex[:8]}@localhost"
        self._epmd: ChildProcess | None = None

    @property
    def url(self) -> str:
        """Return the broker URL of the default virtual host."""
        return f"amqp://guest:guest@{self.host}:{self.port}//"

    def _prepare(self) -> None:
        assert self.tmpdir is not None
        for folder in ("mnesia", "log", "home"):
            (self.tmpdir / folder).mkdir()
        (self.tmpdir / "enabled_plugins").write_text("[].\n")
        (self.tmpdir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {self.host}:{self.port}\n"
            "loopback_users = none\n"
            "log.console = true\n"
            "log.file = false\n"
            "disk_free_limit.absolute = 1MB\n"
        )
        rabbit = []
        if self.consumer_timeout is not None:
            rabbit.append(f"{{consumer_timeout, {int(self.consumer_timeout)}}}")
            rabbit.append("{channel_tick_interval, 1000}")
        (self.tmpdir / "advanced.config").write_text(
            f"[{{rabbit, [{', '.join(rabbit)}]}}].\n"
        )

    def _env(self) -> dict[str, str]:
        assert self.tmpdir is not None
        tmp = self.tmpdir
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("RABBITMQ_", "ERL_"))
        }
        env.update(
            HOME=str(tmp / "home"),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS=self.host,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=self.host,
            RABBITMQ_MNESIA_BASE=str(tmp / "mnesia"),
            RABBITMQ_LOG_BASE=str(tmp / "log"),
            RABBITMQ_CONFIG_FILE=str(tmp / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(tmp / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(tmp / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(tmp / "plugins-expand"),
            RABBITMQ_PID_FILE=str(tmp / "rabbitmq.pid"),
        )
        return env

    def _command(self) -> list[str]:
        return [SERVER_SCRIPT]

    def _answers(self) -> bool:
        # The AMQP listener opens only once the node has booted.
        with socket.create_connection((self.host, self.port), timeout=1.0) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(8).startswith(b"\x01\x00\x00")

    def start(self) -> RabbitMQServer:
        if self.is_running():
            return self
        self._start_epmd()
        super().start()
        return self

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.is_running():
            return
        from .process import make_temporary_dir

        folder = make_temporary_dir("epmd")
        self._epmd = ChildProcess(Path(folder) / "epmd.log")
        self._epmd.spawn(
            [self.epmd_binary, "-port", str(self.epmd_port), "-address", self.host],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.epmd_port), 0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ServiceError(f"epmd did not listen on port {self.epmd_port}.")

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        if self._epmd is not None:
            self._epmd.stop()

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.tmpdir or "", ignore_errors=True)

    def __enter__(self) -> RabbitMQServer:
        return self.start()
