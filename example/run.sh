#!/usr/bin/env bash
# Run the example: a gallery whose uploads are stored with QueuedStorage.
#
# Sets up everything it needs under example/var/ (a virtualenv, an SQLite
# database, a file-based cache, a Celery broker made of folders and the two
# storage folders), starts a Celery worker and Django's development server on
# a free port of 127.0.0.1, and walks through an upload with demo.py, which
# ends with the sweep of local copies (`manage.py queued_storage sweep`).
#
#   bash example/run.sh             run the demo, then keep serving until Ctrl-C
#   bash example/run.sh --once      run the demo and stop; the exit status is
#                                   0 when it passed
#   bash example/run.sh --no-demo   only serve the site, until Ctrl-C
#   bash example/run.sh --port 8000 serve on this port instead of a free one
#   bash example/run.sh --runner django_tasks
#                                   run the transfers on Django's task
#                                   framework with django-tasks-db's database
#                                   backend and its db_worker: no broker and
#                                   no Celery at all (the default runner is
#                                   celery)
#
# Environment:
#   EXAMPLE_PYTHON          use this Python, with the example's requirements
#                           installed, instead of the virtualenv var/venv
#   EXAMPLE_VAR_DIR         keep the run's files here instead of example/var
#   EXAMPLE_TRANSFER_DELAY  seconds each transfer waits before it starts (2)
#   EXAMPLE_LOCAL_RETENTION seconds a local copy is kept after its transfer,
#                           before the sweep may remove it (2)
#   EXAMPLE_S3_BUCKET, EXAMPLE_S3_ENDPOINT_URL, EXAMPLE_S3_REGION,
#   EXAMPLE_S3_ACCESS_KEY_ID, EXAMPLE_S3_SECRET_ACCESS_KEY
#                           move the files to this S3 bucket instead of the
#                           folder var/remote

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

once=0
demo=1
port=""
runner=celery
while [ $# -gt 0 ]; do
    case "$1" in
        --once) once=1 ;;
        --no-demo) demo=0 ;;
        --port) port="${2:?--port needs a number}"; shift ;;
        --port=*) port="${1#*=}" ;;
        --runner) runner="${2:?--runner needs celery or django_tasks}"; shift ;;
        --runner=*) runner="${1#*=}" ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$runner" in
    celery | django_tasks) ;;
    *) echo "run.sh: --runner must be celery or django_tasks, not $runner" >&2; exit 2 ;;
esac

say() { printf '==> %s\n' "$*"; }
fail() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

var="${EXAMPLE_VAR_DIR:-$here/var}"
mkdir -p "$var"
var="$(cd "$var" && pwd)"
logs="$var/log"
export EXAMPLE_VAR_DIR="$var"
# The project's settings, whatever a calling test runner may have set.
export DJANGO_SETTINGS_MODULE=exampleproject.settings
export PYTHONUNBUFFERED=1
export EXAMPLE_RUNNER="$runner"

