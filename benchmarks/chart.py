"""Draw the figures of a run against their goals, as one PNG.

With an earlier run to compare with, its figures are drawn as black marks
on the bars of the new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .goals import find, met

GOAL = {"color": "#c0392b", "linestyle": "--", "linewidth": 1.2}
AIM = {"color": "#e67e22", "linestyle": ":", "linewidth": 1.2}
COLORS = {True: "#2e86c1", False: "#c0392b", None: "#95a5a6"}
SAVE = "save.10KiB"
VARIANTS = {
    "queued_default": "default (outbox)",
    "queued_default_plain": "default, plain SQLite",
    "queued_state_check_outbox": "state check, outbox",
    "queued_state_check": "state check",
    "queued_state_check_no_ledger": "state check, no ledger",
    "queued_remote_check": "remote check (+ HEAD)",
    "queued_remote_check_no_ledger": "remote check (+ HEAD), no ledger",
}
SIZES = [
    (f"{size}: {name}", f"save.{size}.versus_filesystem.{label}.ratio")
    for size in ("10KiB", "1MiB", "100MiB")
    for label, name in (
        ("queued_default", "default"),
        ("queued_state_check_outbox", "outbox"),
        ("queued_state_check", "state check"),
        ("s3storage", "S3Storage"),
    )
]


@dataclass
class Panel:
    title: str
    #: ``(label, dotted path in the results)`` of each bar.
    bars: list[tuple[str, str]]
    goal: float | None = None
    #: The labels of the bars the goal is for; the others are baselines.
    judged: tuple[str, ...] | None = None
    sense: str = "max"
    aim: float | None = None
    reference: float | None = None
    log: bool = False


PANELS = [
    Panel(
        "Save: Redis round trips per save (count)",
        [
            (text, f"{SAVE}.counts.{v}.redis_round_trips")
            for v, text in VARIANTS.items()
        ],
        goal=3,
        aim=2,
    ),
    Panel(
        "Save 10 KiB: time over FileSystemStorage.save,\nin Redis round-trip times",
        [
            *(
                (t, f"{SAVE}.versus_filesystem.{v}.overhead_round_trips")
                for v, t in VARIANTS.items()
            ),
            (
                "S3Storage.save",
                f"{SAVE}.versus_filesystem.s3storage.overhead_round_trips",
            ),
        ],
        goal=3,
        judged=("state check, outbox", "state check", "state check, no ledger"),
    ),
    Panel(
        "Save, default configuration: 10 KiB over FileSystemStorage.save\n"
        "(Redis round-trip times) and 1 MiB (ratio)",
        [
            ("10 KiB", f"{SAVE}.versus_filesystem.queued_default.overhead_round_trips"),
            (
                "10 KiB, plain SQLite",
                f"{SAVE}.versus_filesystem.queued_default_plain.overhead_round_trips",
            ),
            ("1 MiB ratio", "save.1MiB.versus_filesystem.queued_default.ratio"),
        ],
        goal=2,
    ),
    Panel(
        "Commit of a save to the start of its transfer (ms)\n"
        "dispatcher in the worker node; goal p99, aim p50",
        [
            ("p50", "save.dispatch_latency.p50_ms"),
            ("p99", "save.dispatch_latency.p99_ms"),
        ],
        goal=1000,
        aim=250,
    ),
    Panel(
        "Save: time / FileSystemStorage.save time, by size (log)",
        SIZES,
        reference=1,
        log=True,
    ),
    Panel(
        "Reads of a transferred file: proxy / remote time\n"
        "(proxy: 1 Redis round trip, no S3 request)",
        [
            (f"{m}()", f"read.proxy_versus_remote.{m}")
            for m in ("url", "exists", "size")
        ],
        reference=1,
    ),
    Panel(
        "urls() of 100 names vs 100 url() calls (times faster)",
        [
            ("S3 endpoint URLs", "read.urls_speedup"),
            ("custom domain", "read.urls_speedup_custom_domain"),
        ],
        goal=10,
        sense="min",
    ),
    Panel(
        "Worker throughput on 10 KiB files\n/ put_object loops, one per worker process",
        [("worker, 2 processes", "worker.ratio")],
        goal=0.9,
        sense="min",
    ),
    Panel(
        "Peak RSS rise while uploading 1 GiB (MiB)",
        [
            ("transfer_file", "memory.modes.transfer_file.peak_rise_mib"),
            ("boto3 upload_file", "memory.modes.boto3_upload_file.peak_rise_mib"),
            ("S3Storage.save", "memory.modes.s3storage_save.peak_rise_mib"),
        ],
        goal=64,
        judged=("transfer_file",),
    ),
    Panel(
        "Large file: transfer_file throughput / the fastest\nof upload_file() and "
        "S3Storage.save() (median times)",
        [("transfer_file", "large.ratio")],
        goal=0.9,
        sense="min",
    ),
    Panel(
        "Peak RSS rise (MiB): large file, and worker\nprocesses moving many at once",
        [
            ("transfer_file", "large.modes.transfer_file.peak_rise_mib"),
            ("boto3 upload_file", "large.modes.boto3_upload_file.peak_rise_mib"),
            ("S3Storage.save", "large.modes.s3storage_save.peak_rise_mib"),
            ("worker, largest process", "large.many_at_once.largest_process_rise_mib"),
        ],
        goal=64,
        judged=("transfer_file", "worker, largest process"),
    ),
    Panel(
        "Import of small files / put_object loops\nat the same concurrency",
        [("import", "bulk.ratio")],
        goal=0.8,
        sense="min",
    ),
]


def draw_panel(
    ax: Any, panel: Panel, results: dict[str, Any], before: dict[str, Any] | None
) -> None:
    labels = [label for label, _ in panel.bars]
    values = [find(results, path) for _, path in panel.bars]
    colors = [
        COLORS[
            met(v, panel.goal, panel.sense)
            if panel.goal is not None and label in (panel.judged or labels)
            else None
        ]
        for label, v in zip(labels, values, strict=True)
    ]
    drawn = ax.barh(labels, [0.0 if v is None else v for v in values], color=colors)
    for bar, value in zip(drawn, values, strict=True):
        text = "n/a" if value is None else f"{value:.3g}"
        y = bar.get_y() + bar.get_height() / 2
        ax.text(bar.get_width(), y, f" {text}", va="center", fontsize=8)
    if before is not None:
        earlier = [find(before, path) for _, path in panel.bars]
        ys = [i for i, v in enumerate(earlier) if v is not None]
        ax.plot([earlier[i] for i in ys], ys, "kD", markersize=5, label="before")
    if panel.goal is not None:
        words = "at most" if panel.sense == "max" else "at least"
        ax.axvline(panel.goal, **GOAL, label=f"goal: {words} {panel.goal:g}")
    if panel.aim is not None:
        ax.axvline(panel.aim, **AIM, label=f"aim: {panel.aim:g}")
    if panel.reference is not None:
        ax.axvline(panel.reference, color="black", linewidth=0.8)
    if panel.log:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(x=0.15)
    ax.set_title(panel.title, fontsize=9.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")


def scaling_panel(ax: Any, results: dict[str, Any]) -> None:
    levels = find(results, "scaling.levels") or []
    ax.set_title("Scaling: cost relative to the smallest ledger", fontsize=9.5)
    ax.set_xlabel("ledger rows", fontsize=8)
    if not levels:
        return
    rows = [level["ledger_rows"] for level in levels]

    def per_plain(level: dict[str, Any], label: str) -> float:
        timings = level["timings"]
        return float(timings[label]["median_ms"] / timings["filesystem"]["median_ms"])

    for label in ("queued_state_check", "queued_remote_check"):
        first = per_plain(levels[0], label)
        line = [per_plain(level, label) / first for level in levels]
        ax.plot(rows, line, marker="o", label=f"save, {VARIANTS[label]}")
    first_rate = levels[0]["worker_files_per_s"]
    line = [first_rate / level["worker_files_per_s"] for level in levels]
    ax.plot(rows, line, marker="s", label="worker time per file")
    ax.set_xscale("log")
    ax.axhline(1.25, **GOAL, label="goal: flat (at most 1.25)")
    ax.set_ylim(0, max(2.0, ax.get_ylim()[1]))
    ax.legend(fontsize=7)


def draw(
    results: dict[str, Any], path: Path, before: dict[str, Any] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-(len(PANELS) + 1) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.25 * rows))
    flat = [ax for row in axes for ax in row]
    for ax, panel in zip(flat, PANELS, strict=False):
        draw_panel(ax, panel, results, before)
    scaling_panel(flat[len(PANELS)], results)
    for ax in flat[len(PANELS) + 1 :]:
        ax.set_visible(False)
    machine = results.get("machine", {})
    kind = "quick" if results.get("quick") else "full"
    compared = "; black marks: before" if before is not None else ""
    fig.suptitle(
        f"django-queued-storage benchmarks: {kind} run, {machine.get('cpus')} CPUs "
        f"({machine.get('cpu_model', '')}), ledger on {results.get('database')}"
        f"{compared}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
