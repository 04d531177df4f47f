#!/usr/bin/env bash
# Installs bastion on this machine, idempotently: every step says what it
# found or did, and a second run changes nothing that is right (it ends with
# "nothing changed"). docs/install.md walks through it.
#
#   sudo provisioning/install.sh [OPTIONS]     a production bastion (Debian 12, Ubuntu 22.04/24.04)
#   sudo provisioning/install.sh --check [--binaries DIR] [--image-tar FILE]
#                                              report drift from what install.sh sets up, change
#                                              nothing; exit 1 naming each drifted item and its fix
#   sudo provisioning/install.sh --uninstall   remove what it installed (units, binaries, scripts,
#                                              firewall, bastion sshd); keep homes, logs, /etc/bastion
#                                              and the images
#   sudo provisioning/install.sh --demo        a working bastion with demo users alice and bob
#   sudo provisioning/install.sh --test        what the test suite needs (--demo plus test tools;
#                                              used by ./test.sh)
#   sudo provisioning/install.sh --down        stop what --demo/--test started (sshd, bastiond, the
#                                              metadata proxy, the demo STS server, and dockerd if
#                                              this script started it); data stays
#
# OPTIONS (production, --demo, --test):
#   --binaries DIR    take bastion-shell, bastionctl, bastiond and bastion-metadata-proxy from
#                     DIR instead of building them (cargo build --release; --test: the dev build)
#   --image-tar FILE  load the users' image from FILE (made by `docker save`) instead of building
#                     it with image/build.sh (air-gapped sites, tests)
#   --k9s FILE        the pinned k9s release tarball, for image/build.sh
#   --kubectl FILE    the pinned kubectl release binary, for image/build.sh
#
# Production: the Debian packages it needs, the Docker Engine (enabled), the
# binaries in /usr/local/{bin,sbin}, these scripts in /usr/local/lib/bastion,
# /etc/bastion/bastion.toml (written once from the template), the bastion
# sshd on [sshd] listen (default 0.0.0.0:2222; never the host sshd's port),
# the firewall and its restore at boot, every systemd unit enabled (or,
# without systemd, the daemons under bastion-service's supervisor), log
# rotation, /etc/shells, the users' image; it restarts exactly the daemons
# whose binary, unit or configuration changed.
#
# Environment: BASTION_SSH_ADDR, BASTION_SSH_PORT (--demo/--test only: the
# bastion sshd's address, default 127.0.0.1:2222), CARGO_TARGET_DIR,
# RUST_LOG (passed to bastiond without systemd).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

readonly DEMO_DIR="$BASTION_ETC/demo"
readonly DEMO_USERS=(alice bob)
# Their access-file groups (provisioning/demo-access.toml): their levels.
declare -rA DEMO_GROUPS=([alice]=demo-powerusers [bob]=demo-readers)
readonly DEFAULT_IMAGE=bastion/user:latest
readonly DOCKERD_MARKER="$BASTION_RUN/dockerd.started-by-install"
readonly STS_DEMO_PORT="${STS_DEMO_PORT:-5000}"
readonly INSTALL_STATE=/var/lib/bastion/install.state
readonly INSTALL_MANIFEST=/var/lib/bastion/install.manifest
readonly CLEANUP_ENV="$BASTION_ETC/cleanup.env"
readonly CRON_FILE=/etc/cron.d/bastion
readonly LOGROTATE_FILE=/etc/logrotate.d/bastion
readonly BINARIES=(bastion-shell bastionctl bastiond bastion-metadata-proxy)
# The scripts the units, the supervisor, the timer and ops run, installed
# to /usr/local/lib/bastion (each works from there: lib.sh is beside it).
readonly LIB_SCRIPTS=(lib.sh bastion-service metadata-proxy-iptables.sh bastion-cleanup add-user.sh)
readonly UNITS=(bastion-iptables.service bastion-metadata-proxy.service bastiond.service
    bastion-sshd.service bastion-cleanup.service bastion-cleanup.timer)
# Enabled (started at boot); bastion-cleanup.service runs from its timer.
readonly ENABLED_UNITS=(bastion-iptables.service bastion-metadata-proxy.service bastiond.service
    bastion-sshd.service bastion-cleanup.timer)

# What a production bastion host runs on: the Engine, the bastion sshd
# (ssh-keygen is in openssh-client), the firewall, ss (iproute2), setsid
# and flock (util-linux), mkfs.ext4 for the homes (e2fsprogs), pkill for
# access apply's locks (procps), curl for the proxy's health, logrotate.
readonly PRODUCTION_PACKAGES=(
    docker.io openssh-server openssh-client iptables iproute2 util-linux e2fsprogs
    procps curl logrotate ca-certificates
)
# To build the users' image on this host (not with --image-tar).
readonly IMAGE_BUILD_PACKAGES=(debootstrap)
# The demo's host tools on top (the users' tools are in the image; python3-venv
# for the demo STS server's venv).
readonly DEMO_PACKAGES=(debootstrap rsync kubectx awscli asciinema tmux python3-venv)
# What the test suite needs on top: a venv for moto (the STS server, installed
# by provisioning/sts-demo.sh), tmux to drive interactive sessions, prometheus
# for promtool (the proxy's /metrics is checked with it; its service is not
# started; curl sends the EKS token's presigned request in the access tests),
# the linter test.sh runs on every script (Debian's shellcheck), and
# systemd-analyze, which test.sh verifies the units with (systemd need not
# be PID 1).
readonly TEST_PACKAGES=(python3-venv python3-pip tmux chromium logrotate wrk prometheus curl shellcheck systemd)

mode=production
checking=false
binaries_dir=""
image_tar=""
image_tar_gone=false
k9s_file=""
kubectl_file=""

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# ------------------------------------------------------------ reporting ---
CHANGED=()
DRIFT=()
step() { say "== $*"; }
ok() { say "ok: $*"; }
changed() {
    CHANGED+=("$1")
    say "changed: $1"
}
# drift WHAT FIX: --check's finding (never acted on).
drift() {
    DRIFT+=("$1"$'\n'"      fix: $2")
    say "DRIFT: $1 (fix: $2)"
}
# The command that brings this install back to what it should be.
fix_cmd() {
    local cmd="$BASTION_PROVISIONING/install.sh"
    case "$mode" in
    demo) cmd+=" --demo" ;;
    test) cmd+=" --test" ;;
    esac
    [[ -n "$binaries_dir" ]] && cmd+=" --binaries $binaries_dir"
    [[ -n "$image_tar" ]] && cmd+=" --image-tar $image_tar"
    echo "$cmd"
}

# Files this script manages, for --uninstall and --check.
MANIFEST=()

# put_file SRC DEST MODE WHAT [WHY]: DEST becomes a root-owned copy of SRC
# with MODE (WHY: how to say the content differs). Succeeds when it changed
# DEST; fails when DEST was current (quiet) or, under --check, reports the
# drift.
put_file() {
    local src="$1" dest="$2" fmode="$3" what="$4" why
    MANIFEST+=("$dest")
    if [[ ! -e "$dest" ]]; then
        why="missing"
    elif ! cmp -s "$src" "$dest"; then
        why="${5:-differs from $src}"
    elif [[ "$(stat -c '%a %u %g' "$dest")" != "${fmode#0} 0 0" ]]; then
        why="mode $(stat -c '%a %U:%G' "$dest"), should be ${fmode#0} root:root"
    else
        return 1
    fi
    if [[ "$checking" == true ]]; then
        drift "$what $dest: $why" "$(fix_cmd)"
        return 1
    fi
    install -D -o root -g root -m "$fmode" "$src" "$dest.bastion-new"
    mv -f "$dest.bastion-new" "$dest"
    case "$why" in
    missing) changed "$what $dest: installed" ;;
    mode*) changed "$what $dest: $why, fixed" ;;
    *) changed "$what $dest: updated ($why)" ;;
    esac
}

