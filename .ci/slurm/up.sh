#!/usr/bin/env bash
# Bring up a single-node SLURM cluster (this host) with accounting, for tests and CI.
#
# Usage: .ci/slurm/up.sh [STATE_DIR]      (default: $TIKMIX_SLURM_DIR or /tmp/tikmix-slurm)
#
# Exit status: 0 up; 3 SLURM cannot be installed here (not root, no apt-get, install failed); 1 any
# other failure (the daemon logs' tails are printed).
# Idempotent: installs the Debian packages only when missing, starts only the daemons whose PID file
# does not name a live process, and adds the accounting records only when absent. Runs as root.
#
# Layout of STATE_DIR (everything the cluster writes lives here; down.sh reads the PID files):
#   etc/   slurm.conf, gres.conf, slurmdbd.conf   (/etc/slurm/slurm.conf links to etc/slurm.conf so
#          that sinfo/sbatch/sacct find the cluster without SLURM_CONF)
#   run/   mariadbd.pid, slurmdbd.pid, slurmctld.pid, slurmd.pid, MariaDB socket
#   munge/ munged.pid and munged.log (munged serves the default socket /run/munge/munge.socket.2, the
#          only path Slurm's clients use)
#   log/   the other daemons' logs      mysql/  MariaDB data directory (TCP 127.0.0.1:16033)
#   dev/   fakegpu0, fakegpu1 (char devices standing in for two GPUs: gres gpu:fake:2)
#   pidfiles   the list of PID files, in start order
#
# Names fixed here and used by the tests and docs/cluster.md: cluster "tikmix", partition "tikmix",
# account "tikmix".
set -euo pipefail

START_NS=$(date +%s%N)
STATE=$(realpath -m "${1:-${TIKMIX_SLURM_DIR:-/tmp/tikmix-slurm}}")
CLUSTER=tikmix
PARTITION=tikmix
ACCOUNT=tikmix
DB_PORT=${TIKMIX_SLURM_DB_PORT:-16033}
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log
export SLURM_CONF=$ETC/slurm.conf

log() { printf '[slurm-up] %s\n' "$*"; }
# die MESSAGE: print MESSAGE and the tail of every daemon log, exit 1. cannot_install MESSAGE: exit 3,
# which tests/slurm_cluster.py reads as "SLURM cannot be installed here" (a skip outside CI).
cannot_install() { log "ERROR: $*" >&2; exit 3; }
die() {
    log "ERROR: $*" >&2
    local f
    for f in "$LOG"/*.log "$STATE"/munge/*.log; do
        [[ -f $f ]] || continue
        printf '\n--- last lines of %s ---\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
    exit 1
}

[[ $(id -u) -eq 0 ]] || cannot_install "must run as root (apt-get, daemons, mknod)"
mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/munge" "$STATE/mysql" "$STATE/ctld" "$STATE/slurmd" "$STATE/dev"

# ---------------------------------------------------------------- packages
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || cannot_install "apt-get not found; cannot install ${missing[*]}"
    log "installing ${missing[*]}"
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || cannot_install "apt-get update failed"
    # policy-rc.d exit 101 keeps the packages' maintainer scripts from starting system-wide daemons;
    # this script starts its own, with private state.
    policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1 || rc=$?
    ((own_policy)) && rm -f "$policy"
    if ((rc != 0)); then
        tail -n 20 "$LOG/apt.log" >&2
        cannot_install "apt-get install failed (rc=$rc), see $LOG/apt.log"
    fi
    log "packages installed in $(($(date +%s) - t0)) s"
fi

PIDFILES=$STATE/pidfiles
touch "$PIDFILES"
# track PIDFILE: record a daemon's PID file for down.sh (before starting it, so a half-finished start
# can still be torn down).
track() { grep -qxF "$1" "$PIDFILES" || echo "$1" >>"$PIDFILES"; }

# alive PIDFILE: true when PIDFILE names a running (not zombie) process that is still the daemon the
# file is named after (<daemon>.pid): a stale file whose PID was reused by another program is not.
alive() {
    local pid name
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    name=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1)
    [[ ${name##*/} == "$(basename "$1" .pid)" ]]
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND (each try limited to 10 s) every 0.2 s until it
# succeeds or SECONDS have passed.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until timeout 10 "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

