"""Building a queued storage: options, errors that name the fix, deconstruction."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage, storages
from django.test import override_settings

from queued_storage.backends import (
    QueuedCloudFilesStorage,
    QueuedS3BotoStorage,
    QueuedS3Storage,
    QueuedStorage,
)
from queued_storage.tasks import Transfer

FS = "django.core.files.storage.FileSystemStorage"


@pytest.mark.parametrize("value", [FileSystemStorage(), FileSystemStorage])
def test_storage_instance_or_class_is_refused_with_dotted_path_hint(value):
    with pytest.raises(ImproperlyConfigured, match="dotted path"):
        QueuedStorage(local=value, remote=FS)


def test_unknown_option_names_the_class():
    with pytest.raises(
        ImproperlyConfigured, match="QueuedStorage got unknown options: colour"
    ):
        QueuedStorage(local=FS, remote=FS, colour="blue")


def test_missing_remote_is_refused():
    with pytest.raises(ImproperlyConfigured, match="built without remote storage"):
        QueuedStorage(local=FS)


def test_no_argument_construction_says_how_to_declare_a_rebuildable_storage():
    with pytest.raises(ImproperlyConfigured) as raised:
        QueuedStorage()
    message = str(raised.value)
    assert "built without local and remote storage" in message
    assert "subclass of QueuedStorage whose class attributes" in message
    assert "STORAGES" in message


def test_options_must_be_a_dict():
    with pytest.raises(ImproperlyConfigured, match="remote_options must be a dict"):
        QueuedStorage(local=FS, remote=FS, remote_options=["location"])


@pytest.mark.parametrize(
    ("option", "value"), [("delayed", "yes"), ("task", 3), ("cache_prefix", 1)]
)
def test_option_types_are_checked(option, value):
    with pytest.raises(ImproperlyConfigured, match=option):
        QueuedStorage(local=FS, remote=FS, **{option: value})


def test_unimportable_backend_is_reported_on_first_use():
    storage = QueuedStorage(local=FS, remote="no.such.module.Storage")
    with pytest.raises(ImproperlyConfigured, match="could not import its remote"):
        storage.remote


def test_non_storage_class_is_refused():
    storage = QueuedStorage(local=FS, remote="collections.OrderedDict")
    with pytest.raises(ImproperlyConfigured, match="is not a storage class"):
        storage.remote


def test_backends_are_built_lazily_with_their_options_and_kept(tmp_path):
    storage = QueuedStorage(
        local=FS, remote=FS, local_options={"location": str(tmp_path)}
    )
    assert "local" not in storage.__dict__
    assert storage.local.location == str(tmp_path)
    assert storage.local is storage.local


def test_class_attributes_are_defaults_for_subclasses():
    class Mine(QueuedStorage):
        local = FS
        remote = FS
        remote_options = {"location": "/srv/remote"}
        delayed = True

    storage = Mine()
    assert Mine.remote == FS
    assert storage.remote.location == "/srv/remote"
    assert storage.delayed is True
    assert QueuedS3Storage.remote == "storages.backends.s3.S3Storage"


def test_old_s3_name_is_the_same_class():
    assert QueuedS3BotoStorage is QueuedS3Storage


def test_removed_backend_says_what_to_pass():
    with pytest.raises(
        ImproperlyConfigured, match="was removed from django-storages. Pass remote="
    ):
        QueuedCloudFilesStorage()
    storage = QueuedCloudFilesStorage(remote=FS)
    assert isinstance(storage.remote, FileSystemStorage)


def test_deconstruct_gives_path_args_and_kwargs():
    storage = QueuedStorage(
        local=FS, remote=FS, remote_options={"location": "/r"}, delayed=True
    )
    path, args, kwargs = storage.deconstruct()
    assert path == "queued_storage.backends.QueuedStorage"
    assert args == ()
    assert kwargs == {
        "local": FS,
        "remote": FS,
        "remote_options": {"location": "/r"},
        "delayed": True,
    }
    assert QueuedS3Storage(delayed=True).deconstruct() == (
        "queued_storage.backends.QueuedS3Storage",
        (),
        {"delayed": True},
    )


def test_storages_alias_resolves_and_is_the_reference():
    queued = storages["queued"]
    assert isinstance(queued, QueuedStorage)
    assert queued.remote is storages["remote_s3"]
    assert queued.reference == "queued"


def test_alias_with_options_is_refused():
    storage = QueuedStorage(
        local=FS, remote="remote_s3", remote_options={"bucket_name": "x"}
    )
    with pytest.raises(ImproperlyConfigured, match="drop remote_options"):
        storage.remote


def test_references_differ_with_options():
    a = QueuedStorage(local=FS, remote=FS, remote_options={"location": "/a"})
    b = QueuedStorage(local=FS, remote=FS, remote_options={"location": "/b"})
    again = QueuedStorage(local=FS, remote=FS, remote_options={"location": "/a"})
    assert a.reference != b.reference
    assert a.reference == again.reference


def test_retry_settings_are_read_when_the_task_runs():
    task = Transfer()
    with override_settings(QUEUED_STORAGE_RETRIES=7, QUEUED_STORAGE_RETRY_DELAY=11):
        assert (task.max_retries, task.default_retry_delay) == (7, 11)
    with override_settings(QUEUED_STORAGE_RETRIES=1):
        assert task.max_retries == 1


def test_backoff_grows_and_is_capped():
    task = Transfer()
    with override_settings(
        QUEUED_STORAGE_RETRY_DELAY=10, QUEUED_STORAGE_RETRY_BACKOFF_MAX=60
    ):
        delays = [task.backoff(n) for n in range(6)]
    assert 5 <= delays[0] <= 10
    assert 20 <= delays[2] <= 40
    assert all(d <= 60 for d in delays)
    assert 30 <= delays[5] <= 60


def test_tasks_are_registered_under_their_names(celery_app):
    assert "queued_storage.tasks.Transfer" in celery_app.tasks
    assert "queued_storage.tasks.TransferAndDelete" in celery_app.tasks
    # A subclass is registered under its dotted path once its module is imported.
    from queued_storage.tasks import get_task

    task = get_task("tests.testapp.tasks.BrokenUntilFixed")
    assert celery_app.tasks["tests.testapp.tasks.BrokenUntilFixed"] is task


def test_unregistered_task_path_is_refused():
    from queued_storage.tasks import get_task

    with pytest.raises(ImproperlyConfigured, match="is not a task registered"):
        get_task("tests.testapp.models.Document")
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        get_task("tests.testapp.nothing.Here")


def test_every_public_storage_method_is_proxied():
    import inspect

    from django.core.files.storage import Storage

    public = [
        name
        for name, value in inspect.getmembers(Storage, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert "is_name_available" in public and "get_modified_time" in public
    not_proxied = [
        name
        for name in public
        if getattr(QueuedStorage, name) is getattr(Storage, name)
    ]
    assert not_proxied == []


def test_default_reference_ignores_credentials():
    a = QueuedS3Storage(
        remote_options={"bucket_name": "b", "access_key": "old", "secret_key": "s1"}
    )
    b = QueuedS3Storage(
        remote_options={"bucket_name": "b", "access_key": "new", "secret_key": "s2"}
    )
    c = QueuedS3Storage(remote_options={"bucket_name": "c", "access_key": "old"})
    assert a.reference == b.reference != c.reference
    assert a.reference.startswith("QueuedS3Storage:")


def test_credentials_are_masked_and_kept_out_of_references():
    one = QueuedStorage(
        local=FS,
        remote="storages.backends.ftp.FTPStorage",
        remote_options={"location": "ftp://user:hunter2pw@127.0.0.1:21/"},
    )
    two = QueuedStorage(
        local=FS,
        remote="storages.backends.ftp.FTPStorage",
        remote_options={"location": "ftp://user:rotated99@127.0.0.1:21/"},
    )
    assert one.reference == two.reference
    error = "Connection refused: {'passwd': 'hunter2pw', 'user': 'user'}"
    assert one.redact(error) == "Connection refused: {'passwd': '***', 'user': 'user'}"
    s3 = QueuedS3Storage(
        remote_options={"secret_key": "wJalrXUtnFEMI", "bucket_name": "b"}
    )
    assert s3.redact("signed with wJalrXUtnFEMI") == "signed with ***"
    assert s3.redact("bucket b") == "bucket b"
