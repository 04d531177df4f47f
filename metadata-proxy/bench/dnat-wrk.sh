#!/usr/bin/env bash
# Benchmark of bastion-metadata-proxy through the real DNAT path (not a test):
# cached credential requests from inside a user container's network
# namespace to http://169.254.169.254/..., with wrk at 1/16/64 connections;
# the first credential request of new containers (prefetched); the proxy's
# RSS with N user containers known; then the same wrk runs against nginx
# serving a static 500-byte JSON on the same DNAT path (the ceiling), and
# with lyft's metadataproxy (what bastion replaces) on the same path, side by
# side on the same machine and load.
#
#   sudo metadata-proxy/bench/dnat-wrk.sh [--duration 10s] [--containers 200] [--no-nginx] [--no-metadataproxy]
#
# PROXY_BIN=FILE runs that proxy binary instead of building this tree's
# (metadata-proxy/bench/ab.sh compares two builds that way).
#
# lyft's metadataproxy 2.2.0 pins 2018 libraries that no longer build on
# Python 3.11 (PyYAML 5.4, gevent 1.3, greenlet 0.4): it is installed from
# PyPI into its own venv (/opt/bastion/bench/metadataproxy) with --no-deps,
# beside current Flask, gevent, gunicorn and boto3 and the docker-py 1.10.6
# it needs (with requests < 2.29, urllib3 < 2, which docker-py 1.x needs).
# It runs as its README says (gunicorn, one gevent worker), with
# DEFAULT_ACCOUNT_ID set (no IAM call) and STS pointed at moto.
#
# Uses its own network bastion-mpt (172.30.200.0/24, like the integration
# tests) and moto on loopback; cleans up what it started. Needs: root,
# Docker, the image bastion/user:latest, wrk (apt-get install wrk), moto
# (provisioning/sts-demo.sh install), cargo.
set -euo pipefail

duration=10s
containers=200
nginx=true
metadataproxy=true
while (($#)); do
    case "$1" in
    --duration) duration="$2"; shift ;;
    --containers) containers="$2"; shift ;;
    --no-nginx) nginx=false ;;
    --no-metadataproxy) metadataproxy=false ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    shift
done

die() { echo "dnat-wrk: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root (Docker, iptables, nsenter)"
command -v wrk >/dev/null || die "wrk missing: apt-get install wrk"
! $nginx || command -v nginx >/dev/null || die "nginx missing: apt-get install nginx-light (or pass --no-nginx)"
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer"
docker image inspect bastion/user:latest >/dev/null 2>&1 || die "image bastion/user:latest missing: image/build.sh"
moto=/opt/bastion/moto/bin/moto_server
[[ -x "$moto" ]] || die "moto missing: provisioning/sts-demo.sh install"

repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../.." && pwd)"
if [[ -n ${PROXY_BIN:-} ]]; then
    proxy_bin="$PROXY_BIN"
    [[ -x $proxy_bin ]] || die "PROXY_BIN $proxy_bin is not an executable"
else
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target-proxy}"
    (cd "$repo" && cargo build --release -q -p bastion-metadata-proxy)
    proxy_bin="$CARGO_TARGET_DIR/release/bastion-metadata-proxy"
fi

network=bastion-mpt subnet=172.30.200.0/24 gateway=172.30.200.1
docker network inspect "$network" >/dev/null 2>&1 ||
    docker network create --driver bridge --subnet "$subnet" --gateway "$gateway" \
        --opt "com.docker.network.bridge.name=$network" \
        --opt com.docker.network.bridge.enable_icc=false "$network" >/dev/null
# Only this bridge: never the users' own bridges (bst+), which belong to
# the bastion running on this host.
iptables_args=(--bridge "$network" --gateway "$gateway" --port 8775 --users-bridges none)
"$repo/provisioning/metadata-proxy-iptables.sh" apply "${iptables_args[@]}" >/dev/null

work="$(mktemp -d)"
moto_port=$((20000 + RANDOM % 10000))
admin_port=$((30000 + RANDOM % 10000))
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    docker ps -aq --filter label=bastion.bench=dnat-wrk | xargs -r docker rm -f >/dev/null 2>&1 || true
    "$repo/provisioning/metadata-proxy-iptables.sh" remove "${iptables_args[@]}" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

"$moto" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
cat >"$work/bastion.toml" <<TOML
[metadata_proxy]
admin_listen = "127.0.0.1:$admin_port"
account_id = "123456789012"
sts_endpoint = "http://127.0.0.1:$moto_port"
sts_region = "us-east-1"
imds_upstream = "http://127.0.0.1:$moto_port"

[bastiond.network]
name = "$network"
subnet = "$subnet"

[recording]
audit_log = "$work/audit/audit.jsonl"
syslog = false
TOML
chmod 600 "$work/bastion.toml"
sleep 2
AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench "$proxy_bin" --config "$work/bastion.toml" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 60); do
    curl -fsS "127.0.0.1:$admin_port/healthz" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -fsS "127.0.0.1:$admin_port/healthz" >/dev/null || { cat "$work/proxy.log"; die "the proxy did not become healthy"; }

