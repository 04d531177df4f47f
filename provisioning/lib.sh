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
readonly BASTION_ACCESS="${BASTION_ACCESS:-$BASTION_ETC/access.toml}"
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
# Where install.sh puts these scripts (and the units run them from), so that
# an installed bastion needs no checkout.
readonly BASTION_LIB=/usr/local/lib/bastion
# The firewall's settings, derived from bastion.toml by install.sh: read by
# bastion-iptables.service (at boot, before Docker) and by this file.
readonly BASTION_IPTABLES_ENV="$BASTION_ETC/iptables.env"

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

# The effective value of setting KEY (e.g. sshd.listen) of the config, or
# DEFAULT: `bastionctl check --get KEY` (defaults included) when bastionctl
# knows the key; else the key read from its table in the file (a plain
# `key = "string"` or `key = number` line), else DEFAULT.
config_value() {
    local key="$1" default="$2" value table name
    if [[ -x "$BASTIONCTL" && -r "$BASTION_CONFIG" ]] &&
        value="$("$BASTIONCTL" check --config "$BASTION_CONFIG" --get "$key" 2>/dev/null)" &&
        [[ -n "$value" ]]; then
        echo "$value"
        return 0
    fi
    table="${key%.*}"
    name="${key##*.}"
    value=""
    if [[ -r "$BASTION_CONFIG" ]]; then
        value="$(awk -v table="[$table]" -v key="$name" '
            /^[[:space:]]*\[/ { t = $0; sub(/#.*/, "", t); gsub(/[[:space:]]/, "", t); in_table = (t == table); next }
            in_table && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
                sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*(#.*)?$/, "")
                gsub(/^"|"$/, ""); print; exit
            }' "$BASTION_CONFIG")"
    fi
    echo "${value:-$default}"
}

# Splits a socket address (0.0.0.0:2222, [::]:2222) into LISTEN_ADDR and
# LISTEN_PORT; fails on anything else.
split_listen() {
    local listen="$1"
    if [[ "$listen" =~ ^\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})$ || "$listen" =~ ^([0-9.]+):([0-9]{1,5})$ ]]; then
        LISTEN_ADDR="${BASH_REMATCH[1]}"
        LISTEN_PORT="${BASH_REMATCH[2]}"
        ((LISTEN_PORT >= 1 && LISTEN_PORT <= 65535))
    else
        return 1
    fi
}

# The first address of IPv4 network CIDR (its gateway, as bastiond makes it).
first_address() {
    local net="${1%/*}" a b c d
    IFS=. read -r a b c d <<<"$net"
    local n=$(((a << 24 | b << 16 | c << 8 | d) + 1))
    echo "$((n >> 24 & 255)).$((n >> 16 & 255)).$((n >> 8 & 255)).$((n & 255))"
}

# The firewall's options (metadata-proxy-iptables.sh) from
# /etc/bastion/iptables.env, into the array FIREWALL_ARGS; none when the
# file is absent (the script's defaults, those of bastion.toml).
firewall_args() {
    FIREWALL_ARGS=()
    [[ -r "$BASTION_IPTABLES_ENV" ]] || return 0
    local line key value p
    while IFS= read -r line; do
        [[ "$line" =~ ^([A-Z_]+)=([^[:space:]]*( [0-9]+)*)$ ]] || continue
        key="${BASH_REMATCH[1]}"
        value="${BASH_REMATCH[2]}"
        case "$key" in
        BASTION_BRIDGE) FIREWALL_ARGS+=(--bridge "$value") ;;
        BASTION_GATEWAY) FIREWALL_ARGS+=(--gateway "$value") ;;
        METADATA_PROXY_PORT) FIREWALL_ARGS+=(--port "$value") ;;
        BASTION_USERS_SUBNET) FIREWALL_ARGS+=(--users-subnet "$value") ;;
        BASTION_ALLOW_TCP) for p in $value; do FIREWALL_ARGS+=(--allow-tcp "$p"); done ;;
        esac
    done <"$BASTION_IPTABLES_ENV"
}

