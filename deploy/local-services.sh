#!/usr/bin/env bash
# deploy/local-services.sh -- make sure the services the ETL bus tests need are up.
#
#   PostgreSQL  127.0.0.1:5432  trust auth for TCP logins as `postgres` (the loader's store)
#   NATS        127.0.0.1:4222  with JetStream enabled (the bus)
#   Firebird 3  127.0.0.1:3050  Srp user ETL_TEST/etl_test + a test database directory
#                                (source of the Firebird extractor)
#   chromium + chromedriver      the browser the steward console's tests drive
#                                (Debian's chromium and chromium-driver)
#
# Target: Debian 12, run as root, possibly on a fresh CI machine without systemd.
# Idempotent: when everything already runs it only probes the ports (plus one
# psql and one isql-fb login, ~0.2 s in total) and changes nothing. apt-get runs
# only for a missing package, and `apt-get update` at most once per run.
#
# Usage: deploy/local-services.sh [--verify]
#   --verify  also create and drop a throwaway Firebird database as ETL_TEST,
#             i.e. exactly what the Firebird tests do (adds ~0.2 s).
#
# Exit status: 0 when all three services answer as described above; non-zero,
# with an "ERROR:" line on stderr, when a service cannot be brought up.
set -euo pipefail

readonly HOST=127.0.0.1
readonly PG_PORT=5432
readonly NATS_PORT=4222
readonly FB_PORT=3050
# How long to wait for a freshly started service to accept connections.
readonly WAIT_SECS="${LOCAL_SERVICES_WAIT_SECS:-30}"

# Tests run several loaders in parallel, each with its own connection pool.
readonly PG_WANT_MAX_CONNECTIONS=200

readonly NATS_BIN=/usr/sbin/nats-server
readonly NATS_STORE_DIR=/var/lib/nats-server
readonly NATS_LOG=/var/log/nats-server.log
readonly NATS_PIDFILE=/run/nats-server-local.pid

# Paths of the Debian firebird3.0-* packages.
readonly FB_SERVICE=firebird3.0
readonly FB_CONF=/etc/firebird/3.0/firebird.conf
readonly FB_PASSWORD_FILE=/etc/firebird/3.0/SYSDBA.password
readonly FB_SEC_DB=/var/lib/firebird/3.0/system/security3.fdb
readonly FB_LOG=/var/log/firebird/firebird3.0.log
readonly FB_LOCK_DIR=/tmp/firebird
readonly FB_TEST_USER=ETL_TEST
readonly FB_TEST_PASSWORD=etl_test
# Databases the tests create. Must be writable by the server process (user
# `firebird`): the server, not the client, creates the files.
readonly FB_TEST_DIR=/var/lib/firebird/3.0/data/etl-tests
# A small database owned by SYSDBA, used to run the user/grant statements and
# to check cheaply that ETL_TEST can log in. It lives outside FB_TEST_DIR so
# tests that wipe their directory do not remove it (it is recreated if gone).
readonly FB_ADMIN_DB=/var/lib/firebird/3.0/data/etl-admin.fdb

VERIFY=0
APT_UPDATED=0

log() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

# Installing, starting and reconfiguring need root; mere checking does not.
need_root() {
    [[ $EUID -eq 0 ]] || die "$1 needs root; rerun as root (e.g. sudo $0)"
}

# True if something accepts TCP connections on HOST:$1. Pure bash (/dev/tcp),
# so checking an already running service costs no process start-ups beyond
# `timeout`, which guards against a peer that never completes the handshake.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

