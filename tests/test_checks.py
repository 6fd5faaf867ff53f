"""Each system check fires on its misconfiguration and stays silent otherwise."""

import pytest
from django.core.checks import run_checks
from django.db import connection
from django.test import override_settings

from queued_storage import checks


def ids(messages):
    return sorted(message.id for message in messages)


def test_good_configuration_is_silent():
    messages = [
        m
        for m in run_checks(databases=["default"])
        if m.id.startswith("queued_storage")
    ]
    assert messages == []


pytestmark = pytest.mark.django_db


def test_missing_cache_alias():
    with override_settings(QUEUED_STORAGE_CACHE="states"):
        assert ids(checks.check_cache()) == ["queued_storage.E001"]


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    ],
)
def test_process_local_cache(backend):
    with override_settings(CACHES={"default": {"BACKEND": backend}}):
        messages = checks.check_cache()
    assert ids(messages) == ["queued_storage.W001"]
    assert "shared cache" in messages[0].hint


@pytest.mark.django_db(transaction=True)
def test_missing_ledger_table():
    from queued_storage.models import StoredFile

    # The check looks with a connection of its own, so the change is committed.
    with connection.schema_editor() as editor:
        editor.delete_model(StoredFile)
    try:
        assert ids(checks.check_ledger(databases=["default"])) == [
            "queued_storage.W002"
        ]
        with override_settings(QUEUED_STORAGE_LEDGER=False):
            assert checks.check_ledger(databases=["default"]) == []
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(StoredFile)
    assert checks.check_ledger(databases=["default"]) == []


def test_storage_with_bad_backend_and_task():
    from django.core.files.storage import storages

    bad = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {
            "local": "no.such.Storage",
            "remote": "remote_s3",
            "task": "tests.testapp.models.Document",
        },
    }
    with override_settings(STORAGES={**storages.backends, "broken": bad}):
        messages = checks.check_storages()
    assert ids(messages) == ["queued_storage.E002", "queued_storage.E003"]
    assert "could not import its local storage 'no.such.Storage'" in messages[0].msg


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("QUEUED_STORAGE_RETRIES", None, "queued_storage.E004"),
        ("QUEUED_STORAGE_RETRIES", -1, "queued_storage.E004"),
        ("QUEUED_STORAGE_RETRY_DELAY", 0, "queued_storage.E005"),
        ("QUEUED_STORAGE_MESSAGE_MAX_AGE", "1d", "queued_storage.E005"),
        ("QUEUED_STORAGE_LEASE", 0, "queued_storage.E005"),
        ("QUEUED_STORAGE_RECONCILE_AGE", -5, "queued_storage.E005"),
        ("QUEUED_STORAGE_RETRY_COUNTDOWN_MAX", -1, "queued_storage.E020"),
        ("QUEUED_STORAGE_RETRY_COUNTDOWN_MAX", "5m", "queued_storage.E020"),
        ("QUEUED_STORAGE_NAME_CHECK", "guess", "queued_storage.E006"),
    ],
)
def test_bad_settings(setting, value, expected):
    with override_settings(**{setting: value}):
        assert ids(checks.check_settings()) == [expected]


def test_pickle_accepted(celery_app):
    old = celery_app.conf.accept_content
    celery_app.conf.accept_content = ["json", "pickle"]
    try:
        assert ids(checks.check_celery()) == ["queued_storage.W003"]
    finally:
        celery_app.conf.accept_content = old
    assert checks.check_celery() == []


def test_local_disk_with_remote_workers(celery_app):
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://broker.internal:6379/0"
    try:
        warnings = checks.check_local_reachable()
        found = ids(warnings)
        assert found and set(found) == {"queued_storage.W004"}
        # A worker on this host with a broker elsewhere: one setting says so.
        assert "If every worker runs on this host" in warnings[0].hint
        with override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True):
            assert checks.check_local_reachable() == []
        with override_settings(QUEUED_STORAGE_SHARED_LOCAL=True):
            assert checks.check_local_reachable() == []
    finally:
        celery_app.conf.broker_url = old
    assert checks.check_local_reachable() == []


