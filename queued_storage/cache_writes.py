"""Writing one state entry to the cache, with a Redis client kept for it.

Django's ``RedisCache`` builds a new ``redis.Redis`` client around its
connection pool for every call; with redis-py 5 and later that takes about as
long in Python as the round trip to the server itself. Every save writes one
state entry, so for Django's own Redis cache the state store keeps the client
of each cache object (there is one per thread, as Django keeps them) and
sends the very command that ``cache.set()`` would: the same key (the cache's
key function, prefix and version), the same serializer, the same expiry, on
the same connection pool. Any other cache, and a ``RedisCache`` subclass that
changes how it writes, is written through its own ``set()``.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

#: The kept client of each Django ``RedisCacheClient``, or ``None`` when that
#: one is to be written through the cache's own ``set()``.
_clients: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def set_value(cache: Any, key: str, value: Any, timeout: float | None) -> None:
    """Do what ``cache.set(key, value, timeout=timeout)`` does."""
    client = _kept_client(cache)
    if client is None:
        cache.set(key, value, timeout=timeout)
        return
    key = cache.make_and_validate_key(key)
    expiry = cache.get_backend_timeout(timeout)
    if expiry == 0:
        client.delete(key)  # As Django's RedisCacheClient.set() does.
    else:
        client.set(key, cache._cache._serializer.dumps(value), ex=expiry)


def _kept_client(cache: Any) -> Any:
    """Return the client kept for *cache*, or ``None`` to use ``cache.set()``."""
    if not isinstance(cache, RedisCache) or type(cache).set is not RedisCache.set:
        return None
    backend: Any = getattr(cache, "_cache", None)
    if backend is None:
        return None
    try:
        return _clients[backend]
    except KeyError:
        pass
    client = None
    kind = type(backend)
    try:
        if (
            kind.set is RedisCacheClient.set
            and kind.get_client is RedisCacheClient.get_client
            and backend._client is backend._lib.Redis
            and callable(backend._serializer.dumps)
        ):
            # A client on the pool Django's writes use; redis-py's clients are
            # safe to share between threads when they take connections from a
            # pool.
            client = backend.get_client(None, write=True)
    except AttributeError:
        # Another Django's RedisCacheClient: its own set() writes.
        client = None
    _clients[backend] = client
    return client
