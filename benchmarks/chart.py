"""Draw the figures of a run against their goals, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .goals import find, met

GOAL = {"color": "#c0392b", "linestyle": "--", "linewidth": 1.2}
AIM = {"color": "#e67e22", "linestyle": ":", "linewidth": 1.2}
COLORS = {True: "#2e86c1", False: "#c0392b", None: "#95a5a6"}
VARIANTS = {
    "queued_state_check": "state check",
    "queued_state_check_no_ledger": "state check, no ledger",
    "queued_remote_check": "remote check (+ HEAD)",
    "queued_remote_check_no_ledger": "remote check (+ HEAD), no ledger",
}


def bars(
    ax: Any,
    labels: list[str],
    values: list[Any],
    goal: float | None = None,
    sense: str = "max",
) -> None:
    """Draw horizontal bars, coloured by whether each meets *goal*."""
    shown = [0.0 if v is None else v for v in values]
    colors = [COLORS[met(v, goal, sense) if goal is not None else None] for v in values]
    drawn = ax.barh(labels, shown, color=colors)
    for bar, value in zip(drawn, values, strict=True):
        text = "n/a" if value is None else f"{value:.3g}"
        y = bar.get_y() + bar.get_height() / 2
        ax.text(bar.get_width(), y, f" {text}", va="center", fontsize=8)
    if goal is not None:
        ax.axvline(
            goal,
            **GOAL,
            label=f"goal: {'at most' if sense == 'max' else 'at least'} {goal:g}",
        )
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.margins(x=0.15)


def title(ax: Any, text: str) -> None:
    ax.set_title(text, fontsize=9.5)


def save_panels(results: dict[str, Any], axes: list[Any]) -> None:
    counts = [
        find(results, f"save.10KiB.counts.{v}.redis_round_trips") for v in VARIANTS
    ]
    bars(axes[0], list(VARIANTS.values()), counts, 3)
    axes[0].axvline(2, **AIM, label="aim: 2")
    axes[0].legend(fontsize=7, loc="lower right")
    title(axes[0], "Save: Redis round trips per save (count)")

    labels = [*VARIANTS, "s3storage"]
    names = [*VARIANTS.values(), "S3Storage.save"]
    path = "save.10KiB.versus_filesystem.{}.overhead_round_trips"
    bars(axes[1], names, [find(results, path.format(v)) for v in labels], 3)
    axes[1].legend(fontsize=7, loc="lower right")
    title(
        axes[1],
        "Save 10 KiB: time over FileSystemStorage.save,\nin Redis round-trip times",
    )

    sizes = ["10KiB", "1MiB", "100MiB"]
    rows, values = [], []
    for size in sizes:
        for label, name in (
            ("queued_state_check", "state check"),
            ("s3storage", "S3Storage"),
        ):
            rows.append(f"{size}: {name}")
            values.append(find(results, f"save.{size}.versus_filesystem.{label}.ratio"))
    bars(axes[2], rows, values)
    axes[2].set_xscale("log")
    axes[2].axvline(1, color="black", linewidth=0.8)
    title(axes[2], "Save: time / FileSystemStorage.save time, by size (log)")


def read_panels(results: dict[str, Any], axes: list[Any]) -> None:
    methods = ["url", "exists", "size"]
    ratios = [find(results, f"read.proxy_versus_remote.{m}") for m in methods]
    bars(axes[0], [f"{m}()" for m in methods], ratios)
    axes[0].axvline(1, color="black", linewidth=0.8)
    notes = []
    for m in methods:
        trips = find(results, f"read.counts.proxy_{m}.redis_round_trips")
        requests = find(results, f"read.counts.proxy_{m}.s3_requests")
        notes.append(f"{m} {trips}/{len(requests or ())}")
    title(axes[0], "Read of a transferred file: proxy time / remote time\n"
          f"Redis round trips/S3 requests per call: {', '.join(notes)}")  # fmt: skip

    speedups = [find(results, "read.urls_speedup"),
                find(results, "read.urls_speedup_custom_domain")]  # fmt: skip
    bars(axes[1], ["S3 endpoint URLs", "custom domain"], speedups, 10, "min")
    axes[1].legend(fontsize=7, loc="lower right")
    title(axes[1], "urls() of 100 names vs 100 url() calls (times faster)")


def worker_panels(results: dict[str, Any], axes: list[Any]) -> None:
    ratio = find(results, "worker.ratio")
    bars(axes[0], ["worker / put_object loop"], [ratio], 0.8, "min")
    axes[0].legend(fontsize=7, loc="lower right")
    title(axes[0], "Worker throughput, 10 KiB files, against one boto3 client")

    modes = {"transfer_file": "transfer_file", "boto3_upload_file": "boto3 upload_file",
             "s3storage_save": "S3Storage.save"}  # fmt: skip
    rises = [find(results, f"memory.modes.{m}.peak_rise_mib") for m in modes]
    bars(axes[1], list(modes.values()), rises, 64)
    axes[1].legend(fontsize=7, loc="lower right")
    title(axes[1], "Peak RSS rise while uploading 1 GiB (MiB)")


def scaling_panel(results: dict[str, Any], ax: Any) -> None:
    levels = find(results, "scaling.levels") or []
    title(ax, "Scaling: cost relative to the smallest ledger")
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


def draw(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 2, figsize=(11, 13))
    save_panels(results, [axes[0][0], axes[0][1], axes[1][0]])
    read_panels(results, [axes[1][1], axes[2][0]])
    worker_panels(results, [axes[2][1], axes[3][0]])
    scaling_panel(results, axes[3][1])
    machine = results.get("machine", {})
    kind = "quick" if results.get("quick") else "full"
    fig.suptitle(
        f"django-queued-storage benchmarks: {kind} run, {machine.get('cpus')} CPUs "
        f"({machine.get('cpu_model', '')}), ledger on {results.get('database')}",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
