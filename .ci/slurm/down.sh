#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by up.sh: every daemon by the PID in its PID file (never
# by name), in reverse start order, waiting for each to exit.
#
# Usage: .ci/slurm/down.sh [STATE_DIR]    (default: $TIKMIX_SLURM_DIR or /tmp/tikmix-slurm)
#
# Prints one line per daemon: "stopped <pidfile> pid N", "not running <pidfile>", or "stale <pidfile>"
# when the PID now belongs to another program than the daemon the file is named after (left alone).
# Exits non-zero if a daemon is still alive after SIGTERM and then SIGKILL. The state directory is
# kept (logs, accounting database); delete it to start from scratch.
set -uo pipefail

STATE=$(realpath -m "${1:-${TIKMIX_SLURM_DIR:-/tmp/tikmix-slurm}}")
PIDFILES=$STATE/pidfiles
log() { printf '[slurm-down] %s\n' "$*"; }

[[ -f $PIDFILES ]] || { log "no $PIDFILES: nothing to stop"; exit 0; }

# running PID: true while PID exists and is not a zombie (an exited process its parent has not reaped).
running() { kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# program PID: the base name of the program PID runs (its argv[0]).
program() { local name; name=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | head -n 1); echo "${name##*/}"; }

# wait_gone PID SECONDS: true once PID has exited.
wait_gone() {
    local pid=$1 deadline=$((SECONDS + $2))
    while running "$pid"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

failed=0
mapfile -t files < <(tac "$PIDFILES")
for f in "${files[@]}"; do
    pid=$(cat "$f" 2>/dev/null || true)
    if [[ ! $pid =~ ^[0-9]+$ ]] || ! running "$pid"; then
        log "not running $f"
        continue
    fi
    # A PID file left from an earlier boot or session may name a PID now reused by another program.
    if [[ $(program "$pid") != "$(basename "$f" .pid)" ]]; then
        log "stale $f: pid $pid is now '$(program "$pid")', left alone"
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
