#!/usr/bin/env bash
# Brings up bastion on this machine, idempotently (a second run is fast and
# changes nothing that is already right).
#
#   sudo provisioning/install.sh --demo   a working bastion with demo users alice and bob
#   sudo provisioning/install.sh --test   what the test suite needs (--demo plus test tools;
#                                         used by ./test.sh)
#   sudo provisioning/install.sh --down   stop what --demo/--test started (sshd, bastiond, the
#                                         metadata proxy, the demo STS server, and dockerd if
#                                         this script started it); data stays
#
# Steps: Debian packages (apt-get update only when something is missing), the
# Docker Engine (started if it does not answer), the Rust binaries (cargo
# build --release, installed when changed), /etc/bastion (config, sshd config
# and host keys, authorized keys), the users' image (image/build.sh), the
# bastion sshd on 127.0.0.1:2222 and bastiond (provisioning/bastion-service).
#
# Environment: BASTION_SSH_ADDR, BASTION_SSH_PORT (sshd's address, default
# 127.0.0.1:2222), CARGO_TARGET_DIR, RUST_LOG (passed to bastiond).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

readonly DEMO_DIR="$BASTION_ETC/demo"
readonly DEMO_USERS=(alice bob)
# Their access-file groups (provisioning/demo-access.toml): their levels.
declare -rA DEMO_GROUPS=([alice]=demo-powerusers [bob]=demo-readers)
readonly IMAGE_TAG=bastion/user:latest
readonly DOCKERD_MARKER="$BASTION_RUN/dockerd.started-by-install"
readonly STS_DEMO_PORT="${STS_DEMO_PORT:-5000}"
mode=demo

# What a bastion host runs on. iproute2 (ss) and util-linux (setsid, flock)
# are used by these scripts.
readonly BASE_PACKAGES=(
    docker.io openssh-server openssh-client debootstrap rsync iptables
    kubectx awscli asciinema tmux iproute2 util-linux ca-certificates
)
# What the test suite needs on top: a venv for moto (the STS server, installed
# by provisioning/sts-demo.sh), tmux to drive interactive sessions, prometheus
# for promtool (the proxy's /metrics is checked with it; its service is not
# started; curl sends the EKS token's presigned request in the access tests).
readonly TEST_PACKAGES=(python3-venv python3-pip tmux chromium logrotate wrk prometheus curl)

