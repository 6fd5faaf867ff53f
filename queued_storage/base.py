"""The configuration of a queued storage and the routing of reads by state."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import timedelta
from functools import cached_property
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import Storage, storages
from django.utils.module_loading import import_string

from . import redaction, registry
from .conf import settings
from .local_place import LocalPlace
from .names import validate_name
from .state import FileState, StateStore, Status


class _Backend:
    """The ``local``/``remote`` attribute of a queued storage.

    On the class it is the default dotted path (what a subclass sets); on an
    instance it is the storage itself, built on first use and kept.
    """

    def __init__(self, role: str, default: Any = None) -> None:
        self.role = role
        self.default = default

    def __get__(self, instance: QueuedStorageBase | None, owner: type) -> Any:
        if instance is None:
            return self.default
        storage = instance._build(self.role)
        instance.__dict__[self.role] = storage
        return storage


def _without_secrets(value: Any, name: str = "") -> Any:
    """Return the options *value* without anything that could be a credential.

    Strings under a name that looks like a credential are dropped, the user
    and password of URLs are cut out, and nested dicts and lists are cleaned
    alike. Booleans and ``None`` under such a name stay: they hold no
    credential, and they tell storages apart (``querystring_auth``).
    """
    if isinstance(value, dict):
        return {
            key: _without_secrets(item, str(key))
            for key, item in value.items()
            if not (
                redaction.is_secret_name(str(key))
                and not isinstance(item, (bool, type(None)))
            )
        }
    if isinstance(value, (list, tuple)):
        return [_without_secrets(item, name) for item in value]
    if isinstance(value, str):
        return redaction.without_userinfo(value) if "://" in value else value
    return value


#: Options that leave a storage's reference alone.
_LIFETIME_OPTIONS = frozenset({"local_retention", "local_max_bytes"})

#: The default of an option whose value comes from a setting.
_FROM_SETTINGS: Any = type("FromSettings", (), {"__repr__": lambda self: "setting"})()


def _period(owner: str, option: str, value: Any) -> timedelta | None:
    """Return *value*, seconds or a ``timedelta``, as a period, or raise."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        period = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        period = timedelta(seconds=value)
    else:
        period = None
    if period is None or period < timedelta(0):
        raise ImproperlyConfigured(
            f"{owner}'s {option} must be None (keep local copies), 0 (remove "
            f"them once transferred), or seconds or a timedelta, not {value!r}."
        )
    return period


