"""How long the local copy of a transferred file is kept, and the sweep.

A queued storage's ``local_retention`` (default: the setting
``QUEUED_STORAGE_LOCAL_RETENTION``) says how long the local copy stays once
the remote one is in use: ``None`` keeps it, ``0`` removes it as soon as the
transfer is recorded, a number of seconds or a ``timedelta`` leaves it to
the sweep (``manage.py queued_storage sweep``, or the periodic task) once the
transfer is that old. ``local_max_bytes`` (``QUEUED_STORAGE_LOCAL_MAX_BYTES``)
caps the bytes the local storage holds: above it, the sweep removes the
copies transferred longest ago first.

Only the copy of a file that is transferred is ever removed: the ledger row
is claimed by a compare-and-set on the version the sweep saw (``pending``,
``failed`` and a file saved again since all fail it). A local storage that
has files on disk moves the copy aside first, then looks at the ledger again,
and puts it back if a save of the same name landed meanwhile.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Q, Sum
from django.utils import timezone

from . import local_copy
from .conf import settings
from .enqueue import this_host
from .signals import local_deleted
from .status import Status

if TYPE_CHECKING:
    from .base import QueuedStorageBase
    from .local_copy import Identity

logger = logging.getLogger("queued_storage")

DEFAULT_BATCH = 500


@dataclass(frozen=True)
class Candidate:
    """A ledger row whose local copy may go."""

    pk: int
    name: str
    version: str
    size: int | None
    transferred: datetime


@dataclass
class SweepReport:
    removed: int = 0
    freed: int = 0
    kept: int = 0


def _rows(storage: QueuedStorageBase) -> Any:
    from .models import StoredFile

    return StoredFile.objects.using(storage.state.db).filter(storage=storage.reference)


def on_this_host(rows: Any) -> Any:
    """Return those of ledger *rows* whose local copy this host holds.

    Each host has a local storage of its own unless
    ``QUEUED_STORAGE_SHARED_LOCAL`` says every host sees the same one: a
    host then removes only the copies it wrote (rows without a host, such as
    those of ``import``, count as everyone's).
    """
    if settings.QUEUED_STORAGE_SHARED_LOCAL:
        return rows
    return rows.filter(host__in=[this_host(), ""])


def _held(storage: QueuedStorageBase) -> Any:
    """Return the rows of the files whose local copy this host still holds."""
    rows = _rows(storage).exclude(status=Status.DELETED).filter(local_deleted=None)
    return on_this_host(rows)


def local_bytes(storage: QueuedStorageBase) -> int:
    """Return the bytes of the local copies the ledger knows are still there."""
    return int(_held(storage).aggregate(total=Sum("size"))["total"] or 0)


def _pages(rows: Any, batch: int) -> Iterator[list[Candidate]]:
    """Yield *rows* in pages, oldest transfer first, by keyset pagination."""
    rows = rows.order_by("transferred", "pk")
    fields = ("pk", "name", "version", "size", "transferred")
    after: tuple[datetime, int] | None = None
    while True:
        page = rows
        if after is not None:
            at, pk = after
            page = page.filter(Q(transferred__gt=at) | Q(transferred=at, pk__gt=pk))
        found = [Candidate(*row) for row in page.values_list(*fields)[:batch]]
        if not found:
            return
        after = (found[-1].transferred, found[-1].pk)
        yield found


def _transferred(storage: QueuedStorageBase) -> Any:
    return _held(storage).filter(status=Status.TRANSFERRED, transferred__isnull=False)


def due(storage: QueuedStorageBase, now: datetime | None = None) -> Any:
    """Return the rows whose local copy the retention period lets go."""
    keep = storage.local_retention_period()
    if keep is None:
        return _transferred(storage).none()
    return _transferred(storage).filter(transferred__lte=(now or timezone.now()) - keep)


def preview(storage: QueuedStorageBase) -> dict[str, int]:
    """Return the local bytes held and what the next sweep would free."""
    held = local_bytes(storage)
    age = due(storage).aggregate(total=Sum("size"))["total"] or 0
    files = due(storage).count()
    cap = storage.local_max_bytes_limit()
    over = 0
    if cap is not None and held - age > cap:
        # The oldest transferred copies not already due go next.
        rest = _transferred(storage).exclude(pk__in=due(storage).values("pk"))
        for page in _pages(rest, DEFAULT_BATCH):
            for row in page:
                if held - age - over <= cap:
                    break
                over += row.size or 0
                files += 1
    return {"local_bytes": held, "sweep_files": files, "sweep_bytes": age + over}


def sweep(
    storage: QueuedStorageBase,
    *,
    batch: int = DEFAULT_BATCH,
    claimed: Callable[[list[Candidate]], None] | None = None,
) -> SweepReport:
    """Remove the local copies that the retention period or the cap let go.

    *claimed* is called with each page of rows once they are claimed and
    before their copies are removed.
    """
    report = SweepReport()
    for page in _pages(due(storage), batch):
        _release_page(storage, page, report, claimed)
    cap = storage.local_max_bytes_limit()
    if cap is not None:
        held = local_bytes(storage)
        for page in _pages(_transferred(storage), batch):
            if held <= cap:
                break
            chosen = []
            for row in page:
                if held <= cap:
                    break
                chosen.append(row)
                held -= row.size or 0
            _release_page(storage, chosen, report, claimed)
    return report


def _release_page(
    storage: QueuedStorageBase,
    page: list[Candidate],
    report: SweepReport,
    claimed: Callable[[list[Candidate]], None] | None,
) -> None:
    mine = [row for row in page if claim(storage, row.pk, row.version)]
    report.kept += len(page) - len(mine)
    if claimed is not None:
        claimed(mine)
    for row in mine:
        if remove_claimed(storage, row.pk, row.name, row.version):
            report.removed += 1
            report.freed += row.size or 0
        else:
            report.kept += 1


def claim(storage: QueuedStorageBase, pk: int, version: str) -> bool:
    """Mark the local copy of row *pk* removed if it is still *version*."""
    return bool(
        _transferred(storage)
        .filter(pk=pk, version=version)
        .update(local_deleted=timezone.now())
    )


def _still(storage: QueuedStorageBase, pk: int, version: str) -> Any:
    rows = _rows(storage).filter(pk=pk, version=version, status=Status.TRANSFERRED)
    return rows.values_list("transferred", flat=True).first()


def remove_claimed(
    storage: QueuedStorageBase,
    pk: int,
    name: str,
    version: str,
    expected: Identity | None = None,
) -> bool:
    """Remove the local copy of *name*, claimed at *version*; return if removed.

    On a local storage with paths, the copy is moved aside, the ledger is
    read again, and the copy is put back when the file was saved again
    meanwhile or was written after its transfer (a save that overwrote it
    and has not recorded its state yet). With *expected*, the identity of
    the copy that the transfer uploaded, a copy whose identity differs (a
    save wrote it during the upload) is put back as well.
    """
    local = storage.local
    path = local_copy.disk_path(local, name)
    if path is None:
        local.delete(name)
        return _removed(storage, name)
    aside = os.path.join(
        os.path.dirname(path), f".{os.path.basename(path)}.{secrets.token_hex(6)}.rm"
    )
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        # Gone already, or kept elsewhere than path() says (InMemoryStorage
        # answers a path where nothing is): deleted by name.
        if local.exists(name):
            local.delete(name)
        return _removed(storage, name)
    transferred = _still(storage, pk, version)
    stale = transferred is None
    if not stale:
        written = datetime.fromtimestamp(os.stat(aside).st_mtime, tz=transferred.tzinfo)
        stale = written >= transferred
    if not stale and expected is not None:
        stale = not local_copy.unchanged(aside, expected)
    if stale:
        _put_back(path, aside)
        _rows(storage).filter(pk=pk, version=version).update(local_deleted=None)
        logger.info(
            "Kept the local copy of %r: it was saved again meanwhile.", name,
            extra={"file_name": name, "storage": storage.reference},
        )  # fmt: skip
        return False
    os.remove(aside)
    return _removed(storage, name)


def _put_back(path: str, aside: str) -> None:
    """Move *aside* back to *path*, unless a newer copy is there already."""
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # A save wrote a newer copy after the copy was moved aside.
    os.remove(aside)


def _removed(storage: QueuedStorageBase, name: str) -> bool:
    logger.info(
        "Removed the local copy of %r; the remote one is in use.", name,
        extra={"file_name": name, "storage": storage.reference},
    )  # fmt: skip
    local_deleted.send(type(storage), name=name, storage=storage)
    return True


def after_transfer(
    storage: QueuedStorageBase, name: str, version: str, removed: bool = False
) -> None:
    """Apply a retention of zero once *name* at *version* is transferred.

    With *removed*, the task removed the local copy itself: only the ledger
    learns it.
    """
    try:
        _apply_zero(storage, name, version, removed)
    except Exception:
        # The transfer is recorded: a failure here leaves a local copy behind
        # (for the sweep), never the file without one.
        logger.exception(
            "Could not apply the local retention to %r.", name,
            extra={"file_name": name, "storage": storage.reference},
        )  # fmt: skip


def _apply_zero(
    storage: QueuedStorageBase, name: str, version: str, removed: bool
) -> None:
    if not storage.state.ledger:
        if removed is False and storage.local_retention_period() == timedelta(0):
            # Without a ledger nothing else knows; a copy that a save wrote
            # during the upload stays.
            expected = local_copy.identity_read(storage.local, name)
            local_copy.delete_if_unchanged(storage.local, name, expected)
        return
    if not removed and storage.local_retention_period() != timedelta(0):
        return  # The copy stays: not even a query to build.
    from .state import name_hash

    rows = _transferred(storage).filter(name_hash=name_hash(name), version=version)
    if removed:
        rows.update(local_deleted=timezone.now())
        return
    row = rows.values_list("pk", flat=True).first()
    if row is not None and claim(storage, row, version):
        expected = local_copy.identity_read(storage.local, name)
        remove_claimed(storage, row, name, version, expected)
