"""Section 7: ``manage.py queued_storage import`` of many small files.

The files are written to the local folder of the ``bulk`` storage of the
benchmarks' settings, then imported by the management command, in a process
of its own at its default concurrency, and by as many ``put_object`` loops
in as many processes (:mod:`benchmarks.put_loops`), each reading the same
files. The figure is the import's files per second over the loops', which put
half their files before the import and half after it.
``QS_BENCH_BULK_FILES`` sets the number of files of a full run (100,000). The
resident size of the import's process is sampled throughout: its peak over
its size a tenth of the way into the import shows whether memory grows with
the files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .environment import ROOT, Bench
from .large_files import _rss
from .put_loops import put_loops

FILE_SIZE = 1024
STORAGE = "bulk"
PER_FOLDER = 1000


def write_files(root: Path, count: int) -> list[str]:
    """Write *count* small files below *root*; return their names."""
    names = []
    for i in range(count):
        name = f"site/{i // PER_FOLDER:03d}/{i:06d}.txt"
        path = root / name
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{i:06d}".encode().ljust(FILE_SIZE, b"."))
        names.append(name)
    return names


def import_all(concurrency: int) -> dict[str, Any]:
    """Run the import command here; return its seconds and summary."""
    import django
    from django.core.management import call_command

    django.setup()
    with open(os.devnull, "w", encoding="utf-8") as quiet:
        began = time.time()
        start = time.perf_counter()
        call_command(
            "queued_storage", "import", "--storage", STORAGE, "--no-progress",
            "--json", "--concurrency", str(concurrency), stdout=quiet,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    from queued_storage.models import StoredFile
    from queued_storage.state import Status

    rows = StoredFile.objects.filter(storage=STORAGE, status=Status.TRANSFERRED)
    return {"began": began, "seconds": seconds, "transferred_rows": rows.count()}


def run(bench: Bench) -> dict[str, Any]:
    from queued_storage.operations import IMPORT_CONCURRENCY

    count = bench.pick(300, int(os.environ.get("QS_BENCH_BULK_FILES", "100000")))
    root = bench.work / "bulk"
    names = write_files(root, count)
    jobs: list[tuple[str, str | None]] = [
        (f"plain-bulk/{name}", str(root / name)) for name in names
    ]
    # Half the loops' files before the import and half after, so that a
    # slower spell of the machine during the long import weighs on both.
    half = len(jobs) // 2
    plain = put_loops(bench, jobs[:half], IMPORT_CONCURRENCY)
    command = [sys.executable, "-m", "benchmarks.bulk_import", str(IMPORT_CONCURRENCY)]
    child = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        command, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    samples = []
    while child.poll() is None:
        samples.append((time.time(), _rss(child.pid)))
        time.sleep(0.1)
    output = child.stdout.read() if child.stdout else ""
    if child.returncode != 0:
        raise RuntimeError(f"the import failed ({child.returncode}): {output[-2000:]}")
    done = json.loads(output.strip().splitlines()[-1])
    plain += put_loops(bench, jobs[half:], IMPORT_CONCURRENCY)
    # Memory is compared from a tenth of the way into the import on: by
    # then its threads have made their clients.
    tenth = done["began"] + done["seconds"] / 10
    samples = [(t, rss) for t, rss in samples if rss and t >= tenth]
    early = samples[0][1] if samples else None
    peak = max((rss for _, rss in samples), default=None)
    return {
        "files": count,
        "file_bytes": FILE_SIZE,
        "concurrency": IMPORT_CONCURRENCY,
        "import_seconds": done["seconds"],
        "import_files_per_s": count / done["seconds"],
        "transferred_rows": done["transferred_rows"],
        "put_object_seconds": plain,
        "put_object_files_per_s": count / plain,
        "ratio": plain / done["seconds"],
        "rss_early_mib": early / 2**20 if early else None,
        "rss_peak_mib": peak / 2**20 if peak else None,
        "memory_growth": peak / early if peak and early else None,
    }


if __name__ == "__main__":
    print(json.dumps(import_all(int(sys.argv[1]))))
