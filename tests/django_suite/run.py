"""Run Django's own storage tests against a queued storage.

Usage, from the repository root::

    python tests/django_suite/run.py [--transfer] [RUNTESTS OPTION ...] [LABEL ...]

The labels default to :data:`LABELS`. The source distribution of the
installed Django is downloaded with ``pip download`` (into
``QS_DJANGO_SUITE_DIR``, or a temporary folder) and its ``tests/`` folder is
run with Django's own ``runtests.py``, with
``django.core.files.storage.FileSystemStorage`` replaced by
``QueuedAsFileSystem`` of ``adapter.py``: each storage the
tests build is a queued storage between the folder they asked for and a
second one. With ``--transfer`` (or ``QS_DJANGO_SUITE_TRANSFER=1``) every
file is moved to the second folder as soon as it is saved, so reads are
served by the remote.
The tests listed in ``excluded.py`` are skipped, each
with its reason.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
import unittest
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: What runs when no label is given.
LABELS = [
    "file_storage",
    "file_uploads",
    "model_fields.test_filefield",
    "model_fields.test_imagefield",
]

SETTINGS = """\
import os

from test_sqlite import *  # noqa: F403

# States in the cache alone: most storage tests are SimpleTestCases, which
# refuse database queries. QS_DJANGO_SUITE_LEDGER=1 turns the ledger on.
QUEUED_STORAGE_LEDGER = os.environ.get("QS_DJANGO_SUITE_LEDGER") == "1"
"""


def download(version: str, into: Path) -> Path:
    """Return the sdist of Django *version*, downloading it with pip once."""
    found = sorted(into.glob(f"[dD]jango-{version}.tar.gz"))
    if found:
        return found[0]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--no-binary", ":all:", "--dest", str(into), f"django=={version}",
        ],
        check=True,
    )  # fmt: skip
    found = sorted(into.glob(f"[dD]jango-{version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip did not download the sdist of Django {version}.")
    return found[0]


def extract_tests(sdist: Path, into: Path) -> Path:
    """Extract the ``tests/`` folder of *sdist*; return its path."""
    root = into / sdist.name.removesuffix(".tar.gz")
    tests = root / "tests"
    if not (tests / "runtests.py").exists():
        with tarfile.open(sdist) as archive:
            prefix = f"{root.name}/tests/"
            members = [m for m in archive.getmembers() if m.name.startswith(prefix)]
            archive.extractall(into, members=members, filter="data")
    (tests / "queued_suite_settings.py").write_text(SETTINGS)
    return tests


def iter_tests(suite: Any) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from iter_tests(test)
        else:
            yield test


def reason_for(test_id: str) -> str | None:
    from excluded import EXCLUDED, EXCLUDED_WHEN_TRANSFERRED

    excluded = dict(EXCLUDED)
    if os.environ.get("QS_DJANGO_SUITE_TRANSFER") == "1":
        excluded.update(EXCLUDED_WHEN_TRANSFERRED)
    for prefix, reason in excluded.items():
        if test_id == prefix or test_id.startswith(prefix + "."):
            return reason
    return None


def skip_excluded() -> None:
    """Make Django's test runner skip the excluded tests, giving the reason."""
    from django.test.runner import DiscoverRunner

    build_suite = DiscoverRunner.build_suite

    def build(self: Any, *args: Any, **kwargs: Any) -> Any:
        suite = build_suite(self, *args, **kwargs)
        for test in iter_tests(suite):
            reason = reason_for(test.id())
            if reason and hasattr(test, "_testMethodName"):
                skipped = unittest.skip(reason)(lambda: None)
                setattr(test, test._testMethodName, skipped)
        return suite

    DiscoverRunner.build_suite = build  # type: ignore[method-assign]


def replace_file_system_storage() -> None:
    """Make the tests' ``FileSystemStorage`` a queued storage."""
    # Subclasses defined by Django itself keep the real base class.
    import django.contrib.staticfiles.storage  # noqa: F401
    import django.core.files.storage as package
    from adapter import QueuedAsFileSystem

    package.FileSystemStorage = QueuedAsFileSystem  # type: ignore[misc]


def install_queued_storage() -> None:
    """Add ``queued_storage`` to the apps ``runtests.py`` installs (the ledger)."""
    from django.apps import apps

    populate = apps.populate

    def with_queued_storage(installed_apps: Any = None) -> None:
        installed = list(installed_apps or [])
        if "queued_storage" not in installed:
            installed.append("queued_storage")
        populate(installed)

    apps.populate = with_queued_storage  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    import django

    if "--transfer" in argv:
        argv = [arg for arg in argv if arg != "--transfer"]
        os.environ["QS_DJANGO_SUITE_TRANSFER"] = "1"
    work = Path(os.environ.get("QS_DJANGO_SUITE_DIR") or tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    tests = extract_tests(download(django.__version__, work), work)
    os.environ.setdefault("QS_DJANGO_SUITE_REMOTES", tempfile.mkdtemp())
    os.environ["DJANGO_SETTINGS_MODULE"] = "queued_suite_settings"
    sys.path.insert(0, str(tests))
    os.chdir(tests)
    replace_file_system_storage()
    install_queued_storage()
    skip_excluded()
    labels = [arg for arg in argv if not arg.startswith("-")] or LABELS
    options = [arg for arg in argv if arg.startswith("-")]
    sys.argv = [
        "runtests.py", "--settings=queued_suite_settings", "--parallel=1",
        *options, *labels,
    ]  # fmt: skip
    runpy.run_path(str(tests / "runtests.py"), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
