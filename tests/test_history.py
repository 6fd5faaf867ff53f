"""A random history of saves, overwrites, deletes and reads, under faults.

Four threads each own six names of a storage whose local copies are replaced
when a name is saved again, and run random operations on them, recording
each. Meanwhile a fault thread, at random moments, kills the worker process
(SIGKILL, then starts another) or freezes the S3 endpoint (SIGSTOP, then
SIGCONT: moto keeps no objects across a restart, a frozen endpoint keeps
them, as S3 does through an outage). Once the faults stop, failed and stale
transfers are queued again and the queue drains; then the history is checked:

* every read returned the bytes last saved under the name; a read may only
  fail while the endpoint was frozen;
* every save returned the name asked for (the storage replaces files);
* a deleted name is gone from the local directory, from S3 and from the
  storage, and stays gone;
* every live file is transferred, and S3 holds its last saved bytes.

The seed is printed; ``QS_HISTORY_SEED=<seed>`` replays a run's operations
(their timing against the faults is the machine's).
"""

from __future__ import annotations

import io
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.management import call_command
from django.db import connections as db_connections
from django.test import override_settings

from queued_storage.models import StoredFile
from queued_storage.state import Status
from tests.reliability_app import history_storage
from tests.services import CeleryWorkerProcess

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "queued-storage-tests"
THREADS, NAMES, STEPS = 4, 6, 75
VISIBILITY = 2

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@dataclass
class Op:
    thread: int
    kind: str
    name: str
    started: float
    ended: float = 0.0
    error: str = ""
    note: str = ""


