"""The example project runs end to end: ``bash example/run.sh --once``.

The script starts a real Celery worker and Django's development server, and
demo.py uploads a file through the site, fetches it from the local storage,
waits for the transfer, fetches it from the remote storage, and runs the
sweep until the local copy is removed. ``--runner django_tasks`` runs the
same demo with a ``db_worker`` of Django's task framework instead, with Celery
made unimportable.

Set ``EXAMPLE_PYTHON`` to an interpreter that has Django, Celery and this
package, to use it instead of building the example's own virtualenv; these
tests set it to the interpreter running them unless it is set already.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "example" / "run.sh"
# Below pytest-timeout's 300 s, so that a slow run still stops its processes.
TIMEOUT = 240


def example_environ(var_dir: Path) -> dict[str, str]:
    """Return the environment for a run of the example in *var_dir*."""
    env = dict(os.environ)
    # The example has its own settings, and warnings raised as errors in a
    # third-party library must not stop its worker.
    for name in ("DJANGO_SETTINGS_MODULE", "PYTHONWARNINGS", "PYTHONDEVMODE"):
        env.pop(name, None)
    env.setdefault("EXAMPLE_PYTHON", sys.executable)
    env["EXAMPLE_VAR_DIR"] = str(var_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH", "")])
    )
    for name in list(env):
        if name.startswith("EXAMPLE_S3_"):
            del env[name]
    return env


def processes_of(var_dir: Path) -> list[int]:
    """Return the ids of the running processes started for *var_dir*."""
    marker = f"EXAMPLE_VAR_DIR={var_dir}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def stop(process: subprocess.Popen[str], var_dir: Path) -> list[int]:
    """Stop run.sh; kill and return whatever it left running."""
    if process.poll() is None:
        # run.sh stops its worker and server on SIGTERM.
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    leftovers = processes_of(var_dir)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def run_once(var_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``run.sh --once`` with *args*; return its output once it passed."""
    process = subprocess.Popen(
        ["bash", str(RUN), "--once", *args],
        env=env or example_environ(var_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(process, var_dir)
        pytest.fail(f"run.sh --once took over {TIMEOUT} s")
    leftovers = stop(process, var_dir)
    assert process.returncode == 0, output
    assert leftovers == [], "run.sh left its worker or server running"
    return output


def assert_demo_passed(output: str) -> None:
    local = output.index("Served from the local storage")
    remote = output.index("Served from the remote storage")
    assert local < remote, output
    assert "/media/local/uploads/" in output[local:remote], output
    assert "/media/remote/uploads/" in output[remote:], output
    assert "Demo passed" in output, output
    assert "Stopped the worker and the server" in output, output


def assert_swept(output: str) -> None:
    """The demo's sweep removed the local copy; the remote one still serves."""
    swept = output.index("The sweep removes the local copy")
    assert "bytes held locally" in output[swept:], output
    assert "sweep: queued: removed 1 local copies" in output[swept:], output
    assert "is gone (404): the local copy was removed" in output[swept:], output
    assert output.count("identical to the uploaded file") == 3, output


@pytest.mark.slow
def test_run_once_serves_the_upload_locally_then_remotely(tmp_path: Path) -> None:
    var_dir = (tmp_path / "var").resolve()
    output = run_once(var_dir)
    assert "Starting a Celery worker" in output, output
    assert_demo_passed(output)
    assert_swept(output)


@pytest.mark.slow
def test_run_once_on_the_task_framework_needs_no_broker_and_no_celery(
    tmp_path: Path,
) -> None:
    var_dir = (tmp_path / "var").resolve()
    env = example_environ(var_dir)
    # Any process of the run that imports Celery or kombu fails.
    blocked = tmp_path / "no-celery"
    for module in ("celery", "kombu"):
        (blocked / module).mkdir(parents=True)
        (blocked / module / "__init__.py").write_text(
            f"raise ImportError('{module} is not to be used in this run')\n"
        )
    env["PYTHONPATH"] = os.pathsep.join([str(blocked), env["PYTHONPATH"]])
    env["EXAMPLE_TRANSFER_DELAY"] = "0.5"
    output = run_once(var_dir, "--runner", "django_tasks", env=env)
    assert "Starting a db_worker of Django's task framework" in output, output
    assert "Celery" not in output, output
    assert_demo_passed(output)
    assert_swept(output)
    assert not (var_dir / "broker").exists()
    worker_log = (var_dir / "log" / "worker.log").read_text()
    assert "Transferred 'uploads/" in worker_log, worker_log
