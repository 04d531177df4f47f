#!/usr/bin/env bash
# The production install (provisioning/install.sh, no flag) on fresh test
# machines: a Debian 12 root file system (tests/systemd/rootfs.sh) booted in
# a Docker container, once with systemd as PID 1 and once without (bash's
# sleep as PID 1: the daemons under bastion-service's supervisor, as in CI
# or a container).
#
#   sudo tests/systemd/run.sh [--variant systemd|supervisor|all]
#                             [--binaries DIR] [--image-tar FILE] [--keep]
#
#   --binaries DIR    the four binaries to install (default: the checkout's
#                     target/debug, as ./test.sh builds them; stripped copies
#                     are installed)
#   --image-tar FILE  the users' image as `docker save` wrote it (default:
#                     this host's bastion/user:latest, saved once per image
#                     id in /var/cache/bastion/systemd-test/)
#   --keep            leave the containers (and their volumes) for a look
#
# Each variant, on its own machine: a first install without AWS settings
# (it must stop at the metadata proxy, naming the key to set), then with
# them (the operator's bastion.toml, which install.sh keeps); every unit
# or supervised daemon up; a user added through the normal path
# (/usr/local/lib/bastion/add-user.sh, i.e. bastionctl access add-user and
# apply); the checkout removed; that user logs in over the bastion sshd and
# runs kubectl, kubectx, kubens, aws (and k9s, or sees the image's notice);
# a terminal session; the home is the user's own loop-mounted file system.
# systemd only: the host's own sshd keeps working for root, the machine is
# rebooted (container restart: a new network namespace, so the firewall
# must come back from bastion-iptables.service), units, rules and the
# login are checked again, and `systemd-analyze security` scores each unit.
# Both: `install.sh --check` reports no drift, a second install changes
# nothing, `--uninstall` removes what it installed and keeps the data.
#
# Ends with PASS or FAIL (exit 1) and the wall time of each variant; the
# containers and volumes are removed (unless --keep). Logs: the directory
# it prints. Environment: BASTION_HEAVY_LOCK (a lock file held with flock
# around the heavy steps: rootfs build, image save; never set it when the
# caller holds that lock already).
set -euo pipefail

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${BASTION_CACHE:-/var/cache/bastion}/systemd-test"
variant=all
binaries=""
image_tar=""
keep=false

say() { printf 'tests/systemd: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 2
}
heavy() {
    if [[ -n "${BASTION_HEAVY_LOCK:-}" ]]; then
        flock "$BASTION_HEAVY_LOCK" "$@"
    else
        "$@"
    fi
}

while (($#)); do
    case "$1" in
    --variant | --binaries | --image-tar)
        (($# >= 2)) || die "$1 needs a value"
        case "$1" in
        --variant) variant="$2" ;;
        --binaries) binaries="$2" ;;
        --image-tar) image_tar="$2" ;;
        esac
        shift 2
        ;;
    --keep)
        keep=true
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
        exit 0
        ;;
    *) die "unknown argument $1 (--help)" ;;
    esac
done
[[ "$variant" =~ ^(systemd|supervisor|all)$ ]] || die "--variant is systemd, supervisor or all"
[[ "$(id -u)" == 0 ]] || die "must run as root (docker, debootstrap)"
for tool in docker ssh ssh-keygen flock; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install docker.io openssh-client util-linux)"
done
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer"

work="$(mktemp -d /tmp/bastion-systest.XXXXXX)"
logs="$work/logs"
mkdir -p "$logs"
say "logs in $logs"
# (Replaced by the full clean-up once machines exist.)
trap 'rm -rf "$work/bins"' EXIT

# ---------------------------------------------------------------- inputs ---
binaries="${binaries:-$repo/target/debug}"
mkdir -p "$work/bins"
for b in bastion-shell bastionctl bastiond bastion-metadata-proxy; do
    [[ -x "$binaries/$b" ]] || die "$binaries/$b is missing: cargo build --bins first, or --binaries DIR"
    cp "$binaries/$b" "$work/bins/"