# TCP listeners on PORT, one line each: ADDRESS PID NAME (ss, root sees
# every process).
port_listeners() {
    ss -ltnpH "( sport = :$1 )" 2>/dev/null | awk '{
        addr = $4; sub(/:[0-9]+$/, "", addr); gsub(/[][]/, "", addr)
        pid = "?"; name = "?"
        if (match($0, /\("[^"]*",pid=[0-9]+/)) {
            s = substr($0, RSTART + 2, RLENGTH - 2); split(s, p, /",pid=/); name = p[1]; pid = p[2]
        }
        print addr, pid, name
    }'
}

# Whether listening addresses A and B overlap (equal, or either a wildcard).
addresses_overlap() {
    local a="$1" b="$2" w='^(0\.0\.0\.0|::|\*)$'
    [[ "$a" == "$b" || "$a" =~ $w || "$b" =~ $w ]]
}

# When another process than the bastion sshd (pid OURS, or none) listens
# where ADDR:PORT would, prints "ADDRESS PID NAME" of it and succeeds.
port_taken_by_other() {
    local addr="$1" port="$2" ours="${3:-}" a pid name
    while read -r a pid name; do
        [[ -n "$a" ]] || continue
        addresses_overlap "$addr" "$a" || continue
        [[ -n "$ours" && "$pid" == "$ours" ]] && continue
        echo "$a $pid $name"
        return 0
    done < <(port_listeners "$port")
    return 1
}

# The ports the host's own (admins') sshd is set up to listen on, whether
# it runs now or not: /etc/ssh/sshd_config (sshd -T, read only) and, under
# systemd, ssh.socket (Ubuntu 24.04 starts sshd by socket activation).
host_sshd_ports() {
    {
        if [[ -r /etc/ssh/sshd_config ]] && [[ -x /usr/sbin/sshd ]]; then
            /usr/sbin/sshd -T -f /etc/ssh/sshd_config 2>/dev/null | awk '$1 == "port" { print $2 }'
        fi
        if is_systemd && systemctl is-enabled --quiet ssh.socket 2>/dev/null; then
            systemctl show -p Listen --value ssh.socket 2>/dev/null | grep -o ':[0-9]* (Stream)' | tr -dc '0-9\n'
        fi
    } | sort -un
}

# When process PID started, in seconds since the epoch.
proc_start_epoch() {
    local pid="$1" stat rest btime ticks
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    rest="${stat##*) }"
    read -r -a fields <<<"$rest"
    btime="$(awk '$1 == "btime" { print $2 }' /proc/stat)"
    ticks="$(getconf CLK_TCK)"
    # starttime is the stat's field 22; the rest begins at field 3.
    echo $((btime + fields[19] / ticks))
}

# Why daemon PID runs with outdated inputs, if it does: its executable was
# replaced, or one of FILES changed after it started. Prints the reason.
process_outdated() {
    local pid="$1" started exe file
    shift
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    if [[ "$exe" == *" (deleted)" ]]; then
        echo "${exe% (deleted)} was replaced since it started"
        return 0
    fi
    started="$(proc_start_epoch "$pid")" || return 1
    for file in "$@"; do
        [[ -e "$file" ]] || continue
        if (($(stat -c %Y "$file") > started)); then
            echo "$file changed since it started"
            return 0
        fi
    done
    return 1
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
#   SVC_PIDFILE  pidfile when run without systemd (the daemon's own pid)
#   SVC_SUPERVISOR_PIDFILE  pidfile of its supervisor (without systemd)
#   SVC_LOG      log file (stdout+stderr) when run without systemd
#   SVC_WAIT     seconds `start` waits for readiness
#   SVC_READY    function: is the service ready? (no arguments)
#   SVC_CHECK    function: is its configuration valid? Prints the problem
#                and fails when not (`restart` refuses to stop anything then)
#   SVC_PRESTART function run before starting (may fail with a clear error)
#   SVC_OWN_PIDFILE  a pidfile the daemon writes itself (or ""): finds an
#                instance started by someone else, so `stop` stops it too
#   SVC_SHARED   true when an instance started by someone else will do
#                (dockerd): `start` then leaves it alone
# To add a service, add a case here (and a unit in provisioning/systemd/).
#
# Without systemd, `start` runs a supervisor (`bastion-service supervise
# NAME`, a bash loop, in its own session) that launches the daemon and
# launches it again when it exits unexpectedly, like the units'
# Restart=: after 1, 2, 4, 8, 16 s; at most SVC_MAX_RESTARTS restarts within
# SVC_RESTART_WINDOW seconds, then it gives up. It logs each exit and
# restart in SVC_LOG. `stop` stops the supervisor first, then the daemon.
readonly BASTION_SERVICES="bastiond sshd dockerd metadata-proxy"
readonly BASTIONCTL=/usr/local/bin/bastionctl
readonly SVC_MAX_RESTARTS=5
readonly SVC_RESTART_WINDOW=60
# The clean environment of supervisors and daemons (plus RUST_LOG if set).
readonly SVC_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

service_define() {
    SVC_NAME="$1"
    SVC_PIDFILE="$BASTION_RUN/$1.pid"
    SVC_SUPERVISOR_PIDFILE="$BASTION_RUN/$1.supervisor.pid"
    SVC_LOG="$BASTION_LOG_DIR/$1.log"
    SVC_PRESTART=:
    SVC_CHECK=:
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
        SVC_CHECK=bastion_config_check
        SVC_PRESTART=bastiond_prestart
        ;;
    sshd)
        SVC_UNIT=bastion-sshd.service
        SVC_EXE=/usr/sbin/sshd
        # -D: stay in the foreground (we daemonize), -e: log to stderr (the log file).
        SVC_CMD=("$SVC_EXE" -D -e -f "$BASTION_SSHD_CONFIG")
        SVC_READY=sshd_ready
        SVC_CHECK=sshd_config_check
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
        # The inner bash execs the proxy: the pid stays the proxy's.
        # shellcheck disable=SC2016 # expanded by the inner bash
        SVC_CMD=(bash -c 'set -a; [ -r "$1" ] && . "$1"; set +a; exec "$2" --config "$3"' metadata-proxy
            "$BASTION_ETC/metadata-proxy.env" "$SVC_EXE" "$BASTION_CONFIG")
        SVC_READY=metadata_proxy_ready
        SVC_CHECK=bastion_config_check
        SVC_PRESTART=metadata_proxy_prestart
        ;;
    *) die "unknown service '$1' (known: $BASTION_SERVICES)" ;;
    esac
}

