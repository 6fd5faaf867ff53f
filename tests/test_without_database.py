"""With the ledger off, no storage call needs a database.

The tests here run without pytest-django's database access (its blocker
raises on any connection), and one runs a project with ``DATABASES = {}``.
With the ledger on, a storage call that needs the database says why and
what to do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import override_settings

from queued_storage.exceptions import LedgerUnavailable
from queued_storage.signals import file_queued

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_database(django_db_blocker):
    """Refuse every database connection, even if a worker unblocked them."""
    with django_db_blocker.block():
        yield


@override_settings(QUEUED_STORAGE_LEDGER=False)
def test_every_storage_method_works_without_database_access(
    fs_queued, no_database, unique
):
    storage = fs_queued(delayed=True)
    name = storage.save(f"nodb/{unique}.txt", ContentFile(b"hello"))
    assert storage.exists(name)
    assert storage.size(name) == 5
    assert storage.url(name) == storage.local.url(name)
    with storage.open(name) as opened:
        assert opened.read() == b"hello"
    assert storage.path(name) == storage.local.path(name)
    assert storage.get_modified_time(name) == storage.local.get_modified_time(name)
    assert storage.listdir("nodb") == ([], [f"{unique}.txt"])
    assert storage.get_available_name(name) != name
    assert storage.urls([name]) == {name: storage.local.url(name)}
    storage.state.cache.delete(storage.get_cache_key(name))
    assert storage.exists(name)  # found again by probing the storages
    storage.delete(name)
    assert not storage.exists(name)
    assert not storage.local.exists(name)


@override_settings(QUEUED_STORAGE_LEDGER=False)
@pytest.mark.django_db(transaction=True)
def test_without_ledger_an_open_transaction_still_delays_the_transfer(
    fs_queued, unique
):
    storage = fs_queued(delayed=True)
    queued = []

    def received(sender, name, **kwargs):
        queued.append(name)

    file_queued.connect(received)
    try:
        with transaction.atomic():
            name = storage.save(f"atomic/{unique}.txt", ContentFile(b"x"))
            assert queued == []
        assert queued == [name]
        outside = storage.save(f"atomic/{unique}-2.txt", ContentFile(b"y"))
        assert queued == [name, outside]
    finally:
        file_queued.disconnect(received)


def test_with_ledger_a_read_without_database_access_says_what_to_do(
    fs_queued, no_database, unique
):
    storage = fs_queued()
    with pytest.raises(LedgerUnavailable) as raised:
        storage.exists(f"cold/{unique}.txt")
    message = str(raised.value)
    assert "QUEUED_STORAGE_LEDGER" in message
    assert "django_db" in message


def test_with_ledger_a_save_without_database_access_writes_nothing(
    fs_queued, no_database, unique, tmp_path
):
    storage = fs_queued()
    with pytest.raises(LedgerUnavailable, match="QUEUED_STORAGE_LEDGER"):
        storage.save(f"cold/{unique}.txt", ContentFile(b"x"))
    assert not (tmp_path / "local" / "cold" / f"{unique}.txt").exists()


SCRIPT = textwrap.dedent(
    """
    import json, sys
    import django
    from django.conf import settings

    settings.configure(
        DATABASES={},
        INSTALLED_APPS=["queued_storage"],
        CACHES={"default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        QUEUED_STORAGE_LEDGER=sys.argv[2] == "on",
        USE_TZ=True,
    )
    django.setup()
    from django.core.files.base import ContentFile
    from queued_storage.backends import QueuedStorage

    fs = "django.core.files.storage.FileSystemStorage"
    storage = QueuedStorage(
        local=fs, remote=fs, delayed=True,
        local_options={"location": sys.argv[1] + "/local", "base_url": "/l/"},
        remote_options={"location": sys.argv[1] + "/remote"},
    )
    try:
        name = storage.save("a.txt", ContentFile(b"hello"))
        answer = [storage.exists(name), storage.url(name), storage.size(name)]
        storage.delete(name)
        answer.append(storage.exists(name))
    except Exception as exc:
        answer = [type(exc).__name__, str(exc)]
    print(json.dumps(answer))
    """
)


def run_without_databases(tmp_path: Path, ledger: str) -> list[object]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), ledger],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_project_without_databases_uses_a_ledgerless_storage(tmp_path):
    assert run_without_databases(tmp_path, "off") == [True, "/l/a.txt", 5, False]


@pytest.mark.slow
def test_project_without_databases_is_told_to_turn_the_ledger_off(tmp_path):
    kind, message = run_without_databases(tmp_path, "on")
    assert kind == "ImproperlyConfigured"
    assert "QUEUED_STORAGE_LEDGER = False" in message
    assert "DATABASES" in message
    assert not (tmp_path / "local" / "a.txt").exists()


def test_with_ledger_a_save_where_the_database_is_a_dummy_writes_nothing(
    fs_queued, unique, tmp_path, monkeypatch
):
    """In process, as ``DATABASES = {}`` leaves it: the dummy backend."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    settings_dict = connections["default"].settings_dict
    monkeypatch.setitem(settings_dict, "ENGINE", "django.db.backends.dummy")
    storage = fs_queued()
    with pytest.raises(ImproperlyConfigured, match="no 'default' database"):
        storage.save(f"dummy/{unique}.txt", ContentFile(b"x"))
    assert not (tmp_path / "local" / "dummy" / f"{unique}.txt").exists()


def test_other_runtime_errors_of_a_ledger_query_pass_unchanged():
    from queued_storage import ledger_access

    def fails():
        raise RuntimeError("something else went wrong")

    with pytest.raises(RuntimeError, match="^something else went wrong$"):
        ledger_access.run(fails, using="default")
