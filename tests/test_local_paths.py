"""A queued storage's location is the local storage's, as apps expect.

Apps written for ``FileSystemStorage`` join names to ``storage.location``
and pass the absolute path back; a path inside the local location names the
file, and anything that leaves it is refused.
"""

from __future__ import annotations

import os

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import Storage

from queued_storage.backends import QueuedStorage
from queued_storage.exceptions import InvalidFileName

pytestmark = pytest.mark.django_db


@pytest.fixture
def storage(fs_queued):
    return fs_queued(delayed=True)


def test_location_base_location_base_url_and_path_are_the_local_storages(storage):
    local = storage.local
    assert storage.location == local.location
    assert storage.base_location == local.base_location
    assert storage.base_url == local.base_url
    assert storage.path("") == local.location


class Placeless(Storage):
    """A storage with no location, as an object store's client may be."""


def test_a_local_storage_without_location_leaves_the_attribute_missing(tmp_path):
    storage = QueuedStorage(
        local="tests.test_local_paths.Placeless",
        remote="django.core.files.storage.FileSystemStorage",
        remote_options={"location": str(tmp_path)},
    )
    assert not hasattr(storage, "location")
    assert not hasattr(storage, "base_url")
    with pytest.raises(InvalidFileName, match="absolute"):
        storage.exists(str(tmp_path / "a.txt"))


def test_absolute_path_inside_the_local_location_names_the_file(storage, unique):
    name = storage.save(f"abs/{unique}.txt", ContentFile(b"hello"))
    absolute = os.path.join(storage.location, name)
    assert storage.exists(absolute)
    assert storage.size(absolute) == 5
    assert storage.url(absolute) == storage.url(name)
    assert storage.path(absolute) == storage.local.path(name)
    with storage.open(absolute) as opened:
        assert opened.read() == b"hello"
    storage.delete(absolute)
    assert not storage.exists(name)
    assert not storage.local.exists(name)


def test_absolute_path_through_a_linked_location_names_the_file(
    fs_queued, tmp_path, unique
):
    real = tmp_path / "real-local"
    real.mkdir()
    (tmp_path / "linked").symlink_to(real)
    storage = type(fs_queued())(
        local="django.core.files.storage.FileSystemStorage",
        remote="django.core.files.storage.FileSystemStorage",
        local_options={"location": str(tmp_path / "linked")},
        remote_options={"location": str(tmp_path / "remote")},
        delayed=True,
    )
    name = storage.save(f"{unique}.txt", ContentFile(b"x"))
    assert storage.exists(str(tmp_path / "linked" / name))
    assert storage.exists(str(real / name))


def test_paths_that_leave_the_local_location_are_refused(storage, tmp_path):
    location = storage.location
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.makedirs(location, exist_ok=True)
    os.symlink(outside, os.path.join(location, "escape"))
    for path in (
        str(outside / "secret.txt"),
        location + "-sibling/secret.txt",
        os.path.join(location, "..", "outside", "secret.txt"),
        os.path.join(location, "a", "..", "..", "outside", "secret.txt"),
        os.path.join(location, "escape", "secret.txt"),
        location + "/",
        "/etc/passwd",
    ):
        for call in (storage.exists, storage.delete, storage.open, storage.url):
            with pytest.raises(InvalidFileName):
                call(path)
    assert (outside / "secret.txt").read_text() == "secret"


def test_save_still_refuses_an_absolute_name(storage):
    with pytest.raises(InvalidFileName, match="absolute"):
        storage.save(os.path.join(storage.location, "x.txt"), ContentFile(b"x"))
