"""``manage.py queued_storage``: see and repair the state of every file."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import dispatch, health, operations, orphans, registry, retention
from ...exceptions import UnknownStorage
from ...names import printable
from ...operations import OUTBOX_HINT, OUTBOX_STUCK
from ...orphans import DEFAULT_BATCH, DEFAULT_GRACE
from ...retention import DEFAULT_BATCH as DEFAULT_SWEEP_BATCH


def accept_django_options(parser: CommandParser) -> None:
    """Let Django's own options come after the action too.

    ``manage.py queued_storage status --settings mysite.prod`` then works as
    ``manage.py queued_storage --settings mysite.prod status`` does.
    """
    keep = argparse.SUPPRESS
    parser.add_argument("--settings", default=keep, help=argparse.SUPPRESS)
    parser.add_argument("--pythonpath", default=keep, help=argparse.SUPPRESS)
    parser.add_argument(
        "-v", "--verbosity", type=int, choices=[0, 1, 2, 3], default=keep,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    for flag in ("--traceback", "--no-color", "--force-color", "--skip-checks"):
        parser.add_argument(flag, action="store_true", default=keep, help=keep)


class Command(BaseCommand):
    help = "Show and repair the transfers of queued storages."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True)

        def add(name: str, help: str) -> Any:
            sub = commands.add_parser(name, help=help)
            accept_django_options(sub)
            sub.add_argument("--storage", help="Only this storage (its reference).")
            sub.add_argument("--json", action="store_true", help="Print JSON.")
            return sub

        add("status", "Count files per state; age of the oldest pending one.")
        add("storages", "List the queued storages this project configures.")
        health = add(
            "health",
            "Connect to the cache, broker, ledger and storages; one line each.",
        )
        health.add_argument(
            "--timeout", type=float, default=5.0, metavar="SECONDS",
            help="Give up on each part after this long (default: 5).",
        )  # fmt: skip
        retry = add("retry", "Queue failed transfers again.")
        retry.add_argument("names", nargs="*", help="Only these file names.")
        reconcile = add("reconcile", "Queue again transfers pending for too long.")
        reconcile.add_argument(
            "--older-than", type=float, metavar="SECONDS",
            help="Pending for longer than this (default: the longest retry "
            "delay, QUEUED_STORAGE_RETRY_BACKOFF_MAX, plus 600).",
        )  # fmt: skip
        reconcile.add_argument(
            "--untracked", action="store_true",
            help="Also list local files the ledger has no row for.",
        )  # fmt: skip
        purge = add("purge", "Remove the rows of files deleted long ago.")
        purge.add_argument(
            "--older-than", type=float, default=30 * 86400, metavar="SECONDS",
            help="Deleted longer ago than this (default: 30 days).",
        )  # fmt: skip
        verify = add("verify", "Compare remote copies of transferred files.")
        verify.add_argument("names", nargs="*", help="Only these file names.")
        dispatch = add("dispatch", "Send the transfer messages of the outbox.")
        dispatch.add_argument(
            "--once", action="store_true", help="One pass, then exit."
        )
        dispatch.add_argument(
            "--interval", type=float, default=0.2, metavar="SECONDS",
            help="Seconds between two looks at an empty outbox (default: 0.2).",
        )  # fmt: skip
        dispatch.add_argument(
            "--batch", type=int, default=100, help="Messages per pass (default: 100)."
        )
        sweep = add("sweep", "Remove the local copies that the retention lets go.")
        sweep.add_argument(
            "--batch", type=int, default=DEFAULT_SWEEP_BATCH,
            help=f"Ledger rows per query (default: {DEFAULT_SWEEP_BATCH}).",
        )  # fmt: skip
        orphans = add("orphans", "Find the files that no model row references.")
        orphans.add_argument(
            "--delete", action="store_true",
            help="Delete them from both storages and the ledger (default: only list).",
        )  # fmt: skip
        orphans.add_argument(
            "--older-than", type=float, default=DEFAULT_GRACE.total_seconds(),
            metavar="SECONDS",
            help="Only files saved longer ago than this (default: 86400, a day).",
        )  # fmt: skip
        orphans.add_argument(
            "--batch", type=int, default=DEFAULT_BATCH,
            help=f"Ledger rows per query (default: {DEFAULT_BATCH}).",
        )  # fmt: skip
        orphans.add_argument(
            "--no-progress", action="store_true", help="No progress bar."
        )
        bulk = add("import", "Move the local files that are not remote yet.")
        bulk.add_argument("--dry-run", action="store_true")
        bulk.add_argument(
            "--rate", type=float, help="At most this many files a second."
        )
        bulk.add_argument("--limit", type=int, help="At most this many files this run.")
        bulk.add_argument(
            "--concurrency", type=int, default=operations.IMPORT_CONCURRENCY,
            metavar="N",
            help="Files moved at once, by as many threads (default: "
            f"{operations.IMPORT_CONCURRENCY}).",
        )  # fmt: skip
        bulk.add_argument("--no-progress", action="store_true", help="No progress bar.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if options["storage"]:
                registry.resolve(options["storage"])
            result = getattr(self, f"do_{action}")(options)
        except UnknownStorage as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2, sort_keys=True))

    def storages(self, options: dict[str, Any]) -> list[Any]:
        if options["storage"]:
            return [registry.resolve(options["storage"])]
        return list(operations.known_storages().values())

    def say(self, options: dict[str, Any], text: str) -> None:
        if not options["json"]:
            self.stdout.write(text)

    def do_status(self, options: dict[str, Any]) -> dict[str, Any]:
        result = operations.status_counts(options["storage"])
        for status, count in result["counts"].items():
            self.say(options, f"{status:>13}: {count}")
        age = result["oldest_pending_seconds"]
        self.say(options, "oldest pending: " + ("-" if age is None else f"{age:.0f} s"))
        waiting, waited = result["outbox"], result["outbox_oldest_seconds"]
        if waiting and waited is not None:
            self.say(
                options, f"in the outbox: {waiting}, the oldest for {waited:.0f} s"
            )
        else:
            self.say(options, f"in the outbox: {waiting}")
        if waited is not None and waited > OUTBOX_STUCK:
            self.say(options, OUTBOX_HINT)
        expired = result["expired_leases"]
        self.say(options, f"expired leases: {expired}")
        if expired:
            self.say(
                options,
                f"{expired} transfers lost their worker (lease expired); "
                "'reconcile' queues them again.",
            )
        local = {}
        for storage in self.storages(options):
            held = local[storage.reference] = retention.preview(storage)
            self.say(
                options,
                f"{storage.reference}: {held['local_bytes']} bytes held locally; "
                f"the next sweep frees {held['sweep_bytes']} bytes "
                f"({held['sweep_files']} files).",
            )
        result["local"] = local
        return result

    def do_sweep(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["batch"] < 1:
            raise CommandError("--batch must be positive.")
        result = {}
        for storage in self.storages(options):
            report = retention.sweep(storage, batch=options["batch"])
            self.say(
                options,
                f"{storage.reference}: removed {report.removed} local copies "
                f"({report.freed} bytes); kept {report.kept} that changed.",
            )
            result[storage.reference] = {
                "removed": report.removed, "freed": report.freed, "kept": report.kept,
            }  # fmt: skip
        return result

    def do_dispatch(self, options: dict[str, Any]) -> dict[str, Any]:
        batch, storage = options["batch"], options["storage"]
        if batch < 1 or options["interval"] <= 0:
            raise CommandError("--batch and --interval must be positive.")
        if options["once"]:
            names = dispatch.dispatch(batch, storage)
            self.say(options, f"Queued {len(names)} transfers from the outbox.")
            return {"queued": names}
        stopping: list[int] = []
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda signum, frame: stopping.append(signum))
        self.say(options, "Dispatching the outbox; stop with Ctrl-C or SIGTERM.")
        total = dispatch.run(
            options["interval"], batch, storage, stop=lambda: bool(stopping)
        )
        self.say(options, f"Queued {total} transfers from the outbox.")
        return {"queued": total}

    def do_health(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be positive.")
        probes = health.run(options["timeout"], options["storage"])
        for line in health.lines(probes):
            self.say(options, line)
        failed = [probe for probe in probes if not probe.ok and not probe.warning]
        result = {
            "ok": not failed,
            "parts": [
                {"part": p.part, "ok": p.ok, "warning": p.warning, "detail": p.detail,
                 "hint": p.hint}
                for p in probes
            ],
        }  # fmt: skip
        if failed:
            if options["json"]:
                self.stdout.write(json.dumps(result, indent=2, sort_keys=True))
            raise CommandError(
                f"{len(failed)} of {len(probes)} parts failed: "
                + ", ".join(probe.part for probe in failed)
            )
        return result

    def do_storages(self, options: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for reference, storage in operations.known_storages().items():
            result[reference] = type(storage).__name__
            self.say(options, f"{reference}: {type(storage).__name__}")
        return result

    def do_retry(self, options: dict[str, Any]) -> dict[str, Any]:
        names = operations.retry_failed(options["storage"], options["names"] or None)
        self.say(options, f"Queued {len(names)} failed transfers again.")
        return {"queued": names}

    def do_reconcile(self, options: dict[str, Any]) -> dict[str, Any]:
        seconds = options["older_than"]
        older = None if seconds is None else timedelta(seconds=seconds)
        names = operations.reconcile(older, options["storage"])
        self.say(options, f"Queued {len(names)} stale transfers again.")
        result: dict[str, Any] = {"queued": names}
        if options["untracked"]:
            found: dict[str, list[str]] = {}
            left_out: dict[str, dict[str, str]] = {}
            for storage in self.storages(options):
                found[storage.reference], left_out[storage.reference] = self.untracked(
                    options, storage
                )
            result["untracked"] = found
            result["skipped"] = left_out
        return result

    def untracked(
        self, options: dict[str, Any], storage: Any
    ) -> tuple[list[str], dict[str, str]]:
        """Print the untracked local files of *storage* as they are found.

        Names come from the local folder, which others may write to: each is
        printed escaped. Return them, and what the walk left out, for JSON.
        """
        reference, keep = storage.reference, options["json"]
        listed: list[str] = []
        skipped: dict[str, str] = {}

        def skip(name: str, reason: str) -> None:
            self.say(
                options,
                f"skipped in {reference}: {printable(name)}: {printable(reason)}",
            )
            if keep:
                skipped[name] = reason

        for name in operations.untracked(storage, skipped=skip):
            self.say(options, f"untracked in {reference}: {printable(name)}")
            if keep:
                listed.append(name)
        return listed, skipped

    def do_purge(self, options: dict[str, Any]) -> dict[str, Any]:
        older = timedelta(seconds=options["older_than"])
        count = operations.purge(older, options["storage"])
        self.say(options, f"Removed {count} rows of deleted files.")
        return {"removed": count}

    def do_verify(self, options: dict[str, Any]) -> dict[str, Any]:
        found = {}
        for storage in self.storages(options):
            problems = operations.verify(storage, options["names"] or None)
            found[storage.reference] = {p.name: p.problem for p in problems}
            for problem in problems:
                self.say(
                    options,
                    f"{storage.reference}: {printable(problem.name)}: "
                    f"{printable(problem.problem)}",
                )
        total = sum(len(p) for p in found.values())
        self.say(options, f"{total} mismatches.")
        if total and not options["json"]:
            raise CommandError(f"{total} transferred files do not match.")
        return {"mismatches": found}

    def do_orphans(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["batch"] < 1 or options["older_than"] < 0:
            raise CommandError(
                "--batch must be positive and --older-than not negative."
            )
        older, delete = timedelta(seconds=options["older_than"]), options["delete"]
        show = not options["no_progress"] and sys.stderr.isatty()
        result: dict[str, Any] = {}
        for storage in self.storages(options):
            reference = storage.reference
            progress = None
            if show:
                total = orphans.count_candidates(storage, older)
                progress = lambda n, t=total, r=reference: self.progress_bar(n, t, r)  # noqa: E731
            try:
                report = orphans.run(
                    storage, older_than=older, delete=delete,
                    batch=options["batch"], progress=progress,
                )  # fmt: skip
            except ValueError as exc:
                self.stderr.write(f"Skipped {reference}: {exc}")
                result[reference] = {"skipped": str(exc)}
                continue
            finally:
                if show:
                    sys.stderr.write("\n")
            for name in report.orphans:
                self.say(options, f"{reference}: {printable(name)}")
            verb = "Deleted" if delete else "Found"
            self.say(
                options,
                f"{reference}: {verb} {report.found} orphans ({report.bytes} bytes) "
                f"among {report.scanned} files.",
            )
            result[reference] = {
                "scanned": report.scanned, "orphans": report.orphans,
                "bytes": report.bytes, "deleted": report.deleted,
            }  # fmt: skip
        return result

    def do_import(self, options: dict[str, Any]) -> dict[str, Any]:
        storages = self.storages(options)
        if len(storages) != 1:
            raise CommandError(
                "Name the storage to import with --storage; known: "
                + ", ".join(sorted(operations.known_storages()))
            )
        if options["concurrency"] < 1:
            raise CommandError(
                f"--concurrency must be at least 1, not {options['concurrency']}."
            )
        show = not options["no_progress"] and sys.stderr.isatty()
        dry_run = options["dry_run"]
        listing = dry_run and not options["json"] and not show

        def found(name: str) -> None:
            self.stdout.write(f"would move: {printable(name)}")

        report = operations.bulk_import(
            storages[0],
            dry_run=dry_run,
            rate=options["rate"],
            limit=options["limit"],
            progress=self.progress_bar if show else None,
            found=found if listing else None,
            concurrency=options["concurrency"],
        )
        if show:
            sys.stderr.write("\n")
        verb = "Would move" if dry_run else "Moved"
        self.say(
            options,
            f"{verb} {report.done} files; {report.skipped} already remote; "
            f"{report.failures} failed; {report.refusals} left out.",
        )
        for label, problems, count in (
            ("failed", report.failed, report.failures),
            ("left out", report.refused, report.refusals),
        ):
            for name, error in problems.items():
                self.say(options, f"{label}: {printable(name)}: {printable(error)}")
            if count > len(problems):
                self.say(options, f"{label}: {count - len(problems)} more not shown")
        return {
            "done": report.done,
            "skipped": report.skipped,
            "failed": report.failed,
            "failures": report.failures,
            "left_out": report.refused,
            "left_out_count": report.refusals,
        }

    @staticmethod
    def progress_bar(index: int, total: int, name: str) -> None:
        width = 30
        filled = width * index // max(total, 1)
        bar = "#" * filled + "-" * (width - filled)
        shown = printable(name)[-40:]
        sys.stderr.write(f"\r[{bar}] {index}/{total} {shown:<40}")
        sys.stderr.flush()
