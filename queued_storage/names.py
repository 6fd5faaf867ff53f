"""Validation of file names, applied before anything is written.

Django's ``Storage.save()`` refuses path traversal in the directory part of a
name (CVE-2021-45452, CVE-2024-39330). A queued storage hands the same name to
two storages and to a worker, and some remotes rewrite names silently (the S3
backend turns ``a/../../x`` into ``x``), so every name is held to a stricter
rule: a relative POSIX path of plain segments that every backend stores
unchanged.
"""

from __future__ import annotations

import re

from .exceptions import InvalidFileName
from .redaction import shorten

#: S3, Google Cloud Storage and Azure cap object keys at 1,024 bytes of UTF-8.
MAX_NAME_BYTES = 1024
#: Most file systems cap one path segment at 255 bytes.
MAX_SEGMENT_BYTES = 255
#: Unicode's control characters (category Cc) and lone surrogates (Cs).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _refuse(name: object, reason: str) -> InvalidFileName:
    # A refused name may be megabytes long: the message shows its start.
    return InvalidFileName(f"The file name {shorten(name)} is not allowed: {reason}.")


def validate_name(name: object, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Return *name* unchanged if it is safe to store, else raise.

    Raise :class:`~queued_storage.exceptions.InvalidFileName` for anything
    other than a relative path of non-empty segments separated by ``/``, with
    no ``.`` or ``..`` segment, no backslash, no control character, and at
    most *max_bytes* bytes of UTF-8.
    """
    if not isinstance(name, str):
        raise _refuse(name, "a file name must be a string")
    if not name:
        raise _refuse(name, "it is empty")
    if "\\" in name:
        raise _refuse(name, "backslashes are not allowed, use '/'")
    drive = len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha()
    if name.startswith("/") or drive:
        raise _refuse(name, "absolute paths are not allowed")
    bad = _CONTROL.search(name)
    if bad:
        raise _refuse(name, f"it contains the control character {bad.group()!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # pragma: no cover - excluded by "Cs" above
        raise _refuse(name, "it is not valid Unicode") from None
    if size > max_bytes:
        raise _refuse(name, f"it is {size} bytes long in UTF-8, over {max_bytes}")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise _refuse(name, "empty, '.' and '..' path segments are not allowed")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise _refuse(
                name, f"a path segment is over {MAX_SEGMENT_BYTES} bytes long"
            )
    return name