# Stop what an earlier run left behind (it was killed before it could clean
# up), so that no old worker takes messages from the new queue.
for pidfile in "$var"/run/*.pid; do
    [ -e "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && grep -qsF "EXAMPLE_VAR_DIR=$var" "/proc/$pid/environ"; then
        say "Stopping process $pid left by an earlier run"
        kill -TERM "$pid" 2>/dev/null || true
        for waited in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
done

# Start from empty storages, database, cache and queue; keep the virtualenv.
rm -rf "$var/db.sqlite3" "$var/cache" "$var/broker" "$var/local" "$var/remote" \
    "$var/media" "$logs"
mkdir -p "$logs" "$var/run"

newest_python() {
    local candidate
    for candidate in python3.14 python3.13 python3.12 python3.11 python3.10 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
                2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

make_venv() {
    local base="$1" venv="$2"
    if "$base" -m venv "$venv" >"$logs/venv.log" 2>&1; then
        return 0
    fi
    # Debian ships venv's pip bootstrap separately, in python3-venv.
    if grep -q ensurepip "$logs/venv.log" && [ "$(id -u)" = 0 ] &&
        command -v apt-get >/dev/null 2>&1; then
        say "Installing python3-venv with apt-get"
        local minor
        minor="$("$base" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt-get install -y "python$minor-venv" >>"$logs/venv.log" 2>&1 ||
            apt-get install -y python3-venv >>"$logs/venv.log" 2>&1 || true
        rm -rf "$venv"
        "$base" -m venv "$venv" >>"$logs/venv.log" 2>&1 && return 0
    fi
    cat "$logs/venv.log" >&2
    fail "could not create a virtualenv with $base"
}

if [ "$runner" = django_tasks ]; then
    # Django 6 has the task framework; on Django 5.2 (Python 3.10 and 3.11)
    # the django-tasks package provides it.
    requirements=("Django>=5.2" "django-tasks-db>=0.13"
        "django-tasks>=0.12; python_version < '3.12'")
    worker_module=django_tasks_db
else
    requirements=("Django>=5.2" "celery>=5.4")
    worker_module=celery
fi
if [ -n "${EXAMPLE_S3_BUCKET:-}" ]; then
    requirements+=("django-storages[s3]>=1.14" "boto3>=1.28")
fi

if [ -n "${EXAMPLE_PYTHON:-}" ]; then
    py="$EXAMPLE_PYTHON"
    say "Using $py ($("$py" -c 'import sys; print(sys.version.split()[0])'))"
    modules="django, $worker_module, queued_storage"
    [ -n "${EXAMPLE_S3_BUCKET:-}" ] && modules="$modules, storages, boto3"
    "$py" -c "import $modules" ||
        fail "$py cannot import $modules; install them or unset EXAMPLE_PYTHON"
else
    venv="$var/venv"
    py="$venv/bin/python"
    if [ ! -x "$py" ] || ! "$py" -c 'import sys' 2>/dev/null; then
        if command -v pyenv >/dev/null 2>&1; then
            # Make pyenv's installed versions visible as python3.1x.
            export PYENV_VERSION=3.11.7:3.13.0:3.12.1:3.10.13
        fi
        base="$(newest_python)" || fail "Python 3.10 or newer is needed"
        say "Creating a virtualenv in $venv with $base"
        rm -rf "$venv"
        make_venv "$base" "$venv"
    fi
    stamp="$venv/.example-requirements"
    wanted="$(printf '%s\n' "${requirements[@]}"; sha1sum "$root/pyproject.toml")"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        say "Installing django-queued-storage and ${requirements[*]} (log: $logs/pip.log)"
        if ! "$py" -m pip install --disable-pip-version-check --progress-bar off \
            -e "$root" "${requirements[@]}" >"$logs/pip.log" 2>&1; then
            tail -n 30 "$logs/pip.log" >&2
            fail "pip install failed"
        fi
        printf '%s' "$wanted" >"$stamp"
    fi
fi

cd "$here"

say "Creating the database (log: $logs/migrate.log)"
if ! "$py" manage.py migrate --noinput >"$logs/migrate.log" 2>&1; then
    cat "$logs/migrate.log" >&2
    fail "migrate failed"
fi

if [ -z "$port" ]; then
    port="$("$py" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')"
fi
url="http://127.0.0.1:$port/"

pids=()
stop_all() {
    local status=$? pid waited
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        # The worker finishes the transfer it is running before it stops.
        for waited in $(seq 1 60); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -f "$var"/run/*.pid
    if [ "${#pids[@]}" -gt 0 ]; then
        say "Stopped the worker and the server"
    fi
    exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
    local name
    for name in worker server; do
        printf -- '--- last lines of %s ---\n' "$logs/$name.log" >&2
        tail -n 25 "$logs/$name.log" >&2 || true
    done
}

# The worker and the server run in sessions of their own: Ctrl-C reaches only
# this script, which stops them in order (a worker that got the SIGINT itself
# would exit quietly and hide it from `wait`).
if [ "$runner" = django_tasks ]; then
    say "Starting a db_worker of Django's task framework (log: $logs/worker.log)"
    setsid "$py" manage.py db_worker --queue-name "*" --interval 0.2 \
        --no-startup-delay --no-reload >"$logs/worker.log" 2>&1 &
    worker_ready="Starting worker"
else
    say "Starting a Celery worker (log: $logs/worker.log)"
    setsid "$py" -m celery -A exampleproject worker --pool solo --loglevel INFO \
        --without-mingle --without-gossip --without-heartbeat \
        >"$logs/worker.log" 2>&1 &
    worker_ready="ready\."
fi
pids+=($!)
echo $! >"$var/run/worker.pid"

say "Starting the web server at $url (log: $logs/server.log)"
setsid "$py" manage.py runserver "127.0.0.1:$port" --noreload >"$logs/server.log" 2>&1 &
pids+=($!)
echo $! >"$var/run/server.pid"

# Wait until the worker takes tasks and the server answers.
for waited in $(seq 1 240); do
    if grep -q "$worker_ready" "$logs/worker.log" 2>/dev/null &&
        "$py" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).close()' "$url" 2>/dev/null; then
        break
    fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || { show_logs; fail "a process stopped at start-up"; }
    done
    [ "$waited" = 240 ] && { show_logs; fail "the worker or the server did not start in 60 s"; }
    sleep 0.25
done
say "Worker and server are up"

if [ "$demo" = 1 ]; then
    say "Running the demo: python demo.py --sweep $url"
    if ! "$py" demo.py --sweep "$url"; then
        show_logs
        exit 1
    fi
fi

if [ "$once" = 1 ]; then
    exit 0
fi

cat <<MESSAGE

    Open $url in a browser to upload files and watch them move.
    Logs: $logs/worker.log and $logs/server.log
    Press Ctrl-C to stop.

MESSAGE
wait -n || true
show_logs
fail "the worker or the server stopped"