@dataclass
class History:
    ops: list[Op] = field(default_factory=list)
    #: (start, end) of each time the endpoint was frozen.
    frozen: list[tuple[float, float]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def violate(self, text: str, name: str) -> None:
        story = "\n".join(
            f"    {o.started:8.3f}-{o.ended:8.3f} t{o.thread} {o.kind} "
            f"{o.error or o.note}"
            for o in self.ops
            if o.name == name
        )
        with self.lock:
            self.violations.append(f"{name}: {text}\n{story}")

    def while_frozen(self, op: Op) -> bool:
        return any(start - 0.5 <= op.ended and op.started <= end + 3.5
                   for start, end in self.frozen)  # fmt: skip


def read(name):
    with history_storage.open(name) as handle:
        return handle.read()


def client(thread, rng, prefix, history, clock):
    """Run STEPS random operations on this thread's names; return the live ones."""
    names = [f"{prefix}/t{thread}/f{k}.bin" for k in range(NAMES)]
    live = {}
    try:
        for step in range(STEPS):
            name = rng.choice(names)
            kind = "save"
            if name in live:
                # Deletes take over towards the end, so that many names end
                # deleted, some long after their transfer.
                weights = [3, 5, 2] if step < STEPS - 15 else [1, 2, 6]
                kind = rng.choices(["overwrite", "read", "delete"], weights)[0]
            data = f"{thread}:{step}:".encode() + rng.randbytes(rng.randrange(1, 4096))
            op = Op(thread, kind, name, clock())
            try:
                if kind in ("save", "overwrite"):
                    saved = history_storage.save(name, ContentFile(data))
                    live[name] = data
                    if saved != name:
                        history.violate(f"saved as {saved!r}", name)
                elif kind == "read":
                    if read(name) != live[name]:
                        op.note = "WRONG BYTES"
                        history.violate("a read returned other bytes", name)
                else:
                    delete(name, op)
                    del live[name]
            except Exception as exc:
                op.error = f"{type(exc).__name__}: {exc}"
            op.ended = clock()
            history.add(op)
            if op.error and not (kind == "read" and history.while_frozen(op)):
                history.violate(f"{kind} failed: {op.error}", name)
            time.sleep(rng.uniform(0, 0.2))
    finally:
        db_connections.close_all()
    return live


def delete(name, op, patience=30.0):
    """Delete *name*; a delete that fails (the endpoint is frozen) is repeated."""
    deadline = time.monotonic() + patience
    while True:
        try:
            history_storage.delete(name)
            return
        except Exception as exc:
            op.note = f"retried delete after {type(exc).__name__}"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.timeout(150)
def test_random_history_under_faults_keeps_every_file(servers, s3_client, unique):
    seed = int(os.environ.get("QS_HISTORY_SEED") or random.randrange(2**32))
    print(f"QS_HISTORY_SEED={seed}")
    queue = f"history-{unique}"
    prefix = f"{unique}-{seed}"
    history = History()
    origin = time.monotonic()

    def clock():
        return time.monotonic() - origin

    def start_worker(wait=True):
        return CeleryWorkerProcess(
            "tests.reliability_app",
            env={
                "QS_TEST_WORKER": "1",
                "QS_TEST_QUEUE": queue,
                "QS_TEST_VISIBILITY_TIMEOUT": str(VISIBILITY),
            },
            cwd=ROOT, pool="prefork", concurrency=2, queues=queue,
        ).start(wait_ready=wait)  # fmt: skip

    s3 = servers["s3"]
    # Two workers, as a fleet has: one keeps going while the other is down.
    workers = [start_worker(wait=False), start_worker()]
    workers[0].wait_for_log(r"\bready\.")
    done = threading.Event()

    def faults(rng):
        while not done.wait(rng.uniform(1.0, 3.0)):
            if rng.random() < 0.5:
                victim = rng.randrange(2)
                workers[victim].kill()
                history.faults.append(f"{clock():.3f} killed worker {victim}")
                # Its messages go to the next worker once VISIBILITY passed.
                time.sleep(VISIBILITY + 0.5)
                stopped.append(workers[victim])
                workers[victim] = start_worker(wait=False)
                history.faults.append(f"{clock():.3f} started worker {victim}")
            else:
                start = clock()
                os.kill(s3.pid, signal.SIGSTOP)
                try:
                    time.sleep(rng.uniform(0.5, 2.5))
                finally:
                    os.kill(s3.pid, signal.SIGCONT)
                history.frozen.append((start, clock()))
                history.faults.append(f"{start:.3f}-{clock():.3f} froze S3")

    results, stopped = {}, []
    try:
        with override_settings(QUEUED_STORAGE_QUEUE=queue):
            fault_thread = threading.Thread(
                target=faults, args=(random.Random(f"{seed}-faults"),)
            )
            clients = [
                threading.Thread(target=lambda t=t: results.__setitem__(t, client(
                    t, random.Random(f"{seed}-{t}"), prefix, history, clock)))
                for t in range(THREADS)
            ]  # fmt: skip
            fault_thread.start()
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(100)
            done.set()
            fault_thread.join(30)
            drain(results, history)
    finally:
        done.set()
        os.kill(s3.pid, signal.SIGCONT)
        for worker in workers:
            worker.kill()
    check(results, history, prefix, s3_client)
    transferred = sum(w.log_text().count("Transferred '") for w in workers + stopped)
    print(f"{len(history.ops)} operations, {transferred} transfers; {history.faults}")
    assert len(history.ops) == THREADS * STEPS
    assert not history.violations, (
        f"QS_HISTORY_SEED={seed}; faults: {history.faults}\n"
        + "\n".join(history.violations[:5])
    )


def drain(results, history, patience=60.0):
    """Queue the unfinished transfers again until every live file is remote."""
    live = {name for names in results.values() for name in names}
    deadline = time.monotonic() + patience
    nudged = 0.0
    while True:
        rows = StoredFile.objects.filter(
            storage=history_storage.reference, name__in=live
        )
        unfinished = {r.name: r.status for r in rows if r.status != Status.TRANSFERRED}
        if not unfinished:
            return
        if time.monotonic() > deadline:
            for name, status in unfinished.items():
                history.violate(f"still {status} after the faults stopped", name)
            return
        if time.monotonic() - nudged > 3.0:
            nudged = time.monotonic()
            for command in (["retry"], ["reconcile", "--older-than", "0"]):
                options = [*command, "--storage", history_storage.reference]
                call_command("queued_storage", *options, stdout=io.StringIO())
        time.sleep(0.2)


def check(results, history, prefix, s3_client):
    """Compare the storages with the history once everything settled."""
    time.sleep(1.0)  # Stale messages still in the queue have had their turn.
    location = history_storage.remote.location
    listing = s3_client.list_objects_v2(Bucket=BUCKET, Prefix=f"{location}/{prefix}/")
    on_s3 = {o["Key"][len(location) + 1 :] for o in listing.get("Contents", ())}
    local_root = Path(history_storage.local.location)
    everything = {o.name for o in history.ops}
    live = {name: data for names in results.values() for name, data in names.items()}
    for name in sorted(everything):
        if name in live:
            data = live[name]
            key = f"{location}/{name}"
            if s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read() != data:
                history.violate("S3 holds other bytes than last saved", name)
            if (local_root / name).read_bytes() != data:
                history.violate("the local copy holds other bytes", name)
            if read(name) != data or not history_storage.using_remote(name):
                history.violate("not served from the remote with its bytes", name)
        else:
            if name in on_s3:
                history.violate("deleted, but back on S3", name)
            if (local_root / name).exists():
                history.violate("deleted, but back in the local directory", name)
            if history_storage.exists(name):
                history.violate("deleted, but the storage says it exists", name)
