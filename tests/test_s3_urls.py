"""The URL builder gives exactly what ``S3Storage.url()`` gives, only faster.

Every storage here is a real ``S3Storage`` aimed at moto's server (or at AWS
by name only: building a URL sends nothing), and every built URL is compared
with the one the storage itself returns.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storages.backends.s3 import S3StaticStorage, S3Storage

from queued_storage.s3_urls import url_builder

NAMES = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "literal%20percent.txt",
    "100%.txt",
    "tilde~name.txt",
    "sub-delims!'()*.txt",
    "reserved;:@&=$,.txt",
    'brackets[]{}<>|^`".txt',
    "unicodé/ファイル/😀.txt",
    "a//b.txt",
    "./leading-dot.txt",
    "dir/./x.txt",
    "dir/../y.txt",
    "../escape.txt",
    "/absolute.txt",
    "trailing/",
    "back\\slash.txt",
    "question?mark.txt",
    "hash#tag.txt",
    "?#&=",
    "...",
    "\u00a0no-break\u200bzero-width",
    "tab\there\nnewline",
    "x" * 1000,
    "long/" * 150 + "f.txt",
    "é" * 400,
    "",
    "/",
    ".",
]


def options(endpoint: str, port: int) -> dict[str, dict[str, Any]]:
    """Return storage options by id: addressing styles, endpoints, locations."""
    aws = {"endpoint_url": None, "region_name": "eu-central-1"}
    return {
        "moto": {"endpoint_url": endpoint},
        "moto-location": {"endpoint_url": endpoint, "location": "media/a b+é"},
        "virtual-host": {
            "endpoint_url": f"http://localhost:{port}",
            "addressing_style": "virtual",
        },
        "endpoint-path": {
            "endpoint_url": f"http://localhost:{port}/s3/prefix/",
            "addressing_style": "path",
            "region_name": "eu-west-1",
            "location": "deep/er/",
        },
        "aws-virtual": {
            **aws,
            "addressing_style": "virtual",
            # Without a custom domain these leave an unsigned URL alone.
            "url_protocol": "ftp:",
            "querystring_expire": 5,
            "signature_version": "s3v4",
        },
        "aws-path-no-ssl": {
            **aws,
            "addressing_style": "path",
            "use_ssl": False,
            "region_name": "us-west-2",
        },
    }


CONFIGS = list(options("http://127.0.0.1:1", 1))


@pytest.fixture(scope="module", params=CONFIGS)
def storage(request: pytest.FixtureRequest, servers: dict[str, Any]) -> S3Storage:
    s3 = servers["s3"]
    chosen = options(s3.endpoint_url, s3.port)[request.param]
    return S3Storage(querystring_auth=False, **chosen)


def outcome(call: Callable[[str], str], name: str) -> str | type[BaseException]:
    """Return the URL *call* gives for *name*, or the type of its error."""
    try:
        return call(name)
    except Exception as error:
        return type(error)


def count_botocore_calls(
    storage: S3Storage, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Record the keys of every URL botocore is asked for from now on."""
    client = storage.unsigned_connection.meta.client
    original = client.generate_presigned_url
    calls: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> str:
        calls.append(kwargs["Params"]["Key"])
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "generate_presigned_url", counting)
    return calls


@pytest.mark.parametrize("name", NAMES)
def test_builder_gives_the_url_of_the_storage(storage, name):
    builder = url_builder(storage)
    assert builder is not None
    assert outcome(builder, name) == outcome(storage.url, name)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs", "Cc")),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=4,
    ).map("/".join)
)
def test_builder_agrees_with_the_storage_on_printable_names(storage, name):
    builder = url_builder(storage)
    assert builder is not None
    assert outcome(builder, name) == outcome(storage.url, name)


def test_builder_asks_botocore_only_when_it_is_made(servers, monkeypatch):
    storage = S3Storage(querystring_auth=False, location="once")
    calls = count_botocore_calls(storage, monkeypatch)
    builder = url_builder(storage)
    made = len(calls)
    assert made >= 1
    assert url_builder(storage) is builder
    urls = [builder(f"photos/{i} é+.jpg") for i in range(100)]
    assert len(calls) == made
    assert urls[7] == storage.url("photos/7 é+.jpg")


def test_changed_location_makes_a_new_builder(servers):
    storage = S3Storage(querystring_auth=False, location="first")
    before = url_builder(storage)
    storage.location = "second"
    after = url_builder(storage)
    assert after is not None and after is not before
    assert after("x.txt") == storage.url("x.txt")
    assert after("x.txt").endswith("/second/x.txt")


def test_name_outside_the_location_raises_as_the_storage_does(servers):
    storage = S3Storage(querystring_auth=False, location="media")
    builder = url_builder(storage)
    assert builder is not None
    assert outcome(builder, "../other/x.txt") is outcome(storage.url, "../other/x.txt")
    assert outcome(builder, "../other/x.txt").__name__ == "SuspiciousOperation"


