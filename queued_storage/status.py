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
            self.content_type, self.transferred_at,
        )  # fmt: skip

    @classmethod
    def from_cache(cls, value: Any) -> FileState | None:
        try:
            if len(value) == 6:  # Written before the transfer time was kept.
                value = (*value, None)
            status, version, size, attempts, error, content_type, at = value
        except (TypeError, ValueError):
            return None  # An entry of another shape: treat it as a miss.
        if at is not None and not isinstance(at, datetime):
            return None
        return cls(status, version, size, attempts, error, content_type, at)

    @classmethod
    def from_row(cls, row: StoredFile) -> FileState:
        at = row.transferred if row.status == Status.TRANSFERRED else None
        return cls(
            row.status, row.version, row.size, row.attempts, row.last_error,
            row.content_type, at,
        )  # fmt: skip
