"""Credentials stay out of error texts, logs, command output, the admin and
storage references, with each backend's own names for its credentials."""

from __future__ import annotations

import html
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.test import override_settings

from queued_storage.backends import QueuedFTPStorage, QueuedStorage
from queued_storage.models import StoredFile
from queued_storage.state import FileState, Status
from queued_storage.tasks import Transfer, get_task
from tests.services import FTPServer

FS = "django.core.files.storage.FileSystemStorage"
#: A password with everything that escapes badly: both quotes, a backslash,
#: and the "/", "#" and "?" that end the user information of a parsed URL.
HOSTILE = "p/a#s?s'w\"o\\rd"


def forms(secret: str) -> list[str]:
    """Return the ways an error text may spell *secret*."""
    return [
        secret,
        repr(secret)[1:-1],
        secret.replace("\\", "\\\\").replace("'", "\\'"),
        secret.replace("\\", "\\\\").replace('"', '\\"'),
        json.dumps(secret)[1:-1],
        quote(secret, safe=""),
    ]


def leaked(secret: str, text: str) -> list[str]:
    """Return the forms of *secret* found in *text*, HTML-escaped ones too."""
    found = [f for f in forms(secret) if f in text]
    return found + [f for f in forms(secret) if html.escape(f) in text]


def error_texts(secret: str, name: str) -> list[str]:
    """Return error texts such as backends make, each holding *secret*."""
    return [
        f"failed: {secret}",
        f"Connection error using data { ({'user': 'u', name: secret, 'port': 21})!r}",
        f"options {json.dumps({name: secret})}",
        f"{name}={secret!r} and {name}={quote(secret, safe='')}",
        f"{name}: {secret}",
    ]


BACKENDS = {
    "s3": (
        "storages.backends.s3.S3Storage",
        {
            "bucket_name": "media",
            "access_key": "AKIAEXAMPLEKEY0001",
            "secret_key": "wJalrXUtn'FEMI\"K7MDENG\\bPxRfi",
            "security_token": "IQoJb3JpZ2luX2VjE#/?x",
        },
    ),
    "azure": (
        "storages.backends.azure_storage.AzureStorage",
        {
            "account_name": "acct",
            "account_key": "Zm9vYmFy/YmF6+cXV4'\"==",
            "sas_token": "sv=2022-11-02&sig=abc%2Bdef'x",
            "connection_string": (
                "DefaultEndpointsProtocol=https;AccountName=acct;"
                "AccountKey=c2VjcmV0/a2V5+==;EndpointSuffix=core.windows.net"
            ),
            "azure_container": "media",
        },
    ),
    "gcs": (
        "storages.backends.gcloud.GoogleCloudStorage",
        {"bucket_name": "media", "project_id": "p", "credentials": "gcs-token-'\"\\"},
    ),
    "sftp": (
        "storages.backends.sftpstorage.SFTPStorage",
        {
            "host": "sftp.example.test",
            "params": {
                "username": "deploy",
                "password": "hunter2'\"\\",
                "passphrase": "weak",
                "pkey_passphrase": "also-weak'",
                "pass": "short'pw",
                "pwd": 'another"pw',
                "auth": "auth-value\\",
            },
            "root_path": "/uploads",
        },
    ),
    "ftp": (
        "storages.backends.ftp.FTPStorage",
        {"location": f"ftp://deploy:{HOSTILE}@127.0.0.1:2121/media/"},
    ),
}