# bastion.toml, as the daemons will read it (they refuse to start otherwise).
bastion_config_check() {
    [[ -x "$BASTIONCTL" ]] || {
        echo "$BASTIONCTL is not installed (run provisioning/install.sh)"
        return 1
    }
    local out
    out="$("$BASTIONCTL" check --config "$BASTION_CONFIG" 2>&1 >/dev/null)" && return 0
    out="${out#bastionctl: }"
    echo "${out//$'\n'/; }"
    return 1
}

sshd_config_check() {
    [[ -f "$BASTION_SSHD_CONFIG" ]] || {
        echo "$BASTION_SSHD_CONFIG is missing (run provisioning/install.sh)"
        return 1
    }
    # sshd -t needs its privilege separation directory.
    mkdir -p /run/sshd
    local out
    out="$("$SVC_EXE" -t -f "$BASTION_SSHD_CONFIG" 2>&1)" && return 0
    echo "${out//$'\n'/; }"
    return 1
}

# The proxy's /healthz, where bastion.toml puts its admin listener.
metadata_proxy_ready() {
    [[ -n "${BASTION_PROXY_ADMIN:-}" ]] || BASTION_PROXY_ADMIN="$(config_value metadata_proxy.admin_listen 127.0.0.1:8776)"
    curl -fsS -m 1 "http://$BASTION_PROXY_ADMIN/healthz" >/dev/null 2>&1
}
metadata_proxy_prestart() {
    [[ -x "$SVC_EXE" ]] || die "$SVC_EXE is not installed: run provisioning/install.sh"
    local problem
    problem="$(bastion_config_check)" || die "$BASTION_CONFIG is invalid: $problem"
    # Never serve without the firewall in front (kube2iam #170), with the
    # settings install.sh derived from bastion.toml.
    firewall_args
    "$BASTION_PROVISIONING/metadata-proxy-iptables.sh" check "${FIREWALL_ARGS[@]}" >/dev/null ||
        die "the metadata proxy's iptables rules are missing: run $BASTION_PROVISIONING/metadata-proxy-iptables.sh apply ${FIREWALL_ARGS[*]}"
}

