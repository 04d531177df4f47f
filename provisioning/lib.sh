# shellcheck shell=bash
# Shared functions of bastion's provisioning scripts (install.sh,
# bastion-service, add-user.sh). Source it; it defines functions and
# read-only paths, and runs nothing.
# shellcheck disable=SC2034 # constants for the scripts that source this file

# ---------------------------------------------------------------- paths ---
BASTION_PROVISIONING="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASTION_REPO="$(dirname "$BASTION_PROVISIONING")"
readonly BASTION_PROVISIONING BASTION_REPO
readonly BASTION_ETC=/etc/bastion
readonly BASTION_CONFIG="${BASTION_CONFIG:-$BASTION_ETC/bastion.toml}"
readonly BASTION_RUN=/run/bastion
readonly BASTION_LOG_DIR=/var/log/bastion
readonly BASTION_SSHD_DIR="$BASTION_ETC/sshd"
readonly BASTION_SSHD_CONFIG="$BASTION_SSHD_DIR/sshd_config"
readonly BASTION_KEYS_DIR="$BASTION_ETC/authorized_keys"
readonly BASTION_SHELL=/usr/local/bin/bastion-shell
readonly BASTION_USERS_GROUP=bastion-users
# A root-owned, empty, read-only directory: the users' home on the host.
# Their real home lives in their container; sshd only chdirs here.
readonly BASTION_HOST_HOME=/var/lib/bastion/empty
readonly SYSTEMD_UNIT_DIR=/etc/systemd/system

# --------------------------------------------------------------- output ---
# Every message names the script that printed it.
bastion_me="$(basename "$0")"
say() { printf '%s: %s\n' "$bastion_me" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "$bastion_me" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$bastion_me" "$*" >&2
    exit 1
}

require_root() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (try: sudo $0)"
}

# True when systemd is PID 1 (not merely installed).
is_systemd() {
    [[ -d /run/systemd/system && "$(cat /proc/1/comm 2>/dev/null)" == systemd ]]
}

# ------------------------------------------------------------- packages ---
bastion_apt_updated=false
bastion_policy_rc_d_ours=false

# Installs the Debian packages among "$@" that are missing; `apt-get update`
# only when something must be installed, once per run. Package scripts may
# not start services meanwhile (no host sshd on :22, no stray dockerd):
# bastion starts what it needs itself.
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" == installed ]] || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    say "installing Debian packages: ${missing[*]}"
    local apt=(apt-get -q -o DPkg::Lock::Timeout=600)
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# bastion install.sh: no service starts during package installs\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        bastion_policy_rc_d_ours=true
    fi
    if [[ "$bastion_apt_updated" == false ]]; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >&2 ||
            { apt_release_policy; die "apt-get update failed: check /etc/apt/sources.list and the network"; }
        bastion_apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2 ||
        { apt_release_policy; die "apt-get install ${missing[*]} failed (output above)"; }
    apt_release_policy
}

apt_release_policy() {
    if [[ "$bastion_policy_rc_d_ours" == true ]]; then
        rm -f /usr/sbin/policy-rc.d
        bastion_policy_rc_d_ours=false
    fi
}

# -------------------------------------------------------------- helpers ---
# Installs file SRC at DEST with MODE and owner root:root when its content or
# mode differs; returns 0 when it changed something, 1 when DEST was current.
install_if_changed() {
    local src="$1" dest="$2" mode="$3"
    if [[ -f "$dest" ]] && cmp -s "$src" "$dest" &&
        [[ "$(stat -c '%a %u %g' "$dest")" == "${mode#0} 0 0" ]]; then
        return 1
    fi
    install -D -o root -g root -m "$mode" "$src" "$dest.bastion-new"
    mv -f "$dest.bastion-new" "$dest"
    return 0
}

# Creates directory DIR with MODE (and owner root:root), fixing an existing one.
ensure_dir() {
    local dir="$1" mode="$2"
    mkdir -p "$dir"
    chown root:root "$dir"
    chmod "$mode" "$dir"
}