def credentials(options: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the ``(option name, secret)`` pairs of *options*."""
    pairs: list[tuple[str, str]] = []
    for key, value in options.items():
        if isinstance(value, dict):
            pairs += credentials(value)
        elif key == "location":
            pairs.append(("passwd", HOSTILE))
        elif key not in NOT_SECRET:
            pairs.append((key, value))
    return pairs


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_redact_masks_each_backends_credentials_in_every_spelling(
    backend: str,
) -> None:
    remote, options = BACKENDS[backend]
    storage = QueuedStorage(local=FS, remote=remote, remote_options=options)
    for name, secret in credentials(options):
        for text in error_texts(secret, name):
            shown = storage.redact(text)
            assert leaked(secret, shown) == [], (name, text, shown)
        # Without the configuration, the patterns alone mask the value of a
        # quoted or ``name=value`` pair whose name is the option's.
        from queued_storage.redaction import redact

        for text in error_texts(secret, name)[1:4]:
            shown = redact(text)
            assert leaked(secret, shown) == [], (name, text, shown)


NOT_SECRET = {
    "bucket_name", "account_name", "azure_container", "project_id", "host",
    "root_path", "username",
}  # fmt: skip


def rotate(value: Any, key: str = "") -> Any:
    """Return the options *value* with every credential changed."""
    if isinstance(value, dict):
        return {k: rotate(v, k) for k, v in value.items()}
    if key == "location":
        return value.replace(HOSTILE, "rotated-password")
    return value if key in NOT_SECRET else value[::-1]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_reference_reveals_nothing_of_the_credentials(backend: str) -> None:
    """Storages that differ only in their credentials share their reference:
    it is made of the other options, so no guess can be checked against it."""
    remote, options = BACKENDS[backend]
    rotated = rotate(options)
    assert rotated != options
    one = QueuedStorage(local=FS, remote=remote, remote_options=options)
    two = QueuedStorage(local=FS, remote=remote, remote_options=rotated)
    assert one.reference == two.reference
    first = next(iter(options))
    other = {**options, first: "elsewhere"}
    if first == "location":
        other[first] = options[first].replace("2121", "2122")
    three = QueuedStorage(local=FS, remote=remote, remote_options=other)
    assert three.reference != one.reference


def test_options_of_a_storages_alias_are_redacted() -> None:
    location = f"ftp://deploy:{HOSTILE}@127.0.0.1:2121/media/"
    configured = {
        "default": {"BACKEND": FS},
        "ftp_remote": {
            "BACKEND": "storages.backends.ftp.FTPStorage",
            "OPTIONS": {"location": location},
        },
    }
    with override_settings(STORAGES=configured):
        storage = QueuedStorage(local=FS, remote="ftp_remote")
        config = {"host": "127.0.0.1", "user": "deploy", "passwd": HOSTILE}
        text = f"Connection or login error using data {config!r}"
        assert leaked(HOSTILE, storage.redact(text)) == []
        assert storage.remote._config["passwd"] == HOSTILE
        # Once built, what the backend parsed is known too: here in a form
        # no pattern knows.
        assert leaked(HOSTILE, storage.redact(f"login as {HOSTILE!r}")) == []


def test_log_records_of_the_package_are_redacted(caplog: Any) -> None:
    remote, options = BACKENDS["sftp"]
    storage = QueuedStorage(local=FS, remote=remote, remote_options=options)
    secret = options["params"]["passphrase"]
    logger = logging.getLogger("queued_storage")
    with caplog.at_level(logging.INFO, logger="queued_storage"):
        logger.warning("The remote said %s", f"bad key, passphrase {secret}")
        try:
            raise RuntimeError(f"key {secret!r} refused")
        except RuntimeError:
            logger.exception("Transfer failed")
    assert storage.reference
    assert secret not in caplog.text


# Against a real FTP server that refuses the password ------------------------


@pytest.fixture(scope="module")
def ftp() -> Iterator[FTPServer]:
    with FTPServer() as server:
        (server.root / "media").mkdir()
        yield server


@pytest.fixture
def refused(ftp: FTPServer, tmp_path: Path, unique: str) -> QueuedFTPStorage:
    """An FTP storage whose (hostile) password the server refuses."""
    return QueuedFTPStorage(
        local_options={"location": str(tmp_path / "local")},
        remote_options={
            "location": f"ftp://queued:{HOSTILE}@{ftp.host}:{ftp.port}/media/"
        },
        reference=f"ftp-refused-{unique}",
    )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("queued_storage", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_ftp_password_stays_out_of_commands_ledger_logs_and_admin(
    refused: QueuedFTPStorage, client: Any, django_user_model: Any, caplog: Any
) -> None:
    storage = refused
    name = storage.local.save("report.txt", ContentFile(b"data"))
    imported = run("import", "--json", "--no-progress", "--storage", storage.reference)
    assert "Connection or login error" in imported
    assert leaked(HOSTILE, imported) == []

    storage.state.record("old.txt", FileState(Status.TRANSFERRED, "v1", 4))
    verified = run("verify", "--json", "--storage", storage.reference)
    assert "remote copy unreadable" in verified
    assert leaked(HOSTILE, verified) == []

    admin = django_user_model.objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin)
    row = StoredFile.objects.get(storage=storage.reference, name="old.txt")
    page = client.post(
        "/admin/queued_storage/storedfile/",
        {"action": "verify_copies", "_selected_action": [row.pk]},
        follow=True,
    ).content.decode()
    assert "remote copy unreadable" in page
    assert leaked(HOSTILE, page) == []

    storage.state.record(name, FileState(Status.PENDING, "v2", 4))
    with (
        override_settings(QUEUED_STORAGE_RETRIES=0),
        caplog.at_level(logging.INFO, logger="queued_storage"),
    ):
        assert get_task(Transfer.name).process(storage, name, "v2") is False
    row = StoredFile.objects.get(storage=storage.reference, name=name)
    assert row.status == Status.FAILED and "login error" in row.last_error
    assert leaked(HOSTILE, row.last_error) == []
    assert "login error" in caplog.text
    assert leaked(HOSTILE, caplog.text) == []
    detail = client.get(f"/admin/queued_storage/storedfile/{row.pk}/change/")
    assert "login error" in detail.content.decode()
    assert leaked(HOSTILE, detail.content.decode()) == []
