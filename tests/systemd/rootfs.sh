#!/usr/bin/env bash
# The test machine of tests/systemd/run.sh: a Debian 12 root file system
# (debootstrap) with systemd as its init and the packages of
# tests/systemd/packages.txt, imported into Docker as an image. Prints the
# image's tag.
#
#   tests/systemd/rootfs.sh [--refresh]
#
# Cached: the tarball in /var/cache/bastion/systemd-test/ and the image
# bastion/systemd-test:KEY are keyed by the package list and this recipe
# (KEY: the first 16 hex digits of their SHA-256), so a second run only
# prints the tag; older tarballs and tags are removed. --refresh builds both
# again (fresh security updates).
#
# Environment: BASTION_MIRROR (default http://deb.debian.org/debian),
# BASTION_CACHE (default /var/cache/bastion), BASTION_HEAVY_LOCK (a lock
# file the heavy steps, debootstrap and docker import, hold with flock, so
# that one heavy job runs at a time on a shared machine; none by default:
# never set it when the caller already holds that lock). Runs as root.
set -euo pipefail

readonly SUITE=bookworm
# Bump when the recipe below changes in a way the package list does not show.
readonly RECIPE=1

here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
mirror="${BASTION_MIRROR:-http://deb.debian.org/debian}"
cache="${BASTION_CACHE:-/var/cache/bastion}/systemd-test"
refresh=false

say() { printf 'tests/systemd/rootfs.sh: %s\n' "$*" >&2; }
heavy() {
    if [[ -n "${BASTION_HEAVY_LOCK:-}" ]]; then
        flock "$BASTION_HEAVY_LOCK" "$@"
    else
        "$@"
    fi
}
die() {
    say "error: $*"
    exit 1
}

case "${1:-}" in
"") ;;
--refresh) refresh=true ;;
*)
    sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap): sudo $0"
for tool in debootstrap docker flock sha256sum tar; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install debootstrap docker.io"
done

packages=()
while read -r line; do
    line="${line%%#*}"
    line="${line//[[:space:]]/}"
    [[ -n "$line" ]] && packages+=("$line")
done <"$here/packages.txt"
key="$({
    printf 'recipe %s suite %s\n' "$RECIPE" "$SUITE"
    printf '%s\n' "${packages[@]}"
    sed -n '/^# ---- recipe ----$/,$p' "${BASH_SOURCE[0]}"
} | sha256sum | cut -c1-16)"
tag="bastion/systemd-test:$key"
tarball="$cache/rootfs-$SUITE-$key.tar"

if [[ "$refresh" == false ]] && docker image inspect "$tag" >/dev/null 2>&1; then
    say "image $tag present (cached)"
    echo "$tag"
    exit 0
fi

# ---- recipe ----
mkdir -p "$cache/debs"
if [[ "$refresh" == true || ! -s "$tarball" ]]; then
    work="$(mktemp -d "$cache/build.XXXXXX")"
    trap 'umount -R "$work/root/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
    say "debootstrap $SUITE with ${#packages[@]} packages into $work/root (a few minutes)"
    include="$(
        IFS=,
        echo "${packages[*]}"
    )"
    heavy debootstrap --variant=minbase --include="$include" \
        --cache-dir="$cache/debs" "$SUITE" "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
        tail -n 30 "$work/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    }
    root="$work/root"
    # What a cloud VM's image sets up: apt sources, a host name, an empty
    # machine-id (systemd makes one at first boot), no console getty.
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb ${mirror%/debian}/debian-security $SUITE-security main
EOF
    echo bastion-systest >"$root/etc/hostname"
    : >"$root/etc/machine-id"
    rm -f "$root/var/lib/dbus/machine-id"
    # Units that cannot work in a container (no console, no udev, no
    # kernel to configure).
    for unit in getty@tty1.service console-getty.service systemd-udevd.service \
        systemd-udev-trigger.service systemd-modules-load.service sys-kernel-config.mount \
        systemd-remount-fs.service systemd-firstboot.service; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    # Debian's packages enable ssh.service (the admins' sshd on port 22)
    # and docker.service: the test checks both survive the install.
    rm -f "$root/usr/sbin/policy-rc.d"
    # Loop devices, as a VM's devtmpfs has them (a container's /dev is a
    # tmpfs): bastiond loop-mounts the users' homes.
    {
        echo "c /dev/loop-control 0660 root disk - 10:237"
        for ((i = 0; i < 256; i++)); do
            echo "b /dev/loop$i 0660 root disk - 7:$i"
        done
    } >"$root/etc/tmpfiles.d/bastion-systest-loop.conf"
    # Keys of the admins' sshd are made at package install; the test
    # logs in as root with a key to prove the admins keep their way in.
    mkdir -p "$root/root/.ssh"
    chmod 0700 "$root/root/.ssh"
    rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
    tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    find "$cache" -maxdepth 1 -name "rootfs-*.tar" ! -name "${tarball##*/}" -delete
    say "rootfs cached in $tarball ($(du -h "$tarball" | cut -f1))"
fi
say "importing $tarball as $tag"
heavy docker import \
    --change 'ENV container=docker' \
    --change 'CMD ["/sbin/init"]' \
    "$tarball" "$tag" >/dev/null
docker image ls --format '{{.Repository}}:{{.Tag}}' bastion/systemd-test | grep -vxF "$tag" |
    xargs -r docker image rm >/dev/null 2>&1 || true
echo "$tag"