# ---------------------------------------------------------------- configuration
HOST=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {printf "%d", $2 * 0.8 / 1024}' /proc/meminfo)

for i in 0 1; do
    [[ -c $STATE/dev/fakegpu$i ]] || mknod "$STATE/dev/fakegpu$i" c 1 3 || die "mknod failed"
done

cat >"$ETC/slurm.conf" <<EOF
# Written by .ci/slurm/up.sh: a single-node test cluster with accounting.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
MinJobAge=600
DefMemPerCPU=1024
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:fake:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$ETC/gres.conf" <<EOF
NodeName=$HOST Name=gpu Type=fake File=$STATE/dev/fakegpu[0-1]
EOF

cat >"$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"

# Client commands (sinfo, sbatch, sacct: also those the Snakemake plugin runs) read /etc/slurm/slurm.conf.
mkdir -p /etc/slurm
if [[ -e /etc/slurm/slurm.conf && ! -L /etc/slurm/slurm.conf ]]; then
    die "/etc/slurm/slurm.conf is a real file (an existing SLURM install?); not replacing it"
fi
ln -sfn "$ETC/slurm.conf" /etc/slurm/slurm.conf

# ---------------------------------------------------------------- daemons
# munged: Slurm's clients (sacctmgr's persistent connection too) only reach munged at its default
# socket, so that path is shared; PID and log files stay private. An already answering munged is reused
# (and then not ours to stop).
MUNGE=$STATE/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    { mungekey --create --keyfile=/etc/munge/munge.key && chown munge:munge /etc/munge/munge.key \
        && chmod 400 /etc/munge/munge.key; } || die "cannot create /etc/munge/munge.key"
fi
if alive "$MUNGE/munged.pid" || ! munge -n >/dev/null 2>&1; then
    track "$MUNGE/munged.pid"
fi
if ! alive "$MUNGE/munged.pid" && ! munge -n >/dev/null 2>&1; then
    mkdir -p /run/munge && chown munge:munge /run/munge "$MUNGE" && chmod 755 /run/munge "$MUNGE"
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE/munged.pid" \
        --log-file="$MUNGE/munged.log" --seed-file="$MUNGE/munged.seed" \
        || die "munged failed to start"
fi
wait_for 10 munged munge -n

# mariadbd, private data directory, TCP on loopback only
track "$RUN/mariadbd.pid"
if ! alive "$RUN/mariadbd.pid"; then
    if [[ ! -d $STATE/mysql/mysql ]]; then
        mariadb-install-db --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=normal \
            --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --pid-file="$RUN/mariadbd.pid" \
        --socket="$RUN/mysqld.sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$LOG/mariadbd.log" --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
fi
SQL=(mariadb --no-defaults --socket="$RUN/mysqld.sock" -uroot)
wait_for 60 mariadbd "${SQL[@]}" -e "SELECT 1"
"${SQL[@]}" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "cannot create the slurm DB user"

# slurmdbd (reads slurmdbd.conf from the directory of SLURM_CONF)
track "$RUN/slurmdbd.pid"
alive "$RUN/slurmdbd.pid" || slurmdbd || die "slurmdbd failed to start"
wait_for 30 slurmdbd sacctmgr -n list cluster

# accounting records: the cluster must exist before slurmctld registers with slurmdbd
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" \
    || sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null || die "sacctmgr add account failed"
sacctmgr -n -P list assoc user=root format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null \
    || die "sacctmgr add association failed"

# slurmctld, then slurmd
track "$RUN/slurmctld.pid"
alive "$RUN/slurmctld.pid" || slurmctld || die "slurmctld failed to start"
wait_for 30 slurmctld scontrol ping
track "$RUN/slurmd.pid"
alive "$RUN/slurmd.pid" || slurmd || die "slurmd failed to start"

wait_for 60 "node $HOST to become idle" \
    sh -c "sinfo -h -N -n '$HOST' -o %T | grep -qE '^(idle|mixed|allocated)'"

while read -r f; do alive "$f" || die "the daemon of $f is not running"; done <"$PIDFILES"
log "cluster '$CLUSTER' up on $HOST (partition $PARTITION, account $ACCOUNT, $CPUS CPUs," \
    "${MEM_MB} MB, gres gpu:fake:2); state in $STATE"
log "PID files: $(tr '\n' ' ' <"$PIDFILES")"
log "up in $((($(date +%s%N) - START_NS) / 1000000)) ms"