usage() {
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

step() { say "-- $*"; }

ensure_packages() {
    local packages=("${BASE_PACKAGES[@]}")
    if [[ "$mode" == test ]]; then
        packages+=("${TEST_PACKAGES[@]}")
    fi
    apt_ensure "${packages[@]}"
    # The image copies the host's kubectl. Debian 12 has only kubectl 1.20
    # (kubernetes-client): used when the host has no kubectl of its own.
    if [[ ! -x "$(readlink -f /usr/bin/kubectl 2>/dev/null || echo /nonexistent)" ]]; then
        warn "no /usr/bin/kubectl on this host: installing Debian's kubernetes-client (kubectl 1.20, old; put a current static kubectl at /usr/bin/kubectl and re-run to use it)"
        apt_ensure kubernetes-client
    fi
}

ensure_docker() {
    if dockerd_ready; then
        return 0
    fi
    if is_systemd && systemctl is-active --quiet docker.service; then
        # Up but not answering yet (just started by someone else).
        service_define dockerd
        service_wait_ready
        return 0
    fi
    service_start dockerd
    ensure_dir "$BASTION_RUN" 0755
    : >"$DOCKERD_MARKER"
}

ensure_layout() {
    ensure_dir "$BASTION_ETC" 0755
    ensure_dir "$BASTION_ETC/kubeconfigs" 0755
    ensure_dir "$BASTION_KEYS_DIR" 0755
    ensure_dir "$BASTION_SSHD_DIR" 0755
    ensure_dir "$BASTION_LOG_DIR" 0700
    ensure_dir /var/lib/bastion 0755
    ensure_dir /var/lib/bastion/homes 0755
    ensure_dir "$BASTION_HOST_HOME" 0555
    ensure_dir "$BASTION_RUN" 0755
    getent group "$BASTION_USERS_GROUP" >/dev/null || groupadd --system "$BASTION_USERS_GROUP"
}

# Builds the workspace's binaries (as the sudo caller when they own the
# repo, so target/ stays theirs) and installs those that changed. Sets
# bastiond_changed.
bastiond_changed=false
proxy_changed=false
install_binaries() {
    local cargo target
    cargo="$(find_cargo)" || die "cargo not found (PATH, ~/.cargo/bin): install Rust (https://rustup.rs) and re-run"
    target="${CARGO_TARGET_DIR:-$BASTION_REPO/target}"
    # --test installs the dev build the test suite compiles anyway (a
    # release build would double CI's compile time); --demo the release.
    local profile=release profile_flag=(--release)
    if [[ "$mode" == test ]]; then
        profile=debug
        profile_flag=()
    fi
    local build=(env "PATH=$(dirname "$cargo"):$PATH" "CARGO_TARGET_DIR=$target" "$cargo" build "${profile_flag[@]}" --bins)
    if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root && "$(stat -c %U "$BASTION_REPO")" == "$SUDO_USER" ]]; then
        local home
        home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
        build=(runuser -u "$SUDO_USER" -- env "HOME=$home" "${build[@]:1}")
    fi
    (cd "$BASTION_REPO" && "${build[@]}") || die "cargo build ${profile_flag[*]} --bins failed (output above)"

    local bin dest
    for bin in bastion-shell bastionctl bastiond bastion-metadata-proxy; do
        case "$bin" in
        bastiond | bastion-metadata-proxy) dest=/usr/local/sbin/$bin ;;
        *) dest=/usr/local/bin/$bin ;;
        esac
        if [[ ! -f "$target/$profile/$bin" ]]; then
            die "cargo did not produce $target/$profile/$bin"
        fi
        if install_if_changed "$target/$profile/$bin" "$dest" 0755; then
            say "installed $dest"
            case "$bin" in
            bastiond) bastiond_changed=true ;;
            bastion-metadata-proxy) proxy_changed=true ;;
            esac
        fi
    done
    grep -qxF "$BASTION_SHELL" /etc/shells || echo "$BASTION_SHELL" >>/etc/shells
}

ensure_config() {
    if [[ ! -e "$BASTION_CONFIG" ]]; then
        install -o root -g root -m 0644 "$BASTION_PROVISIONING/bastion.toml" "$BASTION_CONFIG"
        say "wrote $BASTION_CONFIG (from provisioning/bastion.toml)"
    fi
    # The daemons refuse a config others could change.
    chown root:root "$BASTION_CONFIG"
    chmod go-w "$BASTION_CONFIG"
    local out
    out="$(/usr/local/bin/bastionctl check --config "$BASTION_CONFIG" 2>&1)" ||
        die "$BASTION_CONFIG is invalid: $out"
}

# Host keys, sshd_config from the template; sets sshd_changed.
sshd_changed=false
ensure_sshd_config() {
    local type key bits
    for type in ed25519 rsa; do
        key="$BASTION_SSHD_DIR/ssh_host_${type}_key"
        bits=()
        [[ "$type" == rsa ]] && bits=(-b 3072)
        if [[ ! -f "$key" ]]; then
            ssh-keygen -q -t "$type" "${bits[@]}" -N '' -C "bastion-sshd" -f "$key"
            say "generated $key"
        fi
        chmod 0600 "$key"
    done
    local addr="${BASTION_SSH_ADDR:-127.0.0.1}" port="${BASTION_SSH_PORT:-2222}"
    if ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); then
        die "BASTION_SSH_PORT=$port is not a TCP port"
    fi
    local tmp out
    tmp="$(mktemp)"
    sed -e "s|@ADDR@|$addr|g" -e "s|@PORT@|$port|g" "$BASTION_PROVISIONING/sshd_config.template" >"$tmp"
    mkdir -p /run/sshd
    if ! out="$(/usr/sbin/sshd -t -f "$tmp" 2>&1)"; then
        rm -f "$tmp"
        die "the sshd config rendered from provisioning/sshd_config.template is invalid: $out"
    fi
    if install_if_changed "$tmp" "$BASTION_SSHD_CONFIG" 0644; then
        say "wrote $BASTION_SSHD_CONFIG ($addr:$port)"
        sshd_changed=true
    fi
    rm -f "$tmp"
}

