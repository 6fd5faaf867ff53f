"""``manage.py queued_storage health`` against each part working and down."""

from __future__ import annotations

import json
import socket
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings

from queued_storage import health

pytestmark = pytest.mark.django_db(transaction=True)


def closed_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_health(*args: str) -> tuple[str, str]:
    """Return the command's output and its error ("" when it succeeded)."""
    out = StringIO()
    try:
        call_command("queued_storage", "health", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), ""


def line(output: str, part: str) -> str:
    found = [text for text in output.splitlines() if part in text]
    assert found, f"no line about {part!r} in:\n{output}"
    return found[0]


def test_every_part_up_prints_ok_lines_and_succeeds() -> None:
    # No worker runs here (the docs test sees one answer): a warning only.
    output, error = run_health("--storage", "s3", "--timeout", "5")
    assert error == "", output
    for part in ("cache 'default'", "broker", "ledger table"):
        assert line(output, part).startswith("ok "), output
    assert line(output, "workers").startswith(("ok ", "WARN")), output
    assert line(output, "remote storage of 's3'").startswith("ok "), output
    assert line(output, "local storage of 's3'").startswith("ok "), output


def test_cache_on_a_closed_port_fails_with_a_hint() -> None:
    location = f"redis://127.0.0.1:{closed_port()}/0"
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": location}}  # fmt: skip
    with override_settings(CACHES=caches):
        output, error = run_health("--storage", "s3", "--timeout", "2")
    assert line(output, "cache 'default'").startswith("FAIL"), output
    assert "ConnectionError" in line(output, "cache 'default'")
    assert "fix CACHES['default']" in output
    assert "cache 'default'" in error


def test_a_cache_that_never_answers_fails_within_the_timeout() -> None:
    from tests.services import RedisServer

    with RedisServer() as redis:
        redis.pause()
        try:
            backend = "django.core.cache.backends.redis.RedisCache"
            caches = {"default": {"BACKEND": backend, "LOCATION": redis.url_for(0)}}
            with override_settings(CACHES=caches):
                probe = health.probe_cache(1.0)
        finally:
            redis.resume()
    assert not probe.ok
    assert probe.detail == "TimeoutError: no answer within 1 s"


def test_broker_on_a_closed_port_fails(celery_app: Any) -> None:
    before = celery_app.conf.broker_url
    celery_app.conf.broker_url = f"redis://127.0.0.1:{closed_port()}/0"
    try:
        output, error = run_health("--storage", "s3", "--timeout", "2")
    finally:
        celery_app.conf.broker_url = before
    assert line(output, "broker").startswith("FAIL"), output
    assert "fix CELERY_BROKER_URL" in output
    assert "broker" in error


def test_default_celery_app_is_named_as_the_cause(celery_app: Any) -> None:
    from celery import Celery

    # What a project whose package does not import its Celery app gets.
    Celery("default", set_as_current=False).set_current()
    try:
        output, error = run_health("--storage", "s3", "--timeout", "2")
    finally:
        celery_app.set_current()
    assert line(output, "broker").startswith("FAIL"), output
    assert "no Celery app of the project is loaded" in output
    assert "from .celery import app as celery_app" in output
    assert error


def test_missing_ledger_table_fails_with_migrate_hint() -> None:
    from queued_storage.models import StoredFile

    with connection.schema_editor() as editor:
        editor.delete_model(StoredFile)
    try:
        output, error = run_health("--storage", "s3", "--timeout", "5")
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(StoredFile)
    assert line(output, "ledger table").startswith("FAIL"), output
    assert "migrate queued_storage" in output
    assert "ledger" in error


def s3_entry(**options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "django.core.files.storage.FileSystemStorage",
            "remote": "storages.backends.s3.S3Storage",
            "remote_options": options,
            "reference": "health-s3",
        },
    }


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"endpoint_url": "http://127.0.0.1:{port}"}, id="closed-port"),
        pytest.param({"bucket_name": "no-such-bucket-for-health"}, id="no-bucket"),
    ],
)
def test_remote_that_cannot_answer_fails(options: dict[str, str]) -> None:
    from django.core.files.storage import storages

    port = closed_port()
    options = {key: value.format(port=port) for key, value in options.items()}
    entries = {**storages.backends, "health-s3": s3_entry(**options)}
    with override_settings(STORAGES=entries):
        output, error = run_health("--storage", "health-s3", "--timeout", "3")
    assert line(output, "local storage of 'health-s3'").startswith("ok "), output
    assert line(output, "remote storage of 'health-s3'").startswith("FAIL"), output
    assert "remote storage of 'health-s3'" in error


def test_unbuildable_storage_entry_is_a_failed_line() -> None:
    from django.core.files.storage import storages

    entry = s3_entry()
    entry["OPTIONS"]["no_such_option"] = 1
    with override_settings(STORAGES={**storages.backends, "bad": entry}):
        output, error = run_health("--storage", "s3", "--timeout", "3")
    assert "no_such_option" in line(output, "STORAGES['bad']")
    assert error


def test_json_output_lists_every_part() -> None:
    out = StringIO()
    call_command("queued_storage", "health", "--storage", "s3", "--json", stdout=out)
    result = json.loads(out.getvalue()[out.getvalue().index("{") :])
    assert result["ok"] is True
    parts = [part["part"] for part in result["parts"]]
    assert any(part.startswith("broker") for part in parts)
    assert "remote storage of 's3'" in parts