wait_for_port() {
    local port=$1 deadline=$((SECONDS + WAIT_SECS))
    until port_open "$port"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

wait_for_port_closed() {
    local port=$1 deadline=$((SECONDS + WAIT_SECS))
    while port_open "$port"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# "a, b, c" from the arguments.
join_comma() {
    local out=$1
    shift
    local item
    for item in "$@"; do out+=", $item"; done
    printf '%s' "$out"
}

# True if the host runs systemd as init. Debian maintainer scripts start and
# enable services through systemd only in that case; in a container they don't.
have_systemd() { [[ -d /run/systemd/system ]]; }

pkg_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# Install packages non-interactively; `apt-get update` only once per run and
# only when something is actually missing.
apt_install() {
    need_root "installing $*"
    if ((APT_UPDATED == 0)); then
        log "apt: updating package lists"
        apt-get -o DPkg::Lock::Timeout=120 update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt: installing $*"
    # Recommends are not needed by any of our services (sysstat, logrotate...).
    # DPkg::Lock::Timeout: wait for a concurrent apt/dpkg (e.g. unattended
    # upgrades on a fresh CI VM) instead of failing at once.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 \
        install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

tail_log() {
    [[ -r $1 ]] || return 0
    printf -- '--- last lines of %s ---\n' "$1" >&2
    tail -n 15 "$1" >&2 || true
}

# ---------------------------------------------------------------- PostgreSQL

PG_VERSION=""
PG_CLUSTER=""

# Pick the cluster that is configured for port 5432 (pg_lsclusters prints
# "version cluster port status owner datadir logfile").
pg_find_cluster() {
    local ver cluster port _rest
    PG_VERSION="" PG_CLUSTER=""
    command -v pg_lsclusters >/dev/null || return 1
    while read -r ver cluster port _rest; do
        if [[ $port == "$PG_PORT" ]]; then
            PG_VERSION=$ver PG_CLUSTER=$cluster
            return 0
        fi
    done < <(pg_lsclusters -h 2>/dev/null)
    return 1
}

pg_psql() {
    # -w: never prompt for a password; failing means "trust is not in effect".
    psql -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -w -X -At -v ON_ERROR_STOP=1 "$@"
}

# pg_ctlcluster goes through systemctl by itself when systemd is running, and
# drives pg_ctl directly otherwise (that is what --skip-systemctl-redirect
# forces); so the plain form is right on both kinds of machine.
pg_ctl() {
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" "$1" || {
        tail_log "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
        die "postgresql: pg_ctlcluster $PG_VERSION $PG_CLUSTER $1 failed"
    }
}

# Make TCP logins from 127.0.0.1 as postgres password-less. pg_hba.conf is
# evaluated first-match, and Debian's default has a scram-sha-256 line for
# 127.0.0.1, so our line goes at the very top. Only a reload is needed.
# On success sets PG_MAX_CONN (the login doubles as the max_connections query,
# one psql start-up less); "unknown" when the server is merely too busy to
# tell (all connection slots taken by running tests: not our business).
readonly PG_HBA_COMMENT="# Added by deploy/local-services.sh: password-less TCP logins from this machine (tests)."
pg_ensure_trust() {
    local out hba rule fixed=0 deadline=$((SECONDS + WAIT_SECS))
    rule="host    all             all             127.0.0.1/32            trust"
    PG_MAX_CONN=unknown
    while :; do
        if out=$(pg_psql -c 'show max_connections' 2>&1); then
            PG_MAX_CONN=$out
            return 0
        fi
        case $out in
        *"too many clients"* | *"connection slots"*)
            warn "postgresql: all connection slots are in use, trust auth not verified"
            return 0
            ;;
        *password* | *pg_hba.conf* | *authentication*)
            ((fixed == 0)) || die "postgresql: still no password-less login as postgres on $HOST:$PG_PORT after configuring $hba: $out"
            need_root "configuring pg_hba.conf"
            pg_find_cluster || die "postgresql: $HOST:$PG_PORT needs a password, and no local cluster uses that port: $out"
            hba="/etc/postgresql/$PG_VERSION/$PG_CLUSTER/pg_hba.conf"
            # Insert comment + rule as the first lines, dropping any earlier
            # copies (a copy further down may be shadowed by a scram line).
            sed -i -e "1i $PG_HBA_COMMENT\\
$rule" -e "\\|^$PG_HBA_COMMENT\$|d" -e "\\|^$rule\$|d" "$hba"
            pg_ctl reload
            PG_DONE+=("trust auth for $HOST configured")
            fixed=1
            ;;
        esac
        # Otherwise typically "the database system is starting up": retry.
        # (A reload is asynchronous as well.)
        ((SECONDS < deadline)) || die "postgresql: cannot log in as postgres on $HOST:$PG_PORT: $out"
        sleep 0.3
    done
}