done
if command -v strip >/dev/null; then
    strip "$work/bins"/* 2>/dev/null || true
fi

if [[ -z "$image_tar" ]]; then
    id="$(docker image inspect -f '{{.Id}}' bastion/user:latest 2>/dev/null)" ||
        die "no bastion/user:latest on this host: build it (image/build.sh, or ./test.sh does) or give --image-tar FILE"
    mkdir -p "$cache"
    image_tar="$cache/user-image-${id:7:16}.tar"
    if [[ ! -s "$image_tar" ]]; then
        say "saving bastion/user:latest (${id:7:12}) to $image_tar"
        heavy docker save -o "$image_tar.tmp" bastion/user:latest
        mv "$image_tar.tmp" "$image_tar"
        find "$cache" -maxdepth 1 -name 'user-image-*.tar' ! -name "${image_tar##*/}" -delete
    fi
fi
[[ -r "$image_tar" ]] || die "cannot read $image_tar"

rootfs="$("$here/rootfs.sh")"
ssh-keygen -q -t ed25519 -N '' -C tester -f "$work/tester"
ssh-keygen -q -t ed25519 -N '' -C admin -f "$work/admin"

# --------------------------------------------------------------- helpers ---
failures=()
results=()
current=""
pass() {
    results+=("PASS $current: $*")
    say "PASS: $*"
}
fail() {
    failures+=("$current: $*")
    results+=("FAIL $current: $*")
    say "FAIL: $*"
}
# on CMD...: runs a shell command line on the machine.
on() { docker exec "$current" bash -c "$*"; }
ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$current"; }
ssh_to() { # KEY PORT USER [-tt] COMMAND...
    local key="$1" port="$2" who="$3" tty=()
    shift 3
    if [[ "${1:-}" == -tt ]]; then
        tty=(-tt)
        shift
    fi
    ssh -n "${tty[@]}" -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
        -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10 "$who@$(ip_of)" -- "$@"
}
copy_checkout() {
    on "rm -rf /root/src && mkdir -p /root/src"
    docker cp -q "$repo/provisioning" "$current:/root/src/provisioning"
}
install_run() { # LOG ARGS...: install.sh with the test inputs; its output in LOG
    local log="$1"
    shift
    on "/root/src/provisioning/install.sh --binaries /mnt/bins --image-tar /mnt/image.tar $*" >"$logs/$log" 2>&1
}
wait_booted() {
    local i state=""
    for ((i = 0; i < 120; i++)); do
        state="$(docker exec "$current" systemctl is-system-running 2>/dev/null || true)"
        [[ "$state" == running || "$state" == degraded ]] && return 0
        sleep 1
    done
    say "systemd did not finish booting (state: ${state:-no answer})"
    return 1
}
start_machine() { # VARIANT
    local init=(/sbin/init) entry=()
    [[ "$1" == supervisor ]] && entry=(--entrypoint /bin/sleep) && init=(infinity)
    docker volume create "$current-docker" >/dev/null
    # What systemd and a nested Docker Engine need in a container: every
    # capability but CAP_SYS_RESOURCE (some hosts, like this one, cannot
    # grant it, so no --privileged), no seccomp/AppArmor confinement, a
    # writable cgroup tree, loop devices (homes), tmpfs for /run, a volume
    # for /var/lib/docker (overlayfs cannot nest in overlayfs).
    docker run -d --name "$current" --hostname "$current" \
        --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
        --security-opt systempaths=unconfined \
        --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
        --device-cgroup-rule 'b 7:* rmw' --device-cgroup-rule 'c 10:237 rmw' \
        --stop-signal SIGRTMIN+3 --stop-timeout 60 \
        --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
        -v "$current-docker:/var/lib/docker" \
        -v "$work/bins:/mnt/bins:ro" -v "$(readlink -f "$image_tar"):/mnt/image.tar:ro" \
        "${entry[@]}" "$rootfs" "${init[@]}" >/dev/null
    if [[ "$1" == systemd ]]; then
        wait_booted
    else
        # What a VM's devtmpfs and systemd-tmpfiles would have made.
        on "systemd-tmpfiles --create /etc/tmpfiles.d/bastion-systest-loop.conf"
    fi
}
remove_machine() {
    [[ -n "$current" ]] || return 0
    if [[ "$keep" == true ]]; then
        say "kept: container $current, volume $current-docker (docker rm -f $current; docker volume rm $current-docker)"
        return 0
    fi
    docker rm -f "$current" >/dev/null 2>&1 || true
    docker volume rm "$current-docker" >/dev/null 2>&1 || true
}
machines=()
cleanup() {
    local m
    for m in "${machines[@]}"; do
        current="$m"
        remove_machine
    done
    # The logs stay; the copies of the binaries go.
    [[ "$keep" == true ]] || rm -rf "$work/bins"
}
trap cleanup EXIT