# put_dir DIR MODE: a root-owned directory with MODE.
put_dir() {
    local dir="$1" dmode="$2" why=""
    if [[ ! -d "$dir" ]]; then
        why="missing"
    elif [[ "$(stat -c '%a %u %g' "$dir")" != "${dmode#0} 0 0" ]]; then
        why="mode $(stat -c '%a %U:%G' "$dir"), should be ${dmode#0} root:root"
    else
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "directory $dir: $why" "$(fix_cmd)"
        return 0
    fi
    mkdir -p "$dir"
    chown root:root "$dir"
    chmod "$dmode" "$dir"
    if [[ "$why" == missing ]]; then
        changed "directory $dir: created (${dmode#0} root:root)"
    else
        changed "directory $dir: $why, fixed"
    fi
}

# -------------------------------------------------------------- system ---
preflight() {
    local id="" version="" pretty="this system"
    if [[ -r /etc/os-release ]]; then
        # shellcheck disable=SC1091 # the host's
        id="$(. /etc/os-release && echo "${ID:-}")"
        # shellcheck disable=SC1091
        version="$(. /etc/os-release && echo "${VERSION_ID:-}")"
        # shellcheck disable=SC1091
        pretty="$(. /etc/os-release && echo "${PRETTY_NAME:-$ID $VERSION_ID}")"
    fi
    case "$id $version" in
    "debian 12" | "ubuntu 22.04" | "ubuntu 24.04") ok "system: $pretty" ;;
    *) warn "system: $pretty is not one bastion is tested on (Debian 12, Ubuntu 22.04, 24.04); going on" ;;
    esac
    if is_systemd; then
        ok "service manager: systemd (units in $SYSTEMD_UNIT_DIR)"
    else
        ok "service manager: none (systemd is not PID 1): the daemons run under bastion-service's supervisor and nothing starts them at boot"
    fi
    if [[ "$mode" == production && -r "$BASTION_CONFIG" ]] && grep -qxF "$DEMO_CONFIG_MARK" "$BASTION_CONFIG"; then
        warn "$BASTION_CONFIG holds the demo's settings (its local STS server, demo roles; added by --demo/--test): delete the block between the '# >>> bastion demo' and '# <<< bastion demo' lines for a production bastion"
    fi
}

missing_packages() {
    local p
    for p in "$@"; do
        [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" == installed ]] || echo "$p"
    done
}

ensure_packages() {
    local packages=("${PRODUCTION_PACKAGES[@]}")
    case "$mode" in
    demo) packages+=("${DEMO_PACKAGES[@]}") ;;
    test) packages+=("${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}") ;;
    production) [[ -n "$image_tar" || "$image_tar_gone" == true ]] || packages+=("${IMAGE_BUILD_PACKAGES[@]}") ;;
    esac
    # The image's kubectl: --kubectl FILE, else one image/build.sh kept from
    # an earlier --kubectl, else the host's. The demo and the tests fall
    # back to Debian's kubernetes-client (kubectl 1.20, old); production
    # stops here instead (before anything changed) rather than ship that.
    if [[ -z "$image_tar" && "$image_tar_gone" == false && -z "$kubectl_file" ]] &&
        ! compgen -G "${BASTION_CACHE:-/var/cache/bastion}/artifacts/kubectl-*" >/dev/null &&
        [[ ! -x "$(readlink -f /usr/bin/kubectl 2>/dev/null || echo /nonexistent)" ]]; then
        if [[ "$mode" == production && "$checking" == false ]]; then
            die "no kubectl for the users' image: give the pinned release with --kubectl FILE (image/fetch.sh --print kubectl $(dpkg --print-architecture) prints its URL and checksum; docs/image.md), put one at /usr/bin/kubectl, or load a built image with --image-tar FILE"
        elif [[ "$mode" != production ]]; then
            warn "no /usr/bin/kubectl on this host and no --kubectl FILE: the image gets Debian's kubernetes-client (kubectl 1.20, old); give the pinned release with --kubectl FILE (docs/image.md)"
            packages+=(kubernetes-client)
        fi
    fi
    local missing
    mapfile -t missing < <(missing_packages "${packages[@]}")
    if ((${#missing[@]} == 0)); then
        ok "packages: all ${#packages[@]} installed"
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "packages missing: ${missing[*]}" "apt-get install ${missing[*]}"
        return 0
    fi
    apt_ensure "${missing[@]}"
    changed "packages installed: ${missing[*]}"
    if [[ " ${missing[*]} " == *" openssh-server "* ]]; then
        warn "openssh-server was not installed: Debian enables its ssh.service (a host sshd on port 22) at the next boot; bastion leaves it alone"
    fi
}

ensure_layout() {
    put_dir "$BASTION_ETC" 0755
    put_dir "$BASTION_ETC/kubeconfigs" 0755
    put_dir "$BASTION_KEYS_DIR" 0755
    put_dir "$BASTION_SSHD_DIR" 0755
    put_dir "$BASTION_LOG_DIR" 0700
    put_dir /var/lib/bastion 0755
    put_dir /var/lib/bastion/homes 0755
    put_dir "$BASTION_HOST_HOME" 0555
    [[ "$checking" == true ]] || put_dir "$BASTION_RUN" 0755
    if getent group "$BASTION_USERS_GROUP" >/dev/null; then
        :
    elif [[ "$checking" == true ]]; then
        drift "group $BASTION_USERS_GROUP missing" "$(fix_cmd)"
    else
        groupadd --system "$BASTION_USERS_GROUP"
        changed "group $BASTION_USERS_GROUP created"
    fi
    ok "directories: /etc/bastion, /var/lib/bastion, /var/log/bastion (0700), group $BASTION_USERS_GROUP"
}

ensure_docker() {
    if is_systemd && [[ "$mode" == production || "$checking" == true ]] && systemctl cat docker.service >/dev/null 2>&1; then
        if ! systemctl is-enabled --quiet docker.service 2>/dev/null; then
            if [[ "$checking" == true ]]; then
                drift "docker.service is not enabled (no Docker after a reboot)" "systemctl enable --now docker.service"
            else
                systemctl enable --quiet docker.service
                changed "docker.service enabled"
            fi
        fi
        if ! systemctl is-active --quiet docker.service; then
            if [[ "$checking" == true ]]; then
                drift "docker.service is not running" "systemctl start docker.service"
                return 0
            fi
            systemctl start docker.service || die "systemctl start docker.service failed (journalctl -u docker.service)"
            changed "docker.service started"
        fi
    fi
    if dockerd_ready; then
        ok "Docker Engine: answering ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "the Docker Engine does not answer" "$BASTION_LIB/bastion-service start dockerd"
        return 0
    fi
    if is_systemd && systemctl is-active --quiet docker.service; then
        # Up but not answering yet (just started by someone else).
        service_define dockerd
        service_wait_ready
        ok "Docker Engine: answering"
        return 0
    fi
    if [[ "$mode" == production ]]; then
        "$(svc_script)" start dockerd
    else
        service_start dockerd
    fi
    ensure_dir "$BASTION_RUN" 0755
    : >"$DOCKERD_MARKER"
    changed "dockerd started (no systemd: under bastion-service's supervisor)"
}

# ------------------------------------------------------------ binaries ---
# Where the binaries come from: --binaries DIR, or a cargo build of this
# checkout (production and --demo: release, --test: dev). Sets BIN_SOURCE.
BIN_SOURCE=""
bastiond_changed=false
proxy_changed=false
build_binaries() {
    local cargo target
    cargo="$(find_cargo)" || die "cargo not found (PATH, ~/.cargo/bin): install Rust (https://rustup.rs), or give prebuilt binaries with --binaries DIR"
    target="${CARGO_TARGET_DIR:-$BASTION_REPO/target}"
    # --test installs the dev build the test suite compiles anyway (a
    # release build would double CI's compile time); the others the release.
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
    say "building the binaries: cargo build ${profile_flag[*]} --bins (in $BASTION_REPO)"
    (cd "$BASTION_REPO" && "${build[@]}") || die "cargo build ${profile_flag[*]} --bins failed (output above)"
    BIN_SOURCE="$target/$profile"
}

binary_dest() {
    case "$1" in
    bastiond | bastion-metadata-proxy) echo "/usr/local/sbin/$1" ;;
    *) echo "/usr/local/bin/$1" ;;
    esac
}

