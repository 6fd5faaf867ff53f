"""An SFTP server (asyncssh) in a separate process, with throwaway keys.

Run as ``python -m tests.services.sftp --port N --root DIR --host-key FILE
--authorized-keys FILE``; :class:`SFTPServer` does that for the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .base import HOST, Server

ROOT = Path(__file__).resolve().parents[2]
USERNAME = "queued"


class SFTPServer(Server):
    """An SSH server that offers SFTP only, chrooted to :attr:`root`.

    Its host key and the one client key it accepts are made for each server
    in its temporary directory; :meth:`storage_options` returns the options
    of django-storages' ``SFTPStorage`` that log in with that key and trust
    only that host key. Files survive ``stop()``/``start()``.
    """

    name = "sftp"
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
        self._host_public_key = ""

    @property
    def root(self) -> Path:
        """Return the directory the server serves as ``/``."""
        assert self.tmpdir is not None
        return self.tmpdir / "root"

    @property
    def client_key(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "client_key"

    @property
    def known_hosts(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "known_hosts"

    def _prepare(self) -> None:
        import asyncssh

        assert self.tmpdir is not None
        self.root.mkdir()
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        host_key.write_private_key(self.tmpdir / "host_key")
        self._host_public_key = host_key.export_public_key().decode().strip()
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key.write_private_key(self.client_key)
        client_key.write_public_key(self.tmpdir / "authorized_keys")

    def _command(self) -> list[str]:
        assert self.tmpdir is not None
        return [
            self.python, "-m", "tests.services.sftp",
            "--host", self.host,
            "--port", str(self.port),
            "--root", str(self.root),
            "--host-key", str(self.tmpdir / "host_key"),
            "--authorized-keys", str(self.tmpdir / "authorized_keys"),
        ]  # fmt: skip

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), env.get("PYTHONPATH", "")])
        )
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _answers(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")

    def start(self) -> SFTPServer:
        super().start()
        # The port is settled now: trust exactly this key at this address.
        self.known_hosts.write_text(
            f"[{self.host}]:{self.port} {self._host_public_key}\n"
        )
        return self

    def __enter__(self) -> SFTPServer:
        return self.start()

    def storage_options(self, root_path: str = "/") -> dict[str, Any]:
        """Return ``SFTPStorage`` options that store under *root_path*."""
        return {
            "host": self.host,
            "params": {
                "port": self.port,
                "username": USERNAME,
                "key_filename": str(self.client_key),
                # Never offer a developer's own keys or agent.
                "look_for_keys": False,
                "allow_agent": False,
                "timeout": 10,
                "banner_timeout": 10,
                "auth_timeout": 10,
            },
            "known_host_file": str(self.known_hosts),
            "root_path": root_path,
        }


def serve(host: str, port: int, root: str, host_key: str, authorized_keys: str) -> None:
    """Serve SFTP on *host*:*port* until killed."""
    import asyncssh

    async def main() -> None:
        await asyncssh.listen(
            host,
            port,
            server_host_keys=[host_key],
            authorized_client_keys=authorized_keys,
            sftp_factory=lambda channel: asyncssh.SFTPServer(
                channel, chroot=root.encode()
            ),
            allow_scp=False,
            reuse_address=True,
        )
        print(f"SFTP listening on {host}:{port}, serving {root}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.root, args.host_key, args.authorized_keys)


if __name__ == "__main__":
    main()
