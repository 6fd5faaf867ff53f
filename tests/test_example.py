"""The example project runs end to end: ``bash example/run.sh --once``.

The script starts a real Celery worker and Django's development server, and
demo.py uploads a file through the site, fetches it from the local storage,
waits for the transfer and fetches it from the remote storage.

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


@pytest.mark.slow
def test_run_once_serves_the_upload_locally_then_remotely(tmp_path: Path) -> None:
    var_dir = (tmp_path / "var").resolve()
    process = subprocess.Popen(
        ["bash", str(RUN), "--once"],
        env=example_environ(var_dir),
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
    local = output.index("Served from the local storage")
    remote = output.index("Served from the remote storage")
    assert local < remote, output
    assert "/media/local/uploads/" in output[local:remote], output
    assert "/media/remote/uploads/" in output[remote:], output
    assert output.count("identical to the uploaded file") == 2, output
    assert "Demo passed" in output, output
    assert "Stopped the worker and the server" in output, output
    assert leftovers == [], "run.sh left its worker or server running"
