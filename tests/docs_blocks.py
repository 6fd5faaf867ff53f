"""Read the code blocks of the documentation, as the docs tests run them.

A block that a test applies to a project is marked by an rst comment just
before it, which renders as nothing::

    .. tested-as: append mysite/settings.py

    .. code-block:: python

       ...

The markers: ``console`` (the ``$`` lines are run), ``append PATH`` and
``write PATH`` (the code is added to, or becomes, that file of the project),
``pycon`` (the session is run with doctest), ``output`` (the lines a
command prints, compared part by part), ``logging`` (a ``LOGGING``
setting, applied) and ``broker KIND`` (the settings of the tested broker
configuration for ``redis`` or ``rabbitmq``, which the broker tests' workers
and publishers load).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

MARKER = re.compile(r"^\.\. tested-as: (?P<how>\S+)(?: (?P<path>\S+))?\s*$")
DIRECTIVE = re.compile(r"^\.\. code-block:: (?P<language>\S+)\s*$")


@dataclass(frozen=True)
class Block:
    """One code block of a page: its language, text, line and marker, if any."""

    page: str
    line: int
    language: str
    text: str
    how: str = ""
    path: str = ""


def blocks(page: str) -> list[Block]:
    """Return the code blocks of *page* (relative to the repository's root)."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    marker: re.Match[str] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        if MARKER.match(line):
            marker = MARKER.match(line)
        directive = DIRECTIVE.match(line)
        if directive:
            start = index + 1
            index += 1
            # Options of the directive, then a blank line, then the body.
            while index < len(lines) and lines[index].strip().startswith(":"):
                index += 1
            body: list[str] = []
            while index < len(lines) and (
                not lines[index].strip() or lines[index].startswith((" ", "\t"))
            ):
                body.append(lines[index])
                index += 1
            text = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            found.append(
                Block(
                    page,
                    start,
                    directive["language"],
                    text,
                    marker["how"] if marker else "",
                    (marker["path"] or "") if marker else "",
                )
            )
            marker = None
            continue
        index += 1
    return found


def commands(block: Block) -> list[str]:
    """Return the commands of a console block, without their ``$`` prompt."""
    return [
        line[2:].strip() for line in block.text.splitlines() if line.startswith("$ ")
    ]


def broker_settings(kind: str) -> dict[str, Any]:
    """Return the settings of the tested *kind* broker configuration of
    docs/deployment.rst (``redis`` or ``rabbitmq``), as the page prints them."""
    (block,) = [
        block
        for block in blocks("docs/deployment.rst")
        if (block.how, block.path) == ("broker", kind)
    ]
    namespace: dict[str, Any] = {}
    code = compile(block.text, f"{block.page}:{block.line}", "exec")
    exec(code, namespace)  # noqa: S102 - the project's own documentation
    return {key: value for key, value in namespace.items() if key.isupper()}


def celery_options(found: dict[str, Any]) -> dict[str, Any]:
    """Return *found* ``CELERY_*`` settings as the Celery app's option names."""
    return {
        key.removeprefix("CELERY_").lower(): value
        for key, value in found.items()
        if key.startswith("CELERY_")
    }