def test_shared_reference_with_different_configurations():
    from django.core.files.storage import storages

    twin = {
        "BACKEND": "queued_storage.backends.QueuedS3Storage",
        "OPTIONS": {"reference": "s3", "delayed": True},
    }
    with override_settings(STORAGES={**storages.backends, "twin": twin}):
        messages = checks.check_storages()
    assert ids(messages) == ["queued_storage.E007"]
    assert "'s3'" in messages[0].msg


def test_unknown_option_in_a_storages_entry_is_e002_not_a_traceback():
    from django.core.files.storage import storages

    entry = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {"local": "remote_s3", "remote": "remote_s3", "bucket": "x"},
    }
    with override_settings(STORAGES={**storages.backends, "typo": entry}):
        messages = [
            m for m in run_checks() if m.id and m.id.startswith("queued_storage")
        ]
    assert ids(messages) == ["queued_storage.E002"]
    assert "STORAGES['typo']" in messages[0].msg and "bucket" in messages[0].msg


@pytest.mark.django_db(transaction=True)
def test_missing_ledger_table_under_plain_check_but_not_during_migrate():
    import io

    from django.core.management import call_command

    from queued_storage.models import StoredFile

    with connection.schema_editor() as editor:
        editor.delete_model(StoredFile)
    try:
        during_migrate = io.StringIO()
        call_command(
            "migrate", "queued_storage", stdout=io.StringIO(), stderr=during_migrate
        )
        plain = io.StringIO()
        call_command("check", stdout=io.StringIO(), stderr=plain)
    finally:
        with connection.schema_editor() as editor:
            editor.create_model(StoredFile)
    assert "queued_storage.W002" not in during_migrate.getvalue()
    assert "queued_storage.W002" in plain.getvalue()
    assert "migrate queued_storage" in plain.getvalue()


def test_plain_check_of_a_good_configuration_is_silent():
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "queued_storage" not in out.getvalue()


def hide_module(monkeypatch, name):
    """Make *name* fail to import, as when its package is not installed."""
    import sys

    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, name, None)


def test_missing_redis_client_for_the_state_cache_is_e030(monkeypatch):
    assert checks.check_cache_client() == []
    hide_module(monkeypatch, "redis")
    messages = checks.check_cache_client()
    assert ids(messages) == ["queued_storage.E030"]
    assert "'redis' package" in messages[0].msg


@pytest.mark.parametrize("missing", ["packaging", "redis"])
def test_missing_broker_transport_needs_is_e031(monkeypatch, missing):
    assert checks.check_broker_transport() == []
    hide_module(monkeypatch, missing)
    hide_module(monkeypatch, "kombu.transport.redis")
    messages = checks.check_broker_transport()
    assert ids(messages) == ["queued_storage.E031"]
    assert "django-queued-storage[redis]" in messages[0].hint


@pytest.fixture
def celery_conf(celery_app):
    """Change the Celery app's settings for one test."""
    saved = {}

    def change(**values):
        for key, value in values.items():
            saved.setdefault(key, celery_app.conf.get(key))
            celery_app.conf[key] = value

    yield change
    for key, value in saved.items():
        celery_app.conf[key] = value


def broker_ids():
    from queued_storage import broker_checks

    return ids(broker_checks.check_broker_windows())


def test_redis_window_shorter_than_a_retry_countdown_is_flagged(celery_conf):
    celery_conf(broker_transport_options={"visibility_timeout": 120})
    assert broker_ids() == ["queued_storage.W020"]
    with override_settings(QUEUED_STORAGE_RETRY_COUNTDOWN_MAX=60):
        assert broker_ids() == []


def test_message_max_age_shorter_than_the_redis_window_is_flagged(celery_conf):
    celery_conf(broker_transport_options={})  # kombu's default: one hour
    with override_settings(QUEUED_STORAGE_MESSAGE_MAX_AGE=600):
        assert broker_ids() == ["queued_storage.W021"]


def test_rabbitmq_without_confirms_or_channel_retry_is_flagged(celery_conf):
    celery_conf(
        broker_url="amqp://guest:guest@rabbit.internal//",
        broker_transport_options={},
        broker_channel_error_retry=False,
    )
    assert broker_ids() == ["queued_storage.W022", "queued_storage.W023"]
    celery_conf(
        broker_transport_options={"confirm_publish": True},
        broker_channel_error_retry=True,
    )
    assert broker_ids() == []
    with override_settings(QUEUED_STORAGE_RETRY_COUNTDOWN_MAX=1800):
        assert broker_ids() == ["queued_storage.W020"]


