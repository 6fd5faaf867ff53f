"""Validation of file names, applied before anything is written.

Django's ``Storage.save()`` refuses path traversal in the directory part of a
name (CVE-2021-45452, CVE-2024-39330). A queued storage hands the same name to
two storages and to a worker, and some remotes rewrite names silently (the S3
backend turns ``a/../../x`` into ``x``), so every name is held to a stricter
rule: a relative POSIX path of plain segments that every backend stores
unchanged, with no character that is invisible or makes one name look like
another. Names are compared in Unicode Normalization Form C: composed and
decomposed spellings of the same text (``é`` as one code point or as ``e``
and a combining accent) name one file.
"""

from __future__ import annotations

import os
import re
import unicodedata

from .exceptions import InvalidFileName
from .redaction import shorten

#: S3, Google Cloud Storage and Azure cap object keys at 1,024 bytes of UTF-8.
MAX_NAME_BYTES = 1024
#: Most file systems cap one path segment at 255 bytes.
MAX_SEGMENT_BYTES = 255
#: Unicode's control characters (category Cc) and lone surrogates (Cs).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: Invisible characters that make one name look like another: format
#: characters (Cf: right-to-left override, zero-width space, byte order mark,
#: soft hyphen...) and line and paragraph separators (Zl, Zp).
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})


def _refuse(name: object, reason: str) -> InvalidFileName:
    # A refused name may be megabytes long: the message shows its start.
    return InvalidFileName(f"The file name {shorten(name)} is not allowed: {reason}.")


def validate_name(name: object, *, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Return *name* in Unicode Normalization Form C if it is safe to store.

    Raise :class:`~queued_storage.exceptions.InvalidFileName` for anything
    other than a relative path of non-empty segments separated by ``/``, with
    no ``.`` or ``..`` segment, no backslash, no control, format or
    line/paragraph separator character, and at most *max_bytes* bytes of
    UTF-8. The name returned is the NFC form of *name*, so that composed and
    decomposed spellings of the same text name one file.
    """
    if not isinstance(name, str):
        raise _refuse(name, "a file name must be a string")
    if not name:
        raise _refuse(name, "it is empty")
    if len(name) > 4 * max_bytes:
        # Not worth normalizing: no normal form of it fits.
        raise _refuse(name[:64] + "...", f"it is over {max_bytes} bytes long")
    bad = _CONTROL.search(name)
    if bad:
        raise _refuse(name, f"it contains the control character {bad.group()!r}")
    # ASCII text is its own normal form and holds no invisible character.
    plain = name.isascii()
    if not plain:
        # Every rule below holds for the form that is stored (a few
        # characters, such as U+037E, become ASCII punctuation in NFC).
        name = unicodedata.normalize("NFC", name)
    if "\\" in name:
        raise _refuse(name, "backslashes are not allowed, use '/'")
    drive = len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha()
    if name.startswith("/") or drive:
        raise _refuse(name, "absolute paths are not allowed")
    if not plain:
        for char in name:
            if unicodedata.category(char) in _INVISIBLE:
                raise _refuse(
                    name, f"it contains the invisible character U+{ord(char):04X}"
                )
    try:
        size = len(name) if plain else _utf8_length(name)
    except UnicodeEncodeError:  # pragma: no cover - excluded by "Cs" above
        raise _refuse(name, "it is not valid Unicode") from None
    if size > max_bytes:
        raise _refuse(name, f"it is {size} bytes long in UTF-8, over {max_bytes}")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise _refuse(name, "empty, '.' and '..' path segments are not allowed")
        if (len(segment) if plain else _utf8_length(segment)) > MAX_SEGMENT_BYTES:
            raise _refuse(
                name, f"a path segment is over {MAX_SEGMENT_BYTES} bytes long"
            )
    return name


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def relative_to(path: str, location: object) -> str:
    """Return absolute *path* relative to the directory *location*.

    Raise :class:`~queued_storage.exceptions.InvalidFileName` unless *path*
    lies inside *location*, both as written and once symbolic links are
    resolved. The relative part is left for :func:`validate_name` to check,
    which refuses ``..`` segments.
    """
    if not isinstance(location, str) or not os.path.isabs(location):
        raise _refuse(path, "absolute paths are not allowed")
    root = os.path.normpath(location)
    real_root = os.path.realpath(root)
    for prefix in dict.fromkeys((root, real_root)):
        start = prefix.rstrip(os.sep) + os.sep
        if path.startswith(start) and len(path) > len(start):
            relative = path[len(start) :]
            break
    else:
        raise _refuse(path, f"it is outside the local storage's location {root!r}")
    validate_name(relative)
    real = os.path.realpath(os.path.join(real_root, relative))
    if os.path.commonpath([real, real_root]) != real_root:
        raise _refuse(path, "a symbolic link leads outside the local storage")
    return relative


def printable(text: str) -> str:
    """Return *text* with every character a terminal could act on escaped.

    Control characters (terminal escape sequences start with ESC), invisible
    format characters, separators and undecodable bytes (lone surrogates)
    become ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``, and a backslash is
    doubled, so that what an operator reads is what the name holds.
    """
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(char) for char in text)


def _escape(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
