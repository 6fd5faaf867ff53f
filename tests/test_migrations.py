"""Models with queued fields live happily in migrations."""

import io

import pytest
from django.core.management import call_command

from queued_storage.fields import QueuedFieldFile, QueuedFileField
from tests.testapp.models import Document


@pytest.mark.django_db
def test_makemigrations_finds_nothing_to_do_twice():
    for _ in range(2):
        out = io.StringIO()
        call_command("makemigrations", "--check", "--dry-run", stdout=out)
        assert "No changes detected" in out.getvalue()


def test_field_deconstructs_with_its_storage():
    field = Document._meta.get_field("file")
    name, path, args, kwargs = field.deconstruct()
    assert path == "queued_storage.fields.QueuedFileField"
    assert kwargs["storage"] is field.storage
    assert kwargs["upload_to"] == "docs"
    rebuilt = QueuedFileField(*args, **kwargs)
    assert rebuilt.storage.deconstruct() == field.storage.deconstruct()


def test_field_file_class_has_transfer():
    assert Document._meta.get_field("file").attr_class is QueuedFieldFile
    assert callable(QueuedFieldFile.transfer)
