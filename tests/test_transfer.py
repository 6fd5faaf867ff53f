"""The transfer itself: same name, verified, streamed, never overwriting."""

import pytest
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage

from queued_storage.exceptions import (
    LocalFileMissing,
    LocalFileUnsafe,
    NameChanged,
    RemoteConflict,
    VerificationFailed,
)
from queued_storage.transfer import transfer_file


@pytest.fixture
def local(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "local"))


@pytest.fixture
def remote(tmp_path):
    return FileSystemStorage(location=str(tmp_path / "remote"))


class RenamingStorage(FileSystemStorage):
    """A remote that stores every file under another name."""

    def get_available_name(self, name, max_length=None):
        return "renamed-" + name


class TruncatingStorage(FileSystemStorage):
    """A remote that loses the last byte of every file."""

    def _save(self, name, content):
        data = b"".join(content.chunks())[:-1]
        return super()._save(name, ContentFile(data))


class WatchedFile(File):
    reads: list = []
    closed_files: list = []

    def read(self, size=-1):
        self.reads.append(size)
        return super().read(size)

    def close(self):
        self.closed_files.append(self.name)
        super().close()


class WatchedStorage(FileSystemStorage):
    """A local storage that records how its files are read and closed."""

    def _open(self, name, mode="rb"):
        return WatchedFile(open(self.path(name), mode), name)


def test_copies_under_the_same_name(local, remote):
    local.save("dir/a.bin", ContentFile(b"payload"))
    result = transfer_file("dir/a.bin", local, remote)
    assert result.uploaded and result.size == 7
    with remote.open("dir/a.bin") as handle:
        assert handle.read() == b"payload"


def test_renaming_remote_fails_loudly_and_leaves_nothing(local, tmp_path):
    remote = RenamingStorage(location=str(tmp_path / "remote"))
    local.save("a.txt", ContentFile(b"x"))
    with pytest.raises(NameChanged, match="stored 'a.txt' as 'renamed-a.txt'"):
        transfer_file("a.txt", local, remote)
    assert remote.listdir("") == ([], [])


def test_short_remote_copy_fails_verification(local, tmp_path):
    remote = TruncatingStorage(location=str(tmp_path / "remote"))
    local.save("a.txt", ContentFile(b"xyz"))
    with pytest.raises(VerificationFailed, match="2 bytes, the local one 3"):
        transfer_file("a.txt", local, remote)


def test_different_remote_object_is_not_overwritten(local, remote):
    local.save("a.txt", ContentFile(b"ours"))
    remote.save("a.txt", ContentFile(b"someone else's"))
    with pytest.raises(RemoteConflict, match="was not overwritten"):
        transfer_file("a.txt", local, remote)
    with remote.open("a.txt") as handle:
        assert handle.read() == b"someone else's"


def test_replace_overwrites_when_asked(local, remote):
    local.save("a.txt", ContentFile(b"newer"))
    remote.save("a.txt", ContentFile(b"older!"))
    assert transfer_file("a.txt", local, remote, replace=True).uploaded
    with remote.open("a.txt") as handle:
        assert handle.read() == b"newer"


def test_matching_remote_copy_counts_as_done(local, remote):
    local.save("a.txt", ContentFile(b"same"))
    remote.save("a.txt", ContentFile(b"same"))
    assert not transfer_file("a.txt", local, remote).uploaded


def test_missing_local_copy_with_remote_copy_counts_as_done(local, remote):
    remote.save("a.txt", ContentFile(b"moved"))
    result = transfer_file("a.txt", local, remote)
    assert (result.uploaded, result.size) == (False, 5)


def test_missing_local_copy_names_the_cause(local, remote):
    with pytest.raises(LocalFileMissing, match="PER_HOST_QUEUE"):
        transfer_file("a.txt", local, remote)


def test_streams_in_chunks_and_closes_the_local_file(tmp_path, remote):
    local = WatchedStorage(location=str(tmp_path / "local"))
    data = b"0123456789abcdef" * (256 * 1024)  # 4 MiB
    local.save("big.bin", ContentFile(data))
    WatchedFile.reads.clear()
    WatchedFile.closed_files.clear()
    transfer_file("big.bin", local, remote)
    assert WatchedFile.reads, "the local file was not read through the storage"
    assert all(0 < size <= File.DEFAULT_CHUNK_SIZE for size in WatchedFile.reads)
    assert WatchedFile.closed_files == ["big.bin"]
    assert remote.size("big.bin") == len(data)


def test_streams_to_s3_in_bounded_reads(tmp_path, servers, unique):
    from storages.backends.s3 import S3Storage

    local = WatchedStorage(location=str(tmp_path / "local"))
    remote = S3Storage(location=f"stream-{unique}")
    data = b"x" * (12 * 1024 * 1024)  # Over the multipart threshold.
    local.save("big.bin", ContentFile(data))
    WatchedFile.reads.clear()
    transfer_file("big.bin", local, remote)
    assert WatchedFile.reads and all(
        0 < size <= 8 * 1024 * 1024 for size in WatchedFile.reads
    )
    assert remote.size("big.bin") == len(data)


def test_a_fifo_in_place_of_the_local_copy_is_refused_unread(local, remote):
    import os

    os.makedirs(local.location, exist_ok=True)
    os.mkfifo(os.path.join(local.location, "pipe.txt"))
    # Opening a FIFO to read would wait for a writer: it is never read.
    with pytest.raises(LocalFileUnsafe, match="not a regular file"):
        transfer_file("pipe.txt", local, remote)
    assert not remote.exists("pipe.txt")


def test_the_check_of_an_upload_compares_sizes_on_other_remotes(local, remote):
    from queued_storage.transfer import remote_matches

    local.save("sized.txt", ContentFile(b"12345"))
    assert not remote_matches("sized.txt", local, remote)
    remote.save("sized.txt", ContentFile(b"1234"))
    assert not remote_matches("sized.txt", local, remote)
    remote.delete("sized.txt")
    remote.save("sized.txt", ContentFile(b"abcde"))
    assert remote_matches("sized.txt", local, remote)
    # A local copy that is gone leaves nothing to compare: a match.
    local.delete("sized.txt")
    assert remote_matches("sized.txt", local, remote)
