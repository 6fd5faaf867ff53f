"""Every Python block of the documentation compiles and names nothing undefined.

A block that is copied alone must bring its imports: a name it uses but
neither imports nor defines fails here. A few names that settings fragments
extend (``STORAGES``, ``BASE_DIR``, ...) are taken as given.
"""

from __future__ import annotations

import ast
import builtins
import subprocess
import sys
import textwrap

import pytest

from tests.docs_blocks import ROOT, Block, blocks

PAGES = [
    "README.rst",
    *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.rst")),
]

#: Names of a settings module or URLconf that a fragment adds to.
GIVEN = {"BASE_DIR", "STORAGES", "INSTALLED_APPS", "CACHES", "urlpatterns"}

#: Pages whose blocks are excerpts, only compiled.
EXCERPTS = {"docs/security.rst"}


def python_blocks() -> list[Block]:
    return [
        block
        for page in PAGES
        for block in blocks(page)
        if block.language in ("python", "py")
    ]


def undefined_names(tree: ast.AST) -> set[str]:
    """Return the names *tree* reads but binds nowhere (scopes not told apart)."""
    bound: set[str] = set(dir(builtins)) | GIVEN | {"__name__", "__file__"}
    loaded: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return loaded - bound


BLOCKS = python_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_python_block_compiles_with_its_imports(block: Block) -> None:
    tree = compile(block.text, f"{block.page}:{block.line}", "exec", ast.PyCF_ONLY_AST)
    if block.page not in EXCERPTS:
        assert undefined_names(tree) == set(), f"{block.page}:{block.line}"


def test_every_page_block_is_found() -> None:
    # The parser sees the blocks of the pages the other tests rely on.
    assert len(BLOCKS) > 40
    assert any(
        b.page == "docs/usage.rst" and "transfer_failed" in b.text for b in BLOCKS
    )


def test_logging_block_makes_info_records_visible() -> None:
    """The LOGGING block of the usage page shows the package's INFO records."""
    (block,) = [b for b in blocks("docs/usage.rst") if b.how == "logging"]
    script = textwrap.dedent(
        """
        import logging, logging.config, sys
        namespace = {}
        exec(sys.stdin.read(), namespace)
        logging.config.dictConfig(namespace["LOGGING"])
        logging.getLogger("queued_storage").info("Transferred 'x.txt'.")
        logging.getLogger("queued_storage").debug("not shown")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=block.text,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr
    assert "Transferred 'x.txt'." in shown
    assert "not shown" not in shown


def assigned(name: str, pages: list[str]) -> list[tuple[str, object]]:
    """Return each literal value that a block of *pages* assigns to *name*."""
    found = []
    for page in pages:
        for block in blocks(page):
            if block.language != "python":
                continue
            for node in ast.walk(ast.parse(block.text)):
                if isinstance(node, ast.Assign) and any(
                    isinstance(target, ast.Name) and target.id == name
                    for target in node.targets
                ):
                    value = eval(compile(ast.Expression(node.value), page, "eval"))  # noqa: S307
                    found.append((f"{page}:{block.line}", value))
    return found


def test_pages_agree_on_the_redis_broker_options() -> None:
    pages = ["README.rst", "docs/quickstart.rst", "docs/deployment.rst"]
    found = [
        (where, value)
        for where, value in assigned("CELERY_BROKER_TRANSPORT_OPTIONS", pages)
        if "visibility_timeout" in value  # Redis's, not RabbitMQ's
    ]
    assert len(found) == 3, found
    assert len({repr(value) for _, value in found}) == 1, found


def test_pages_agree_on_the_state_cache() -> None:
    pages = ["README.rst", "docs/quickstart.rst"]
    caches = [value for _, value in assigned("CACHES", pages)]
    assert len(caches) == 2
    options = [cache["queued_storage"]["OPTIONS"] for cache in caches]
    assert options[0] == options[1]
    assert options[0]["serializer"] == "queued_storage.serializers.JSONSerializer"


BROKER_PROBE = textwrap.dedent(
    """
    import json
    import django
    from django.conf import settings

    django.setup()
    from tests.celery_app import app
    from queued_storage import broker_checks

    print(json.dumps({
        "settings": {k: getattr(settings, k) for k in dir(settings)
                     if k.startswith("CELERY_")},
        "transport": app.conf.broker_transport_options,
        "url": app.conf.broker_url,
        "checks": [m.id for m in broker_checks.check_broker_windows()],
    }))
    """
)


@pytest.mark.parametrize(
    ("kind", "url"),
    [("redis", "redis://127.0.0.1:1/0"), ("rabbitmq", "amqp://g:g@127.0.0.1:1//")],
)
def test_broker_test_workers_load_the_deployment_page_configuration(kind, url):
    """The settings of a broker test's workers are the deployment page's
    block for that broker as printed, none of the suite's own, with the
    test's broker URL; the block passes the broker checks."""
    import json
    import os

    from tests.docs_blocks import broker_settings

    documented = broker_settings(kind)
    assert documented["CELERY_WORKER_PREFETCH_MULTIPLIER"] == 1
    env = {key: value for key, value in os.environ.items() if not key.startswith("QS_")}
    env.update(QS_TEST_BROKER_CONFIG=kind, QS_TEST_BROKER_URL=url)
    done = subprocess.run(
        [sys.executable, "-c", BROKER_PROBE],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    assert (found["url"], found["checks"]) == (url, [])
    loaded = found["settings"]
    for key, value in documented.items():
        assert loaded[key] == (url if key == "CELERY_BROKER_URL" else value), key
    assert found["transport"] == documented["CELERY_BROKER_TRANSPORT_OPTIONS"]
    # Worker settings of the suite that the page does not give are gone.
    assert "CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS" not in loaded