# Units for systemd hosts; sets nothing, reloads systemd when they changed.
ensure_units() {
    is_systemd || return 0
    local unit changed=false
    for unit in bastiond.service bastion-sshd.service; do
        install_if_changed "$BASTION_PROVISIONING/systemd/$unit" "$SYSTEMD_UNIT_DIR/$unit" 0644 && changed=true
    done
    if [[ "$changed" == true ]]; then
        systemctl daemon-reload
        systemctl enable bastiond.service bastion-sshd.service
    fi
}

# alice and bob, each with an ed25519 key pair under /etc/bastion/demo/keys.
# The private keys belong to the sudo caller (else root), mode 0600.
ensure_demo_users() {
    ensure_dir "$DEMO_DIR" 0755
    ensure_dir "$DEMO_DIR/keys" 0755
    local owner="root" user key
    [[ -n "${SUDO_USER:-}" ]] && getent passwd "$SUDO_USER" >/dev/null && owner="$SUDO_USER"
    # The demo's access file (clusters, levels), unless ops have their own.
    if [[ ! -e "$BASTION_ACCESS" ]]; then
        install -m 0644 -o root -g root "$BASTION_PROVISIONING/demo-access.toml" "$BASTION_ACCESS"
        say "wrote $BASTION_ACCESS from provisioning/demo-access.toml"
    fi
    for user in "${DEMO_USERS[@]}"; do
        key="$DEMO_DIR/keys/$user"
        if [[ ! -f "$key" ]]; then
            ssh-keygen -q -t ed25519 -N '' -C "$user@bastion-demo" -f "$key"
        fi
        chown "$owner" "$key"
        chmod 0600 "$key"
        chmod 0644 "$key.pub"
        local out
        out="$("$BASTION_PROVISIONING/add-user.sh" "$user" --key "$key.pub" --group "${DEMO_GROUPS[$user]}" 2>&1)" || die "$out"
        # Quiet when the user was already there.
        if [[ "$out" == *"+ user"* ]]; then
            echo "$out" >&2
        fi
    done
}

# A known_hosts file for the bastion sshd, so the printed commands need no
# host key prompt.
ensure_known_hosts() {
    local addr port host tmp type
    addr="$(sshd_addr)"
    port="$(sshd_port)"
    [[ "$addr" == 0.0.0.0 ]] && addr=127.0.0.1
    host="[$addr]:$port"
    [[ "$port" == 22 ]] && host="$addr"
    tmp="$(mktemp)"
    for type in ed25519 rsa; do
        printf '%s %s\n' "$host" "$(cut -d' ' -f1,2 "$BASTION_SSHD_DIR/ssh_host_${type}_key.pub")" >>"$tmp"
    done
    install_if_changed "$tmp" "$DEMO_DIR/known_hosts" 0644 || true
    rm -f "$tmp"
}

