#!/usr/bin/env bash
# A throwaway single-node SLURM on this machine, for trying `vq-benchmark submit` and for CI.
#
#   bash slurm/local-cluster.sh up      install (Debian, as root) + configure + start munged, slurmctld, slurmd
#   bash slurm/local-cluster.sh down    stop exactly the daemons `up` started (TERM, then KILL); idempotent
#   bash slurm/local-cluster.sh status  exit 0 when up, 3 when down
#
# Works without systemd: the daemons are started directly and their PIDs recorded in $VQ_SLURM_STATE_DIR.
# The recipe (linuxproc + task/none because cgroups fail in containers and drain the node; the node line from
# `slurmd -C`; no slurmdbd) was measured on a 2-core Debian machine.
#
# Environment:
#   FORCE=1                  overwrite an /etc/slurm/slurm.conf this script did not write
#   VQ_SLURM_TIMEOUT=60      seconds to wait for the node to become idle, and for daemons to stop
#   VQ_SLURM_STATE_DIR=/run/vq-local-slurm   PID records (removed by `down`)
#   VQ_SLURM_SPOOL=/var/lib/vq-local-slurm   controller and slurmd state (wiped by `up`: a fresh cluster each time)
#   VQ_SLURM_LOG_DIR=/var/log/vq-local-slurm daemon logs (kept after `down`, for post-mortems)
set -euo pipefail

readonly MARKER="# Written by vq-benchmark slurm/local-cluster.sh; FORCE=1 lets it overwrite a foreign slurm.conf."
readonly CONF_DIR=/etc/slurm
readonly CONF="$CONF_DIR/slurm.conf"
readonly MUNGE_KEY=/etc/munge/munge.key
readonly MUNGE_RUN=/run/munge
readonly PARTITION=debug
readonly PACKAGES=(slurmctld slurmd slurm-client munge)
STATE_DIR=${VQ_SLURM_STATE_DIR:-/run/vq-local-slurm}
SPOOL=${VQ_SLURM_SPOOL:-/var/lib/vq-local-slurm}
LOG_DIR=${VQ_SLURM_LOG_DIR:-/var/log/vq-local-slurm}
TIMEOUT=${VQ_SLURM_TIMEOUT:-60}
DAEMONS=(munged slurmctld slurmd)  # start order; `down` stops them in reverse

die() {
    echo "local-cluster: error: $*" >&2
    exit 1
}

log() {
    echo "local-cluster: $*" >&2
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "'$1' must run as root (it installs packages, writes $CONF_DIR and starts daemons)"
}

# --- packages ---------------------------------------------------------------------------------------------------

packages_installed() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v munged >/dev/null
}

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$LOG_DIR/apt.log" 2>&1
}

# Debian's postinst scripts would start munge/slurm through invoke-rc.d; we start them ourselves, so a temporary
# policy-rc.d (exit 101 = "not allowed") keeps apt from leaving daemons we did not record.
install_packages() {
    packages_installed && return 0
    command -v apt-get >/dev/null || die "slurm is not installed and apt-get is missing: install ${PACKAGES[*]} by hand"
    log "installing ${PACKAGES[*]} (apt-get; log in $LOG_DIR/apt.log)"
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    if ! apt-cache show slurmctld >/dev/null 2>&1 || ! apt_install; then
        apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 && apt_install || rc=$?
    fi
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || die "apt-get install ${PACKAGES[*]} failed (exit $rc); see $LOG_DIR/apt.log"
    packages_installed || die "packages installed but slurmctld/slurmd/sbatch/munged are not on PATH"
}

# --- configuration ----------------------------------------------------------------------------------------------

