#!/usr/bin/env bash
# Install the system services the exe-collab test suite starts on its own:
# redis-server, PostgreSQL (initdb/postgres), nginx, and Chromium (the
# browser tests drive /usr/bin/chromium with Playwright; no browser is downloaded).
#
# Idempotent: only missing components are installed. As root, missing
# packages are installed with apt-get (one `apt-get update`). As a regular
# user, the missing packages are listed and the script exits 1.
# node/npm are only checked (warning, never fatal).
set -euo pipefail

log()  { printf 'install-system-deps: %s\n' "$*"; }
warn() { printf 'install-system-deps: WARNING: %s\n' "$*" >&2; }

have_redis() {
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}

have_postgres() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
            return 0
        fi
    fi
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

have_nginx() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

have_chromium() {
    [ -x /usr/bin/chromium ]
}

missing=()
have_redis    || missing+=(redis-server)
have_postgres || missing+=(postgresql)
have_nginx    || missing+=(nginx)
# Chromium is for the browser tests only: a regular user without it gets a warning
# and those tests skip; as root it is installed like the rest.
if ! have_chromium; then
    if [ "$(id -u)" -eq 0 ]; then
        missing+=(chromium)
    else
        warn "chromium is not installed: tests/test_web.py will be skipped (apt-get install chromium)"
    fi
fi

if [ "${#missing[@]}" -eq 0 ]; then
    log "redis-server, postgresql, nginx and chromium are already installed"
else
    if [ "$(id -u)" -ne 0 ]; then
        printf 'install-system-deps: missing system packages: %s\n' "${missing[*]}" >&2
        printf 'install-system-deps: run as root (or: sudo apt-get install -y --no-install-recommends %s)\n' \
            "${missing[*]}" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        printf 'install-system-deps: missing %s and apt-get is not available; install them manually\n' \
            "${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    log "installing: ${missing[*]}"
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"

    # Packages may try to start their own service (e.g. a PostgreSQL cluster
    # on 5432 or nginx on :80). The tests never use those; a failed or
    # refused auto-start (no systemd, port already taken) is not an error.
    still_missing=()
    have_redis    || still_missing+=(redis-server)
    have_postgres || still_missing+=(postgresql)
    have_nginx    || still_missing+=(nginx)
    have_chromium || still_missing+=(chromium)
    if [ "${#still_missing[@]}" -ne 0 ]; then
        printf 'install-system-deps: still missing after install: %s\n' "${still_missing[*]}" >&2
        exit 1
    fi
    log "installed: ${missing[*]}"
fi

# Optional tooling: warn only.
if ! command -v node >/dev/null 2>&1; then
    warn "node is not installed (needed only for the frontend/JS client tooling)"
fi
if ! command -v npm >/dev/null 2>&1; then
    warn "npm is not installed (needed only for the frontend/JS client tooling)"
fi

exit 0