# The cargo to build with: on PATH, or rustup's default places.
find_cargo() {
    local c home
    if c="$(command -v cargo)"; then
        echo "$c"
        return 0
    fi
    for home in ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)"} "${HOME:-/root}" /root; do
        if [[ -x "$home/.cargo/bin/cargo" ]]; then
            echo "$home/.cargo/bin/cargo"
            return 0
        fi
    done
    return 1
}

# Whether something listens on TCP ADDR:PORT (bash's /dev/tcp, no tools).
tcp_open() {
    local addr="$1" port="$2"
    (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null
}

# Whether a process listens on the unix socket at PATH.
unix_listening() {
    local path="$1"
    [[ -S "$path" ]] || return 1
    ss -xlnH 2>/dev/null | awk -v p="$path" '$5 == p { found = 1 } END { exit !found }'
}

# A `key = "value"` string of the [bastiond] table of the config, or DEFAULT.
config_bastiond_string() {
    local key="$1" default="$2" value=""
    if [[ -r "$BASTION_CONFIG" ]]; then
        value="$(awk -v key="$key" '
            /^[[:space:]]*\[/ { t = $0; gsub(/[[:space:]]/, "", t); in_table = (t == "[bastiond]"); next }
            in_table && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
                sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
            }' "$BASTION_CONFIG")"
    fi
    echo "${value:-$default}"
}

# A keyword's value in the bastion sshd_config (first occurrence), or DEFAULT.
sshd_config_value() {
    local key="$1" default="$2" value=""
    [[ -r "$BASTION_SSHD_CONFIG" ]] &&
        value="$(awk -v k="$key" 'tolower($1) == tolower(k) { print $2; exit }' "$BASTION_SSHD_CONFIG")"
    echo "${value:-$default}"
}

# ------------------------------------------------------------- services ---
# Each service is described by service_define NAME, which sets:
#   SVC_UNIT     systemd unit (used when systemd is PID 1)
#   SVC_SOCKET_UNIT  its socket unit, if any: stopped with it, or socket
#                activation would restart the service at the next request
#   SVC_CMD      command line (array) when run without systemd
#   SVC_EXE      the executable, to recognise the process behind a pidfile
#   SVC_PIDFILE  pidfile when run without systemd
#   SVC_LOG      log file (stdout+stderr) when run without systemd
#   SVC_WAIT     seconds `start` waits for readiness
#   SVC_READY    function: is the service ready? (no arguments)
#   SVC_PRESTART function run before starting (may fail with a clear error)
#   SVC_OWN_PIDFILE  a pidfile the daemon writes itself (or ""): finds an
#                instance started by someone else, so `stop` stops it too
#   SVC_SHARED   true when an instance started by someone else will do
#                (dockerd): `start` then leaves it alone
# To add a service, add a case here (and a unit in provisioning/systemd/).
readonly BASTION_SERVICES="bastiond sshd dockerd metadata-proxy"

service_define() {
    SVC_NAME="$1"
    SVC_PIDFILE="$BASTION_RUN/$1.pid"
    SVC_LOG="$BASTION_LOG_DIR/$1.log"
    SVC_PRESTART=:
    SVC_SHARED=false
    SVC_OWN_PIDFILE=""
    SVC_SOCKET_UNIT=""
    SVC_WAIT=30
    case "$1" in
    bastiond)
        SVC_UNIT=bastiond.service
        SVC_EXE=/usr/local/sbin/bastiond
        SVC_CMD=("$SVC_EXE" --config "$BASTION_CONFIG")
        SVC_READY=bastiond_ready
        SVC_PRESTART=bastiond_prestart
        ;;
    sshd)
        SVC_UNIT=bastion-sshd.service
        SVC_EXE=/usr/sbin/sshd
        # -D: stay in the foreground (we daemonize), -e: log to stderr (the log file).
        SVC_CMD=("$SVC_EXE" -D -e -f "$BASTION_SSHD_CONFIG")
        SVC_READY=sshd_ready
        SVC_PRESTART=sshd_prestart
        SVC_WAIT=15
        ;;
    dockerd)
        SVC_UNIT=docker.service
        SVC_SOCKET_UNIT=docker.socket
        SVC_EXE="$(command -v dockerd || echo /usr/sbin/dockerd)"
        SVC_CMD=("$SVC_EXE")
        SVC_READY=dockerd_ready
        SVC_PRESTART=dockerd_prestart
        SVC_SHARED=true
        SVC_OWN_PIDFILE=/var/run/docker.pid
        SVC_WAIT=60
        ;;
    metadata-proxy)
        SVC_UNIT=bastion-metadata-proxy.service
        SVC_EXE=/usr/local/sbin/bastion-metadata-proxy
        # The host credentials it assumes roles with (the demo's are fake
        # ones for the local STS server) come from an optional env file.
        # shellcheck disable=SC2016 # expanded by the inner bash
        SVC_CMD=(bash -c 'set -a; [ -r "$1" ] && . "$1"; set +a; exec "$2" --config "$3"' metadata-proxy
            "$BASTION_ETC/metadata-proxy.env" "$SVC_EXE" "$BASTION_CONFIG")
        SVC_READY=metadata_proxy_ready
        SVC_PRESTART=metadata_proxy_prestart
        ;;
    *) die "unknown service '$1' (known: $BASTION_SERVICES)" ;;
    esac
}