# The first line of `slurmd -C` describes this machine exactly as slurmd will measure it at registration, so the
# node is never drained for "low RealMemory" or a CPU count mismatch.
node_line() {
    local line
    line=$(slurmd -C | head -n 1)
    [[ $line == NodeName=* ]] || die "unexpected 'slurmd -C' output: $line"
    echo "$line NodeAddr=127.0.0.1 State=UNKNOWN"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qxF "$MARKER" "$CONF" && [[ ${FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; set FORCE=1 to overwrite it"
    fi
    local host node
    host=$(hostname -s)
    node=$(node_line)
    mkdir -p "$CONF_DIR"
    cat >"$CONF.tmp" <<EOF
$MARKER
ClusterName=vqlocal
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
$node
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

setup_munge() {
    mkdir -p /etc/munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    chown munge:munge "$MUNGE_KEY" "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chmod 600 "$MUNGE_KEY"
    chmod 755 "$MUNGE_RUN"
    chmod 700 /etc/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge
}

# --- processes --------------------------------------------------------------------------------------------------

# A recorded PID counts only while it still runs the program we started (a reused PID must never be killed) and
# is not a zombie: PID 1 of a container may reap exited daemons late, and a zombie still has its /proc entry.
pid_alive() {
    local name=$1 pid=$2 stat state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    [[ ${stat#*(} == "$name) "* && ${state:0:1} != Z ]]
}

recorded_pid() {
    cat "$STATE_DIR/$1.started" 2>/dev/null || true
}

daemon_up() {
    pid_alive "$1" "$(recorded_pid "$1")"
}

all_up() {
    local d
    for d in "${DAEMONS[@]}"; do daemon_up "$d" || return 1; done
}

# Daemons fork into the background themselves (so no caller's process group or terminal can take them down) and
# write a pidfile; we copy it to <name>.started, the record `down` trusts.
wait_pidfile() {
    local name=$1 file=$2 i pid
    for ((i = 0; i < 50; i++)); do
        pid=$(cat "$file" 2>/dev/null || true)
        if pid_alive "$name" "$pid"; then
            echo "$pid" >"$STATE_DIR/$name.started"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not start (no live pid in $file); see $LOG_DIR/$name.log"
}

start_munged() {
    rm -f "$MUNGE_RUN/munged.pid"
    runuser -u munge -- munged --pid-file="$MUNGE_RUN/munged.pid" --log-file="/var/log/munge/munged.log" \
        >"$LOG_DIR/munged.log" 2>&1 || die "munged failed to start: $(tail -n 3 "$LOG_DIR/munged.log")"
    wait_pidfile munged "$MUNGE_RUN/munged.pid"
    munge -n | unmunge >/dev/null 2>&1 || die "munge does not round-trip a credential; see /var/log/munge/munged.log"
}

start_slurm() {
    slurmctld -i >"$LOG_DIR/slurmctld.start.log" 2>&1 ||
        die "slurmctld failed: $(tail -n 3 "$LOG_DIR/slurmctld.start.log") (more in $LOG_DIR/slurmctld.log)"
    wait_pidfile slurmctld "$STATE_DIR/slurmctld.pid"
    slurmd >"$LOG_DIR/slurmd.start.log" 2>&1 ||
        die "slurmd failed: $(tail -n 3 "$LOG_DIR/slurmd.start.log") (more in $LOG_DIR/slurmd.log)"
    wait_pidfile slurmd "$STATE_DIR/slurmd.pid"
}

node_state() {
    sinfo -h -N -o '%T' 2>/dev/null | head -n 1
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        [[ $state == idle ]] && return 0
        sleep 0.2
    done
    die "node not idle after ${TIMEOUT}s (state: '${state:-no answer}'); see $LOG_DIR/slurmctld.log and slurmd.log"
}

summary() {
    local node cpus mem
    read -r node cpus mem < <(sinfo -h -N -o '%N %c %m' | head -n 1)
    echo "local-cluster: up: node $node (${cpus} CPUs, ${mem} MB) idle in partition $PARTITION;" \
        "pids munged=$(recorded_pid munged) slurmctld=$(recorded_pid slurmctld) slurmd=$(recorded_pid slurmd)"
}

# Jobs still running when the cluster goes away would leave slurmstepd orphans behind, so cancel them first.
cancel_jobs() {
    daemon_up slurmctld || return 0
    local jobs
    jobs=$(squeue -h -o '%A' 2>/dev/null || true)
    [[ -z $jobs ]] && return 0
    # shellcheck disable=SC2086  # one job id per word
    scancel $jobs 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)) && [[ -n $(squeue -h -o '%A' 2>/dev/null || true) ]]; do sleep 0.2; done
}

stop_daemon() {
    local name=$1 pid deadline
    pid=$(recorded_pid "$name")
    if pid_alive "$name" "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + TIMEOUT))
        while pid_alive "$name" "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if pid_alive "$name" "$pid"; then
            log "$name (pid $pid) ignored TERM for ${TIMEOUT}s: sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$STATE_DIR/$name.started"
}

# --- commands ---------------------------------------------------------------------------------------------------

# A failed `up` stops what it had started, so that it never leaves a half cluster behind.
undo_failed_up() {
    local rc=$?
    trap - EXIT
    if [[ $rc -ne 0 && -d $STATE_DIR ]]; then
        log "up failed: stopping what it had started"
        cmd_down 2>/dev/null || true
    fi
    exit "$rc"
}

cmd_up() {
    need_root up
    if [[ -d $STATE_DIR ]] && all_up && [[ $(node_state) =~ ^(idle|mixed|allocated)$ ]]; then
        summary
        return 0
    fi
    if [[ -d $STATE_DIR ]]; then # half up (a daemon died): start again from clean
        log "up: not every daemon is running: restarting them all"
        cmd_down
    fi
    trap undo_failed_up EXIT
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    install_packages
    write_conf
    setup_munge
    rm -rf "$SPOOL"
    mkdir -p "$SPOOL/ctld" "$SPOOL/d"
    start_munged
    start_slurm
    wait_idle
    trap - EXIT
    summary
}

cmd_down() {
    need_root down
    [[ -d $STATE_DIR ]] || {
        log "down: nothing recorded in $STATE_DIR (already down)"
        return 0
    }
    cancel_jobs
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do stop_daemon "${DAEMONS[i]}"; done
    rm -rf "$STATE_DIR"
    log "down: stopped slurmd, slurmctld and munged"
}

cmd_status() {
    local d state=0
    for d in "${DAEMONS[@]}"; do
        if daemon_up "$d"; then echo "$d: running (pid $(recorded_pid "$d"))"; else
            echo "$d: stopped"
            state=3
        fi
    done
    if [[ $state -eq 0 ]]; then sinfo -N -o '%N %P %T %c %m'; fi
    return $state
}

main() {
    case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: bash $0 up|down|status" >&2
        exit 2
        ;;
    esac
}

main "$@"