# The operator's settings before the install: no AWS here, so the proxy is
# told the account (it then starts without asking STS); and an access file
# with a cluster and groups (the demo's), which add-user.sh adds to.
seed_config() {
    docker exec -i "$current" bash -c "cat /root/src/provisioning/bastion.toml - >/root/bastion.toml.operator" <<'EOF'

# The test machine has no AWS: the proxy starts without asking STS.
[metadata_proxy]
account_id = "123456789012"
sts_region = "us-east-1"
EOF
    on "install -m 0644 /root/bastion.toml.operator /etc/bastion/bastion.toml"
    docker cp -q "$repo/provisioning/demo-access.toml" "$current:/etc/bastion/access.toml"
    on "chown root:root /etc/bastion/access.toml && chmod 0644 /etc/bastion/access.toml"
}

# The user's session: every tool, the home.
check_login() { # SLUG WHEN
    local out slug="$1"
    shift
    # shellcheck disable=SC2016 # expanded in the session
    if out="$(ssh_to "$work/tester" 2222 tester 'echo "kubectl: $(kubectl version --client 2>/dev/null | grep -m1 "Client Version")"; echo "kubectx: $(kubectx 2>/dev/null)"; echo "kubens: $(kubens -c 2>/dev/null)"; aws --version; echo "id: $(id -un)"; echo "home: $(df -P ~ | tail -n1 | cut -d" " -f1)"; if command -v k9s >/dev/null; then echo "k9s: $(k9s version --short 2>&1 | head -n1)"; else echo "k9s: absent from this image"; fi' 2>"$logs/login-$slug.err")"; then
        printf '%s\n' "$out" >"$logs/login-$slug.out"
        local want missing=()
        for want in "kubectl: Client Version" "kubectx: demo" "kubens: default" "aws-cli/" "id: tester" "home: /dev/loop"; do
            [[ "$out" == *"$want"* ]] || missing+=("$want")
        done
        if ((${#missing[@]})); then
            fail "login $*: missing from the session's output: ${missing[*]} (logs/login-$slug.out)"
        else
            pass "login $*: kubectl, kubectx, kubens, aws run as tester; home is $(grep -o '/dev/loop[0-9]*' <<<"$out") ($(grep '^k9s:' <<<"$out"))"
        fi
    else
        fail "login $*: ssh failed ($(tail -n2 "$logs/login-$slug.err" | tr '\n' ' '))"
    fi
    if out="$(ssh_to "$work/tester" 2222 tester -tt 'tty' 2>&1)" && [[ "$out" == */dev/pts/* ]]; then
        pass "login $*: a terminal session gets a pty"
    else
        fail "login $*: terminal session: $out"
    fi
}

# bastionctl doctor on the machine: every check ok or warn, but for what
# needs AWS (there is none here: the STS endpoint cannot answer).
check_doctor() { # SLUG WHEN
    local slug="$1" fails
    shift
    on "bastionctl doctor" >"$logs/doctor-$slug.txt" 2>&1 || true
    fails="$(grep '^FAIL' "$logs/doctor-$slug.txt" | grep -viE 'sts|aws' || true)"
    if ! grep -qE '^(all [0-9]+ checks ok|[0-9]+ failed, [0-9]+ warning)' "$logs/doctor-$slug.txt"; then
        fail "bastionctl doctor $*: no report (logs/doctor-$slug.txt: $(tail -n 2 "$logs/doctor-$slug.txt" | tr '\n' ' '))"
    elif [[ -n "$fails" ]]; then
        fail "bastionctl doctor $*: ${fails//$'\n'/; }"
    else
        pass "bastionctl doctor $*: $(tail -n 1 "$logs/doctor-$slug.txt")$(grep -q '^FAIL' "$logs/doctor-$slug.txt" && echo " (the FAILs need AWS: $(grep '^FAIL' "$logs/doctor-$slug.txt" | cut -c6- | cut -d: -f1 | tr '\n' ',' | sed 's/,$//'))")"
    fi
}

check_units() { # SLUG WHEN
    local states slug="$1"
    shift
    states="$(on "systemctl is-active docker.service ssh.service bastion-iptables.service bastion-metadata-proxy.service bastiond.service bastion-sshd.service bastion-cleanup.timer | tr '\n' ' '")"
    if [[ "$states" == "active active active active active active active " ]]; then
        pass "units $*: docker ssh bastion-iptables bastion-metadata-proxy bastiond bastion-sshd bastion-cleanup.timer all active"
    else
        fail "units $*: is-active says: $states (logs/units-$slug.txt)"
        on "systemctl --failed --no-pager; journalctl -b --no-pager -u 'bastion*' | tail -n 40" >"$logs/units-$slug.txt" 2>&1 || true
    fi
    if on "systemctl is-enabled bastion-iptables.service bastion-metadata-proxy.service bastiond.service bastion-sshd.service bastion-cleanup.timer" >/dev/null 2>&1; then
        pass "units $*: all enabled"
    else
        fail "units $*: not all enabled"
    fi
}

check_rules() { # SLUG WHEN
    local slug="$1"
    shift
    # shellcheck disable=SC2016 # expanded in the machine
    if on '. /etc/bastion/iptables.env && /usr/local/lib/bastion/metadata-proxy-iptables.sh check --bridge "$BASTION_BRIDGE" --gateway "$BASTION_GATEWAY" --port "$METADATA_PROXY_PORT" --users-subnet "$BASTION_USERS_SUBNET"' >"$logs/rules-$slug.txt" 2>&1; then
        pass "firewall $*: every rule in place"
    else
        fail "firewall $*: $(tail -n2 "$logs/rules-$slug.txt" | tr '\n' ' ')"
    fi
}

check_again_and_check() { # SLUG
    copy_checkout
    if on "/root/src/provisioning/install.sh --check" >"$logs/check-$1.txt" 2>&1 && grep -q "no drift" "$logs/check-$1.txt"; then
        pass "install.sh --check $1: no drift"
    else
        fail "install.sh --check $1: $(grep -A1 'DRIFT' "$logs/check-$1.txt" | head -n 6 | tr '\n' ' ')"
    fi
    if install_run "second-$1.txt" && grep -q "nothing changed" "$logs/second-$1.txt"; then
        pass "second install $1: nothing changed ($(grep -o 'took [0-9]* s' "$logs/second-$1.txt"))"
    else
        fail "second install $1: $(grep -E 'changed:|error' "$logs/second-$1.txt" | head -n 5 | tr '\n' ' ')"
    fi
}

# ------------------------------------------------------------- a variant ---
declare -A took=()
scores=()
run_variant() {
    local v="$1" t0=$SECONDS
    current="bastion-systest-$v-$$"
    machines+=("$current")
    say "=== $v: starting the machine ($rootfs)"
    start_machine "$v" || {
        fail "the machine did not start"
        return 0
    }
    pass "machine up ($([[ "$v" == systemd ]] && echo "systemd as PID 1" || echo "no systemd: sleep as PID 1"))"
    copy_checkout
    on "mkdir -p /root/.ssh && chmod 0700 /root/.ssh"
    docker cp -q "$work/admin.pub" "$current:/root/.ssh/authorized_keys"
    docker cp -q "$work/tester.pub" "$current:/root/tester.pub"
    on "chown root:root /root/.ssh/authorized_keys /root/tester.pub"
    if [[ "$v" == systemd ]]; then
        if ssh_to "$work/admin" 22 root true; then pass "the host's own sshd lets root in (before)"; else fail "the host's own sshd refuses root before the install"; fi
    fi

    # 1. No AWS settings: the install must stop at the proxy and say why.
    if install_run first-no-aws.txt; then
        fail "install without AWS settings succeeded (the proxy cannot start without an account here)"
    elif grep -q "account_id" "$logs/first-no-aws.txt"; then
        pass "install without AWS settings stops at the proxy, naming metadata_proxy.account_id"
    else
        fail "install without AWS settings failed, but not naming metadata_proxy.account_id (logs/first-no-aws.txt)"
    fi
    if on "grep -q 'bastion.toml: bastion' /etc/bastion/bastion.toml"; then
        pass "install wrote /etc/bastion/bastion.toml from the template"
    else
        fail "/etc/bastion/bastion.toml is not the template"
    fi

    # 2. The operator's settings: the install completes.
    seed_config
    if install_run first.txt; then
        pass "install: $(grep -o 'changed [0-9]* thing(s) (took [0-9]* s)' "$logs/first.txt")"
    else
        fail "install failed: $(tail -n 5 "$logs/first.txt" | tr '\n' ' ')"
        return 0
    fi
    if on "cmp -s /root/bastion.toml.operator /etc/bastion/bastion.toml"; then
        pass "the operator's bastion.toml was kept as it was"
    else
        fail "install.sh changed the operator's bastion.toml"
    fi
    if [[ "$v" == systemd ]]; then
        check_units first "after the install"
    else
        local s ok=true
        for s in metadata-proxy bastiond sshd dockerd; do
            on "/usr/local/lib/bastion/bastion-service status $s" >>"$logs/status.txt" 2>&1 || ok=false
        done
        if [[ "$ok" == true ]]; then pass "bastion-service status: metadata-proxy, bastiond, sshd, dockerd running and ready"; else fail "bastion-service status: $(tr '\n' ' ' <"$logs/status.txt")"; fi
    fi
    check_rules first "after the install"

    # 3. A user through the normal path, then no checkout.
    if on "/usr/local/lib/bastion/add-user.sh tester --key /root/tester.pub --group demo-powerusers" >"$logs/add-user.txt" 2>&1; then
        pass "add-user.sh tester (bastionctl access add-user + apply)"
    else
        fail "add-user.sh: $(tail -n 3 "$logs/add-user.txt" | tr '\n' ' ')"
    fi
    on "rm -rf /root/src"
    check_login first "after the install (no checkout on the machine)"
    check_doctor first "after the install"
    if [[ "$v" == systemd ]]; then
        if ssh_to "$work/admin" 22 root true; then pass "the host's own sshd still lets root in"; else fail "the host's own sshd refuses root after the install"; fi

        # 4. Reboot.
        local netns_before netns_after
        netns_before="$(on 'readlink /proc/1/ns/net')"
        docker restart -t 60 "$current" >/dev/null
        if wait_booted; then pass "rebooted"; else fail "no boot after the restart"; fi
        netns_after="$(on 'readlink /proc/1/ns/net')"
        [[ "$netns_before" != "$netns_after" ]] || say "note: the network namespace survived the restart ($netns_after)"
        check_units reboot "after the reboot"
        check_rules reboot "after the reboot (new network namespace: $netns_after)"
        local order
        order="$(on "systemctl show -p ActiveEnterTimestampMonotonic --value bastion-iptables.service docker.service | tr '\n' ' '")"
        read -r t_fw t_docker <<<"$order"
        if ((t_fw > 0 && t_fw <= t_docker)); then pass "the firewall came up before Docker at boot"; else fail "firewall/Docker start order: $order"; fi
        check_login reboot "after the reboot"
        check_doctor reboot "after the reboot"
        if ssh_to "$work/admin" 22 root true; then pass "the host's own sshd lets root in after the reboot"; else fail "the host's own sshd refuses root after the reboot"; fi
        local unit line
        for unit in bastion-iptables.service bastion-metadata-proxy.service bastiond.service bastion-sshd.service bastion-cleanup.service; do
            line="$(on "systemd-analyze security $unit 2>/dev/null | tail -n1")"
            scores+=("$unit: $(grep -oE '[0-9]+\.[0-9]+ [A-Z]+' <<<"$line")")
        done
        if on "systemctl start bastion-cleanup.service" >"$logs/cleanup.txt" 2>&1; then
            pass "bastion-cleanup.service runs in its sandbox"
        else
            fail "bastion-cleanup.service failed: $(on 'journalctl -u bastion-cleanup --no-pager -n 5' | tr '\n' ' ')"
        fi
    fi

    # 5. No drift; a second run changes nothing.
    check_again_and_check "$v"

    # 6. Uninstall: what it installed goes, the data stays.
    if on "/root/src/provisioning/install.sh --uninstall" >"$logs/uninstall.txt" 2>&1; then
        local left
        left="$(on 'ls /usr/local/lib/bastion /usr/local/sbin/bastiond /etc/systemd/system/bastiond.service /etc/logrotate.d/bastion 2>/dev/null; grep -x /usr/local/bin/bastion-shell /etc/shells; iptables -t nat -S | grep BMP-' || true)"
        local kept
        kept="$(on 'ls -d /etc/bastion/bastion.toml /etc/bastion/sshd/ssh_host_ed25519_key /var/log/bastion /var/lib/bastion/homes/tester 2>/dev/null | wc -l')"
        if [[ -z "$left" && "$kept" == 4 ]]; then
            pass "--uninstall removed units, binaries, scripts, logrotate, /etc/shells line and rules; kept config, host keys, logs, homes"
        else
            fail "--uninstall left: ${left//$'\n'/ }; kept $kept of 4 data paths"
        fi
        if [[ "$v" == systemd ]]; then
            if ssh_to "$work/admin" 22 root true; then pass "the host's own sshd lets root in after --uninstall"; else fail "the host's own sshd refuses root after --uninstall"; fi
        fi
    else
        fail "--uninstall failed: $(tail -n 3 "$logs/uninstall.txt" | tr '\n' ' ')"
    fi
    cp -r "$logs" "$work/logs-$v"
    find "$logs" -type f -delete
    took[$v]=$((SECONDS - t0))
    remove_machine
}

case "$variant" in
all)
    run_variant systemd
    run_variant supervisor
    ;;
*) run_variant "$variant" ;;
esac

echo
printf '%s\n' "${results[@]}"
if ((${#scores[@]})); then
    echo "systemd-analyze security (exposure, lower is better; inside the systemd machine):"
    printf '  %s\n' "${scores[@]}"
fi
for v in "${!took[@]}"; do
    echo "wall time, $v: ${took[$v]} s"
done
echo "logs: $work/logs-*"
if ((${#failures[@]})); then
    echo "FAIL: ${#failures[@]} check(s) failed:"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
echo "PASS: the production install, with and without systemd ($SECONDS s in all)"
