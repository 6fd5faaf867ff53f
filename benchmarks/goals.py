"""The goals of the benchmarks, and which of them a run met."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READS = ("url", "exists", "size")


def find(results: dict[str, Any], path: str) -> Any:
    """Return the value at dotted *path* of *results*, or ``None``."""
    value: Any = results
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Goal:
    key: str
    text: str
    unit: str
    goal: float
    #: ``"max"``: the value must not exceed the goal; ``"min"``: nor fall below.
    sense: str
    path: str = ""

    def value(self, results: dict[str, Any]) -> float | None:
        if self.key == "read_round_trips":
            found = [
                find(results, f"read.counts.proxy_{m}.redis_round_trips") for m in READS
            ]
            return None if None in found else max(found)
        if self.key == "read_remote_requests":
            found = [find(results, f"read.counts.proxy_{m}.s3_requests") for m in READS]
            return None if None in found else sum(len(f) for f in found)
        value = find(results, self.path)
        return None if value is None else float(value)


SAVE = "save.10KiB"
GOALS = [
    Goal("save_round_trips_state", "Redis round trips of a save, state name check, "
         "ledger on", "round trips", 3, "max",
         f"{SAVE}.counts.queued_state_check.redis_round_trips"),
    Goal("save_round_trips_state_no_ledger", "Redis round trips of a save, state name "
         "check, ledger off", "round trips", 3, "max",
         f"{SAVE}.counts.queued_state_check_no_ledger.redis_round_trips"),
    Goal("save_overhead_state_no_ledger", "Time a 10 KiB save adds to "
         "FileSystemStorage.save, state check, ledger off", "round-trip times", 3,
         "max",
         f"{SAVE}.versus_filesystem.queued_state_check_no_ledger.overhead_round_trips"),
    Goal("save_overhead_state", "Time a 10 KiB save adds to FileSystemStorage.save, "
         "state check, ledger on", "round-trip times", 3, "max",
         f"{SAVE}.versus_filesystem.queued_state_check.overhead_round_trips"),
    Goal("save_round_trips_outbox", "Redis round trips of a save, state name check, "
         "outbox", "round trips", 2, "max",
         f"{SAVE}.counts.queued_state_check_outbox.redis_round_trips"),
    Goal("save_overhead_outbox", "Time a 10 KiB save adds to FileSystemStorage.save, "
         "state check, outbox", "round-trip times", 3, "max",
         f"{SAVE}.versus_filesystem.queued_state_check_outbox.overhead_round_trips"),
    Goal("save_overhead_default", "Time a 10 KiB save adds to "
         "FileSystemStorage.save, default configuration", "round-trip times", 2,
         "max", f"{SAVE}.versus_filesystem.queued_default.overhead_round_trips"),
    Goal("save_overhead_default_plain", "Time a 10 KiB save adds to "
         "FileSystemStorage.save, default configuration on plain SQLite",
         "round-trip times", 2, "max",
         f"{SAVE}.versus_filesystem.queued_default_plain.overhead_round_trips"),
    Goal("save_ratio_default_1mib", "1 MiB save against FileSystemStorage.save, "
         "default configuration", "ratio", 2, "max",
         "save.1MiB.versus_filesystem.queued_default.ratio"),
    Goal("save_round_trips_default", "Redis round trips of a save, default "
         "configuration", "round trips", 1, "max",
         f"{SAVE}.counts.queued_default.redis_round_trips"),
    Goal("save_statements_default", "Ledger statements of a save, default "
         "configuration", "statements", 1, "max",
         f"{SAVE}.counts.queued_default.sql_statements"),
    Goal("dispatch_latency_p50", "Commit of a save to the start of its transfer, "
         "median (dispatcher in the worker node)", "ms", 250, "max",
         "save.dispatch_latency.p50_ms"),
    Goal("dispatch_latency_p99", "Commit of a save to the start of its transfer, "
         "99th percentile", "ms", 1000, "max", "save.dispatch_latency.p99_ms"),
    Goal("read_round_trips", "Most cache round trips of url(), exists() or size() on "
         "a known state", "round trips", 1, "max"),
    Goal("read_remote_requests", "Remote requests of url(), exists() and size() on a "
         "known state", "requests", 0, "max"),
    Goal("urls_speedup", "urls() of 100 names against 100 url() calls (S3 endpoint "
         "URLs)", "times faster", 10, "min", "read.urls_speedup"),
    Goal("urls_speedup_custom_domain", "urls() of 100 names against 100 url() calls "
         "(custom domain)", "times faster", 10, "min",
         "read.urls_speedup_custom_domain"),
    Goal("worker_throughput", "Worker (2 processes) against 2 put_object loops in 2 "
         "processes, 10 KiB files", "ratio", 0.9, "min", "worker.ratio"),
    Goal("memory_peak_rise", "Peak RSS rise while transferring 1 GiB", "MiB", 64,
         "max", "memory.modes.transfer_file.peak_rise_mib"),
    Goal("scaling_save", "Save latency at the largest ledger over the smallest (state "
         "check)", "ratio", 1.25, "max",
         "scaling.save_latency_growth.queued_state_check"),
    Goal("scaling_worker", "Worker time per file at the largest ledger over the "
         "smallest", "ratio", 1.25, "max", "scaling.worker_throughput_growth"),
    Goal("large_throughput", "1 GiB transfer_file against the fastest of boto3 "
         "upload_file and S3Storage.save (median times)", "ratio", 0.9, "min",
         "large.ratio"),
    Goal("large_peak_rise", "Peak RSS rise of a 1 GiB transfer_file", "MiB", 64,
         "max", "large.modes.transfer_file.peak_rise_mib"),
    Goal("large_many_process_rise", "Largest peak RSS rise of a worker process, "
         "many large files at once", "MiB", 64, "max",
         "large.many_at_once.largest_process_rise_mib"),
    Goal("bulk_import_throughput", "import of small files against put_object loops "
         "at the same concurrency", "ratio", 0.8, "min", "bulk.ratio"),
    Goal("bulk_import_memory", "Peak RSS of the import over its RSS a tenth of the "
         "way in", "ratio", 1.25, "max", "bulk.memory_growth"),
]  # fmt: skip


def met(value: float | None, goal: float, sense: str) -> bool | None:
    if value is None:
        return None
    return value <= goal if sense == "max" else value >= goal


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each goal with the run's value and whether it was met."""
    evaluated = []
    for goal in GOALS:
        value = goal.value(results)
        evaluated.append(
            {
                "key": goal.key,
                "goal_text": goal.text,
                "unit": goal.unit,
                "goal": goal.goal,
                "sense": goal.sense,
                "value": value,
                "met": met(value, goal.goal, goal.sense),
            }
        )
    return evaluated
