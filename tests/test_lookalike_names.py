"""Look-alike names: invisible characters are refused, accents are compared in NFC.

A right-to-left override makes ``invoice_fdp.exe`` look like
``invoice_exe.pdf``; a zero-width space or a byte order mark makes two names
that look the same name two files. Composed and decomposed accents are the
same text, so they name one file.
"""

import unicodedata
from pathlib import Path

import pytest
from celery.exceptions import Reject
from django.core.cache import caches
from django.core.files.base import ContentFile

from queued_storage import message
from queued_storage.backends import QueuedS3Storage
from queued_storage.exceptions import InvalidFileName
from queued_storage.models import StoredFile
from queued_storage.names import validate_name
from queued_storage.tasks import Transfer
from queued_storage.transfer import transfer_file

BUCKET = "queued-storage-tests"
NFC = unicodedata.normalize("NFC", "résumé.pdf")
NFD = unicodedata.normalize("NFD", "résumé.pdf")

LOOKALIKES = {
    "right-to-left override": "invoice_\u202efdp.exe",
    "left-to-right mark": "a\u200e.txt",
    "zero-width space": "pay\u200bpal.pdf",
    "zero-width joiner": "a\u200db.txt",
    "word joiner": "a\u2060b.txt",
    "byte order mark": "\ufeffreport.pdf",
    "soft hyphen": "re\u00adport.pdf",
    "line separator": "line\u2028sep.txt",
    "paragraph separator": "para\u2029sep.txt",
    "in a folder name": "docs\u200b/report.pdf",
}


def files_under(path):
    return sorted(p for p in Path(path).rglob("*") if p.is_file())


def test_nfc_and_nfd_spellings_differ_as_strings():
    assert NFC != NFD and len(NFD) == len(NFC) + 2


@pytest.mark.parametrize("name", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_validate_name_refuses_invisible_format_and_separator_characters(name):
    with pytest.raises(InvalidFileName, match="invisible character U\\+"):
        validate_name(name)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", LOOKALIKES.values(), ids=LOOKALIKES.keys())
def test_lookalike_name_is_refused_before_anything_is_written(
    fs_queued, tmp_path, name
):
    storage = fs_queued()
    key = storage.get_cache_key(name)
    with pytest.raises(InvalidFileName):
        storage.save(name, ContentFile(b"x"))
    assert files_under(tmp_path) == []
    assert caches["default"].get(key) is None
    assert not StoredFile.objects.filter(storage=storage.reference).exists()
    for method in ("exists", "url", "delete", "size", "open"):
        with pytest.raises(InvalidFileName):
            getattr(storage, method)(name)


def test_worker_refuses_a_signed_message_with_a_lookalike_name(fs_queued):
    storage = fs_queued()
    kwargs = message.sign(
        Transfer.name, storage.reference, LOOKALIKES["right-to-left override"], "v"
    )
    with pytest.raises(Reject, match="invisible character"):
        Transfer().run(**kwargs)


def test_validate_name_returns_the_nfc_form():
    assert validate_name(NFD) == NFC
    assert validate_name(f"dossiers/{NFD}") == f"dossiers/{NFC}"
    assert validate_name(NFC) == NFC


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("saved_as", [NFC, NFD], ids=["saved-nfc", "saved-nfd"])
def test_nfc_and_nfd_names_are_one_file(fs_queued, tmp_path, saved_as):
    storage = fs_queued(delayed=True)
    saved = storage.save(saved_as, ContentFile(b"first"))
    assert saved == NFC
    assert files_under(tmp_path) == [tmp_path / "local" / NFC]
    for name in (NFC, NFD):
        assert storage.exists(name)
        assert storage.size(name) == 5
        with storage.open(name) as handle:
            assert handle.read() == b"first"
        assert storage.url(name) == storage.url(NFC)
    assert storage.urls([NFC, NFD]) == {NFC: storage.url(NFC), NFD: storage.url(NFC)}
    # The other spelling is taken, not overwritten: the second upload gets
    # a name of its own.
    other = NFD if saved_as == NFC else NFC
    second = storage.save(other, ContentFile(b"second"))
    assert second != NFC and unicodedata.is_normalized("NFC", second)
    with storage.open(NFC) as handle:
        assert handle.read() == b"first"
    rows = StoredFile.objects.filter(storage=storage.reference)
    assert sorted(rows.values_list("name", flat=True)) == sorted([NFC, second])
    storage.delete(other)
    assert not storage.exists(NFC) and not storage.exists(NFD)
    assert files_under(tmp_path) == [tmp_path / "local" / second]


@pytest.mark.django_db(transaction=True)
def test_nfd_upload_reaches_s3_under_the_nfc_key(tmp_path, s3_client, unique):
    storage = QueuedS3Storage(
        local_options={"location": str(tmp_path)},
        remote_options={"location": unique},
        delayed=True,
    )
    saved = storage.save(f"cv/{NFD}", ContentFile(b"pdf"))
    assert saved == f"cv/{NFC}"
    transfer_file(saved, storage.local, storage.remote)
    listed = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=unique)["Contents"]
    assert [o["Key"] for o in listed] == [f"{unique}/cv/{NFC}"]
    storage.delete(f"cv/{NFD}")
    assert "Contents" not in s3_client.list_objects_v2(Bucket=BUCKET, Prefix=unique)
