"""Queued storages under apps that read and write files through a storage.

sorl-thumbnail and easy-thumbnails make thumbnails of a picture pending,
transferred by a real worker, or deleted meanwhile; django-cleanup removes
replaced files from both storages. ``PictureStorage`` is declared in code,
as a subclass whose class attributes hold its configuration.

Each app supports every Python and Django version the suite runs on; they
are in the "test" extra, and a missing one fails the run.
"""

from __future__ import annotations

import io
import os

import easy_thumbnails.files as easy_thumbnails_files
import pytest
import sorl.thumbnail as sorl
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from PIL import Image

from tests.conftest import wait_for
from tests.otherapps.files import png, put_pending, put_transferred
from tests.otherapps.models import Picture, PictureStorage

pytestmark = pytest.mark.django_db(transaction=True)

storage = Picture._meta.get_field("image").storage


def size_of(opened) -> tuple[int, int]:
    with opened:
        return Image.open(io.BytesIO(opened.read())).size


# sorl-thumbnail ------------------------------------------------------------


def test_sorl_thumbnails_a_pending_file(unique):
    name = put_pending(storage, f"pictures/{unique}.png", png(32, 24))
    picture = Picture.objects.create(image=name)
    thumbnail = sorl.get_thumbnail(picture.image, "16x16")
    assert (thumbnail.width, thumbnail.height) == (16, 12)
    assert size_of(default_storage.open(thumbnail.name)) == (16, 12)
    assert picture.image.url == f"/local/{name}"
    # The key, and so the thumbnail's name, holds the storage's class path:
    # the same file in another storage gets other thumbnails.
    from sorl.thumbnail.images import ImageFile

    default_storage.save(name, ContentFile(png(32, 24)))
    elsewhere = sorl.get_thumbnail(ImageFile(name, default_storage), "16x16")
    assert elsewhere.name != thumbnail.name


def test_sorl_rebuilds_a_storage_declared_in_code_from_its_class_path(unique):
    from sorl.thumbnail.images import (
        ImageFile,
        deserialize_image_file,
        get_or_create_storage,
        serialize_image_file,
    )

    name = put_pending(storage, f"pictures/{unique}.png", png())
    source = ImageFile(Picture.objects.create(image=name).image)
    assert source.serialize_storage() == "tests.otherapps.models.PictureStorage"
    source.set_size((32, 24))
    rebuilt = deserialize_image_file(serialize_image_file(source))
    assert type(rebuilt.storage) is PictureStorage
    assert rebuilt.storage is not storage
    assert rebuilt.storage.reference == storage.reference
    assert rebuilt.exists()
    # A QueuedStorage configured by arguments cannot be rebuilt; it says why.
    with pytest.raises(ImproperlyConfigured, match="class attributes"):
        get_or_create_storage("queued_storage.backends.QueuedStorage")


def test_sorl_thumbnails_a_file_the_worker_transferred(celery_worker, unique):
    picture = Picture()
    picture.image.save(f"{unique}.png", ContentFile(png(40, 20)))
    name = picture.image.name
    wait_for(lambda: storage.using_remote(name))
    # Only the remote copy is left, as after TransferAndDelete.
    os.remove(storage.local.path(name))
    assert picture.image.url == f"/remote/{name}"
    thumbnail = sorl.get_thumbnail(picture.image, "20x20")
    assert (thumbnail.width, thumbnail.height) == (20, 10)
    assert size_of(default_storage.open(thumbnail.name)) == (20, 10)


def test_sorl_makes_no_thumbnail_of_a_file_deleted_meanwhile(unique):
    name = put_pending(storage, f"pictures/{unique}.png", png())
    picture = Picture.objects.create(image=name)
    first = sorl.get_thumbnail(picture.image, "16x16")
    assert default_storage.exists(first.name)
    storage.delete(name)
    second = sorl.get_thumbnail(picture.image, "8x8")
    assert not second.exists()
    # sorl's delete() removes the thumbnails it made; the source is gone.
    sorl.delete(picture.image)
    assert not default_storage.exists(first.name)
    assert not storage.exists(name)


# easy-thumbnails -------------------------------------------------------------


def thumbnail_of(picture: Picture):
    thumbnailer = easy_thumbnails_files.get_thumbnailer(picture.image)
    return thumbnailer.get_thumbnail({"size": (16, 16)})


def test_easy_thumbnails_thumbnails_pending_and_transferred_files(unique):
    pending = put_pending(storage, f"pictures/{unique}-p.png", png(32, 24))
    remote = put_transferred(storage, f"pictures/{unique}-r.png", png(24, 32))
    os.remove(storage.local.path(remote))
    made = [thumbnail_of(Picture.objects.create(image=n)) for n in (pending, remote)]
    assert [size_of(default_storage.open(t.name)) for t in made] == [
        (16, 12),
        (12, 16),
    ]


def test_easy_thumbnails_cleanup_removes_only_what_lost_its_source(unique):
    from easy_thumbnails.models import Source

    kept = put_pending(storage, f"pictures/{unique}-kept.png", png())
    gone = put_transferred(storage, f"pictures/{unique}-gone.png", png())
    kept_thumbnail = thumbnail_of(Picture.objects.create(image=kept))
    gone_thumbnail = thumbnail_of(Picture.objects.create(image=gone))
    storage.delete(gone)
    out, err = io.StringIO(), io.StringIO()
    call_command("thumbnail_cleanup", stdout=out, stderr=err)
    assert err.getvalue() == ""
    assert f"Source not present: {os.path.join(storage.location, gone)}" in (
        out.getvalue()
    )
    assert list(Source.objects.values_list("name", flat=True)) == [kept]
    assert default_storage.exists(kept_thumbnail.name)
    assert not default_storage.exists(gone_thumbnail.name)
    assert storage.exists(kept)


# django-cleanup --------------------------------------------------------------


def test_django_cleanup_removes_replaced_files_from_both_storages(
    celery_worker, unique
):
    picture = Picture()
    picture.image.save(f"{unique}.png", ContentFile(png()))
    old = picture.image.name
    wait_for(lambda: storage.using_remote(old))
    assert storage.local.exists(old) and storage.remote.exists(old)

    picture.image.save(f"{unique}-new.png", ContentFile(png(colour="blue")))
    new = picture.image.name
    assert not storage.local.exists(old)
    assert not storage.remote.exists(old)
    assert not storage.exists(old)
    assert storage.exists(new)

    picture.delete()
    assert not storage.exists(new)
    assert not storage.local.exists(new)
    # A transfer still in flight gives up and removes what it uploaded.
    wait_for(lambda: not storage.remote.exists(new), timeout=20)


# Django REST framework -----------------------------------------------------


def test_drf_file_field_shows_the_local_url_then_the_remote_one(unique):
    from django.test import RequestFactory
    from rest_framework import serializers

    class PictureSerializer(serializers.ModelSerializer):
        class Meta:
            model = Picture
            fields = ["image"]

    request = RequestFactory().get("/")
    pending = put_pending(storage, f"pictures/{unique}-p.png", png())
    remote = put_transferred(storage, f"pictures/{unique}-r.png", png())
    shown = [
        PictureSerializer(
            Picture.objects.create(image=name), context={"request": request}
        ).data["image"]
        for name in (pending, remote)
    ]
    assert shown == [
        f"http://testserver/local/{pending}",
        f"http://testserver/remote/{remote}",
    ]
