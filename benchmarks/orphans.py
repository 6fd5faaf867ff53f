"""Time the orphans scan, and its memory, as the ledger grows.

Usage, from the repository root::

    python benchmarks/orphans.py [--rows 100000] [--batch 1000] [--db PATH]

It needs no server: Django is configured here with an SQLite file and the
test suite's models (``tests.testapp``), the ledger is filled with rows of the
file-system pair in bulk, every other one referenced by a model row, and a
dry run of ``queued_storage.orphans`` is timed. Peak memory is what Python
allocated during the scan (``tracemalloc``); a scan in pages keeps it flat
as the ledger grows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def configure(work: str, db: str) -> None:
    import django
    from django.conf import settings

    fs = "django.core.files.storage.FileSystemStorage"
    settings.configure(
        SECRET_KEY="benchmark-only-not-secret",  # noqa: S106
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=["queued_storage", "tests.testapp"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": db}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
        },
        MEDIA_ROOT=os.path.join(work, "local"),
        STORAGES={
            "default": {"BACKEND": fs},
            "queued": {
                "BACKEND": "queued_storage.backends.QueuedStorage",
                "OPTIONS": {"local": fs, "remote": fs},
            },
        },
    )
    django.setup()


def fill(rows: int) -> None:
    """Add ledger rows of the ``fs`` storage up to *rows*; reference every other."""
    from django.utils import timezone

    from queued_storage.models import StoredFile
    from queued_storage.state import Status, name_hash
    from tests.testapp.models import Plain

    have = StoredFile.objects.filter(storage="fs").count()
    old = timezone.now() - timedelta(days=2)
    for start in range(have, rows, 5000):
        end = min(rows, start + 5000)
        names = [f"bench/{i // 1000:04d}/{i:08d}.jpg" for i in range(start, end)]
        StoredFile.objects.bulk_create(
            StoredFile(
                storage="fs", name=name, name_hash=name_hash(name), version="v",
                status=Status.TRANSFERRED, size=10240,
            )
            for name in names
        )  # fmt: skip
        Plain.objects.bulk_create(Plain(file=name) for name in names[::2])
    StoredFile.objects.filter(storage="fs").update(updated=old)


def measure(batch: int) -> dict[str, float]:
    from django.db import connection

    from queued_storage import orphans
    from tests.testapp.models import fs_storage

    queries = [0]

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        queries[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        started = time.perf_counter()
        report = orphans.run(fs_storage, batch=batch, keep_names=False)
        seconds = time.perf_counter() - started
        # Memory is measured on a second run: tracing slows Python down.
        tracemalloc.start()
        orphans.run(fs_storage, batch=batch, keep_names=False)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {
        "rows": report.scanned,
        "orphans": report.found,
        "seconds": round(seconds, 2),
        "rows_per_second": round(report.scanned / seconds),
        "queries": queries[0] // 2,
        "peak_mib": round(peak / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--db", help="SQLite file to use (default: a new one)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="qs-bench-orphans-")
    configure(work, args.db or os.path.join(work, "db.sqlite3"))
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    results = []
    for rows in sorted(args.rows):
        fill(rows)
        results.append(measure(args.batch))
        print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
