"""Each system check fires on its misconfiguration and stays silent otherwise."""

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings

from queued_storage import checks


def ids(messages):
    return sorted(message.id for message in messages)


def test_good_configuration_is_silent():
    messages = [
        m
        for m in run_checks(databases=["default"])
        if m.id.startswith("queued_storage")
    ]
    assert messages == []


pytestmark = pytest.mark.django_db


def test_missing_cache_alias():
    with override_settings(QUEUED_STORAGE_CACHE="states"):
        assert ids(checks.check_cache()) == ["queued_storage.E001"]


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    ],
)
def test_process_local_cache(backend):
    with override_settings(CACHES={"default": {"BACKEND": backend}}):
        messages = checks.check_cache()
    assert ids(messages) == ["queued_storage.W001"]
    assert "shared cache" in messages[0].hint


@pytest.mark.django_db(transaction=True)
def test_missing_ledger_table():
    with connection.schema_editor() as editor:
        from queued_storage.models import StoredFile

        editor.delete_model(StoredFile)
        try:
            assert ids(checks.check_ledger(databases=["default"])) == [
                "queued_storage.W002"
            ]
            with override_settings(QUEUED_STORAGE_LEDGER=False):
                assert checks.check_ledger(databases=["default"]) == []
        finally:
            editor.create_model(StoredFile)
    assert checks.check_ledger(databases=["default"]) == []


def test_storage_with_bad_backend_and_task():
    from django.core.files.storage import storages

    bad = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "no.such.Storage",
            "remote": "remote_s3",
            "task": "tests.testapp.models.Document",
        },
    }
    with override_settings(STORAGES={**storages.backends, "broken": bad}):
        messages = checks.check_storages()
    assert ids(messages) == ["queued_storage.E002", "queued_storage.E003"]
    assert "could not import its local storage 'no.such.Storage'" in messages[0].msg


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("QUEUED_STORAGE_RETRIES", None, "queued_storage.E004"),
        ("QUEUED_STORAGE_RETRIES", -1, "queued_storage.E004"),
        ("QUEUED_STORAGE_RETRY_DELAY", 0, "queued_storage.E005"),
        ("QUEUED_STORAGE_MESSAGE_MAX_AGE", "1d", "queued_storage.E005"),
        ("QUEUED_STORAGE_NAME_CHECK", "guess", "queued_storage.E006"),
    ],
)
def test_bad_settings(setting, value, expected):
    with override_settings(**{setting: value}):
        assert ids(checks.check_settings()) == [expected]


def test_pickle_accepted(celery_app):
    old = celery_app.conf.accept_content
    celery_app.conf.accept_content = ["json", "pickle"]
    try:
        assert ids(checks.check_celery()) == ["queued_storage.W003"]
    finally:
        celery_app.conf.accept_content = old
    assert checks.check_celery() == []


def test_local_disk_with_remote_workers(celery_app):
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://broker.internal:6379/0"
    try:
        found = ids(checks.check_local_reachable())
        assert found and set(found) == {"queued_storage.W004"}
        with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
            assert checks.check_local_reachable() == []
        with override_settings(QUEUED_STORAGE_SHARED_LOCAL=True):
            assert checks.check_local_reachable() == []
    finally:
        celery_app.conf.broker_url = old
    assert checks.check_local_reachable() == []


def test_shared_reference_with_different_configurations():
    from django.core.files.storage import storages

    twin = {
        "BACKEND": "queued_storage.backends.QueuedS3Storage",
        "OPTIONS": {"reference": "s3", "delayed": True},
    }
    with override_settings(STORAGES={**storages.backends, "twin": twin}):
        messages = checks.check_storages()
    assert ids(messages) == ["queued_storage.E007"]
    assert "'s3'" in messages[0].msg


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("memory://", True),
        ("redis://localhost:6379/0", True),
        ("redis://127.0.0.1/0", True),
        ("amqp://[::1]:5672//", True),
        ("redis://broker.internal:6379/0", False),
        ("amqp://user:pw@10.0.0.5//", False),
    ],
)
def test_brokers_on_this_host_are_told_apart(url, local):
    assert checks._broker_is_local(url) is local


def test_remote_workers_warning_passes_over_a_storage_that_cannot_be_built(celery_app):
    from django.core.files.storage import storages

    bad = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {"local": "no.such.Storage", "remote": "remote_s3"},
    }
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://broker.internal:6379/0"
    try:
        with override_settings(STORAGES={**storages.backends, "broken": bad}):
            warned = checks.check_local_reachable()
            errors = ids(checks.check_storages())
    finally:
        celery_app.conf.broker_url = old
    assert "queued_storage.E002" in errors
    assert all("'broken'" not in message.msg for message in warned)


def test_ledger_check_skips_a_database_it_was_not_asked_about():
    assert checks.check_ledger(databases=["other"]) == []
    assert checks.check_ledger(databases=None) == []
