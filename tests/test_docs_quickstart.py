"""The README and the quickstart, followed literally, move an upload to S3.

Each page's marked blocks (see ``tests/docs_blocks.py``) are applied to a
project that ``django-admin startproject`` makes in a temporary folder: its
commands run, its files are written, a real ``celery -A mysite worker`` runs,
and an upload is followed from the local folder to the S3 server (moto) it
is then served from. Only hosts and ports change: Redis and S3 are the
suite's, the bucket is a new one, and the credentials come from the
environment as the pages say.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.docs_blocks import ROOT, Block, blocks, commands
from tests.services.celery_worker import CeleryWorkerProcess

pytestmark = pytest.mark.slow

#: The page run end to end, and the first of the Redis databases it gets.
PAGE, DB_BASE = "docs/quickstart.rst", 12

#: Run in the project after the page's own steps: follow one upload.
FOLLOW = r"""
import json, os, sys, time, urllib.request
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django.setup()
from django.core.files.base import ContentFile
from django.test import Client
from documents.models import Document

doc = Document.objects.create(title="t", file=ContentFile(b"followed", name="f.txt"))
local_url = doc.file.storage.local.url(doc.file.name)
served = Client().get(local_url, HTTP_HOST="localhost")
deadline = time.monotonic() + 60
while doc.file.storage.get_state(doc.file.name).status != "transferred":
    if time.monotonic() > deadline:
        break
    time.sleep(0.1)
status = doc.file.storage.get_state(doc.file.name).status
url = doc.file.url
with urllib.request.urlopen(url, timeout=10) as response:
    remote = response.read().decode()
result = {
    "local_url": local_url,
    "local_status": served.status_code,
    "local_body": b"".join(served.streaming_content).decode(),
    "status": status, "url": url, "remote": remote,
}
"""

#: Runs the page's pycon sessions with doctest, one namespace for all; each
#: session after the first waits until every file has been transferred, as
#: the page's "a moment later" says.
DOCTEST = r"""
import doctest
from queued_storage.models import StoredFile

sessions = json.load(open(sys.argv[1]))
globs = {}
runner = doctest.DocTestRunner(
    optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
)
for index, text in enumerate(sessions):
    if index:
        deadline = time.monotonic() + 60
        while StoredFile.objects.exclude(status="transferred").exists():
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    test = doctest.DocTestParser().get_doctest(text, globs, f"session{index}", None, 0)
    runner.run(test, clear_globs=False)
    globs = test.globs
result.update(failed=runner.failures, tried=runner.tries)
print(json.dumps(result))
"""


def project_env(servers: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        # boto3 reads the endpoint of S3 from here; the settings stay the page's.
        AWS_ENDPOINT_URL_S3=servers["s3"].endpoint_url,
    )
    return env


def localise(text: str, servers: dict[str, Any], db_base: int, bucket: str) -> str:
    """Point the page's Redis and bucket at the suite's servers."""

    def database(match: re.Match[str]) -> str:
        return servers["redis"].url_for(db_base + int(match["db"]))

    text = re.sub(r"redis://127\.0\.0\.1:6379/(?P<db>\d)", database, text)
    # The URL S3 gives a bucket, in a session's expected output.
    text = text.replace(
        "https://my-bucket.s3.amazonaws.com", f"{servers['s3'].endpoint_url}/{bucket}"
    )
    return text.replace("my-bucket", bucket)


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def extras_declared() -> dict[str, list[str]]:
    """Return pyproject.toml's extras and their requirements (no tomllib on 3.10)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    found = re.findall(r"^(\w+) = \[(.*?)\]$", section, re.M | re.S)
    return {name: re.findall(r'"([^"]+)"', body) for name, body in found}


def check_install(command: str) -> None:
    """A ``pip install`` line names extras that exist and bring a worker's needs."""
    extras = re.search(r"\[(?P<extras>[^\]]+)\]", command)
    assert extras, command
    declared = extras_declared()
    for extra in extras["extras"].split(","):
        assert extra in declared, f"{command}: no extra {extra!r}"
    if "redis" in extras["extras"]:
        assert any(dep.startswith("celery[redis]") for dep in declared["redis"])