def _byte_count(owner: str, option: str, value: Any) -> int | None:
    """Return *value* as a number of bytes, or raise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ImproperlyConfigured(
        f"{owner}'s {option} must be None (no cap) or a number of bytes, not {value!r}."
    )


def _describe(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


class QueuedStorageBase(LocalPlace, Storage):
    """Configure the two storages of a queued storage and route by state.

    ``local`` and ``remote`` are dotted paths of storage classes, built with
    ``local_options`` and ``remote_options`` on first use, or aliases of the
    ``STORAGES`` setting (a value that is a key of ``STORAGES`` is an alias;
    anything else is imported as a dotted path).
    """

    local: Any = _Backend("local")
    remote: Any = _Backend("remote")
    local_options: dict[str, Any] | None = None
    remote_options: dict[str, Any] | None = None
    cache_prefix: str | None = None
    delayed: bool = False
    task: str = "queued_storage.tasks.Transfer"
    #: The runner that carries transfer messages; ``None`` follows
    #: ``QUEUED_STORAGE_RUNNER``.
    runner: str | None = None
    #: Note why a subclass cannot work without an explicit ``remote``.
    removed_remote: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for role in ("local", "remote"):
            if role in cls.__dict__ and not isinstance(cls.__dict__[role], _Backend):
                setattr(cls, role, _Backend(role, cls.__dict__[role]))

    def __init__(
        self,
        local: str | None = None,
        remote: str | None = None,
        local_options: dict[str, Any] | None = None,
        remote_options: dict[str, Any] | None = None,
        cache_prefix: str | None = None,
        delayed: bool | None = None,
        task: str | None = None,
        reference: str | None = None,
        runner: str | None = None,
        local_retention: Any = _FROM_SETTINGS,
        local_max_bytes: Any = _FROM_SETTINGS,
        **unknown: Any,
    ) -> None:
        name = type(self).__name__
        if unknown:
            raise ImproperlyConfigured(
                f"{name} got unknown options: {', '.join(sorted(unknown))}."
            )
        if self.removed_remote and remote is None:
            raise ImproperlyConfigured(
                f"{name}'s remote backend {self.removed_remote} was removed from "
                "django-storages. Pass remote='dotted.path.of.a.Storage' (and "
                "remote_options) or use QueuedStorage with another backend."
            )
        cls = type(self)
        self._paths = {
            "local": cls.local if local is None else local,
            "remote": cls.remote if remote is None else remote,
        }
        self._options = {
            "local": cls.local_options if local_options is None else local_options,
            "remote": cls.remote_options if remote_options is None else remote_options,
        }
        missing = [role for role, path in self._paths.items() if path is None]
        if missing:
            raise ImproperlyConfigured(
                f"{name} was built without {' and '.join(missing)} storage. "
                f"Pass {'/'.join(missing)}='dotted.path.of.a.Storage' (or a "
                "STORAGES alias). Apps that rebuild a storage from its class path "
                f"with no arguments (sorl-thumbnail does) need a subclass of {name} "
                "whose class attributes local, remote, local_options and "
                "remote_options hold the configuration, or the storage declared "
                "in STORAGES and used by its alias."
            )
        for role, path in self._paths.items():
            if not isinstance(path, str) or not path:
                raise ImproperlyConfigured(
                    f"{name}'s {role} must be the dotted path of a storage class "
                    f"or a STORAGES alias, as a string, not {path!r}: pass e.g. "
                    f"{role}='django.core.files.storage.FileSystemStorage' and "
                    f"{role}_options={{...}}."
                )
            options = self._options[role]
            if options is not None and not isinstance(options, dict):
                raise ImproperlyConfigured(
                    f"{name}'s {role}_options must be a dict, not {options!r}."
                )
        for option, value, kind in (
            ("cache_prefix", cache_prefix, str),
            ("delayed", delayed, bool),
            ("task", task, str),
            ("reference", reference, str),
            ("runner", runner, str),
        ):
            if value is not None and not isinstance(value, kind):
                raise ImproperlyConfigured(
                    f"{name}'s {option} must be a {kind.__name__}, not {value!r}."
                )
        # Each instance answers with the options it was given (or the class's).
        self.local_options = self._options["local"]
        self.remote_options = self._options["remote"]
        if cache_prefix is not None:
            self.cache_prefix = cache_prefix
        if delayed is not None:
            self.delayed = delayed
        if task is not None:
            self.task = task
        if runner is not None:
            from .runners import runner_path

            runner_path(runner)  # An unknown name raises before any save.
            self.runner = runner
        self._reference = reference
        self._retention = local_retention
        self._max_bytes = local_max_bytes
        if local_retention is not _FROM_SETTINGS:
            _period(name, "local_retention", local_retention)
        if local_max_bytes is not _FROM_SETTINGS:
            _byte_count(name, "local_max_bytes", local_max_bytes)
        registry.register(self)

    def local_retention_period(self) -> timedelta | None:
        """Return how long a local copy is kept after its transfer; None: always.

        It is the ``local_retention`` option, else the setting
        ``QUEUED_STORAGE_LOCAL_RETENTION``, read now.
        """
        if self._retention is not _FROM_SETTINGS:
            return _period(type(self).__name__, "local_retention", self._retention)
        value = settings.QUEUED_STORAGE_LOCAL_RETENTION
        return _period("The setting", "QUEUED_STORAGE_LOCAL_RETENTION", value)

    def local_max_bytes_limit(self) -> int | None:
        """Return the bytes of local copies above which the sweep removes some.

        It is the ``local_max_bytes`` option, else the setting
        ``QUEUED_STORAGE_LOCAL_MAX_BYTES``, read now; ``None`` sets no cap.
        """
        if self._max_bytes is not _FROM_SETTINGS:
            return _byte_count(type(self).__name__, "local_max_bytes", self._max_bytes)
        value = settings.QUEUED_STORAGE_LOCAL_MAX_BYTES
        return _byte_count("The setting", "QUEUED_STORAGE_LOCAL_MAX_BYTES", value)

    # Building the two storages --------------------------------------------

    def _build(self, role: str) -> Storage:
        path, options = self._paths[role], self._options[role] or {}
        name = type(self).__name__
        if path in getattr(settings, "STORAGES", {}):
            if options:
                raise ImproperlyConfigured(
                    f"{name}'s {role} names the STORAGES alias {path!r}, which "
                    f"takes its options from STORAGES: drop {role}_options."
                )
            if path in registry.queued_aliases():
                raise ImproperlyConfigured(
                    f"{name}'s {role} names {path!r}, itself a queued storage."
                )
            return storages[path]
        try:
            backend = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{name} could not import its {role} storage {path!r}: {exc}. "
                "Check the dotted path, and install the backend's package."
            ) from exc
        if not (isinstance(backend, type) and issubclass(backend, Storage)):
            raise ImproperlyConfigured(
                f"{name}'s {role} {path!r} is not a storage class."
            )
        return backend(**options)

    @cached_property
    def reference(self) -> str:
        """Return the name by which workers find this storage.

        It is the ``reference`` option if given, else the ``STORAGES`` alias
        configured with exactly this storage's options, else a digest of the
        class and options (leaving out credentials, so that rotating a key
        keeps the states and the queued messages valid).
        """
        if self._reference:
            return self._reference
        path, args, kwargs = self.deconstruct()  # type: ignore[attr-defined]
        configured = cast(dict[str, dict[str, Any]], settings.STORAGES)
        for alias in registry.queued_aliases():
            params = configured[alias]
            same_class = import_string(params["BACKEND"]) is type(self)
            if same_class and not args and params.get("OPTIONS", {}) == kwargs:
                return alias
        # How long local copies are kept changes nothing of where files are,
        # and the runner carries messages: neither makes the files another set.
        kept = {
            k: v
            for k, v in kwargs.items()
            if k not in _LIFETIME_OPTIONS and k != "runner"
        }
        payload = json.dumps(
            [path, args, _without_secrets(kept)], sort_keys=True, default=repr
        )
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return f"{type(self).__name__}:{digest}"

    def secrets(self) -> list[str]:
        """Return the credentials of this storage's two storages.

        They come from the ``local_options`` and ``remote_options``, from
        the ``OPTIONS`` of a storage given as a ``STORAGES`` alias, and from
        the attributes of the storages once built (which include what the
        backends read from settings, such as ``AWS_SECRET_ACCESS_KEY``).
        """
        configured = getattr(settings, "STORAGES", {})
        # Every log record asks: compute once per configuration and per
        # pair of built storages.
        key = (id(configured), id(self.__dict__.get("local")),
               id(self.__dict__.get("remote")))  # fmt: skip
        cached = self.__dict__.get("_secrets")
        if cached is not None and cached[0] == key:
            return list(cached[1])
        found = redaction.secrets_in(self._options)
        for role, path in self._paths.items():
            if path in configured:
                found += redaction.secrets_in(configured[path].get("OPTIONS", {}))
            built = self.__dict__.get(role)
            if built is not None:
                # Private attributes too: the FTP storage keeps the password
                # it parsed out of its URL in ``_config``.
                found += redaction.secrets_in(dict(vars(built)))
        result = sorted(set(found), key=len, reverse=True)
        self.__dict__["_secrets"] = (key, result)
        return list(result)

    def redact(self, text: str) -> str:
        """Return *text* with credentials masked (see :mod:`.redaction`).

        Some backends put their credentials in error messages (the FTP one
        shows its whole configuration); errors are recorded and logged.
        """
        return redaction.redact(text, self.secrets())

    @property
    def state(self) -> StateStore:
        """Return the store of this storage's file states."""
        prefix = self.cache_prefix or settings.QUEUED_STORAGE_CACHE_PREFIX
        return StateStore(self.reference, prefix)

    def get_cache_key(self, name: str) -> str:
        """Return the cache key that holds the state of *name*."""
        return self.state.key(name)

    def validate_name(self, name: Any) -> str:
        """Return *name* if it is safe for both storages, else raise.

        A path object (``pathlib.PurePosixPath("a/b.txt")``), which Django's
        storages accept, is returned as a string.
        """
        if isinstance(name, os.PathLike):
            name = os.fspath(name)
        limit = 1024
        location = getattr(self.remote, "location", "")
        if isinstance(location, str) and location and "://" not in location:
            limit -= len(location.strip("/").encode("utf-8")) + 1
        return validate_name(name, max_bytes=limit)

    # States ----------------------------------------------------------------

    def get_state(self, name: str) -> FileState | None:
        """Return the recorded state of *name*, finding it out on a miss."""
        return self.get_states([name])[name]

    def get_states(self, names: Iterable[str]) -> dict[str, FileState | None]:
        """Return the states of *names*, with one cache round trip."""
        states = self.state.get_many(names)
        for name, state in states.items():
            if state is None:
                states[name] = self._probe(name)
        return states

    def _probe(self, name: str) -> FileState | None:
        if self.local.exists(name):
            state = FileState(Status.PENDING)
        elif self.remote.exists(name):
            state = FileState(Status.TRANSFERRED)
        else:
            return None
        self.state.remember(name, state)
        return state

    def using_remote(self, name: str) -> bool:
        """Return whether *name* is served from the remote storage."""
        state = self.get_state(name)
        return state is not None and state.is_remote

    def using_local(self, name: str) -> bool:
        """Return whether *name* is served from the local storage."""
        return not self.using_remote(name)

    def get_storage(self, name: str) -> Storage:
        """Return the storage that serves *name* now."""
        return self.remote if self.using_remote(name) else self.local
