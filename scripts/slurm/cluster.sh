#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for `make test-slurm`: munge, MariaDB + slurmdbd (submitit
# reads job states with sacct, which needs the accounting database), slurmctld and slurmd, from Debian's
# packages, all state under $GAP_SLURM_DIR. Run as root; no network beyond the loopback.
#
#   scripts/slurm/cluster.sh start    # install the packages if missing, start the daemons, wait until the node is idle
#   scripts/slurm/cluster.sh stop     # cancel every job, stop the daemons this script started
#   export SLURM_CONF=$GAP_SLURM_DIR/slurm.conf   # then sbatch, squeue, sacct, scontrol reach the cluster
set -euo pipefail

DIR=${GAP_SLURM_DIR:-/tmp/gap-slurm}
NODE=$(hostname -s)
CPUS=$(nproc)
DB_PORT=${GAP_SLURM_DB_PORT:-3317}
PACKAGES="munge slurmctld slurmd slurmdbd slurm-client mariadb-server"
export SLURM_CONF=$DIR/slurm.conf

die() { echo "cluster.sh: $*" >&2; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: until COMMAND succeeds
    local limit=$1 what=$2; shift 2
    for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    die "$what did not come up within ${limit}s (logs in $DIR/log)"
}
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
    local missing=()
    for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return
    echo "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

configure() {
    mkdir -p "$DIR"/{state,spool,log,mysql}
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=gap
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=15
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
NodeName=$NODE CPUs=$CPUS RealMemory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 2048 )) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start_munge() {
    pgrep -x munged >/dev/null && return  # one munged per machine: one started by others is left to them
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 10 munged sh -c 'munge -n | unmunge'
    cp /run/munge/munged.pid "$DIR/munged.pid"  # started here: `stop` ends it
}

start_database() {
    alive "$DIR/mysql.pid" && return
    [[ -d $DIR/mysql/mysql ]] || mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket >/dev/null
    mariadbd --user=root --datadir="$DIR/mysql" --socket="$DIR/mysql.sock" --pid-file="$DIR/mysql.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$DIR/log/mysql.log" >/dev/null 2>&1 &
    wait_for 60 MariaDB mariadb --socket="$DIR/mysql.sock" -e 'select 1'
    mariadb --socket="$DIR/mysql.sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
}

start() {
    [[ $(id -u) -eq 0 ]] || die "run as root (it starts system daemons)"
    install
    configure
    start_munge
    start_database
    alive "$DIR/slurmdbd.pid" || slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i -Q add cluster gap >/dev/null 2>&1 || true
    alive "$DIR/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
    alive "$DIR/slurmd.pid" || slurmd -f "$SLURM_CONF"
    wait_for 60 "node $NODE" sh -c "sinfo -h -N -o %t | grep -qx idle"
    wait_for 30 sacct sacct -n -X
    echo "cluster up: SLURM_CONF=$SLURM_CONF ($NODE, $CPUS CPUs)"
}

stop() {
    [[ -f $SLURM_CONF ]] && scancel --full --quiet --user=root 2>/dev/null || true
    for daemon in slurmd slurmctld slurmdbd munged; do
        alive "$DIR/$daemon.pid" && kill "$(cat "$DIR/$daemon.pid")"
    done
    alive "$DIR/mysql.pid" && kill "$(cat "$DIR/mysql.pid")"
    echo "cluster stopped (state kept in $DIR)"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop" ;;
esac