def test_built_urls_fetch_the_files_from_moto(servers, unique):
    storage = S3Storage(querystring_auth=False, location=f"s3-urls-{unique}")
    builder = url_builder(storage)
    assert builder is not None
    for name in ("a b+c%20~!'()*.txt", "ünï/cødé 😀.txt", "q?h#x.txt"):
        content = name.encode()
        assert storage.save(name, ContentFile(content)) == name
        with urllib.request.urlopen(builder(name), timeout=10) as response:  # noqa: S310
            assert response.read() == content


def test_subclass_keeping_url_gets_a_builder(servers):
    storage = S3StaticStorage()
    builder = url_builder(storage)
    assert builder is not None
    assert builder("css/site main.css") == storage.url("css/site main.css")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: S3Storage(querystring_auth=True), id="signed"),
        pytest.param(
            lambda: S3Storage(querystring_auth=False, custom_domain="cdn.example.com"),
            id="custom-domain",
        ),
        pytest.param(
            lambda: type("Own", (S3Storage,), {"url": lambda self, name: name})(
                querystring_auth=False
            ),
            id="subclass-overriding-url",
        ),
        pytest.param(FileSystemStorage, id="file-system"),
        pytest.param(object, id="not-a-storage"),
    ],
)
def test_no_builder_where_the_url_is_not_a_function_of_the_name(servers, make):
    assert url_builder(make()) is None


def test_no_builder_for_an_instance_with_its_own_url(servers, monkeypatch):
    storage = S3Storage(querystring_auth=False)
    monkeypatch.setattr(storage, "url", lambda name: "elsewhere")
    assert url_builder(storage) is None


def test_signing_turned_on_later_gets_no_builder(servers):
    storage = S3Storage(querystring_auth=False)
    assert url_builder(storage) is not None
    storage.querystring_auth = True
    assert url_builder(storage) is None


def test_no_builder_when_the_url_changes_with_the_key_beyond_quoting(
    servers, monkeypatch
):
    storage = S3Storage(querystring_auth=False)
    client = storage.unsigned_connection.meta.client
    original = client.generate_presigned_url

    def tagged(*args: Any, **kwargs: Any) -> str:
        return f"{original(*args, **kwargs)}?length={len(kwargs['Params']['Key'])}"

    monkeypatch.setattr(client, "generate_presigned_url", tagged)
    assert url_builder(storage) is None


@pytest.mark.django_db(transaction=True)
def test_queued_storage_serves_remote_urls_through_the_builder(
    servers, unique, tmp_path, monkeypatch
):
    from queued_storage.backends import QueuedS3Storage
    from queued_storage.state import FileState, Status

    queued = QueuedS3Storage(
        local_options={"location": str(tmp_path), "base_url": "/media/"},
        remote_options={"querystring_auth": False, "location": f"q-{unique}"},
        delayed=True,
    )
    names = [queued.save(f"page/{i} é+.txt", ContentFile(b"x")) for i in range(4)]
    for name in names[:2]:
        queued.state.record(name, FileState(Status.TRANSFERRED, "v", 1))
    expected = {
        name: (queued.remote if i < 2 else queued.local).url(name)
        for i, name in enumerate(names)
    }
    url_builder(queued.remote)  # made once, before counting
    calls = count_botocore_calls(queued.remote, monkeypatch)
    assert queued.urls(names) == expected
    assert [queued.url(name) for name in names] == list(expected.values())
    assert calls == []
    assert expected[names[0]].startswith(servers["s3"].endpoint_url)
    assert expected[names[2]].startswith("/media/page/")


def test_no_builder_when_the_sentinel_is_also_in_the_bucket_name(servers):
    from queued_storage.s3_urls import SENTINEL

    storage = S3Storage(
        querystring_auth=False, bucket_name=SENTINEL, addressing_style="path"
    )
    assert url_builder(storage) is None
    assert storage.url("a b.txt").endswith(f"/{SENTINEL}/a%20b.txt")


def test_no_builder_when_botocore_fails_for_the_sentinel(servers, monkeypatch):
    storage = S3Storage(querystring_auth=False)
    client = storage.unsigned_connection.meta.client

    def broken(*args: Any, **kwargs: Any) -> str:
        raise ValueError("no URL today")

    monkeypatch.setattr(client, "generate_presigned_url", broken)
    assert url_builder(storage) is None


def test_no_builder_when_the_awkward_name_fails(servers, monkeypatch):
    storage = S3Storage(querystring_auth=False)
    client = storage.unsigned_connection.meta.client
    original = client.generate_presigned_url

    def picky(*args: Any, **kwargs: Any) -> str:
        if "é" in kwargs["Params"]["Key"]:
            raise ValueError("refused")
        return original(*args, **kwargs)

    monkeypatch.setattr(client, "generate_presigned_url", picky)
    assert url_builder(storage) is None


def test_no_builder_without_django_storages(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "storages.backends.s3", None)
    assert url_builder(S3Storage(querystring_auth=False)) is None