# The demo's credentials set-up, appended once to the config (marked): the
# proxy assumes roles at the local STS server (moto), users' containers
# reach that server on the bridge gateway, and each demo user has a role.
readonly DEMO_CONFIG_MARK="# >>> bastion demo (provisioning/install.sh)"
ensure_demo_config() {
    grep -qxF "$DEMO_CONFIG_MARK" "$BASTION_CONFIG" && return 0
    grep -q '^\[metadata_proxy\]' "$BASTION_CONFIG" && {
        warn "$BASTION_CONFIG has its own [metadata_proxy]: not adding the demo's"
        return 0
    }
    local tmp
    tmp="$(mktemp "$BASTION_CONFIG.XXXXXX")"
    {
        cat "$BASTION_CONFIG"
        cat <<EOF_DEMO

$DEMO_CONFIG_MARK
# The demo's STS server (moto, provisioning/sts-demo.sh) stands in for AWS.
[metadata_proxy]
sts_endpoint = "http://127.0.0.1:$STS_DEMO_PORT"
sts_region = "us-east-1"
account_id = "123456789012"
imds_upstream = "http://127.0.0.1:$STS_DEMO_PORT"

[bastiond.env]
AWS_ENDPOINT_URL_STS = "http://$(bastion_gateway):$STS_DEMO_PORT"
AWS_DEFAULT_REGION = "us-east-1"

[bastiond.users.alice]
role = "bastion-alice"

[bastiond.users.bob]
role = "bastion-bob"
# <<< bastion demo
EOF_DEMO
    } >"$tmp"
    chmod 0644 "$tmp"
    /usr/local/bin/bastionctl check --config "$tmp" >/dev/null || {
        rm -f "$tmp"
        die "the demo settings do not fit $BASTION_CONFIG (bastionctl check --config $BASTION_CONFIG)"
    }
    mv "$tmp" "$BASTION_CONFIG"
    say "added the demo's credentials settings to $BASTION_CONFIG"
    # Fake host credentials for the local STS server.
    install -m 0600 /dev/null "$BASTION_ETC/metadata-proxy.env.tmp"
    printf 'AWS_ACCESS_KEY_ID=demo\nAWS_SECRET_ACCESS_KEY=demo\n' >"$BASTION_ETC/metadata-proxy.env.tmp"
    mv "$BASTION_ETC/metadata-proxy.env.tmp" "$BASTION_ETC/metadata-proxy.env"
}

bastion_gateway() { echo "${BASTION_GATEWAY:-172.30.0.1}"; }

# The firewall goes up before the proxy and before any user container runs.
ensure_firewall() {
    local args=(--allow-tcp "$STS_DEMO_PORT")
    "$BASTION_PROVISIONING/metadata-proxy-iptables.sh" check "${args[@]}" >/dev/null 2>&1 ||
        "$BASTION_PROVISIONING/metadata-proxy-iptables.sh" apply "${args[@]}"
}

ensure_logrotate() {
    install_if_changed "$BASTION_PROVISIONING/logrotate-bastion" /etc/logrotate.d/bastion 0644 || true
}

start_services() {
    if [[ "$sshd_changed" == true ]]; then
        service_define sshd
        if service_is_running; then
            service_stop sshd
        fi
    fi
    service_start sshd
    "$BASTION_PROVISIONING/sts-demo.sh" start
    service_define metadata-proxy
    if [[ "$proxy_changed" == true ]] && service_is_running; then
        service_stop metadata-proxy
    fi
    service_start metadata-proxy
    if [[ "$bastiond_changed" == true ]]; then
        service_define bastiond
        if service_is_running; then
            say "bastiond's binary changed: restarting it"
            service_stop bastiond
        fi
    fi
    service_start bastiond
    # bastiond has made the bastion network: the users' AWS CLI reaches the
    # demo STS server on its gateway address from now on.
    "$BASTION_PROVISIONING/sts-demo.sh" ready
}

print_summary() {
    local addr port user
    addr="$(sshd_addr)"
    port="$(sshd_port)"
    [[ "$addr" == 0.0.0.0 ]] && addr=127.0.0.1
    echo
    echo "bastion is up (sshd on $addr:$port, took $SECONDS s). Log in as a demo user:"
    for user in "${DEMO_USERS[@]}"; do
        echo "  ssh -i $DEMO_DIR/keys/$user -o UserKnownHostsFile=$DEMO_DIR/known_hosts -p $port $user@$addr"
    done
    echo "Once in, \`kubectx\` lists the clusters the access file gives you (alice: poweruser on demo; bob: user in its namespace web)."
    echo "Access: $BASTION_ACCESS (edit, then: bastionctl access check && bastionctl access plan && bastionctl access apply)"
    echo "Config: $BASTION_CONFIG   Logs: $BASTION_LOG_DIR/   Stop: $0 --down"
}