metadata_proxy_ready() { curl -fsS -m 1 http://127.0.0.1:8776/healthz >/dev/null 2>&1; }
metadata_proxy_prestart() {
    [[ -x "$SVC_EXE" ]] || die "$SVC_EXE is not installed: run provisioning/install.sh"
    # Never serve without the firewall in front (kube2iam #170).
    "$BASTION_PROVISIONING/metadata-proxy-iptables.sh" check >/dev/null ||
        die "the metadata proxy's iptables rules are missing: run provisioning/metadata-proxy-iptables.sh apply"
}

bastiond_socket() { config_bastiond_string socket "$BASTION_RUN/bastiond.sock"; }
bastiond_ready() { unix_listening "$(bastiond_socket)"; }
bastiond_prestart() {
    [[ -x "$SVC_EXE" ]] || die "$SVC_EXE is not installed: run provisioning/install.sh"
    [[ -f "$BASTION_CONFIG" ]] || die "$BASTION_CONFIG is missing: run provisioning/install.sh"
    local sock
    sock="$(bastiond_socket)"
    ! unix_listening "$sock" || die "another process already listens on $sock (ss -xlp | grep $sock)"
}

sshd_addr() { echo "${BASTION_SSH_ADDR:-$(sshd_config_value ListenAddress 127.0.0.1)}"; }
sshd_port() { echo "${BASTION_SSH_PORT:-$(sshd_config_value Port 2222)}"; }
sshd_ready() { tcp_open "$(sshd_addr)" "$(sshd_port)"; }
sshd_prestart() {
    [[ -f "$BASTION_SSHD_CONFIG" ]] || die "$BASTION_SSHD_CONFIG is missing: run provisioning/install.sh"
    # Privilege separation directory; shared with a host sshd, never removed.
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    local out
    out="$("$SVC_EXE" -t -f "$BASTION_SSHD_CONFIG" 2>&1)" || die "$BASTION_SSHD_CONFIG is invalid: $out"
    ! sshd_ready || die "$(sshd_addr):$(sshd_port) is already in use by another process (ss -ltnp | grep :$(sshd_port)); set BASTION_SSH_PORT to use another port"
}

dockerd_ready() { docker info >/dev/null 2>&1; }
dockerd_prestart() {
    [[ -x "$SVC_EXE" ]] || die "dockerd not found: apt-get install docker.io"
}

# The pid of the running service from its pidfile, if it is really the
# service's executable (a stale pidfile naming another process is ignored).
service_pid() {
    local file pid exe
    for file in "$SVC_PIDFILE" ${SVC_OWN_PIDFILE:+"$SVC_OWN_PIDFILE"}; do
        [[ -r "$file" ]] || continue
        pid="$(<"$file")"
        [[ "$pid" =~ ^[0-9]+$ && -d "/proc/$pid" ]] || continue
        exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
        [[ "${exe% (deleted)}" == "$(readlink -f "$SVC_EXE")" ]] || continue
        echo "$pid"
        return 0
    done
    return 1
}

service_is_running() {
    if is_systemd; then
        systemctl is-active --quiet "$SVC_UNIT"
    else
        service_pid >/dev/null
    fi
}

service_log_tail() {
    if is_systemd; then
        journalctl -u "$SVC_UNIT" -n 30 --no-pager >&2 || true
    elif [[ -r "$SVC_LOG" ]]; then
        say "last lines of $SVC_LOG:"
        tail -n 30 "$SVC_LOG" >&2
    fi
}

# Whether process PID exists and is not a zombie.
proc_alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat:0:1}" != Z ]]
}

