"""The errors raised by queued_storage."""

from __future__ import annotations

from django.core.exceptions import SuspiciousFileOperation


class QueuedStorageError(Exception):
    """Base class of the package's runtime errors."""


class InvalidFileName(SuspiciousFileOperation, ValueError):
    """A file name was refused before anything was written.

    It is a ``ValueError`` too, which Django's own storages raise for a
    missing name (``delete(None)``), so code written against them catches it.
    """


class TransferError(QueuedStorageError):
    """A transfer could not complete."""

    #: Whether trying again later may succeed.
    retryable = True


class LocalFileMissing(TransferError):
    """The worker cannot find the local copy of a file."""

    retryable = False


class LocalFileChanged(TransferError):
    """The local copy no longer has the size recorded when it was saved."""

    retryable = False


class LocalFileUnsafe(TransferError):
    """The local copy is a symbolic link, or reached through one, or no file."""

    retryable = False


class RemoteConflict(TransferError):
    """The remote already holds a different object under the file's name."""

    retryable = False


class NameChanged(TransferError):
    """The remote stored the file under another name than the one asked for."""

    retryable = False


class VerificationFailed(TransferError):
    """The remote copy does not match the local one after the upload."""


class InvalidMessage(QueuedStorageError):
    """A task message was forged, altered, expired or names an unknown storage."""


class UnknownStorage(InvalidMessage):
    """A task message names a storage that this process does not configure."""


class LedgerUnavailable(QueuedStorageError, RuntimeError):
    """The ledger was needed but the database could not be used here."""


class NameTaken(QueuedStorageError, FileExistsError):
    """Other saves kept taking every name a save tried; nothing was kept."""
