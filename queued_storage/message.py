"""The signed task message that asks a worker to transfer a file.

A message carries only a storage *reference* (resolved by the worker from its
own configuration), the file name, and its version token, plus a signature
that binds them to the task name and the time of signing. A message of
several small files (sent by the dispatcher) carries their names and
versions as a list, ``files``, under one signature. It never carries an
importable path or storage options, so a forged message cannot make a worker
import code, build a storage of the sender's choosing, or learn credentials.
"""

from __future__ import annotations

from typing import Any

from django.core import signing

from .conf import settings
from .exceptions import InvalidMessage

#: The salt that keeps these signatures apart from any other use of SECRET_KEY.
SALT = "queued_storage.transfer"
#: The most files one message may carry; a longer list is refused.
MAX_FILES = 100
#: ``(name, version)`` of each file a message names.
Files = list[tuple[str, str]]


def sign(task: str, storage: str, name: str, version: str) -> dict[str, str]:
    """Return the keyword arguments of a transfer message, signed."""
    signature = signing.dumps([task, storage, name, version], salt=SALT)
    return {
        "storage": storage, "name": name, "version": version, "signature": signature,
    }  # fmt: skip


def sign_files(task: str, storage: str, files: Files) -> dict[str, Any]:
    """Return the keyword arguments of a message of several *files*, signed."""
    if not 1 <= len(files) <= MAX_FILES:
        raise ValueError(f"A message carries 1 to {MAX_FILES} files.")
    listed = [[name, version] for name, version in files]
    signature = signing.dumps([task, storage, listed], salt=SALT)
    return {"storage": storage, "files": listed, "signature": signature}


def shown(message: dict[str, Any]) -> str:
    """Return what monitors (events, Flower) show of a message.

    The fields without the signature, cheaper than Celery's safe repr.
    """
    return repr({key: value for key, value in message.items() if key != "signature"})


def _check(signature: str) -> Any:
    try:
        return signing.loads(
            signature, salt=SALT, max_age=settings.QUEUED_STORAGE_MESSAGE_MAX_AGE
        )
    except signing.SignatureExpired as exc:
        raise InvalidMessage(f"The message's signature has expired: {exc}.") from None
    except signing.BadSignature:
        raise InvalidMessage("The message's signature is not valid.") from None


def verify_files(task: str, message: dict[str, Any]) -> tuple[str, Files]:
    """Check a message of several files; return ``(storage, [(name, version)])``.

    Raise :class:`~queued_storage.exceptions.InvalidMessage` as
    :func:`verify` does, and for a list of files of another shape or length.
    """
    storage, files, signature = (
        message.get(field) for field in ("storage", "files", "signature")
    )
    if not (
        isinstance(storage, str)
        and isinstance(signature, str)
        and type(files) is list
        and 1 <= len(files) <= MAX_FILES
        and all(
            type(entry) in (list, tuple)
            and len(entry) == 2
            and all(isinstance(value, str) for value in entry)
            for entry in files
        )
    ):
        raise InvalidMessage("The message lacks a field or has one of another type.")
    listed = [[name, version] for name, version in files]
    if _check(signature) != [task, storage, listed]:
        raise InvalidMessage("The message's fields differ from the signed ones.")
    return storage, [(name, version) for name, version in listed]


def verify(task: str, message: dict[str, Any]) -> tuple[str, str, str]:
    """Check a message received by *task*; return ``(storage, name, version)``.

    Raise :class:`~queued_storage.exceptions.InvalidMessage` when the
    signature is missing, forged, expired, or signs other values.
    """
    storage, name, version, signature = (
        message.get(field) for field in ("storage", "name", "version", "signature")
    )
    if not (
        isinstance(storage, str)
        and isinstance(name, str)
        and isinstance(version, str)
        and isinstance(signature, str)
    ):
        raise InvalidMessage("The message lacks a field or has one of another type.")
    if _check(signature) != [task, storage, name, version]:
        raise InvalidMessage("The message's fields differ from the signed ones.")
    return storage, name, version