start_container() { # NAME -> pid of its init
    docker run -d --name "bastion-$1" --network "$network" --label bastion.bench=dnat-wrk \
        --label "bastion.user=$1" --label bastion.role=dev -e IAM_ROLE=dev \
        --entrypoint sleep bastion/user:latest infinity >/dev/null
    docker inspect -f '{{.State.Pid}}' "bastion-$1"
}

url=http://169.254.169.254/latest/meta-data/iam/security-credentials/dev
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "proxy: ${PROXY_BIN:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), release build}"
pid="$(start_container mpbench-wrk)"
nsenter -t "$pid" -n curl -fsS -o /dev/null "$url"
run_wrk() { # TITLE
    echo
    echo "$1, wrk inside the container's netns, through DNAT ($duration each):"
    printf '%-12s %12s %10s %10s\n' connections req/s p50 p99
    local c t out
    for c in 1 16 64; do
        t=2
        ((c == 1)) && t=1
        out="$(nsenter -t "$pid" -n wrk -t"$t" -c"$c" -d"$duration" --latency "$url")"
        grep -q "Non-2xx" <<<"$out" && die "non-2xx answers during the run: $out"
        printf '%-12s %12s %10s %10s\n' "$c" \
            "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
            "$(awk '$1 == "50%" {print $2}' <<<"$out")" \
            "$(awk '$1 == "99%" {print $2}' <<<"$out")"
    done
}
run_wrk "bastion-metadata-proxy, cached credentials"

echo
echo "first credential request of a new container, right after 'docker run' returns:"
for i in 1 2 3 4 5; do
    p="$(start_container "mpbench-first$i")"
    nsenter -t "$p" -n curl -fsS -o /dev/null -w "  %{time_total}s\n" "$url"
done

if ((containers > 0)); then
    echo
    echo "RSS with $containers more user containers known:"
    seq 1 "$containers" | xargs -P 4 -I{} sh -c "docker run -d --name bastion-mpbench-rss{} --network $network --label bastion.bench=dnat-wrk --label bastion.user=mpbench-rss{} --label bastion.role=dev --entrypoint sleep bastion/user:latest infinity >/dev/null"
    sleep 5
    curl -fsS "127.0.0.1:$admin_port/metrics" | grep -E '^bastion_metadata_proxy_(containers_known|sts_assume_role_calls_total)'
    echo "  proxy RSS: $(ps -o rss= -p "$proxy_pid") KiB"
fi

kill "$proxy_pid"
wait "$proxy_pid" 2>/dev/null || true
wait_for_answer() {
    for _ in $(seq 100); do
        nsenter -t "$pid" -n curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
        sleep 0.2
    done
    die "nothing answers $url through DNAT"
}

if $metadataproxy; then
    venv=/opt/bastion/bench/metadataproxy
    if [[ ! -x $venv/bin/gunicorn ]] || ! "$venv/bin/python" -c 'import metadataproxy, gevent, packaging' 2>/dev/null; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --no-deps metadataproxy==2.2.0
        # (pip then warns that metadataproxy's pins are not met: expected.)
        "$venv/bin/pip" install -q docker-py==1.10.6 'requests<2.29' 'urllib3<2' flask gunicorn gevent packaging \
            boto3 cachetools python-json-logger pyyaml blinker python-dateutil
    fi
    (cd "$work" && AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 \
        AWS_ENDPOINT_URL_STS="http://127.0.0.1:$moto_port" DEFAULT_ACCOUNT_ID=123456789012 \
        exec "$venv/bin/gunicorn" metadataproxy:app --workers=1 -k gevent --bind "$gateway:8775" \
        >"$work/metadataproxy.log" 2>&1) &
    mdp_pid=$!
    pids+=("$mdp_pid")
    wait_for_answer
    run_wrk "lyft metadataproxy 2.2.0 (gunicorn, 1 gevent worker), cached credentials"
    kill "$mdp_pid"
    wait "$mdp_pid" 2>/dev/null || true
fi

if $nginx; then
    # The ceiling: nginx serving a static 500-byte JSON on the same address,
    # port and path, in place of the proxy.
    mkdir -p "$work/www/latest/meta-data/iam/security-credentials"
    chmod -R a+rX "$work/www"
    chmod a+x "$work" # nginx's workers run as nobody
    head -c 500 /dev/zero | tr '\0' 'x' | sed 's/^/{"k":"/; s/.\{8\}$/"}/' >"$work/www/latest/meta-data/iam/security-credentials/dev"
    cat >"$work/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx.err;
events {}
http {
    access_log off;
    server {
        listen $gateway:8775;
        root $work/www;
        default_type text/plain;
    }
}
NGINX
    nginx -c "$work/nginx.conf" &
    pids+=($!)
    wait_for_answer
    run_wrk "nginx, static 500-byte JSON (the ceiling)"
fi