bastiond_socket() { config_bastiond_string socket "$BASTION_RUN/bastiond.sock"; }
bastiond_ready() { unix_listening "$(bastiond_socket)"; }
bastiond_prestart() {
    [[ -x "$SVC_EXE" ]] || die "$SVC_EXE is not installed: run provisioning/install.sh"
    [[ -f "$BASTION_CONFIG" ]] || die "$BASTION_CONFIG is missing: run provisioning/install.sh"
    local problem
    problem="$(bastion_config_check)" || die "$BASTION_CONFIG is invalid: $problem"
    local sock
    sock="$(bastiond_socket)"
    ! unix_listening "$sock" || die "another process already listens on $sock (ss -xlp | grep $sock)"
}

sshd_addr() { echo "${BASTION_SSH_ADDR:-$(sshd_config_value ListenAddress 127.0.0.1)}"; }
sshd_port() { echo "${BASTION_SSH_PORT:-$(sshd_config_value Port 2222)}"; }
sshd_ready() { tcp_open "$(sshd_addr)" "$(sshd_port)"; }
sshd_prestart() {
    # Privilege separation directory; shared with a host sshd, never removed.
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    local problem
    problem="$(sshd_config_check)" || die "$BASTION_SSHD_CONFIG is invalid: $problem"
    local taken
    if taken="$(port_taken_by_other "$(sshd_addr)" "$(sshd_port)")"; then
        die "$(sshd_addr):$(sshd_port) is taken: ${taken##* } (pid $(cut -d' ' -f2 <<<"$taken")) listens on ${taken%% *}:$(sshd_port). Choose another port: [sshd] listen in $BASTION_CONFIG (e.g. listen = \"0.0.0.0:2022\"), then run provisioning/install.sh; for --demo/--test set BASTION_SSH_PORT"
    fi
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

# The pid of the service's supervisor, if one runs (its pidfile names a
# live `bastion-service supervise NAME`).
service_supervisor_pid() {
    local pid args
    [[ -r "$SVC_SUPERVISOR_PIDFILE" ]] || return 1
    pid="$(<"$SVC_SUPERVISOR_PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] && proc_alive "$pid" || return 1
    args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$args" == *"/bastion-service supervise $SVC_NAME " ]] || return 1
    echo "$pid"
}

# Running, or about to be again: its supervisor is between two launches.
service_is_running() {
    if is_systemd; then
        systemctl is-active --quiet "$SVC_UNIT"
    else
        service_pid >/dev/null || service_supervisor_pid >/dev/null
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

# Waits up to SVC_WAIT seconds for SVC_READY. Fails early when the service
# is gone. SUPERVISOR, when given, is the supervisor `service_start` just
# launched (it may still be exec'ing through setsid/env): starting failed
# when it exits, or when the first daemon it launched exits before being
# ready; the supervisor is then stopped (a daemon that cannot start is not
# restarted in a loop). Otherwise whatever service_is_running finds.
service_wait_ready() {
    local supervisor="${1:-}" deadline=$((SECONDS + SVC_WAIT)) first=""
    while ((SECONDS < deadline)); do
        "$SVC_READY" && return 0
        if [[ -n "$supervisor" ]]; then
            [[ -n "$first" ]] || first="$(cat "$SVC_PIDFILE" 2>/dev/null || true)"
            if ! proc_alive "$supervisor" || { [[ -n "$first" ]] && ! proc_alive "$first"; }; then
                service_stop_supervisor "$supervisor"
                # (It may have launched the daemon again meanwhile.)
                local pid
                if pid="$(service_pid)"; then
                    service_kill "$pid"
                fi
                rm -f "$SVC_PIDFILE" "$SVC_SUPERVISOR_PIDFILE"
                service_log_tail
                die "$SVC_NAME exited while starting (log above)"
            fi
        elif ! service_is_running; then
            service_log_tail
            die "$SVC_NAME exited while starting (log above)"
        fi
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
    local supervisor=""
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
        rm -f "$SVC_PIDFILE"
        # The supervisor: a new session, no terminal, a clean environment
        # (RUST_LOG passes), which its daemon inherits. It writes the
        # daemon's pidfile.
        setsid env -i "${SVC_ENV[@]}" ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} "BASTION_CONFIG=$BASTION_CONFIG" \
            "$BASTION_PROVISIONING/bastion-service" supervise "$SVC_NAME" </dev/null >>"$SVC_LOG" 2>&1 &
        supervisor=$!
        echo "$supervisor" >"$SVC_SUPERVISOR_PIDFILE"
    fi
    service_wait_ready "$supervisor"
    say "$SVC_NAME is running"
}