install_binaries() {
    if [[ -n "$binaries_dir" ]]; then
        BIN_SOURCE="$(readlink -f "$binaries_dir")"
    elif [[ "$checking" == true ]]; then
        BIN_SOURCE="$(state_value binaries)"
    else
        build_binaries
    fi
    local bin dest current=0
    if [[ "$checking" == true && (-z "$BIN_SOURCE" || ! -d "$BIN_SOURCE") ]]; then
        # Nothing to compare with: at least every file is what was installed.
        for bin in "${BINARIES[@]}"; do
            dest="$(binary_dest "$bin")"
            MANIFEST+=("$dest")
            [[ -x "$dest" ]] || drift "binary $dest missing" "$(fix_cmd)"
        done
        manifest_verify "${BINARIES[@]/#//usr/local/}"
        ok "binaries: not compared with their source (${BIN_SOURCE:-unknown}; give it with --binaries DIR)"
        return 0
    fi
    for bin in "${BINARIES[@]}"; do
        [[ -f "$BIN_SOURCE/$bin" && -x "$BIN_SOURCE/$bin" ]] ||
            die "$BIN_SOURCE/$bin is missing (--binaries DIR must hold ${BINARIES[*]})"
    done
    # They must run here (architecture, libc) before they replace anything.
    [[ "$checking" == true ]] || "$BIN_SOURCE/bastionctl" --version >/dev/null 2>&1 ||
        die "$BIN_SOURCE/bastionctl does not run on this machine (another architecture or libc?)"
    for bin in "${BINARIES[@]}"; do
        dest="$(binary_dest "$bin")"
        if put_file "$BIN_SOURCE/$bin" "$dest" 0755 binary; then
            case "$bin" in
            bastiond) bastiond_changed=true ;;
            bastion-metadata-proxy) proxy_changed=true ;;
            esac
        else
            current=$((current + 1))
        fi
    done
    ((current == 0)) || ok "binaries: $current of ${#BINARIES[@]} current (from $BIN_SOURCE)"
}

# --------------------------------------------------------- lib scripts ---
firewall_script_changed=false
ensure_lib() {
    put_dir "$BASTION_LIB" 0755
    local f fmode current=0
    for f in "${LIB_SCRIPTS[@]}"; do
        fmode=0755
        [[ "$f" == lib.sh ]] && fmode=0644
        if put_file "$BASTION_PROVISIONING/$f" "$BASTION_LIB/$f" "$fmode" script; then
            [[ "$f" == metadata-proxy-iptables.sh ]] && firewall_script_changed=true
        else
            current=$((current + 1))
        fi
    done
    ((current == 0)) || ok "scripts: $current of ${#LIB_SCRIPTS[@]} current in $BASTION_LIB"
}

