#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by up.sh: every daemon by the PID in its PID file (never
# by name), in reverse start order, waiting for each to exit.
#
# Usage: .ci/slurm/down.sh [STATE_DIR]    (default: $TIKMIX_SLURM_DIR or /tmp/tikmix-slurm)
#
# Prints one line per daemon ("stopped <pidfile> pid N" or "not running <pidfile>") and exits non-zero if
# a daemon is still alive after SIGTERM and then SIGKILL. The state directory is kept (logs, accounting
# database); delete it to start from scratch.
set -uo pipefail

STATE=$(realpath -m "${1:-${TIKMIX_SLURM_DIR:-/tmp/tikmix-slurm}}")
PIDFILES=$STATE/pidfiles
log() { printf '[slurm-down] %s\n' "$*"; }

[[ -f $PIDFILES ]] || { log "no $PIDFILES: nothing to stop"; exit 0; }

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

failed=0
mapfile -t files < <(tac "$PIDFILES")
for f in "${files[@]}"; do
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ ! $pid =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
        log "not running $f"
        continue
    fi
    t0=$SECONDS
    kill -TERM "$pid"
    if wait_gone "$pid" 30; then
        log "stopped $f pid $pid ($((SECONDS - t0)) s)"
    else
        kill -KILL "$pid" 2>/dev/null
        if wait_gone "$pid" 5; then
            log "killed $f pid $pid (did not exit on SIGTERM within 30 s)"
        else
            log "ERROR: $f pid $pid still running"
            failed=1
        fi
    fi
    rm -f "$f"
done
exit $failed
