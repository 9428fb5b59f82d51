#!/usr/bin/env bash
# Make sure a Docker engine answers: nothing to do when `docker info` works;
# start dockerd when it is installed but stopped; install Debian's docker.io
# when we are root on Debian and no engine is installed; otherwise say what to do.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }
engine_up() { docker info >/dev/null 2>&1; }

wait_for_engine() {
    for _ in $(seq 1 60); do
        engine_up && return 0
        sleep 1
    done
    return 1
}

start_dockerd() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        log "starting docker with systemctl"
        systemctl start docker || true
        wait_for_engine && return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        log "dockerd is installed but not running, and starting it needs root: run 'sudo dockerd &' or 'sudo systemctl start docker'"
        exit 1
    fi
    local logfile=${DOCKERD_LOG:-/var/log/dockerd.log}
    log "starting dockerd in the background (log: $logfile)"
    nohup dockerd >"$logfile" 2>&1 &
    if ! wait_for_engine; then
        log "dockerd did not become ready within 60s; last lines of $logfile:"
        tail -n 20 "$logfile" >&2 || true
        exit 1
    fi
}

if command -v docker >/dev/null 2>&1 && engine_up; then
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ]; then
        log "no Docker engine installed: installing Debian's docker.io"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q docker.io
    else
        log "no Docker engine is installed. Install one (on Debian: 'sudo apt-get install docker.io'), start it, and make sure '$(id -un)' may use it (the 'docker' group)."
        exit 1
    fi
fi

if ! command -v docker >/dev/null 2>&1; then
    log "dockerd is installed but the docker client is missing: install docker.io or docker-ce-cli"
    exit 1
fi

start_dockerd
log "Docker engine is running: $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo unknown)"
