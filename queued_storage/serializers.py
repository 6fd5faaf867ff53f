"""Cache serializers that store JSON and never run code when they read.

Django's Redis and memcached caches pickle what they store, and unpickling
runs whatever the stored bytes ask for: anyone who can write to such a cache
can run code in every process that reads from it. The state cache of a queued
storage only ever holds short lists of strings and numbers, so it can do with
JSON instead:

* :class:`JSONSerializer` is for the ``serializer`` option of Django's
  ``RedisCache``::

      "OPTIONS": {"serializer": "queued_storage.serializers.JSONSerializer"}

* :data:`json_serde` (a :class:`JSONSerde`) is for the ``serde`` option of
  Django's ``PyMemcacheCache``::

      "OPTIONS": {"serde": json_serde}

Whatever is read back that is not JSON (a pickle, garbage, bytes cut short)
reads as ``None``, a miss, and is never handed to :mod:`pickle`. Writing a
value that JSON cannot hold (a ``datetime``, a model instance) raises
``TypeError``: keep the state cache an alias of its own, not the cache that
sessions or the template fragments use.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["JSONSerde", "JSONSerializer", "json_serde"]

#: memcached flags, as pymemcache sets them: a whole number is stored as its
#: decimal digits (which memcached's ``incr`` and ``decr`` need), anything else
#: as UTF-8 JSON text.
FLAG_INTEGER = 1 << 1
FLAG_TEXT = 1 << 4


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def _loads(data: Any) -> Any:
    """Return the value that JSON *data* holds, or ``None`` if it holds none."""
    if isinstance(data, int) and not isinstance(data, bool):
        return data
    if not isinstance(data, (bytes, bytearray, memoryview, str)):
        return None
    try:
        return json.loads(bytes(data) if isinstance(data, memoryview) else data)
    except (ValueError, RecursionError):
        # ValueError covers bad JSON and bytes that are not UTF-8; a deeply
        # nested list exhausts the parser's recursion limit.
        return None


class JSONSerializer:
    """A serializer for Django's ``RedisCache`` that stores JSON.

    Whole numbers are stored as their digits, as Django's own serializer
    stores them, so ``incr()`` and ``decr()`` work. Anything read that is not
    JSON reads as ``None``: Django's cache then returns ``None`` from
    ``get()`` (not the *default* argument) and ``None`` as the value of the
    key in ``get_many()``.
    """

    def dumps(self, obj: Any) -> bytes | int:
        """Return *obj* as Redis stores it: an ``int`` as is, else JSON."""
        if type(obj) is int:
            return obj
        return _dumps(obj)

    def loads(self, data: Any) -> Any:
        """Return the value *data* holds, or ``None`` if it is not JSON."""
        return _loads(data)


class JSONSerde:
    """A ``serde`` for pymemcache (Django's ``PyMemcacheCache``) that stores JSON.

    Whole numbers are stored as their digits, so ``incr()`` and ``decr()``
    work. The flags that come back with a value are not trusted to choose a
    decoder: anything read that is not JSON reads as ``None``.
    """

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        """Return the bytes and flags that memcached stores for *value*."""
        if type(value) is int:
            return str(value).encode(), FLAG_INTEGER
        return _dumps(value), FLAG_TEXT

    def deserialize(self, key: Any, value: Any, flags: int) -> Any:
        """Return what *value* holds, or ``None`` if it is not JSON."""
        return _loads(value)


#: A ready :class:`JSONSerde`, for ``"OPTIONS": {"serde": json_serde}``.
json_serde = JSONSerde()