# The supervisor's loop (bastion-service supervise NAME; runs in SVC_LOG).
# SIGTERM/SIGINT/SIGHUP make it exit, leaving the daemon to `service_stop`;
# the signal may land while it launches the daemon, so the stopper repeats
# it until the supervisor is gone.
# Closes every descriptor above stderr this shell inherited (but its own
# script's, 255), so that daemons hold nothing of whoever started them: a
# lock the caller held (`flock LOCK install.sh`) would otherwise stay held
# for as long as the daemons run.
close_inherited_fds() {
    local fd
    for fd in "/proc/$$/fd"/*; do
        fd="${fd##*/}"
        if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2 && fd != 255)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
}

service_supervise() {
    close_inherited_fds
    service_define "$1"
    local stopping=false child status how delay now t recent restarts=()
    trap 'stopping=true' TERM INT HUP
    # shellcheck disable=SC2064 # this supervisor's own pid, now
    trap "[[ \"\$(cat '$SVC_SUPERVISOR_PIDFILE' 2>/dev/null)\" != $$ ]] || rm -f '$SVC_SUPERVISOR_PIDFILE'" EXIT
    supervisor_log() { printf '=== %s: %s\n' "$(date -u +%FT%TZ)" "$*"; }
    supervisor_log "$SVC_NAME supervisor (pid $$) started: restarts $SVC_NAME when it exits unexpectedly (at most $SVC_MAX_RESTARTS times within ${SVC_RESTART_WINDOW}s)"
    while true; do
        supervisor_log "$SVC_NAME starting: ${SVC_CMD[*]}"
        # bash forks, then execs env, which execs the command: $! is the
        # daemon's own pid.
        env -i "${SVC_ENV[@]}" ${RUST_LOG:+"RUST_LOG=$RUST_LOG"} "${SVC_CMD[@]}" </dev/null &
        child=$!
        echo "$child" >"$SVC_PIDFILE"
        status=0
        [[ "$stopping" == true ]] || wait "$child" 2>/dev/null || status=$?
        if [[ "$stopping" == true ]]; then
            supervisor_log "$SVC_NAME supervisor stopping, asked to by bastion-service: $SVC_NAME (pid $child) is not restarted"
            exit 0
        fi
        if ((status > 128)); then
            how="was killed by signal $(kill -l $((status - 128)) 2>/dev/null || echo $((status - 128)))"
        else
            how="exited with status $status"
        fi
        now=$EPOCHSECONDS
        recent=()
        for t in "${restarts[@]}"; do
            if ((now - t < SVC_RESTART_WINDOW)); then
                recent+=("$t")
            fi
        done
        restarts=("${recent[@]}")
        if ((${#restarts[@]} >= SVC_MAX_RESTARTS)); then
            supervisor_log "$SVC_NAME (pid $child) $how; it was restarted ${#restarts[@]} times within ${SVC_RESTART_WINDOW}s: giving up. Find the cause above, then run: $BASTION_PROVISIONING/bastion-service start $SVC_NAME"
            rm -f "$SVC_PIDFILE"
            exit 1
        fi
        delay=$((1 << ${#restarts[@]}))
        supervisor_log "$SVC_NAME (pid $child) $how; restarting it in ${delay}s (restart $((${#restarts[@]} + 1)) of at most $SVC_MAX_RESTARTS within ${SVC_RESTART_WINDOW}s)"
        sleep "$delay" &
        wait $! || true
        kill $! 2>/dev/null || true
        if [[ "$stopping" == true ]]; then
            supervisor_log "$SVC_NAME supervisor stopping, asked to by bastion-service: $SVC_NAME is not restarted"
            rm -f "$SVC_PIDFILE"
            exit 0
        fi
        restarts+=("$EPOCHSECONDS")
    done
}

# Stops supervisor SUP: SIGTERM (repeated: it may be launching the daemon
# when the first arrives), at most 10 s, then SIGKILL. The daemon is left
# running, unsupervised.
service_stop_supervisor() {
    local sup="$1" deadline=$((SECONDS + 10))
    while proc_alive "$sup" && ((SECONDS < deadline)); do
        kill -TERM "$sup" 2>/dev/null || true
        sleep 0.2
    done
    if proc_alive "$sup"; then
        warn "the supervisor of $SVC_NAME (pid $sup) ignored SIGTERM for 10s; killing it"
        kill -KILL "$sup" 2>/dev/null || true
    fi
}

service_stop() {
    service_define "$1"
    if is_systemd; then
        systemctl stop ${SVC_SOCKET_UNIT:+"$SVC_SOCKET_UNIT"} "$SVC_UNIT"
        return 0
    fi
    local pid supervisor=""
    # First the supervisor, so that nothing restarts the daemon.
    if supervisor="$(service_supervisor_pid)"; then
        say "stopping the supervisor of $SVC_NAME (pid $supervisor)"
        service_stop_supervisor "$supervisor"
    fi
    rm -f "$SVC_SUPERVISOR_PIDFILE"
    if ! pid="$(service_pid)"; then
        rm -f "$SVC_PIDFILE"
        return 0
    fi
    say "stopping $SVC_NAME (pid $pid)"
    service_kill "$pid"
    rm -f "$SVC_PIDFILE"
    if [[ -w "$SVC_LOG" ]]; then
        printf '=== %s: %s (pid %s) stopped by bastion-service stop\n' "$(date -u +%FT%TZ)" "$SVC_NAME" "$pid" >>"$SVC_LOG"
    fi
}

# Stops the daemon PID: SIGTERM, then SIGKILL if it is still there after 30 s.
service_kill() {
    local pid="$1" deadline=$((SECONDS + 30))
    kill -TERM "$pid" 2>/dev/null || true
    while proc_alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if proc_alive "$pid"; then
        warn "$SVC_NAME (pid $pid) ignored SIGTERM for 30s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

# `restart` checks the configuration first: a daemon that works is never
# stopped for one that cannot start.
service_restart() {
    service_define "$1"
    local problem state="it is not running"
    if ! problem="$("$SVC_CHECK")"; then
        service_is_running && state="$SVC_NAME keeps running with the configuration it loaded"
        die "not restarting $SVC_NAME, its configuration is invalid: $problem ($state; fix the file, then run this again)"
    fi
    service_stop "$1"
    service_start "$1"
}

service_status() {
    service_define "$1"
    if is_systemd; then
        systemctl status --no-pager "$SVC_UNIT"
        return
    fi
    local pid supervisor supervised=""
    supervisor="$(service_supervisor_pid)" && supervised=", supervised by pid $supervisor"
    if pid="$(service_pid)"; then
        if "$SVC_READY"; then
            echo "$SVC_NAME: running (pid $pid$supervised), ready"
        else
            echo "$SVC_NAME: running (pid $pid$supervised), not ready"
            return 1
        fi
    elif [[ -n "$supervisor" ]]; then
        echo "$SVC_NAME: down, being restarted by its supervisor (pid $supervisor; log $SVC_LOG)"
        return 1
    else
        echo "$SVC_NAME: stopped"
        return 3
    fi
}