def rabbitmq_queue(celery_conf, **arguments):
    """Make the app's transfer queue a RabbitMQ queue with *arguments*."""
    from kombu import Queue

    celery_conf(
        broker_url="amqp://guest:guest@rabbit.internal//",
        broker_transport_options={"confirm_publish": True},
        broker_channel_error_retry=True,
        task_queues=[
            Queue("other", queue_arguments={"x-queue-type": "quorum"}),
            Queue("uploads", queue_arguments=arguments),
        ],
    )


@override_settings(QUEUED_STORAGE_QUEUE="uploads", QUEUED_STORAGE_RETRIES=5)
def test_a_quorum_delivery_limit_below_the_attempts_of_a_file_is_flagged(
    celery_conf,
):
    dead_letters = {"x-queue-type": "quorum", "x-dead-letter-exchange": "dlx"}
    rabbitmq_queue(celery_conf, **dead_letters, **{"x-delivery-limit": 5})
    (warning,) = broker_checks_found()
    assert warning.id == "queued_storage.W025"
    assert "'uploads'" in warning.msg and "6 attempts" in warning.msg
    rabbitmq_queue(celery_conf, **dead_letters, **{"x-delivery-limit": 6})
    assert broker_ids() == []
    rabbitmq_queue(celery_conf, **dead_letters)
    assert broker_ids() == []


@override_settings(QUEUED_STORAGE_QUEUE="uploads")
def test_a_quorum_transfer_queue_without_dead_lettering_is_flagged(celery_conf):
    rabbitmq_queue(celery_conf, **{"x-queue-type": "quorum"})
    (warning,) = broker_checks_found()
    assert (warning.id, "'uploads'" in warning.msg) == ("queued_storage.W026", True)
    rabbitmq_queue(celery_conf)  # A classic queue drops nothing.
    assert broker_ids() == []
    # The queue the app declares by default, when task_queues has none.
    celery_conf(task_queues=None, task_default_queue_type="quorum")
    assert broker_ids() == ["queued_storage.W026"]
    celery_conf(task_default_queue_type="classic")
    assert broker_ids() == []


@override_settings(QUEUED_STORAGE_PER_HOST_QUEUE=True, QUEUED_STORAGE_QUEUE="uploads")
def test_per_host_transfer_queues_are_the_ones_checked(celery_conf):
    from kombu import Queue

    rabbitmq_queue(celery_conf)
    celery_conf(
        task_queues=[
            Queue("uploads", queue_arguments={"x-queue-type": "quorum"}),
            Queue("uploads.web-1", queue_arguments={"x-queue-type": "quorum"}),
        ]
    )
    (warning,) = broker_checks_found()
    assert (warning.id, "'uploads.web-1'" in warning.msg) == (
        "queued_storage.W026", True,
    )  # fmt: skip


@override_settings(QUEUED_STORAGE_QUEUE="uploads")
def test_transfer_queues_given_as_a_mapping_are_checked_too(celery_conf):
    rabbitmq_queue(celery_conf)
    arguments = {"x-queue-type": "quorum", "x-delivery-limit": 1}
    celery_conf(task_queues={"uploads": {"queue_arguments": arguments}})
    assert broker_ids() == ["queued_storage.W025", "queued_storage.W026"]


@override_settings(
    QUEUED_STORAGE_QUEUE="uploads", QUEUED_STORAGE_RETRY_COUNTDOWN_MAX=300
)
def test_a_transfer_queue_consumer_timeout_is_the_window_retries_must_fit(
    celery_conf,
):
    """A queue's own x-consumer-timeout (milliseconds) replaces RabbitMQ's
    default of 30 minutes in the countdown check."""
    rabbitmq_queue(celery_conf)
    assert broker_ids() == []
    rabbitmq_queue(celery_conf, **{"x-consumer-timeout": 120_000})
    (warning,) = broker_checks_found()
    assert warning.id == "queued_storage.W020"
    assert "x-consumer-timeout of queue 'uploads'" in warning.msg
    assert "(120.0 s)" in warning.msg
    rabbitmq_queue(celery_conf, **{"x-consumer-timeout": 600_000})
    assert broker_ids() == []


def broker_checks_found():
    from queued_storage import broker_checks

    return broker_checks.check_broker_windows()