# Waits up to SVC_WAIT seconds for SVC_READY; fails early if the process
# died: the process PID when given (just launched: it may still be exec'ing
# through setsid/env), else whatever service_is_running finds.
service_wait_ready() {
    local pid="${1:-}" deadline=$((SECONDS + SVC_WAIT))
    while ((SECONDS < deadline)); do
        "$SVC_READY" && return 0
        if [[ -n "$pid" ]]; then
            proc_alive "$pid"
        else
            service_is_running
        fi || {
            service_log_tail
            die "$SVC_NAME exited while starting (log above)"
        }
        sleep 0.1
    done
    service_log_tail
    die "$SVC_NAME did not become ready within ${SVC_WAIT}s (log above)"
}

service_start() {
    service_define "$1"
    if service_is_running; then
        service_wait_ready
        return 0
    fi
    if [[ "$SVC_SHARED" == true ]] && "$SVC_READY"; then
        say "$SVC_NAME is already running (started outside bastion-service; left alone)"
        return 0
    fi
    "$SVC_PRESTART"
    say "starting $SVC_NAME"
    local pid=""
    if is_systemd; then
        systemctl start "$SVC_UNIT" || {
            service_log_tail
            die "systemctl start $SVC_UNIT failed (log above)"
        }
    else
        ensure_dir "$BASTION_RUN" 0755
        ensure_dir "$BASTION_LOG_DIR" 0700
        touch "$SVC_LOG"
        chmod 0600 "$SVC_LOG"
        printf '\n=== %s: %s starting: %s\n' "$(date -u +%FT%TZ)" "$SVC_NAME" "${SVC_CMD[*]}" >>"$SVC_LOG"
        # A new session, no terminal, a clean environment (RUST_LOG passes).
        setsid env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} \
            "${SVC_CMD[@]}" </dev/null >>"$SVC_LOG" 2>&1 &
        pid=$!
        echo "$pid" >"$SVC_PIDFILE"
    fi
    service_wait_ready "$pid"
    say "$SVC_NAME is running"
}

service_stop() {
    service_define "$1"
    if is_systemd; then
        systemctl stop ${SVC_SOCKET_UNIT:+"$SVC_SOCKET_UNIT"} "$SVC_UNIT"
        return 0
    fi
    local pid
    if ! pid="$(service_pid)"; then
        rm -f "$SVC_PIDFILE"
        return 0
    fi
    say "stopping $SVC_NAME (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while [[ -d "/proc/$pid" ]] && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if [[ -d "/proc/$pid" ]]; then
        warn "$SVC_NAME (pid $pid) ignored SIGTERM for 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$SVC_PIDFILE"
}

service_status() {
    service_define "$1"
    if is_systemd; then
        systemctl status --no-pager "$SVC_UNIT"
        return
    fi
    local pid
    if pid="$(service_pid)"; then
        if "$SVC_READY"; then
            echo "$SVC_NAME: running (pid $pid), ready"
        else
            echo "$SVC_NAME: running (pid $pid), not ready"
            return 1
        fi
    else
        echo "$SVC_NAME: stopped"
        return 3
    fi
}