# ------------------------------------------------------- configuration ---
readonly DEMO_CONFIG_MARK="# >>> bastion demo (provisioning/install.sh)"
config_changed=false
ensure_config() {
    if [[ ! -e "$BASTION_CONFIG" ]]; then
        if [[ "$checking" == true ]]; then
            drift "$BASTION_CONFIG missing" "$(fix_cmd) (writes it from provisioning/bastion.toml)"
            return 0
        fi
        install -o root -g root -m 0644 "$BASTION_PROVISIONING/bastion.toml" "$BASTION_CONFIG"
        changed "$BASTION_CONFIG written from provisioning/bastion.toml (yours to edit from now on)"
        config_changed=true
    fi
    # The daemons refuse a config others could change.
    local owner perms
    owner="$(stat -c %u:%g "$BASTION_CONFIG")"
    perms="$(stat -c %a "$BASTION_CONFIG")"
    if [[ "$owner" != 0:0 || $((8#$perms & 8#022)) != 0 ]]; then
        if [[ "$checking" == true ]]; then
            drift "$BASTION_CONFIG is $(stat -c '%U:%G %a' "$BASTION_CONFIG") (the daemons refuse it unless root's and not group/world-writable)" "chown root:root $BASTION_CONFIG && chmod go-w $BASTION_CONFIG"
        else
            chown root:root "$BASTION_CONFIG"
            chmod go-w "$BASTION_CONFIG"
            changed "$BASTION_CONFIG made root's, not group/world-writable (was $owner $perms)"
        fi
    fi
    local out
    if ! out="$("$BASTIONCTL" check --config "$BASTION_CONFIG" 2>&1)"; then
        [[ "$checking" == true ]] || die "$BASTION_CONFIG is invalid: $out"
        drift "$BASTION_CONFIG is invalid: ${out//$'\n'/; }" "edit it, then: bastionctl check --config $BASTION_CONFIG"
        return 0
    fi
    ok "configuration: $BASTION_CONFIG is valid"
}

ensure_cleanup_env() {
    if [[ -e "$CLEANUP_ENV" ]]; then
        ok "clean-up settings: $CLEANUP_ENV ($(grep -m1 '^RECORDINGS_RETENTION=' "$CLEANUP_ENV" || echo 'default retention'))"
    elif [[ "$checking" == true ]]; then
        drift "$CLEANUP_ENV missing" "$(fix_cmd)"
    else
        install -o root -g root -m 0644 "$BASTION_PROVISIONING/cleanup.env" "$CLEANUP_ENV"
        changed "$CLEANUP_ENV written from provisioning/cleanup.env (recordings kept 365 days; yours to edit)"
    fi
}

# The demo's credentials set-up, appended once to the config (marked): the
# proxy assumes roles at the local STS server (moto), users' containers
# reach that server on the bridge gateway, and each demo user has a role.
ensure_demo_config() {
    if grep -qxF "$DEMO_CONFIG_MARK" "$BASTION_CONFIG" 2>/dev/null; then
        ok "demo settings: in $BASTION_CONFIG"
        return 0
    fi
    if grep -q '^\[metadata_proxy\]' "$BASTION_CONFIG"; then
        warn "$BASTION_CONFIG has its own [metadata_proxy]: not adding the demo's"
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "the demo's settings are missing from $BASTION_CONFIG" "$(fix_cmd)"
        return 0
    fi
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
    "$BASTIONCTL" check --config "$tmp" >/dev/null || {
        rm -f "$tmp"
        die "the demo settings do not fit $BASTION_CONFIG (bastionctl check --config $BASTION_CONFIG)"
    }
    mv "$tmp" "$BASTION_CONFIG"
    changed "the demo's credentials settings added to $BASTION_CONFIG"
    config_changed=true
    # Fake host credentials for the local STS server.
    install -m 0600 /dev/null "$BASTION_ETC/metadata-proxy.env.tmp"
    printf 'AWS_ACCESS_KEY_ID=demo\nAWS_SECRET_ACCESS_KEY=demo\n' >"$BASTION_ETC/metadata-proxy.env.tmp"
    mv "$BASTION_ETC/metadata-proxy.env.tmp" "$BASTION_ETC/metadata-proxy.env"
}

bastion_gateway() {
    if [[ -n "${BASTION_GATEWAY:-}" ]]; then
        echo "$BASTION_GATEWAY"
    else
        first_address "$(config_value bastiond.network.subnet 172.30.0.0/24)"
    fi
}

# /etc/bastion/iptables.env: the firewall's settings from bastion.toml,
# for bastion-iptables.service (at boot) and bastion-service. Sets
# firewall_env_changed.
firewall_env_changed=false
ensure_iptables_env() {
    local tmp bridge subnet
    bridge="$(config_value bastiond.network.name bastion0)"
    subnet="$(config_value bastiond.network.subnet 172.30.0.0/24)"
    tmp="$(mktemp)"
    {
        echo "# Written by provisioning/install.sh from $BASTION_CONFIG (edit that, then"
        echo "# run install.sh): the firewall bastion-iptables.service applies at boot."
        echo "BASTION_BRIDGE=$bridge"
        echo "BASTION_GATEWAY=${BASTION_GATEWAY:-$(first_address "$subnet")}"
        echo "METADATA_PROXY_PORT=$(config_value metadata_proxy.port 8775)"
        echo "BASTION_USERS_SUBNET=$(config_value bastiond.network.users_subnet 172.31.0.0/16)"
        if [[ "$mode" == demo || "$mode" == test ]]; then
            echo "# The demo's STS server on the gateway (provisioning/sts-demo.sh)."
            echo "BASTION_ALLOW_TCP=$STS_DEMO_PORT"
        fi
    } >"$tmp"
    # A renamed bridge: the old bridge's rules go first.
    local old_args=()
    if [[ "$checking" == false && -r "$BASTION_IPTABLES_ENV" ]] && ! cmp -s "$tmp" "$BASTION_IPTABLES_ENV"; then
        firewall_args
        old_args=("${FIREWALL_ARGS[@]}")
    fi
    if put_file "$tmp" "$BASTION_IPTABLES_ENV" 0644 "firewall settings" "bastion.toml's network or proxy port changed"; then
        firewall_env_changed=true
        local old_bridge=""
        for ((i = 0; i < ${#old_args[@]}; i++)); do
            [[ "${old_args[i]}" == --bridge ]] && old_bridge="${old_args[i + 1]}"
        done
        if [[ -n "$old_bridge" && "$old_bridge" != "$bridge" ]]; then
            "$BASTION_PROVISIONING/metadata-proxy-iptables.sh" remove "${old_args[@]}" >&2
            changed "firewall of the old bridge $old_bridge removed"
        fi
    else
        ok "firewall settings: $BASTION_IPTABLES_ENV current (bridge $bridge)"
    fi
    rm -f "$tmp"
}

# The firewall goes up before the proxy and before any user container runs.
ensure_firewall() {
    local script="$BASTION_PROVISIONING/metadata-proxy-iptables.sh" out
    firewall_args
    if out="$("$script" check "${FIREWALL_ARGS[@]}" 2>&1)"; then
        if [[ "$firewall_env_changed" == false && "$firewall_script_changed" == false ]]; then
            ok "firewall: ${out##*: }"
            return 0
        fi
        [[ "$checking" == true ]] && return 0
        # Every rule is there, but the set changed (e.g. a port no longer
        # allowed): rebuilt.
        "$script" apply "${FIREWALL_ARGS[@]}" >/dev/null
        changed "firewall rebuilt with the new settings (${FIREWALL_ARGS[*]})"
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "firewall: ${out%%$'\n'*}" "$BASTION_LIB/metadata-proxy-iptables.sh apply ${FIREWALL_ARGS[*]} (or: $(fix_cmd))"
        return 0
    fi
    "$script" apply "${FIREWALL_ARGS[@]}" >&2
    changed "firewall rules applied (${FIREWALL_ARGS[*]})"
}

# ---------------------------------------------------------- bastion sshd ---
# Where the bastion sshd listens: [sshd] listen in production; --demo and
# --test: BASTION_SSH_ADDR/BASTION_SSH_PORT, default 127.0.0.1:2222.
SSH_ADDR=""
SSH_PORT=""
sshd_listen() {
    if [[ "$mode" == production ]]; then
        [[ -z "${BASTION_SSH_ADDR:-}${BASTION_SSH_PORT:-}" ]] ||
            warn "BASTION_SSH_ADDR/BASTION_SSH_PORT are for --demo/--test; production listens where [sshd] listen of $BASTION_CONFIG says"
        local listen
        listen="$(config_value sshd.listen 0.0.0.0:2222)"
        split_listen "$listen" ||
            die "[sshd] listen = \"$listen\" in $BASTION_CONFIG is not an address and port (e.g. \"0.0.0.0:2222\")"
        SSH_ADDR="$LISTEN_ADDR"
        SSH_PORT="$LISTEN_PORT"
    else
        SSH_ADDR="${BASTION_SSH_ADDR:-127.0.0.1}"
        SSH_PORT="${BASTION_SSH_PORT:-2222}"
        if ! [[ "$SSH_PORT" =~ ^[0-9]{1,5}$ ]] || ((SSH_PORT < 1 || SSH_PORT > 65535)); then
            die "BASTION_SSH_PORT=$SSH_PORT is not a TCP port"
        fi
    fi
}

# How to choose another port, for the messages.
how_to_choose_port() {
    if [[ "$mode" == production ]]; then
        echo "choose another port: set listen = \"0.0.0.0:2022\" (any free port) under [sshd] in $BASTION_CONFIG (the key sshd.listen), then run $(fix_cmd)"
    else
        echo "choose another port: BASTION_SSH_PORT=2022 $(fix_cmd)"
    fi
}

# The running bastion sshd's listener pid, if any.
bastion_sshd_pid() {
    local pid
    if is_systemd && pid="$(systemctl show -p MainPID --value bastion-sshd.service 2>/dev/null)" && [[ "$pid" != 0 && -n "$pid" ]]; then
        echo "$pid"
        return 0
    fi
    service_define sshd
    service_pid
}

# Host keys, sshd_config from the template; sets sshd_changed. Refuses a
# port the host's own sshd is set up for, or another process listens on,
# before anything changes.
sshd_changed=false
ensure_sshd_config() {
    sshd_listen
    local port
    for port in $(host_sshd_ports); do
        if [[ "$port" == "$SSH_PORT" ]]; then
            local msg="port $SSH_PORT is the host's own sshd's (/etc/ssh/sshd_config: the admins' way in); the bastion sshd never takes it over"
            [[ "$checking" == true ]] || die "$msg: $(how_to_choose_port)"
            drift "$msg" "$(how_to_choose_port)"
        fi
    done
    local ours taken
    ours="$(bastion_sshd_pid || true)"
    if taken="$(port_taken_by_other "$SSH_ADDR" "$SSH_PORT" "$ours")"; then
        local msg
        msg="port $SSH_PORT is taken: ${taken##* } (pid $(cut -d' ' -f2 <<<"$taken")) listens on ${taken%% *}:$SSH_PORT, where the bastion sshd should listen ($SSH_ADDR:$SSH_PORT)"
        [[ "$checking" == true ]] || die "$msg; $(how_to_choose_port)"
        drift "$msg" "$(how_to_choose_port)"
    fi
    local type key bits
    for type in ed25519 rsa; do
        key="$BASTION_SSHD_DIR/ssh_host_${type}_key"
        bits=()
        [[ "$type" == rsa ]] && bits=(-b 3072)
        if [[ ! -f "$key" ]]; then
            if [[ "$checking" == true ]]; then
                drift "host key $key missing" "$(fix_cmd)"
                continue
            fi
            ssh-keygen -q -t "$type" "${bits[@]}" -N '' -C "bastion-sshd" -f "$key"
            changed "host key $key generated"
            sshd_changed=true
        fi
        if [[ "$(stat -c '%a %u' "$key")" != "600 0" ]]; then
            if [[ "$checking" == true ]]; then
                drift "host key $key is $(stat -c '%a %U' "$key"), should be 600 root" "chown root $key && chmod 0600 $key"
            else
                chown root "$key"
                chmod 0600 "$key"
                changed "host key $key made 0600 root"
            fi
        fi
    done
    local tmp out
    tmp="$(mktemp)"
    sed -e "s|@ADDR@|$SSH_ADDR|g" -e "s|@PORT@|$SSH_PORT|g" "$BASTION_PROVISIONING/sshd_config.template" >"$tmp"
    # sshd -t needs its privilege separation directory.
    if [[ -d /run/sshd ]] || { [[ "$checking" == false ]] && mkdir -p /run/sshd; }; then
        if ! out="$(/usr/sbin/sshd -t -f "$tmp" 2>&1)"; then
            rm -f "$tmp"
            [[ "$checking" == true ]] || die "the sshd config rendered from provisioning/sshd_config.template is invalid: $out"
            drift "the sshd config rendered from the template fails sshd -t: $out" "fix provisioning/sshd_config.template"
            return 0
        fi
    fi
    if put_file "$tmp" "$BASTION_SSHD_CONFIG" 0644 "sshd config" "the template or the address changed; now $SSH_ADDR:$SSH_PORT"; then
        sshd_changed=true
    else
        ok "bastion sshd config: $BASTION_SSHD_CONFIG current (listens on $SSH_ADDR:$SSH_PORT; sshd -t passes)"
    fi
    rm -f "$tmp"
}

# ------------------------------------------------------- units and cron ---
declare -A unit_changed=()
ensure_units() {
    is_systemd || return 0
    local unit current=0 any=false
    for unit in "${UNITS[@]}"; do
        if put_file "$BASTION_PROVISIONING/systemd/$unit" "$SYSTEMD_UNIT_DIR/$unit" 0644 unit; then
            unit_changed[$unit]=true
            any=true
        else
            current=$((current + 1))
        fi
    done
    ((current == 0)) || ok "units: $current of ${#UNITS[@]} current in $SYSTEMD_UNIT_DIR"
    if [[ "$any" == true ]]; then
        systemctl daemon-reload
        changed "systemd reloaded its units"
    fi
    for unit in "${ENABLED_UNITS[@]}"; do
        if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
            continue
        elif [[ "$checking" == true ]]; then
            drift "$unit is not enabled (it would not start at boot)" "systemctl enable $unit"
        else
            systemctl enable --quiet "$unit"
            changed "$unit enabled"
        fi
    done
    ok "units enabled: ${ENABLED_UNITS[*]}"
}

# Without systemd: cron runs the clean-up (when there is a cron).
ensure_cron() {
    is_systemd && return 0
    if [[ ! -d /etc/cron.d ]] || ! command -v cron >/dev/null; then
        warn "no systemd and no cron: nothing runs $BASTION_LIB/bastion-cleanup (old recordings, unused images, log sizes) by itself; run it hourly from your scheduler"
        return 0
    fi
    pgrep -x cron >/dev/null ||
        warn "cron is installed but not running: start it (and at boot) so that $CRON_FILE runs the hourly clean-up"
    local tmp
    tmp="$(mktemp)"
    {
        echo "# bastion's hourly clean-up (without systemd; installed by provisioning/install.sh)."
        echo "SHELL=/bin/sh"
        echo "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        echo "17 * * * * root [ -x $BASTION_LIB/bastion-cleanup ] && set -a && . $CLEANUP_ENV && set +a && $BASTION_LIB/bastion-cleanup >>$BASTION_LOG_DIR/cleanup.log 2>&1"
    } >"$tmp"
    put_file "$tmp" "$CRON_FILE" 0644 "cron file" "content changed" || ok "cron: $CRON_FILE current (hourly clean-up)"
    rm -f "$tmp"
}

ensure_logrotate() {
    put_file "$BASTION_PROVISIONING/logrotate-bastion" "$LOGROTATE_FILE" 0644 "logrotate config" ||
        ok "log rotation: $LOGROTATE_FILE current"
    # As logrotate reads it (debug mode: it rotates nothing).
    local out
    if [[ -r "$LOGROTATE_FILE" ]] && command -v logrotate >/dev/null &&
        ! out="$(logrotate -d "$LOGROTATE_FILE" 2>&1)"; then
        drift "logrotate refuses $LOGROTATE_FILE: $(grep -m1 -i error <<<"$out")" "fix provisioning/logrotate-bastion"
    fi
}

ensure_shells() {
    if grep -qxF "$BASTION_SHELL" /etc/shells; then
        ok "login shell: $BASTION_SHELL is in /etc/shells"
    elif [[ "$checking" == true ]]; then
        drift "$BASTION_SHELL is not in /etc/shells" "echo $BASTION_SHELL >>/etc/shells"
    else
        echo "$BASTION_SHELL" >>/etc/shells
        changed "$BASTION_SHELL added to /etc/shells"
    fi
}

# --------------------------------------------------------------- image ---
bastion_image() { config_value bastiond.image "$DEFAULT_IMAGE"; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

# The image id and tags a `docker save` tarball holds (its manifest.json).
tar_image_id() {
    local manifest config
    manifest="$(tar -xOf "$1" manifest.json 2>/dev/null)" || return 1
    config="$(grep -o '"Config":"[^"]*"' <<<"$manifest" | head -n1 | cut -d'"' -f4)"
    config="${config##*/}"
    config="${config%.json}"
    [[ "$config" =~ ^[0-9a-f]{64}$ ]] || return 1
    echo "sha256:$config"
}

# The image builds (mostly downloads and dpkg) while cargo compiles; its
# output is shown when it is waited for.
image_pid=""
image_log=""
image_before=""
start_image_build() {
    [[ -z "$image_tar" && "$checking" == false ]] || return 0
    local image args=()
    image="$(bastion_image)"
    image_before="$(image_id "$image" || true)"
    args=(--tag "$image")
    [[ -n "$k9s_file" ]] && args+=(--k9s "$k9s_file")
    [[ -n "$kubectl_file" ]] && args+=(--kubectl "$kubectl_file")
    image_log="$(mktemp)"
    say "building the users' image in the background: image/build.sh ${args[*]}"
    "$BASTION_REPO/image/build.sh" "${args[@]}" >"$image_log" 2>&1 &
    image_pid=$!
}

ensure_image() {
    local image id
    image="$(bastion_image)"
    if [[ -n "$image_tar" ]]; then
        local want
        want="$(tar_image_id "$image_tar")" || die "$image_tar is not a \`docker save\` tarball (no manifest.json naming the image)"
        id="$(image_id "$image" || true)"
        if [[ "$id" == "$want" ]]; then
            ok "users' image: $image is the one in $image_tar (${want:7:12})"
            return 0
        fi
        if [[ "$checking" == true ]]; then
            drift "users' image $image is ${id:-absent}, not the one in $image_tar (${want:7:12})" "$(fix_cmd)"
            return 0
        fi
        say "loading the users' image from $image_tar"
        docker load -q -i "$image_tar" >&2 || die "docker load -i $image_tar failed (output above)"
        [[ "$(image_id "$image" || true)" == "$want" ]] || docker tag "$want" "$image"
        changed "users' image $image loaded from $image_tar (${want:7:12})"
        return 0
    fi
    if [[ "$checking" == true ]]; then
        if id="$(image_id "$image")"; then
            ok "users' image: $image present (${id:7:12}; a rebuild's need is image/build.sh's to judge)"
        else
            drift "users' image $image is missing" "$(fix_cmd) (builds it) or --image-tar FILE"
        fi
        return 0
    fi
    [[ -n "$image_pid" ]] || start_image_build
    local status=0
    wait "$image_pid" || status=$?
    image_pid=""
    sed 's/^/  /' "$image_log" >&2
    rm -f "$image_log"
    ((status == 0)) || die "image/build.sh failed (output above)"
    id="$(image_id "$image" || true)"
    if [[ "$id" == "$image_before" ]]; then
        ok "users' image: $image current (${id:7:12})"
    else
        changed "users' image $image built (${id:7:12})"
    fi
}

# ------------------------------------------------------------ services ---
# bastion-service of this install: the installed copy in production (the
# daemons then need no checkout), the checkout's for --demo/--test.
svc_script() {
    if [[ "$mode" == production ]]; then echo "$BASTION_LIB/bastion-service"; else echo "$BASTION_PROVISIONING/bastion-service"; fi
}

# The running daemon's pid (systemd's MainPID, or the supervisor's pidfile).
daemon_pid() {
    local name="$1" pid
    service_define "$name"
    if is_systemd; then
        pid="$(systemctl show -p MainPID --value "$SVC_UNIT" 2>/dev/null)"
        [[ -n "$pid" && "$pid" != 0 ]] && echo "$pid"
    else
        service_pid
    fi
}

# What daemon NAME was (re)started with by this script: "PID SHA256" of its
# input files, so that a file rewritten with the same content (newer, not
# different) is no reason to restart the process install.sh started.
readonly INPUTS_DIR="$BASTION_RUN/install-inputs"
inputs_hash() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }
record_inputs() {
    local name="$1" pid
    shift
    pid="$(daemon_pid "$name")" || return 0
    mkdir -p "$INPUTS_DIR"
    echo "$pid $(inputs_hash "$@")" >"$INPUTS_DIR/$name"
}

# Why daemon NAME must restart, if it must: its binary, unit or inputs
# changed (in this run: REASON, or since it started), or it runs under
# another copy of bastion-service than this install's.
restart_reason() {
    local name="$1" pid reason="$2" unit="$3"
    shift 3
    if [[ -n "$reason" ]]; then
        echo "$reason"
        return 0
    fi
    if [[ -n "$unit" && "${unit_changed[$unit]:-false}" == true ]]; then
        echo "its unit changed"
        return 0
    fi
    pid="$(daemon_pid "$name")" || return 1
    [[ -n "$pid" ]] || return 1
    if reason="$(process_outdated "$pid" "$@")"; then
        # Newer, but the same content as when install.sh started this very
        # process: nothing to reload.
        if [[ "$reason" != *" was replaced "* && -r "$INPUTS_DIR/$name" &&
            "$(<"$INPUTS_DIR/$name")" == "$pid $(inputs_hash "$@")" ]]; then
            :
        else
            echo "$reason"
            return 0
        fi
    fi
    if ! is_systemd && [[ "$mode" == production ]]; then
        local sup args
        sup="$(service_supervisor_pid)" || return 1
        args="$(tr '\0' ' ' <"/proc/$sup/cmdline")"
        if [[ "$args" != *" $BASTION_LIB/bastion-service supervise $name "* ]]; then
            echo "it is supervised by another copy of bastion-service (${args% supervise*})"
            return 0
        fi
    fi
    return 1
}

# ensure_daemon NAME REASON UNIT INPUT_FILES...: running, and restarted
# when REASON says this run changed what it runs, or it runs an outdated
# binary, unit or input.
ensure_daemon() {
    local name="$1" flag="$2" unit="$3"
    shift 3
    local running=false reason="" pid
    service_define "$name"
    service_is_running && running=true
    if [[ "$running" == true ]]; then
        if ! reason="$(restart_reason "$name" "$flag" "$unit" "$@")"; then
            pid="$(daemon_pid "$name" || true)"
            ok "$name: running (pid ${pid:-?}), with the current binary and settings"
            return 0
        fi
        if [[ "$checking" == true ]]; then
            drift "$name runs outdated: $reason" "$(fix_cmd) (restarts it)"
            return 0
        fi
    elif [[ "$checking" == true ]]; then
        drift "$name is not running" "$(service_hint "$name")"
        return 0
    fi
    if [[ "$running" == true ]]; then
        local note=""
        [[ "$name" == bastiond ]] && note=" (live sessions end)"
        say "restarting $name: $reason$note"
        if is_systemd; then
            systemctl restart "$SVC_UNIT" || {
                service_log_tail
                die "systemctl restart $SVC_UNIT failed (log above)"
            }
        elif [[ "$mode" == production ]]; then
            "$(svc_script)" restart "$name"
        else
            service_restart "$name"
        fi
        changed "$name restarted ($reason)"
        record_inputs "$name" "$@"
    else
        if is_systemd; then
            service_start "$name"
        elif [[ "$mode" == production ]]; then
            "$(svc_script)" start "$name"
        else
            service_start "$name"
        fi
        changed "$name started"
        record_inputs "$name" "$@"
    fi
}

service_hint() {
    service_define "$1"
    if is_systemd; then echo "systemctl start $SVC_UNIT"; else echo "$(svc_script) start $1"; fi
}

ensure_timer() {
    is_systemd || return 0
    if systemctl is-active --quiet bastion-cleanup.timer; then
        ok "clean-up timer: active (next: $(systemctl show -p NextElapseUSecRealtime --value bastion-cleanup.timer 2>/dev/null || echo '?'))"
    elif [[ "$checking" == true ]]; then
        drift "bastion-cleanup.timer is not active" "systemctl start bastion-cleanup.timer"
    else
        systemctl start bastion-cleanup.timer
        changed "bastion-cleanup.timer started"
    fi
}

# The firewall's unit (systemd): active, so that a restart of Docker or the
# proxy finds it done (install.sh applied the rules itself already).
ensure_firewall_unit() {
    is_systemd || return 0
    if systemctl is-active --quiet bastion-iptables.service; then
        ok "bastion-iptables.service: active (rules applied; applied again at every boot, before Docker)"
    elif [[ "$checking" == true ]]; then
        drift "bastion-iptables.service is not active" "systemctl start bastion-iptables.service"
    else
        systemctl start bastion-iptables.service || die "systemctl start bastion-iptables.service failed (journalctl -u bastion-iptables.service)"
        changed "bastion-iptables.service started"
    fi
}

start_services() {
    local config="$BASTION_CONFIG"
    ensure_firewall_unit
    if [[ "$mode" != production && "$checking" == false ]]; then
        "$BASTION_PROVISIONING/sts-demo.sh" start
    fi
    local proxy_reason="" bastiond_reason="" sshd_reason=""
    [[ "$proxy_changed" == true ]] && proxy_reason="its binary was replaced"
    [[ "$bastiond_changed" == true ]] && bastiond_reason="its binary was replaced"
    if [[ "$config_changed" == true ]]; then
        proxy_reason="${proxy_reason:+$proxy_reason; }$config changed"
        bastiond_reason="${bastiond_reason:+$bastiond_reason; }$config changed"
    fi
    [[ "$sshd_changed" == true ]] && sshd_reason="its config or host keys changed"
    ensure_daemon metadata-proxy "$proxy_reason" bastion-metadata-proxy.service "$config" "$BASTION_ETC/metadata-proxy.env"
    ensure_daemon bastiond "$bastiond_reason" bastiond.service "$config"
    ensure_daemon sshd "$sshd_reason" bastion-sshd.service "$BASTION_SSHD_CONFIG" \
        "$BASTION_SSHD_DIR/ssh_host_ed25519_key" "$BASTION_SSHD_DIR/ssh_host_rsa_key"
    ensure_timer
    if [[ "$mode" != production && "$checking" == false ]]; then
        # bastiond has made the bastion network: the users' AWS CLI reaches
        # the demo STS server on its gateway address from now on.
        "$BASTION_PROVISIONING/sts-demo.sh" ready
    fi
}

# The bridge network of the gateway: bastiond creates it (its one
# definition) when it starts.
ensure_network() {
    local name subnet
    name="$(config_value bastiond.network.name bastion0)"
    subnet="$(config_value bastiond.network.subnet 172.30.0.0/24)"
    local found
    if found="$(docker network inspect -f '{{range .IPAM.Config}}{{.Subnet}}{{end}}' "$name" 2>/dev/null)"; then
        if [[ "$found" == "$subnet" ]]; then
            ok "bridge network $name: $subnet (gateway $(first_address "$subnet"), where the proxy listens)"
        else
            local msg="bridge network $name has subnet $found, bastion.toml says $subnet"
            if [[ "$checking" == true ]]; then
                drift "$msg" "stop bastiond, docker network rm $name, then $(fix_cmd)"
            else
                warn "$msg: stop bastiond, remove it (docker network rm $name), then run this again"
            fi
        fi
        return 0
    fi
    if [[ "$checking" == true ]]; then
        drift "bridge network $name is missing (bastiond creates it when it starts)" "$(service_hint bastiond | sed 's/ start / restart /')"
        return 0
    fi
    die "bastiond did not create the bridge network $name ($(service_hint bastiond | sed 's/start/status/'))"
}

# -------------------------------------------------------- state, checks ---
state_value() {
    [[ -r "$INSTALL_STATE" ]] || return 0
    awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); print; exit }' "$INSTALL_STATE"
}

write_state() {
    local tmp f
    tmp="$(mktemp)"
    {
        echo "# What provisioning/install.sh last installed (read by --check and --uninstall)."
        echo "mode=$mode"
        echo "binaries=$BIN_SOURCE"
        echo "binaries_dir=$binaries_dir"
        echo "image_tar=$image_tar"
        echo "checkout=$BASTION_REPO"
    } >"$tmp"
    install_if_changed "$tmp" "$INSTALL_STATE" 0644 || true
    : >"$tmp"
    for f in "${MANIFEST[@]}"; do
        [[ -f "$f" ]] && sha256sum "$f" >>"$tmp"
    done
    install_if_changed "$tmp" "$INSTALL_MANIFEST" 0644 || true
    rm -f "$tmp"
}

# Files among "$@" that no longer match the manifest of the last install.
manifest_verify() {
    [[ -r "$INSTALL_MANIFEST" ]] || return 0
    local line sum file
    while read -r sum file; do
        [[ " $* " == *" $file "* ]] || continue
        if [[ ! -f "$file" ]] || [[ "$(sha256sum "$file" | cut -d' ' -f1)" != "$sum" ]]; then
            drift "$file differs from what install.sh installed" "$(fix_cmd) --binaries DIR"
        fi
    done <"$INSTALL_MANIFEST"
}

summary() {
    if [[ "$checking" == true ]]; then
        if ((${#DRIFT[@]} == 0)); then
            say "no drift: everything is as install.sh sets it up (took $SECONDS s)"
            return 0
        fi
        say "drift: ${#DRIFT[@]} item(s) differ from what install.sh sets up:"
        local d
        for d in "${DRIFT[@]}"; do
            printf '  - %s\n' "$d" >&2
        done
        return 1
    fi
    if ((${#CHANGED[@]} == 0)); then
        say "nothing changed: everything was already as it should be (took $SECONDS s)"
    else
        say "changed ${#CHANGED[@]} thing(s) (took $SECONDS s):"
        local c
        for c in "${CHANGED[@]}"; do
            printf '  - %s\n' "$c" >&2
        done
    fi
}

print_production_next() {
    local addr="$SSH_ADDR" logs="$BASTION_LOG_DIR/"
    [[ "$addr" == 0.0.0.0 || "$addr" == :: ]] && addr="$(hostname -f 2>/dev/null || hostname)"
    is_systemd && logs+=" (audit, recordings); daemons: journalctl -u 'bastion*'"
    cat >&2 <<EOF

bastion is up: users log in with ssh -p $SSH_PORT NAME@$addr
  add a user:     $BASTION_LIB/add-user.sh NAME --key KEY.pub   (or edit $BASTION_ACCESS, then bastionctl access apply)
  check it:       bastionctl doctor          drift: $BASTION_PROVISIONING/install.sh --check
  configuration:  $BASTION_CONFIG (then run install.sh again)
  logs:           $logs
EOF
}

# ------------------------------------------------------------ the demo ---
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
        changed "$BASTION_ACCESS written from provisioning/demo-access.toml"
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
            changed "demo user $user added"
        fi
    done
    ok "demo users: ${DEMO_USERS[*]}"
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

print_demo_summary() {
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

# The tests check `bastionctl access render`'s manifests with it (no API
# server can run here).
readonly KUBERNETES_VALIDATE_VENV=/opt/bastion/kubernetes-validate
ensure_kubernetes_validate() {
    if [[ -x "$KUBERNETES_VALIDATE_VENV/bin/kubernetes-validate" ]]; then
        ok "kubernetes-validate: in $KUBERNETES_VALIDATE_VENV"
        return
    fi
    python3 -m venv "$KUBERNETES_VALIDATE_VENV" || die "cannot create the venv $KUBERNETES_VALIDATE_VENV"
    "$KUBERNETES_VALIDATE_VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate ||
        die "pip install kubernetes-validate failed (is PyPI reachable?)"
    changed "kubernetes-validate installed in $KUBERNETES_VALIDATE_VENV"
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

# ---------------------------------------------------------------- modes ---
# Production, --demo, --test, and --check (which runs the same steps and
# changes nothing).
up() {
    step "system"
    preflight
    step "packages"
    ensure_packages
    step "directories"
    ensure_layout
    step "scripts ($BASTION_LIB)"
    ensure_lib
    step "Docker Engine"
    ensure_docker
    step "binaries (/usr/local/bin, /usr/local/sbin)"
    start_image_build
    install_binaries
    step "configuration ($BASTION_ETC)"
    ensure_config
    [[ "$mode" == production ]] || ensure_demo_config
    ensure_cleanup_env
    ensure_iptables_env
    step "bastion sshd"
    ensure_sshd_config
    step "firewall of the users' networks (before any container runs)"
    ensure_firewall
    if is_systemd; then
        step "systemd units"
        ensure_units
    else
        step "scheduled clean-up (no systemd)"
        ensure_cron
    fi
    step "log rotation, login shell"
    ensure_logrotate
    ensure_shells
    if [[ "$mode" != production && "$checking" == false ]]; then
        step "demo users"
        ensure_demo_users
        step "the demo's STS server (moto) in a venv"
        "$BASTION_PROVISIONING/sts-demo.sh" install
        if [[ "$mode" == test ]]; then
            step "kubernetes-validate (offline checks of rendered manifests) in a venv"
            ensure_kubernetes_validate
        fi
    fi
    step "users' image"
    ensure_image
    step "services"
    start_services
    step "bridge network"
    ensure_network
    if [[ "$checking" == false ]]; then
        [[ "$mode" == production ]] || ensure_known_hosts
        write_state
    fi
    step "summary"
    summary || return 1
    if [[ "$checking" == false ]]; then
        if [[ "$mode" == production ]]; then print_production_next; else print_demo_summary; fi
    fi
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

# Removes what install.sh installed; keeps the data.
uninstall() {
    local unit f removed=()
    step "services"
    if is_systemd; then
        for unit in bastion-cleanup.timer bastion-cleanup.service bastion-sshd.service bastiond.service bastion-metadata-proxy.service; do
            if systemctl cat "$unit" >/dev/null 2>&1; then
                systemctl disable --now --quiet "$unit" 2>/dev/null || true
                say "stopped and disabled $unit"
            fi
        done
    else
        local name
        for name in sshd bastiond metadata-proxy; do
            service_stop "$name"
        done
        say "stopped the bastion sshd, bastiond and the metadata proxy"
    fi
    "$BASTION_PROVISIONING/sts-demo.sh" stop >/dev/null 2>&1 || true
    # Without the firewall, a running user container would reach the host's
    # own instance metadata: they are stopped first (kept, with their homes).
    local running=()
    if dockerd_ready; then
        mapfile -t running < <(docker ps -q --filter label=bastion.user)
        if ((${#running[@]})); then
            docker stop -t 5 "${running[@]}" >/dev/null
            say "stopped ${#running[@]} user container(s) (kept: docker ps -a --filter label=bastion.user)"
        fi
    fi
    step "firewall"
    firewall_args
    local script="$BASTION_PROVISIONING/metadata-proxy-iptables.sh"
    "$script" remove "${FIREWALL_ARGS[@]}" >&2 || warn "removing the firewall failed: run $script remove ${FIREWALL_ARGS[*]}"
    if is_systemd && systemctl cat bastion-iptables.service >/dev/null 2>&1; then
        systemctl disable --quiet bastion-iptables.service 2>/dev/null || true
        systemctl stop bastion-iptables.service 2>/dev/null || true
        say "disabled bastion-iptables.service"
    fi
    step "files"
    for unit in "${UNITS[@]}" bastion-sts-demo.service; do
        [[ -e "$SYSTEMD_UNIT_DIR/$unit" ]] && rm -f "$SYSTEMD_UNIT_DIR/$unit" && removed+=("$SYSTEMD_UNIT_DIR/$unit")
    done
    if is_systemd; then
        systemctl daemon-reload
        systemctl reset-failed 'bastion*' 2>/dev/null || true
    fi
    for f in "${BINARIES[@]}"; do
        f="$(binary_dest "$f")"
        [[ -e "$f" ]] && rm -f "$f" && removed+=("$f")
    done
    [[ -d "$BASTION_LIB" ]] && rm -rf "$BASTION_LIB" && removed+=("$BASTION_LIB/")
    for f in "$LOGROTATE_FILE" "$CRON_FILE" "$INSTALL_STATE" "$INSTALL_MANIFEST" "$DOCKERD_MARKER"; do
        [[ -e "$f" ]] && rm -f "$f" && removed+=("$f")
    done
    if grep -qxF "$BASTION_SHELL" /etc/shells; then
        local tmp
        tmp="$(mktemp)"
        grep -vxF "$BASTION_SHELL" /etc/shells >"$tmp" || true
        cat "$tmp" >/etc/shells
        rm -f "$tmp"
        removed+=("/etc/shells: $BASTION_SHELL")
    fi
    for f in "${removed[@]}"; do
        say "removed $f"
    done
    local users
    users="$(getent group "$BASTION_USERS_GROUP" | cut -d: -f4)"
    step "kept"
    cat >&2 <<EOF
  - configuration, sshd host keys, access file, keys: $BASTION_ETC/
  - homes, account files, applied access state: /var/lib/bastion/
  - recordings, audit trail, daemon logs: $BASTION_LOG_DIR/
  - the users' image(s) and stopped containers (docker images; docker ps -a --filter label=bastion.user)
  - the bridge networks (docker network ls --filter label=bastion.network)
  - the users' accounts (group $BASTION_USERS_GROUP: ${users:-none}); they cannot log in any more
  - the Debian packages (docker.io, openssh-server, ...) and the host's own sshd, untouched
  - homes still mounted stay so until the next reboot (findmnt -t ext4 | grep /var/lib/bastion/homes)
Reinstall: $BASTION_PROVISIONING/install.sh (it picks all of this up again).
EOF
}

main() {
    local action=""
    while (($#)); do
        case "$1" in
        --demo | --test | --down | --check | --uninstall)
            [[ -z "$action" ]] || die "one of --demo, --test, --down, --check, --uninstall at a time"
            action="${1#--}"
            shift
            ;;
        --binaries | --image-tar | --k9s | --kubectl)
            (($# >= 2)) || die "$1 needs a value ($0 --help)"
            case "$1" in
            --binaries) binaries_dir="$2" ;;
            --image-tar) image_tar="$2" ;;
            --k9s) k9s_file="$2" ;;
            --kubectl) kubectl_file="$2" ;;
            esac
            shift 2
            ;;
        -h | --help) usage 0 ;;
        *)
            say "unknown argument: $1"
            usage
            ;;
        esac
    done
    case "$action" in
    "") mode=production ;;
    demo | test | down | uninstall) mode="$action" ;;
    check)
        checking=true
        mode="$(state_value mode)"
        [[ "$mode" =~ ^(production|demo|test)$ ]] || mode=production
        # What the last install was given, unless told otherwise.
        [[ -n "$binaries_dir" ]] || binaries_dir="$(state_value binaries_dir)"
        [[ -z "$binaries_dir" || -d "$binaries_dir" ]] || binaries_dir=""
        if [[ -z "$image_tar" ]]; then
            image_tar="$(state_value image_tar)"
            if [[ -n "$image_tar" && ! -r "$image_tar" ]]; then
                say "the image was loaded from $image_tar, which is gone: checking only that the image is present"
                image_tar=""
                image_tar_gone=true
            fi
        fi
        ;;
    esac
    if [[ "$mode" =~ ^(down|uninstall)$ && -n "$binaries_dir$image_tar$k9s_file$kubectl_file" ]]; then
        die "--$mode takes no options"
    fi
    [[ -z "$binaries_dir" || -d "$binaries_dir" ]] || die "--binaries $binaries_dir: no such directory"
    [[ -z "$image_tar" || -r "$image_tar" ]] || die "--image-tar $image_tar: cannot read it"
    [[ -z "$k9s_file" || -r "$k9s_file" ]] || die "--k9s $k9s_file: cannot read it"
    [[ -z "$kubectl_file" || -r "$kubectl_file" ]] || die "--kubectl $kubectl_file: cannot read it"
    [[ -z "$image_tar" || -z "$k9s_file$kubectl_file" ]] || die "--k9s and --kubectl are for building the image; --image-tar loads a built one"
    require_root
    trap on_exit EXIT
    case "$mode" in
    down) down ;;
    uninstall) uninstall ;;
    *) up ;;
    esac
}

# Sourcing this file (to reuse a step) runs nothing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