def test_prefetching_more_than_one_message_per_process_is_flagged(celery_conf):
    celery_conf(worker_prefetch_multiplier=4)
    assert broker_ids() == ["queued_storage.W024"]


def test_broker_checks_leave_a_setting_that_is_no_number_to_e005(celery_conf):
    celery_conf(broker_transport_options={"visibility_timeout": 60})
    with override_settings(
        QUEUED_STORAGE_MESSAGE_MAX_AGE="1d", QUEUED_STORAGE_RETRY_COUNTDOWN_MAX="5m"
    ):
        assert broker_ids() == []


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("memory://", True),
        ("redis://localhost:6379/0", True),
        ("redis://127.0.0.1/0", True),
        ("amqp://[::1]:5672//", True),
        ("redis://broker.internal:6379/0", False),
        ("amqp://user:pw@10.0.0.5//", False),
    ],
)
def test_brokers_on_this_host_are_told_apart(url, local):
    assert checks._broker_is_local(url) is local


def test_remote_workers_warning_passes_over_a_storage_that_cannot_be_built(celery_app):
    from django.core.files.storage import storages

    bad = {
        "BACKEND": "queued_storage.backends.QueuedStorage",
        "OPTIONS": {"local": "no.such.Storage", "remote": "remote_s3"},
    }
    old = celery_app.conf.broker_url
    celery_app.conf.broker_url = "redis://broker.internal:6379/0"
    try:
        with override_settings(STORAGES={**storages.backends, "broken": bad}):
            warned = checks.check_local_reachable()
            errors = ids(checks.check_storages())
    finally:
        celery_app.conf.broker_url = old
    assert "queued_storage.E002" in errors
    assert all("'broken'" not in message.msg for message in warned)


def test_ledger_check_skips_a_database_it_was_not_asked_about():
    assert checks.check_ledger(databases=["other"]) == []
    assert checks.check_ledger(databases=None) == []


def test_the_deployment_page_quorum_queue_passes_the_broker_checks(celery_conf):
    """The quorum queue the deployment page shows is a transfer queue with a
    delivery limit above the default attempts and a dead-letter exchange."""
    from tests.docs_blocks import blocks

    (block,) = [
        block
        for block in blocks("docs/deployment.rst")
        if "CELERY_TASK_QUEUES" in block.text
    ]
    namespace: dict = {}
    exec(block.text, namespace)  # noqa: S102 - the project's own documentation
    rabbitmq_queue(celery_conf)
    celery_conf(task_queues=namespace["CELERY_TASK_QUEUES"])
    with override_settings(QUEUED_STORAGE_QUEUE=namespace["QUEUED_STORAGE_QUEUE"]):
        assert broker_ids() == []
        celery_conf(task_queues=[])  # Not declared: a classic queue.
        assert broker_ids() == []
        (queue,) = namespace["CELERY_TASK_QUEUES"]
        queue.queue_arguments.pop("x-dead-letter-exchange")
        celery_conf(task_queues=[queue])
        assert broker_ids() == ["queued_storage.W026"]


@pytest.mark.parametrize(
    "conf",
    [
        {"broker_transport_options": {"visibility_timeout": "120"}},
        {"broker_transport_options": {"visibility_timeout": None}},
    ],
    ids=["text", "none"],
)
def test_a_redis_window_that_is_no_number_is_flagged_not_raised(celery_conf, conf):
    celery_conf(broker_url="redis://127.0.0.1:6379/0", **conf)
    assert broker_ids() == ["queued_storage.E021"]


def test_without_the_ledger_a_backoff_longer_than_the_redis_window_is_flagged(
    celery_conf,
):
    celery_conf(broker_transport_options={"visibility_timeout": 3600})
    assert broker_ids() == []
    with override_settings(
        QUEUED_STORAGE_LEDGER=False, QUEUED_STORAGE_RETRY_BACKOFF_MAX=7200
    ):
        (warning,) = broker_checks_found()
        assert warning.id == "queued_storage.W020"
        assert "QUEUED_STORAGE_RETRY_BACKOFF_MAX" in warning.hint
    with override_settings(
        QUEUED_STORAGE_LEDGER=False, QUEUED_STORAGE_RETRY_BACKOFF_MAX=1800
    ):
        assert broker_ids() == []