def marked(page: str) -> list[Block]:
    return [block for block in blocks(page) if block.how]


def test_readme_setup_is_the_quickstarts():
    """The README's marked blocks are the quickstart's, which the next test runs."""
    readme, quickstart = marked("README.rst"), marked(PAGE)
    files = {(b.how, b.path): b.text for b in quickstart if b.path}
    readme_files = [b for b in readme if b.path]
    assert readme_files, "README.rst marks no project file"
    for block in readme_files:
        assert files.get((block.how, block.path)) == block.text, (
            f"README.rst:{block.line} differs from {PAGE}'s {block.how} {block.path}"
        )
    assert {(b.how, b.path) for b in readme_files} == set(files)
    steps = [c for b in quickstart if b.how == "console" for c in commands(b)]
    readme_steps = [c for b in readme if b.how == "console" for c in commands(b)]
    assert [c for c in steps if c in readme_steps] == readme_steps


def test_quickstart_followed_literally_serves_the_upload_from_s3(
    tmp_path: Path, servers: dict[str, Any], s3_client: Any
) -> None:
    page = PAGE
    bucket = f"docs-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    env = project_env(servers)
    cwd = tmp_path
    worker: CeleryWorkerProcess | None = None
    applied: list[Block] = []
    sessions: list[str] = []
    health = ""
    shown: list[str] = []
    try:
        for block in blocks(page):
            if not block.how:
                continue
            applied.append(block)
            text = localise(block.text, servers, DB_BASE, bucket)
            if block.how == "pycon":
                sessions.append(text)
            elif block.how == "output":
                # The parts the page shows, each "ok", before their details.
                shown = [line.split(":")[0] for line in text.splitlines()]
            elif block.how in ("append", "write"):
                target = cwd / block.path
                before = target.read_text() if block.how == "append" else ""
                target.write_text(before + "\n" + text)
            elif block.how == "console":
                for command in commands(block):
                    argv = command.split()
                    if argv[:2] == ["pip", "install"]:
                        check_install(command)
                    elif argv[0] == "django-admin":
                        run([sys.executable, "-m", "django", *argv[1:]], cwd, env)
                    elif argv[0] == "cd":
                        cwd = cwd / argv[1]
                    elif argv[:2] == ["python", "manage.py"]:
                        out = run([sys.executable, *argv[1:]], cwd, env)
                        if argv[2:4] == ["queued_storage", "health"]:
                            health = out
                    elif argv[0] == "celery":
                        app = argv[argv.index("-A") + 1]
                        level = argv[argv.index("--loglevel") + 1]
                        worker = CeleryWorkerProcess(
                            app,
                            cwd=cwd,
                            env=env,
                            inherit_env=False,
                            loglevel=level,
                            concurrency=1,
                        ).start(timeout=60)
                    else:
                        raise AssertionError(f"{page}: unknown command {command!r}")
            else:
                raise AssertionError(f"{page}:{block.line}: marker {block.how!r}")
        assert worker is not None, f"{page} starts no worker"
        assert "FAIL" not in health and "ok    broker" in health, health
        (cwd / "sessions.json").write_text(json.dumps(sessions))
        (cwd / "follow.py").write_text(FOLLOW + DOCTEST)
        ran = run([sys.executable, "follow.py", "sessions.json"], cwd, env)
        followed = json.loads(ran.splitlines()[-1])
    except BaseException:
        if worker is not None:
            print(worker.log_text())
        raise
    finally:
        if worker is not None:
            worker.stop()
    assert shown and all(part in health for part in shown), health
    assert followed["local_url"].startswith("/uploads/")
    assert (followed["local_status"], followed["local_body"]) == (200, "followed")
    assert followed["status"] == "transferred"
    assert followed["url"].startswith(f"{servers['s3'].endpoint_url}/{bucket}/")
    assert followed["remote"] == "followed"
    assert "Transferred 'documents/f.txt'" in worker.log_text()
    # The page's shell sessions, with their outputs.
    assert followed["tried"] > 0 and followed["failed"] == 0, ran
