"""Split long lists of names into batches that one SQL statement can take.

SQLite refuses a statement with more bound parameters than its limit (999
before 3.32, 32,766 since) and PostgreSQL than 65,535, so a lookup over a
list whose length a user or a directory tree decides is made in batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

T = TypeVar("T")

#: Names per lookup: well under every database's limit on parameters, and
#: few enough that a batch of names and states stays small in memory.
BATCH_SIZE = 500


def batched(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """Yield lists of at most *size* (default :data:`BATCH_SIZE`) of *items*.

    *items* is consumed lazily, one batch at a time.
    """
    size = size or BATCH_SIZE
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