# The image builds (mostly downloads and dpkg) while cargo compiles; its
# output is shown when it is waited for.
image_pid=""
image_log=""
start_image_build() {
    image_log="$(mktemp)"
    "$BASTION_REPO/image/build.sh" --tag "$IMAGE_TAG" >"$image_log" 2>&1 &
    image_pid=$!
}

wait_image_build() {
    [[ -n "$image_pid" ]] || return 0
    local status=0
    wait "$image_pid" || status=$?
    image_pid=""
    cat "$image_log" >&2
    rm -f "$image_log"
    ((status == 0)) || die "image/build.sh failed (output above)"
}

# On any exit: no policy-rc.d of ours left behind, and no image build cut
# off half-way (build.sh cleans up its mounts when it ends).
on_exit() {
    apt_release_policy
    if [[ -n "$image_pid" ]]; then
        say "waiting for image/build.sh to finish (its output: $image_log)"
        wait "$image_pid" || true
    fi
    if [[ -n "$image_log" ]]; then
        rm -f "$image_log"
    fi
}

# The tests check `bastionctl access render`'s manifests with it (no API
# server can run here).
readonly KUBERNETES_VALIDATE_VENV=/opt/bastion/kubernetes-validate
ensure_kubernetes_validate() {
    if [[ -x "$KUBERNETES_VALIDATE_VENV/bin/kubernetes-validate" ]]; then
        say "kubernetes-validate: already in $KUBERNETES_VALIDATE_VENV"
        return
    fi
    python3 -m venv "$KUBERNETES_VALIDATE_VENV" || die "cannot create the venv $KUBERNETES_VALIDATE_VENV"
    "$KUBERNETES_VALIDATE_VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate ||
        die "pip install kubernetes-validate failed (is PyPI reachable?)"
    say "kubernetes-validate: installed in $KUBERNETES_VALIDATE_VENV"
}

up() {
    step "Debian packages"
    ensure_packages
    ensure_layout
    step "Docker Engine"
    ensure_docker
    step "users' image ($IMAGE_TAG, built in the background) and binaries (cargo build --release --bins)"
    start_image_build
    install_binaries
    step "configuration"
    ensure_config
    ensure_sshd_config
    ensure_units
    ensure_demo_config
    ensure_logrotate
    step "demo users"
    ensure_demo_users
    step "the demo's STS server (moto) in a venv"
    "$BASTION_PROVISIONING/sts-demo.sh" install
    if [[ "$mode" == test ]]; then
        step "kubernetes-validate (offline checks of rendered manifests) in a venv"
        ensure_kubernetes_validate
    fi
    step "firewall of the bastion network (metadata proxy)"
    ensure_firewall
    step "users' image ($IMAGE_TAG)"
    wait_image_build
    step "services"
    start_services
    ensure_known_hosts
    print_summary
}

down() {
    service_stop sshd
    service_stop bastiond
    service_stop metadata-proxy
    "$BASTION_PROVISIONING/sts-demo.sh" stop
    # The firewall stays: without it, containers still running would reach
    # the host's real instance metadata.
    if [[ -e "$DOCKERD_MARKER" ]]; then
        service_stop dockerd
        rm -f "$DOCKERD_MARKER"
    fi
    say "stopped; data (/etc/bastion, /var/lib/bastion, /var/log/bastion) and images are kept"
}

main() {
    (($# == 1)) || usage
    case "$1" in
    --demo) mode=demo ;;
    --test) mode="test" ;;
    --down) mode=down ;;
    -h | --help) usage 0 ;;
    *) usage ;;
    esac
    require_root
    trap on_exit EXIT
    if [[ "$mode" == down ]]; then
        down
    else
        up
    fi
}

# Sourcing this file (to reuse a step) runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