ensure_postgres() {
    PG_DONE=()
    local started=0 max_conn note=""
    if port_open "$PG_PORT"; then
        if ! command -v psql >/dev/null; then
            log "postgresql: already running on $HOST:$PG_PORT (psql not installed, trust auth not verified)"
            return 0
        fi
    else
        need_root "starting PostgreSQL"
        if ! pkg_installed postgresql; then
            # The package creates the `main` cluster (port 5432, UTF8 with
            # C.UTF-8, listen_addresses=localhost, pg_hba scram-sha-256 for
            # TCP) but, without systemd or under a container's policy-rc.d,
            # does not start it.
            apt_install postgresql
            PG_DONE+=("installed")
        fi
        if ! pg_find_cluster; then
            PG_VERSION=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
            [[ -n $PG_VERSION ]] || die "postgresql: package installed but no server version under /usr/lib/postgresql"
            PG_CLUSTER=main
            LANG=C.UTF-8 pg_createcluster --port "$PG_PORT" "$PG_VERSION" "$PG_CLUSTER" >/dev/null ||
                die "postgresql: pg_createcluster $PG_VERSION $PG_CLUSTER failed"
            PG_DONE+=("cluster $PG_VERSION/$PG_CLUSTER created")
        fi
        # Where invoke-rc.d is allowed to (systemd, or no policy-rc.d), the
        # package has already started the new cluster: don't start it twice
        # (pg_ctlcluster exits 2 for "already running").
        port_open "$PG_PORT" || pg_ctl start
        wait_for_port "$PG_PORT" || {
            tail_log "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
            die "postgresql: cluster $PG_VERSION/$PG_CLUSTER started but $HOST:$PG_PORT does not answer after ${WAIT_SECS}s"
        }
        PG_DONE+=("started")
        started=1
    fi

    pg_ensure_trust
    max_conn=$PG_MAX_CONN
    if [[ $max_conn =~ ^[0-9]+$ ]] && ((max_conn < PG_WANT_MAX_CONNECTIONS)); then
        if ((started)); then
            # max_connections needs a restart. We only restart a server this
            # run has just started, never one that other tests may be using.
            # ALTER SYSTEM writes postgresql.auto.conf, which wins over
            # postgresql.conf and conf.d/*.
            pg_psql -c "alter system set max_connections = $PG_WANT_MAX_CONNECTIONS" >/dev/null ||
                die "postgresql: alter system set max_connections failed"
            pg_ctl restart
            wait_for_port "$PG_PORT" || {
                tail_log "/var/log/postgresql/postgresql-$PG_VERSION-$PG_CLUSTER.log"
                die "postgresql: no answer on $HOST:$PG_PORT after restarting with max_connections=$PG_WANT_MAX_CONNECTIONS"
            }
            pg_ensure_trust # also waits until logins are accepted again
            max_conn=$PG_MAX_CONN
            PG_DONE+=("max_connections raised to $max_conn")
        else
            note="max_connections=$max_conn (< $PG_WANT_MAX_CONNECTIONS) left alone because raising it restarts a server that may be in use; to raise it: psql -h $HOST -U postgres -c 'alter system set max_connections = $PG_WANT_MAX_CONNECTIONS', then restart the cluster (pg_ctlcluster <version> <cluster> restart)"
        fi
    fi

    if ((${#PG_DONE[@]} == 0)); then
        log "postgresql: already running on $HOST:$PG_PORT (max_connections=$max_conn)"
    else
        log "postgresql: $(join_comma "${PG_DONE[@]}") on $HOST:$PG_PORT (max_connections=$max_conn)"
    fi
    if [[ -n $note ]]; then log "postgresql: note: $note"; fi
}

# ---------------------------------------------------------------------- NATS

# The first thing a NATS server sends is one `INFO {json}` line; it contains
# "jetstream":true only when JetStream is enabled. Prints the line.
nats_info() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$NATS_PORT && IFS= read -r line <&3 && printf '%s\n' \"\$line\"" 2>/dev/null
}

nats_has_jetstream() {
    local info
    info=$(nats_info) || return 1
    [[ $info == INFO* && $info == *'"jetstream":true'* ]]
}

ensure_nats() {
    local done_what=()
    if nats_has_jetstream; then
        log "nats: already running on $HOST:$NATS_PORT (JetStream enabled)"
        return 0
    fi
    if port_open "$NATS_PORT"; then
        # Under systemd, the Debian package's own unit starts nats-server from
        # /etc/nats-server.conf, which has no JetStream. Replace it by ours.
        if have_systemd && systemctl -q is-active nats-server.service 2>/dev/null; then
            need_root "replacing the packaged nats-server service"
            systemctl disable --now nats-server.service >/dev/null 2>&1
            wait_for_port_closed "$NATS_PORT" ||
                die "nats: stopped nats-server.service but $HOST:$NATS_PORT still answers"
            done_what+=("packaged service (no JetStream) replaced")
        else
            die "nats: something answers on $HOST:$NATS_PORT but JetStream is not enabled (INFO: $(nats_info | head -c 200)); restart it with -js"
        fi
    fi

    need_root "starting nats-server"
    if [[ ! -x $NATS_BIN ]]; then
        apt_install nats-server
        done_what+=("installed")
        # Under systemd the package enables and starts its own unit (no
        # JetStream, config /etc/nats-server.conf) on this very port.
        if have_systemd; then
            systemctl disable --now nats-server.service >/dev/null 2>&1 || true
            wait_for_port_closed "$NATS_PORT" || true
        fi
    fi
    # The package does not create a storage directory; JetStream keeps its
    # streams under <store dir>/jetstream.
    install -d -m 0750 "$NATS_STORE_DIR"
    # Same command line as the long-running dev instance. nats-server does not
    # daemonize itself, hence --background; the pid file lets one stop exactly
    # this instance: start-stop-daemon --stop --pidfile $NATS_PIDFILE.
    start-stop-daemon --start --oknodo --background \
        --make-pidfile --pidfile "$NATS_PIDFILE" \
        --exec "$NATS_BIN" -- \
        -a "$HOST" -p "$NATS_PORT" -js -sd "$NATS_STORE_DIR" -l "$NATS_LOG" ||
        die "nats: start-stop-daemon could not start $NATS_BIN"
    wait_for_port "$NATS_PORT" || {
        tail_log "$NATS_LOG"
        die "nats: started $NATS_BIN but $HOST:$NATS_PORT does not answer after ${WAIT_SECS}s"
    }
    nats_has_jetstream || die "nats: $HOST:$NATS_PORT answers but reports no JetStream"
    done_what+=("started")
    log "nats: $(join_comma "${done_what[@]}") on $HOST:$NATS_PORT (JetStream enabled)"
}

# ------------------------------------------------------------------ Firebird

FB_DONE=()

fb_isql() {
    # Credentials go through the environment, not argv, so they do not show
    # up in `ps`. -b: stop at the first error and exit non-zero.
    local user=$1 password=$2
    shift 2
    ISC_USER=$user ISC_PASSWORD=$password isql-fb -q -b -ch UTF8 "$@"
}

fb_running() { port_open "$FB_PORT"; }

fb_start() {
    install -d -o firebird -g firebird -m 0770 "$FB_LOCK_DIR"
    # `service` runs /etc/init.d/firebird3.0 here (no systemd) and goes
    # through systemctl where systemd is init.
    service "$FB_SERVICE" start >/dev/null || {
        tail_log "$FB_LOG"
        die "firebird: 'service $FB_SERVICE start' failed"
    }
    wait_for_port "$FB_PORT" || {
        tail_log "$FB_LOG"
        die "firebird: started but $HOST:$FB_PORT does not answer after ${WAIT_SECS}s"
    }
}

fb_stop() {
    service "$FB_SERVICE" stop >/dev/null || die "firebird: 'service $FB_SERVICE stop' failed"
    wait_for_port_closed "$FB_PORT" || die "firebird: stopped but $HOST:$FB_PORT still answers"
}

# Our Rust client (rsfbclient, pure_rust) speaks Srp (and Srp256) with wire
# encryption, but not Legacy_Auth. Firebird 3's built-in default is
# `AuthServer = Srp` (Debian leaves the line commented out); only an explicit
# setting without Srp needs fixing. Per-database overrides in databases.conf
# are not considered.
fb_authserver_has_srp() {
    local line value
    line=$(grep -E '^[[:space:]]*AuthServer[[:space:]]*=' "$FB_CONF" 2>/dev/null | tail -n 1) || return 0
    value=" ${line#*=} "
    value=${value//,/ }
    value=${value//$'\t'/ }
    [[ $value == *" Srp "* ]]
}

fb_ensure_authserver() {
    fb_authserver_has_srp && return 0
    need_root "editing $FB_CONF"
    sed -i -E 's/^([[:space:]]*AuthServer[[:space:]]*=[[:space:]]*)/\1Srp, /' "$FB_CONF"
    FB_DONE+=("Srp added to AuthServer")
    # The setting is read at start-up only.
    if fb_running; then
        fb_stop
        fb_start
        FB_DONE+=("restarted")
    fi
}

# The SYSDBA password the Debian package generated (ISC_PASSWORD="..." in a
# root-only file). Prints it; fails if the file is missing or has none.
fb_sysdba_password() {
    local value
    [[ -r $FB_PASSWORD_FILE ]] || return 1
    value=$(sed -n 's/^[[:space:]]*ISC_PASSWORD=//p' "$FB_PASSWORD_FILE" | tail -n 1)
    value=${value%\"} value=${value#\"}
    value=${value%\'} value=${value#\'}
    [[ -n $value ]] || return 1
    printf '%s' "$value"
}

# The package sets a random SYSDBA password in its postinst, but skips it when
# it cannot start the server ("Not setting SYSDBA password"). Then nobody knows
# a password, and we set one ourselves like the postinst does: with the server
# stopped, through embedded access to the security database (as root, no
# password needed), then hand the files back to the `firebird` user.
fb_ensure_sysdba_password() {
    fb_sysdba_password >/dev/null && return 0
    need_root "setting the Firebird SYSDBA password"
    local pw was_running=0
    pw=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n')
    if fb_running; then
        was_running=1
        fb_stop
    fi
    printf "create or alter user SYSDBA password '%s' using plugin Srp;\ncommit;\n" "$pw" |
        isql-fb -q -b -user SYSDBA "$FB_SEC_DB" >/dev/null ||
        die "firebird: could not set the SYSDBA password through embedded access to $FB_SEC_DB"
    chown firebird:firebird "$FB_SEC_DB"
    find "$FB_LOCK_DIR" -maxdepth 1 -user root -exec chown firebird:firebird {} + 2>/dev/null || true
    (
        umask 077
        cat >"$FB_PASSWORD_FILE"
    ) <<EOF
# Password for firebird SYSDBA user (set by deploy/local-services.sh because
# the package could not set one). Same format as the Debian package writes.
ISC_USER=sysdba
ISC_PASSWORD="$pw"
EOF
    chmod 0600 "$FB_PASSWORD_FILE"
    FB_DONE+=("SYSDBA password set")
    if ((was_running)); then fb_start; fi
}

fb_test_user_ok() {
    # shellcheck disable=SC2016 # rdb$database is Firebird's one-row table, not a shell variable.
    printf 'select 1 from rdb$database;\n' |
        fb_isql "$FB_TEST_USER" "$FB_TEST_PASSWORD" "$HOST/$FB_PORT:$FB_ADMIN_DB" >/dev/null 2>&1
}

# Create ETL_TEST as an Srp user and allow it to create databases. User
# management SQL works in any database in Firebird 3 (it acts on that
# database's security database, here the default security3.fdb), which is
# convenient because the `security.db` alias refuses remote access and the
# running SuperServer locks the file against embedded access.
# GRANT CREATE DATABASE is stored in the security database as well
# (RDB$DB_CREATORS); it is granted *before* the user is created so that
# "ETL_TEST can log in" implies "ETL_TEST may create databases".
fb_provision() {
    need_root "creating the Firebird test user"
    local pw
    pw=$(fb_sysdba_password) || die "firebird: no SYSDBA password in $FB_PASSWORD_FILE"
    if [[ ! -e $FB_ADMIN_DB ]]; then
        printf "create database '%s' user 'SYSDBA' password '%s' default character set UTF8;\n" \
            "$HOST/$FB_PORT:$FB_ADMIN_DB" "${pw//\'/\'\'}" | isql-fb -q -b >/dev/null ||
            die "firebird: cannot create $FB_ADMIN_DB as SYSDBA (password in $FB_PASSWORD_FILE wrong?)"
    fi
    fb_isql SYSDBA "$pw" "$HOST/$FB_PORT:$FB_ADMIN_DB" >/dev/null <<EOF ||
grant create database to user $FB_TEST_USER;
commit;
create or alter user $FB_TEST_USER password '$FB_TEST_PASSWORD' using plugin Srp;
commit;
EOF
        die "firebird: creating user $FB_TEST_USER as SYSDBA failed"
    FB_DONE+=("user $FB_TEST_USER (Srp) provisioned")
}

# End-to-end probe, exactly what a test does: create a database over TCP as
# ETL_TEST in the test directory, then drop it.
fb_verify() {
    local db="$FB_TEST_DIR/probe-$$.fdb"
    printf "create database '%s' user '%s' password '%s' default character set UTF8;\ndrop database;\n" \
        "$HOST/$FB_PORT:$db" "$FB_TEST_USER" "$FB_TEST_PASSWORD" | isql-fb -q -b >/dev/null ||
        die "firebird: $FB_TEST_USER cannot create a database in $FB_TEST_DIR"
    log "firebird: verified: $FB_TEST_USER created and dropped $db over TCP"
}

ensure_firebird() {
    if ! fb_running; then
        need_root "starting Firebird"
        if [[ ! -x /usr/sbin/fbguard ]] || ! command -v isql-fb >/dev/null; then
            # The postinst creates security3.fdb and (normally) a random
            # SYSDBA password in $FB_PASSWORD_FILE. It tries to start the
            # server through invoke-rc.d, which a container's policy-rc.d
            # refuses: we start it ourselves below.
            apt_install firebird3.0-server firebird3.0-utils
            FB_DONE+=("installed")
        fi
        fb_ensure_authserver
        fb_ensure_sysdba_password
        fb_start
        FB_DONE+=("started")
    else
        fb_ensure_authserver
        command -v isql-fb >/dev/null || apt_install firebird3.0-utils
    fi

    if [[ ! -d $FB_TEST_DIR || "$(stat -c %U "$FB_TEST_DIR")" != firebird ]]; then
        need_root "creating $FB_TEST_DIR"
        install -d -o firebird -g firebird -m 0770 "$FB_TEST_DIR"
        FB_DONE+=("test dir created")
    fi

    if ! fb_test_user_ok; then
        fb_ensure_sysdba_password
        fb_provision
        fb_test_user_ok || die "firebird: $FB_TEST_USER still cannot log in after provisioning"
    fi

    if ((${#FB_DONE[@]} == 0)); then
        log "firebird: already running on $HOST:$FB_PORT ($FB_TEST_USER login ok)"
    else
        log "firebird: $(join_comma "${FB_DONE[@]}") on $HOST:$FB_PORT"
    fi
    if ((VERIFY)); then fb_verify; fi
}

# ---------------------------------------------------------------------- browser

# The steward console's tests (console/tests/it) drive a headless chromium
# through chromedriver, which they start themselves on a free port.
ensure_browser() {
    local missing=()
    pkg_installed chromium || missing+=(chromium)
    pkg_installed chromium-driver || missing+=(chromium-driver)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
    command -v chromedriver >/dev/null || die "chromedriver not found after installing chromium-driver"
}

# ---------------------------------------------------------------------- main

main() {
    while (($#)); do
        case $1 in
        --verify) VERIFY=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown argument: $1 (see --help)" ;;
        esac
        shift
    done

    ensure_postgres
    ensure_nats
    ensure_firebird
    ensure_browser
    # Optional: deploy-tests validates deploy/docker-compose.yml with it (and
    # says it skipped without it); a failed install is only a warning.
    command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 ||
        (apt_install docker-compose) || warn "docker-compose not installed: the compose test will skip"
    # Optional: deploy-tests checks deploy/monitoring/alerts.yml with promtool
    # (Debian's prometheus package); a failed install is only a warning.
    command -v promtool >/dev/null ||
        (apt_install prometheus) || warn "promtool not installed: the alert rules test will skip"

    cat <<EOF
Connection facts for tests:
  PG_URL=postgres://postgres@$HOST:$PG_PORT/postgres
  NATS_URL=nats://$HOST:$NATS_PORT
  FIREBIRD_HOST=$HOST
  FIREBIRD_PORT=$FB_PORT
  FIREBIRD_USER=$FB_TEST_USER
  FIREBIRD_PASSWORD=$FB_TEST_PASSWORD
  FIREBIRD_TEST_DIR=$FB_TEST_DIR   (databases: $FB_TEST_DIR/<name>.fdb, created over TCP as $FB_TEST_USER)
EOF
}

main "$@"
