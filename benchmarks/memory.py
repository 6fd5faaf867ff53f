"""Section 4: how much a transfer of a large file raises a process's peak RSS.

Each way of uploading runs in a fresh process (``python -m benchmarks.memory
MODE PATH``) that first uploads a small file, so that the modules and
clients are loaded, then records its resident size, resets the kernel's peak
counter (``/proc/self/clear_refs``) and uploads the large file. The figure is
the peak minus the resident size before. The large file is sparse: it takes
no disk space and is read as zeros.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .environment import ROOT, Bench

GIB = 1024**3
MIB = 1024**2
MODES = ("transfer_file", "boto3_upload_file", "s3storage_save")


def _status(field: str) -> int:
    """Return a ``VmRSS``/``VmHWM`` line of ``/proc/self/status``, in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} is not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def _upload(mode: str, path: Path) -> None:
    """Upload *path* to the remote storage, under its file name, as *mode* does."""
    from django.core.files import File
    from django.core.files.storage import FileSystemStorage, storages

    from queued_storage.transfer import transfer_file

    remote, name = storages["remote_s3"], path.name
    if mode == "transfer_file":
        transfer_file(name, FileSystemStorage(location=str(path.parent)), remote)
    elif mode == "boto3_upload_file":
        key = remote._normalize_name(name)
        remote.connection.meta.client.upload_file(str(path), remote.bucket_name, key)
    else:
        with open(path, "rb") as handle:
            remote.save(name, File(handle, name))


def measure(mode: str, path: Path) -> dict[str, Any]:
    """Upload a small file, then *path*; return the rise of the peak RSS."""
    import django

    django.setup()
    warm = path.with_name(f"warm-{path.name}")
    warm.write_bytes(b"w" * 1024)
    _upload(mode, warm)
    rss_before = _status("VmRSS")
    reset = _reset_peak()
    start = time.perf_counter()
    _upload(mode, path)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {
        "mode": mode,
        "bytes": path.stat().st_size,
        "seconds": seconds,
        "rss_before_mib": rss_before / MIB,
        "peak_mib": peak / MIB,
        "peak_rise_mib": (peak - rss_before) / MIB,
        "peak_counter_reset": reset,
    }


def run(bench: Bench) -> dict[str, Any]:
    if bench.quick:
        return {"skipped": "not measured with --quick"}
    directory = bench.work / "memory"
    directory.mkdir(exist_ok=True)
    big = directory / "one-gib.bin"
    with open(big, "wb") as handle:
        handle.truncate(GIB)
    remote, client = bench.remote, bench.s3_client()
    results = {}
    for mode in MODES:
        command = [sys.executable, "-m", "benchmarks.memory", mode, str(big)]
        done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        for name in (big.name, f"warm-{big.name}"):
            key = remote._normalize_name(name)
            client.delete_object(Bucket=remote.bucket_name, Key=key)
    big.unlink()
    return {"file_bytes": GIB, "modes": results}


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], Path(sys.argv[2]))))
