"""A model field whose files can be transferred on demand."""

from __future__ import annotations

from typing import Any

from django.db.models.fields.files import FieldFile, FileField


class QueuedFieldFile(FieldFile):
    """The file of a :class:`QueuedFileField`."""

    def transfer(self) -> Any:
        """Queue the transfer of this file to the remote storage.

        This is how files of a storage with ``delayed=True`` are moved.
        Return the Celery result, or ``None`` when nothing was sent.
        """
        self._require_file()  # type: ignore[attr-defined]
        transfer = getattr(self.storage, "transfer", None)
        if transfer is None:
            raise TypeError(
                f"{type(self.storage).__name__} is not a queued storage; "
                "give the field a queued_storage.backends.QueuedStorage."
            )
        return transfer(self.name)


class QueuedFileField(FileField):
    """A ``FileField`` whose files have a ``transfer()`` method."""

    attr_class = QueuedFieldFile
