#!/usr/bin/env bash
# The demo's STS-compatible server (moto from PyPI, in a venv), so a
# newcomer's bastion hands out real assumed-role credentials without AWS.
#
#   provisioning/sts-demo.sh install   venv /opt/bastion/moto with moto[server] (idempotent)
#   provisioning/sts-demo.sh start     run it in the background (pidfile, log); waits until ready
#   provisioning/sts-demo.sh stop      stop what `start` started
#   provisioning/sts-demo.sh status    exit 0 when it answers
#   provisioning/sts-demo.sh ready     wait (15 s at most) until it answers on the gateway too
#   provisioning/sts-demo.sh run       run it in the foreground (systemd unit)
#
# It listens on 127.0.0.1:PORT (the metadata proxy's sts_endpoint: all of
# moto, its admin API /moto-api/ included; only root may connect there, an
# iptables owner match refuses every other local account) and on GATEWAY:PORT (the users'
# containers: bastiond sets AWS_ENDPOINT_URL_STS to http://GATEWAY:PORT; the
# iptables script must then be applied with --allow-tcp PORT), where it
# answers sts:GetCallerIdentity only and refuses everything else with a 403
# (sts-demo-server.py). Never on any other address.
#
# Environment: STS_DEMO_PORT (5000), BASTION_GATEWAY (172.30.0.1),
# STS_DEMO_VENV (/opt/bastion/moto).
set -euo pipefail

port="${STS_DEMO_PORT:-5000}"
gateway="${BASTION_GATEWAY:-172.30.0.1}"
venv="${STS_DEMO_VENV:-/opt/bastion/moto}"
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
server_py="$here/sts-demo-server.py"
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh" # close_inherited_fds
pidfile=/run/bastion/sts-demo.pid
log=/var/log/bastion/sts-demo.log

die() {
    echo "sts-demo: $*" >&2
    exit 1
}

answers() {
    # Any HTTP answer from moto on ADDRESS (loopback by default) means it is
    # up (the gateway answers this one with its 403).
    local address="${1:-127.0.0.1}"
    (exec 3<>"/dev/tcp/$address/$port" && printf 'GET /moto-api/ HTTP/1.0\r\n\r\n' >&3 && head -c 12 <&3 | grep -q HTTP) 2>/dev/null
}

# The gateway address exists once bastiond has created the bastion network;
# the server binds it within a second of that.
ready() {
    local i
    for ((i = 0; i < 30; i++)); do
        answers "$gateway" && return 0
        sleep 0.5
    done
    die "moto does not answer on $gateway:$port (does the bastion network exist? docker network inspect bastion0; log $log)"
}

install() {
    if [[ -x "$venv/bin/moto_server" ]]; then
        return 0
    fi
    command -v python3 >/dev/null || die "python3 not found: apt-get install python3 python3-venv"
    python3 -m venv "$venv" || die "cannot create the venv $venv: apt-get install python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' ||
        die "pip could not install moto[server] into $venv (is PyPI reachable?)"
    echo "sts-demo: installed moto in $venv"
}

run() {
    [[ -x "$venv/bin/python" ]] || die "no venv at $venv: run '$0 install' first"
    # Hold nothing of whoever started it.
    close_inherited_fds
    exec "$venv/bin/python" "$server_py" "$port" 127.0.0.1 "$gateway"
}

# Loopback serves all of moto (every issued secret, AssumeRole into any
# role): only root (the metadata proxy) may connect to it; other local
# accounts are refused by the kernel.
guard_loopback() {
    command -v iptables >/dev/null || return 0
    local rule=(OUTPUT -o lo -p tcp -d 127.0.0.1 --dport "$port" -m owner ! --uid-owner 0
        -m comment --comment bastion-sts-demo -j REJECT --reject-with tcp-reset)
    iptables -w -C "${rule[@]}" 2>/dev/null || iptables -w -I "${rule[@]}"
}

start() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    guard_loopback
    install
    if answers; then
        echo "sts-demo: already answering on 127.0.0.1:$port"
        return 0
    fi
    mkdir -p /run/bastion /var/log/bastion
    chmod 0700 /var/log/bastion
    setsid "$0" run </dev/null >>"$log" 2>&1 &
    echo $! >"$pidfile"
    local i
    for ((i = 0; i < 60; i++)); do
        answers && {
            echo "sts-demo: STS on 127.0.0.1:$port, and on $gateway:$port once the bastion network exists (log $log)"
            return 0
        }
        kill -0 "$(cat "$pidfile")" 2>/dev/null || break
        sleep 0.5
    done
    tail -n 20 "$log" >&2
    die "moto did not answer on 127.0.0.1:$port within 30 s (log above)"
}

stop() {
    [[ -f "$pidfile" ]] || return 0
    local pid
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local i
        for ((i = 0; i < 20; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
    fi
    rm -f "$pidfile"
    echo "sts-demo: stopped"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop ;;
status)
    if answers; then echo "sts-demo: answering on 127.0.0.1:$port"; else die "not answering on 127.0.0.1:$port"; fi
    ;;
run) run ;;
ready) ready ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
