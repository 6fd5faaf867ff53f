"""Run the benchmarks of django-queued-storage and write their results.

Usage, from the repository root::

    python benchmarks/run.py [--quick] [--out DIR] [--chart PNG] [--compare JSON]
                             [--db sqlite|postgres] [--only SECTION]

It starts its own Redis and moto S3 server (and PostgreSQL with
``--db postgres``) on free ports of 127.0.0.1, configures Django with
``benchmarks/settings.py``, runs every section, and writes ``latest.json``
and ``benchmark.png`` to ``--out`` (default ``benchmarks/results``). The exit
status is not zero only when something broke; a missed goal is reported,
not failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECTIONS = ("save", "read", "worker", "memory", "scaling", "large", "bulk")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and files, no 1 GiB transfer: a smoke test of "
        "about two minutes",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        help="directory of latest.json (default: %(default)s)",
    )
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help="where to write the PNG (default: OUT/benchmark.png)",
    )
    parser.add_argument(
        "--db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="database of the ledger (default: %(default)s)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="the latest.json of an earlier run, drawn on the chart as marks",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        help="run only this section; may be repeated",
    )
    return parser.parse_args(argv)


def section(name: str) -> Any:
    from benchmarks import bulk_import as bulk
    from benchmarks import large_files as large
    from benchmarks import memory, read_path, save_path, scaling, worker

    modules = {"save": save_path, "read": read_path, "worker": worker,
               "memory": memory, "scaling": scaling, "large": large,
               "bulk": bulk}  # fmt: skip
    return modules[name].run


def report(goals: list[dict[str, Any]]) -> None:
    print("\nGoals:")
    for goal in goals:
        mark = {True: "met   ", False: "MISSED", None: "n/a   "}[goal["met"]]
        sign = "<=" if goal["sense"] == "max" else ">="
        value = "-" if goal["value"] is None else f"{goal['value']:.3g}"
        print(f"  {mark} {goal['goal_text']}: {value} {goal['unit']} "
              f"(goal {sign} {goal['goal']:g})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from benchmarks import environment, goals

    options = parse(argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "quick": options.quick,
        "database": options.db,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": environment.machine(),
        "sections": {},
    }
    errors: dict[str, str] = {}
    with ExitStack() as stack:
        bench = environment.start(stack, quick=options.quick, db=options.db)
        for name in options.only or SECTIONS:
            print(f"== {name}", flush=True)
            begun = time.monotonic()
            try:
                results[name] = section(name)(bench)
            except Exception:
                errors[name] = traceback.format_exc()
                print(errors[name], file=sys.stderr)
            results["sections"][name] = round(time.monotonic() - begun, 1)
            print(f"   {results['sections'][name]} s", flush=True)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["errors"] = errors
    results["goals"] = goals.evaluate(results)
    options.out.mkdir(parents=True, exist_ok=True)
    out = options.out / "latest.json"
    out.write_text(
        json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    chart = options.chart or options.out / "benchmark.png"
    try:
        from benchmarks import chart as charts

        before = None
        if options.compare:
            before = json.loads(options.compare.read_text(encoding="utf-8"))
        charts.draw(results, chart, before)
    except ImportError as exc:
        print(f"No chart drawn ({exc}); pip install matplotlib to draw it.")
    else:
        print(f"Chart: {chart}")
    report(results["goals"])
    print(f"Results: {out} ({results['seconds']} s)")
    if errors:
        print(f"Broken sections: {', '.join(errors)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
