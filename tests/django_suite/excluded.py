"""Django's storage tests that a queued storage is not meant to pass.

Each entry is the id of a test, or of a class or module of tests, among
those that ``run.py`` runs, with the reason it is skipped. Every one tests
how ``FileSystemStorage`` itself is built or works inside, or relies on a
name that the stricter name rule of a queued storage refuses on purpose
(see "File names" in docs/usage.rst); none is a break of the Storage API.
"""

import os

_STORAGE_CLASSES = [
    "file_storage.tests.FileStorageTests",
    "file_storage.tests.CustomStorageTests",
    "file_storage.tests.DiscardingFalseContentStorageTests",
    "file_storage.tests.OverwritingStorageTests",
]

_PER_CLASS = {
    "test_delete_deletes_directories": (
        "deletes a directory by its absolute path, a name a queued storage "
        "refuses (absolute paths are not allowed)"
    ),
    "test_file_url": (
        "asks for URLs of names with a NUL, backslashes, leading slashes and "
        "None, which a queued storage refuses before asking any storage"
    ),
    "test_base_url": (
        "assigns base_url on the storage object; a queued storage's base URLs "
        "belong to its local and remote storages"
    ),
    "test_delete_no_name": (
        "matches FileSystemStorage's message; a queued storage raises "
        "InvalidFileName, also a ValueError, with its own message"
    ),
    "test_remove_race_handling": (
        "replaces os.remove and fails on any path but the local file's; a "
        "queued storage also deletes the remote copy"
    ),
}

EXCLUDED: dict[str, str] = {
    f"{cls}.{test}": reason for cls in _STORAGE_CLASSES for test in _PER_CLASS
    for reason in [_PER_CLASS[test]]
}  # fmt: skip
EXCLUDED.update({
    "file_storage.tests.FileSystemStorageTests.test_deconstruction": (
        "checks the dotted path FileSystemStorage deconstructs to; the queued "
        "storage deconstructs to its own"
    ),
    "file_storage.test_generate_filename.GenerateFilenameStorageTests"
    ".test_storage_dangerous_paths": (
        "matches Django's messages for '..', '.' and absolute names; a queued "
        "storage refuses them too (SuspiciousFileOperation), in its own words"
    ),
    "file_storage.test_generate_filename.GenerateFilenameStorageTests"
    ".test_storage_dangerous_paths_dir_name": (
        "the same, for '..' in the directory part"
    ),
})  # fmt: skip
EXCLUDED["file_uploads.tests.DirectoryCreationTests.test_not_a_directory"] = (
    "deletes the upload folder by its absolute path, which a queued storage "
    "refuses (absolute paths are not allowed)"
)
if hasattr(os, "geteuid") and os.geteuid() == 0:
    EXCLUDED["file_uploads.tests.DirectoryCreationTests.test_readonly_root"] = (
        "relies on permission bits, which root ignores: it fails for "
        "FileSystemStorage alone too when run as root"
    )

#: Skipped too when every file is moved at once (QS_DJANGO_SUITE_TRANSFER=1).
EXCLUDED_WHEN_TRANSFERRED: dict[str, str] = {
    f"{cls}.{test}": reason for cls in _STORAGE_CLASSES
    for test, reason in {
        "test_file_path": (
            "expects path() inside the folder the storage was built with; a "
            "transferred file is served from the remote folder"
        ),
        "test_file_methods_pathlib_path": "the same, with a pathlib name",
        "test_makedirs_race_handling": (
            "replaces os.makedirs and fails on any folder but the local one; "
            "the transfer creates folders on the remote"
        ),
    }.items()
}  # fmt: skip
EXCLUDED_WHEN_TRANSFERRED["file_storage.tests.FileFieldStorageTests.test_files"] = (
    "removes the storage's folder with shutil.rmtree between tests, behind the "
    "storage's back: the remote copies of the earlier tests' files keep their "
    "names taken"
)
