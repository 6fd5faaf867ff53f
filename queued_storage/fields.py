"""A model field whose files know their transfer state and can be transferred."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Model
from django.db.models.fields.files import FieldFile, FileField

from .base import QueuedStorageBase
from .status import FileState

M = TypeVar("M", bound=Model)

_UNKNOWN = object()


class QueuedFieldFile(FieldFile):
    """The file of a :class:`QueuedFileField`.

    ``state``, ``status``, ``is_transferred`` and ``transferred_at`` each read
    the file's state with one cache round trip, as ``url`` does, unless
    :func:`prefetch_states` read it already for a whole list of objects.
    """

    def _queued(self) -> QueuedStorageBase:
        self._require_file()  # type: ignore[attr-defined]
        if not isinstance(self.storage, QueuedStorageBase):
            raise TypeError(
                f"{type(self.storage).__name__} is not a queued storage; "
                "give the field a queued_storage.backends.QueuedStorage."
            )
        return self.storage

    def _prefetched(self) -> Any:
        known = self.__dict__.get("_queued_state")
        if known is not None and known[0] == self.name:
            return known[1]
        return _UNKNOWN

    def set_prefetched_state(self, state: FileState | None) -> None:
        """Keep *state* as this file's state until its name changes."""
        self.__dict__["_queued_state"] = (self.name, state)

    def refresh_state(self) -> None:
        """Forget a prefetched state: the next read asks the cache again."""
        self.__dict__.pop("_queued_state", None)

    @property
    def state(self) -> FileState | None:
        """Return the recorded state of this file, ``None`` if nothing is known."""
        storage = self._queued()
        known = self._prefetched()
        if known is not _UNKNOWN:
            return known
        return storage.get_state(str(self.name))

    @property
    def status(self) -> str | None:
        """Return ``pending``, ``transferring``, ``transferred``, ``failed`` ..."""
        state = self.state
        return None if state is None else str(state.status)

    @property
    def is_transferred(self) -> bool:
        """Return whether the file is served from the remote storage."""
        state = self.state
        return state is not None and state.is_remote

    @property
    def transferred_at(self) -> datetime | None:
        """Return when the transfer finished, ``None`` while it has not."""
        state = self.state
        return None if state is None else state.transferred_at

    @property
    def url(self) -> str:
        known = self._prefetched()
        if known is _UNKNOWN:
            return super().url
        storage: Any = self._queued()
        return str(storage.url_for_state(self.name, known))

    def save(self, name: str, content: Any, save: bool = True) -> None:
        self.refresh_state()
        super().save(name, content, save)

    def delete(self, save: bool = True) -> None:
        self.refresh_state()
        super().delete(save)

    def transfer(self, now: bool = False) -> Any:
        """Queue the transfer of this file to the remote storage.

        This is how files of a storage with ``delayed=True`` are moved.
        Return the Celery result, or ``None`` when nothing was sent. With
        *now*, transfer it in this process and return its state afterwards
        (see :meth:`QueuedStorage.transfer
        <queued_storage.backends.QueuedStorage.transfer>`).
        """
        storage = self._queued()
        self.refresh_state()
        if now:
            return storage.transfer(self.name, now=True)  # type: ignore[attr-defined]
        return storage.transfer(self.name)  # type: ignore[attr-defined]


class QueuedFileField(FileField):
    """A ``FileField`` whose files know their state and have ``transfer()``."""

    attr_class = QueuedFieldFile


def prefetch_states(objects: Iterable[M], *fields: str) -> list[M]:
    """Read the states of the files of *objects* at once; return the objects.

    *objects* is any iterable of model instances, a queryset included (it is
    evaluated). *fields* names the :class:`QueuedFileField` fields to read;
    by default every one of each model. The states of all the files of one
    queued storage cost one cache round trip per 500 files (and one ledger
    query for those the cache lacks); afterwards ``url``, ``state``, ``status``,
    ``is_transferred`` and ``transferred_at`` of those files ask nothing
    more, until a file is saved, deleted or :meth:`~QueuedFieldFile.
    refresh_state` is called. A list page of N objects thus pays one cache
    round trip instead of N.
    """
    found = list(objects)
    groups: dict[int, tuple[QueuedStorageBase, dict[str, list[QueuedFieldFile]]]] = {}
    for obj in found:
        for field in obj._meta.concrete_fields:
            if not isinstance(field, FileField) or (
                fields and field.name not in fields
            ):
                continue
            file = getattr(obj, field.attname)
            if not isinstance(file, QueuedFieldFile) or not file:
                continue
            if not isinstance(file.storage, QueuedStorageBase):
                continue
            _, names = groups.setdefault(id(file.storage), (file.storage, {}))
            names.setdefault(str(file.name), []).append(file)
    for storage, names in groups.values():
        states = storage.get_states(list(names))
        for name, files in names.items():
            for file in files:
                file.set_prefetched_state(states.get(name))
    return found
