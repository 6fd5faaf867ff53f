"""Find, and on request delete, the files that no model row references.

The ledger lists every file a queued storage holds. A file is an orphan when
no row of any model references its name through a file field whose storage
is that queued storage (compared by the storage's reference, so that a field
with a callable storage, one of a ``STORAGES`` alias or a subclassed field
counts as well). The ledger is read in pages by primary key, and each page's
names are looked up with one ``name__in`` query per field and database, so a
run holds one page in memory whatever the size of the ledger.

A file younger than the grace period is never taken: the request that saved
it may not have committed its model row yet. Before a page's orphans are
deleted, their references are looked up again, and each deletion is a
compare-and-set on the version the scan saw: a row committed meanwhile, or
a file saved again, keeps its file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import connections, router
from django.db.models import FileField, Model
from django.utils import timezone

from . import local_copy
from .base import QueuedStorageBase
from .retention import on_this_host
from .state import FileState, Status

logger = logging.getLogger("queued_storage")

#: How old a file must be before it can count as an orphan.
DEFAULT_GRACE = timedelta(hours=24)
#: Ledger rows read, and names looked up, per query.
DEFAULT_BATCH = 1000


@dataclass(frozen=True)
class Reference:
    """A file field whose storage is a given queued storage."""

    model: type[Model]
    field: str
    databases: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.model._meta.label}.{self.field}"


def references(storage: QueuedStorageBase) -> list[Reference]:
    """Return every file field of every model that stores into *storage*.

    Each comes with the databases its model's rows may live in (those the
    routers allow it to be migrated to, and the one they read it from).
    """
    found = []
    for model in apps.get_models(include_auto_created=True):
        if model._meta.proxy:
            continue  # Its concrete model is listed too.
        # The router's database for reads as well: a table that no database
        # migrates (a legacy or unmanaged one) still has rows there.
        read = router.db_for_read(model)
        databases = tuple(
            alias
            for alias in connections
            if alias == read or router.allow_migrate_model(alias, model)
        )
        for model_field in model._meta.local_concrete_fields:
            if not isinstance(model_field, FileField):
                continue
            other = model_field.storage
            if (
                isinstance(other, QueuedStorageBase)
                and other.reference == storage.reference
            ):
                found.append(Reference(model, model_field.attname, databases))
    return found


def referenced(refs: list[Reference], names: set[str]) -> set[str]:
    """Return those of *names* that a row of one of *refs* references."""
    found: set[str] = set()
    wanted = sorted(names)
    for ref in refs:
        for alias in ref.databases:
            rows = ref.model._base_manager.using(alias)
            lookup = {f"{ref.field}__in": wanted}
            found.update(rows.filter(**lookup).values_list(ref.field, flat=True))
    return found


@dataclass
class Orphan:
    name: str
    size: int | None
    deleted: bool = False


@dataclass
class Report:
    """What one run found in one storage."""

    scanned: int = 0
    found: int = 0
    orphans: list[str] = field(default_factory=list)
    bytes: int = 0
    deleted: int = 0


def _ledger(storage: QueuedStorageBase, cutoff: Any) -> Any:
    from .models import StoredFile

    rows = StoredFile.objects.using(storage.state.db)
    rows = rows.filter(storage=storage.reference, updated__lt=cutoff)
    # The local copy of another host's file is out of this host's reach.
    return on_this_host(rows.exclude(status=Status.DELETED))


def count_candidates(storage: QueuedStorageBase, older_than: timedelta) -> int:
    """Return how many ledger rows a scan of *storage* would look at."""
    return int(_ledger(storage, timezone.now() - older_than).count())


def scan(
    storage: QueuedStorageBase,
    *,
    older_than: timedelta = DEFAULT_GRACE,
    delete: bool = False,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Orphan]:
    """Yield the orphans of *storage*, deleting them with *delete*.

    *progress* is called with the number of rows scanned after each page's
    references were looked up. Raise ``ValueError`` when no model field
    stores into *storage*: nothing could then tell a file in use from an
    orphan.
    """
    if batch < 1:
        raise ValueError("The batch size must be positive.")
    refs = references(storage)
    if not refs:
        raise ValueError(
            f"No model field stores into the queued storage {storage.reference!r}: "
            "its files' references cannot be looked up, so none is an orphan."
        )
    rows = _ledger(storage, timezone.now() - older_than)
    scanned, last = 0, 0
    while True:
        page = list(
            rows.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "name", "version", "size")[:batch]
        )
        if not page:
            return
        last = page[-1][0]
        scanned += len(page)
        used = referenced(refs, {name for _, name, _, _ in page})
        candidates = [row for row in page if row[1] not in used]
        if progress is not None:
            progress(scanned)
        if delete and candidates:
            # Look again right before deleting: a row may have been committed.
            used = referenced(refs, {name for _, name, _, _ in candidates})
            candidates = [row for row in candidates if row[1] not in used]
        for pk, name, version, size in candidates:
            orphan = Orphan(name, size)
            if delete:
                orphan.deleted = _delete(storage, pk, name, version)
                if not orphan.deleted:
                    continue  # Saved again or deleted meanwhile: not ours.
            yield orphan


def _delete(storage: QueuedStorageBase, pk: int, name: str, version: str) -> bool:
    """Delete the orphan *name* at *version*: its copies, then its ledger row."""
    from .models import StoredFile

    rows = StoredFile.objects.using(storage.state.db).filter(pk=pk, version=version)
    # What the local copy is now: a save that overwrites it from here on
    # changes it, and keeps it.
    before = local_copy.identity(storage.local, name)
    claimed = rows.exclude(status=Status.DELETED).update(
        status=Status.DELETED, version="", updated=timezone.now()
    )
    if not claimed:
        return False
    # A transfer still in flight sees the tombstone and removes its upload.
    storage.state.remember(name, FileState(Status.DELETED))
    if before is not None and not _delete_local(storage, name, before):
        logger.info(
            "Kept %r: a save wrote it again while it was deleted as an orphan.",
            name, extra={"file_name": name, "storage": storage.reference},
        )  # fmt: skip
        return False
    for copy in (storage.local, storage.remote):
        if copy is storage.local and before is not None:
            continue  # Deleted above.
        try:
            copy.delete(name)
        except Exception as exc:
            logger.warning(
                "Could not delete the orphan %r from %s: %s",
                name, type(copy).__name__, storage.redact(str(exc)),
                extra={"file_name": name, "storage": storage.reference},
            )  # fmt: skip
    StoredFile.objects.using(storage.state.db).filter(
        pk=pk, status=Status.DELETED
    ).delete()
    logger.info(
        "Deleted the orphan %r.", name,
        extra={"file_name": name, "storage": storage.reference, "status": "deleted"},
    )  # fmt: skip
    return True


def _delete_local(
    storage: QueuedStorageBase, name: str, before: local_copy.Identity
) -> bool:
    """Delete the local copy of *name* if it is still *before*; ``False``: kept."""
    try:
        return local_copy.delete_if_unchanged(storage.local, name, before)
    except Exception as exc:
        logger.warning(
            "Could not delete the orphan %r from %s: %s",
            name, type(storage.local).__name__, storage.redact(str(exc)),
            extra={"file_name": name, "storage": storage.reference},
        )  # fmt: skip
        return True


def run(
    storage: QueuedStorageBase,
    *,
    older_than: timedelta = DEFAULT_GRACE,
    delete: bool = False,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    keep_names: bool = True,
) -> Report:
    """Scan *storage* as :func:`scan` does and sum up what was found."""
    report = Report()

    def seen(count: int) -> None:
        report.scanned = count
        if progress is not None:
            progress(count)

    for orphan in scan(
        storage, older_than=older_than, delete=delete, batch=batch, progress=seen
    ):
        report.found += 1
        if keep_names:
            report.orphans.append(orphan.name)
        report.bytes += orphan.size or 0
        report.deleted += orphan.deleted
    return report
