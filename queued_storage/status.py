"""A file's status, and the record of what is known of it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:
    from .models import StoredFile


class Status(models.TextChoices):
    """Where a file stands on its way from the local to the remote storage."""

    PENDING = "pending"
    TRANSFERRING = "transferring"
    TRANSFERRED = "transferred"
    FAILED = "failed"
    DELETED = "deleted"


#: The statuses a cache entry may hold, as the strings it holds them as.
_STATUSES = frozenset(Status.values)
#: The longest version token the ledger holds.
_MAX_VERSION = 32
#: The longest transfer time a cache entry may hold, as ISO 8601 text.
_MAX_MOMENT = 40
#: What :func:`_moment` returns for text that is no transfer time.
_INVALID: Any = object()


def _moment(text: Any) -> Any:
    """Return the transfer time that cache entry *text* holds, or ``_INVALID``.

    The time is kept as ISO 8601 text, which a JSON cache can hold, with an
    offset exactly when ``USE_TZ`` is on, as ``timezone.now()`` gives it.
    """
    from django.conf import settings

    if text is None:
        return None
    if type(text) is not str or len(text) > _MAX_MOMENT:
        return _INVALID
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return _INVALID
    if (moment.tzinfo is None) == bool(settings.USE_TZ):
        return _INVALID
    return moment


@dataclass(frozen=True)
class FileState:
    """What is known of one file: its status, version token, size and errors."""

    status: str
    version: str = ""
    size: int | None = None
    attempts: int = 0
    error: str = ""
    #: The content type the upload declared, handed to the remote.
    content_type: str = ""
    #: When the transfer finished, for a file served from the remote.
    transferred_at: datetime | None = None

    def __post_init__(self) -> None:
        # A Status member and its value are equal, but only the plain value
        # prints as the docs show it ('pending') and survives any serializer.
        object.__setattr__(self, "status", str(self.status))

    @property
    def is_remote(self) -> bool:
        """Return whether the file is served from the remote storage."""
        return self.status == Status.TRANSFERRED

    @property
    def is_deleted(self) -> bool:
        """Return whether the file was deleted."""
        return self.status == Status.DELETED

    def evolve(self, **changes: Any) -> FileState:
        """Return a copy of this state with *changes* applied."""
        return replace(self, **changes)

    def to_cache(self) -> tuple[Any, ...]:
        return (
            str(self.status), self.version, self.size, self.attempts, self.error,
            self.content_type,
            None if self.transferred_at is None else self.transferred_at.isoformat(),
        )  # fmt: skip

    @classmethod
    def from_cache(cls, value: Any) -> FileState | None:
        """Return the state a cache entry holds, or ``None`` for anything else.

        The entry comes from a cache that others may write to: anything that
        is not exactly a state as :meth:`to_cache` writes it (a tuple, or the
        list that a JSON cache gives back) is a miss, never an error. An entry
        of six items, written before the transfer time was kept, reads with
        no transfer time.
        """
        if type(value) not in (tuple, list) or len(value) not in (6, 7):
            return None
        status, version, size, attempts, error, content_type, *rest = value
        if (
            not all(type(text) is str for text in (status, version, error))
            or type(content_type) is not str
            or status not in _STATUSES
            or len(version) > _MAX_VERSION
            or not (size is None or (type(size) is int and 0 <= size < 2**63))
            or not (type(attempts) is int and 0 <= attempts < 2**31)
        ):
            return None
        at = _moment(rest[0]) if rest else None
        if at is _INVALID:
            return None
        return cls(status, version, size, attempts, error, content_type, at)

    @classmethod
    def from_row(cls, row: StoredFile) -> FileState:
        at = row.transferred if row.status == Status.TRANSFERRED else None
        return cls(
            row.status, row.version, row.size, row.attempts, row.last_error,
            row.content_type, at,
        )  # fmt: skip
