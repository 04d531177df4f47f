#!/usr/bin/env bash
# Builds the bastion users' container image offline: debootstrap a Debian
# rootfs from the packages in image/packages.txt, import it into Docker, then
# apply image/Dockerfile (kubectl from this host, /etc/bash.bashrc, no setuid).
#
#   image/build.sh [--tag bastion/user:latest] [--refresh]
#
#   --refresh   rebuild the rootfs (fresh security updates) and the image
#               even when nothing changed
#
# Fast when nothing changed: the image carries the SHA-256 of its inputs
# (label bastion.image.inputs) and is not rebuilt when that matches; the
# rootfs tarball is cached in /var/cache/bastion keyed by the package list.
#
# Environment: BASTION_MIRROR (default http://deb.debian.org/debian),
# BASTION_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
# BASTION_KUBECTL (default /usr/bin/kubectl), BASTION_CACHE (default
# /var/cache/bastion).
set -euo pipefail

readonly SUITE=bookworm
# Bump when the rootfs recipe below changes in a way the package list does not show.
readonly ROOTFS_RECIPE=1
readonly INPUTS_LABEL=bastion.image.inputs

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag=bastion/user:latest
refresh=false
mirror="${BASTION_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${BASTION_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
kubectl_src="${BASTION_KUBECTL:-/usr/bin/kubectl}"
cache="${BASTION_CACHE:-/var/cache/bastion}"

say() { printf 'image/build.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

while (($#)); do
    case "$1" in
    --tag)
        (($# >= 2)) || die "--tag needs a value, e.g. --tag bastion/user:latest"
        tag="$2"
        shift 2
        ;;
    --tag=*)
        tag="${1#--tag=}"
        shift
        ;;
    --refresh)
        refresh=true
        shift
        ;;
    -h | --help) usage 0 ;;
    *)
        say "unknown argument: $1"
        usage
        ;;
    esac
done
[[ -n "$tag" ]] || die "--tag must not be empty"

[[ "$(id -u)" == 0 ]] || die "must run as root (debootstrap and docker need it): sudo $0"
for tool in debootstrap docker sha256sum tar flock findmnt; do
    command -v "$tool" >/dev/null || die "$tool not found; install it (apt-get install debootstrap docker.io) or run provisioning/install.sh"
done
docker info >/dev/null 2>&1 ||
    die "the Docker Engine does not answer (docker info failed); start it (provisioning/install.sh does) and retry"

kubectl_bin="$(readlink -f "$kubectl_src" 2>/dev/null || true)"
[[ -n "$kubectl_bin" && -f "$kubectl_bin" && -x "$kubectl_bin" ]] ||
    die "kubectl not found at $kubectl_src; install a static kubectl there or set BASTION_KUBECTL=/path/to/kubectl"

packages_file="$here/packages.txt"
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$packages_file")
((${#packages[@]})) || die "$packages_file lists no packages"

sha() { sha256sum | cut -d' ' -f1; }
# The rootfs depends on the package list, the suite and this script's recipe.
rootfs_key="$({
    echo "suite=$SUITE recipe=$ROOTFS_RECIPE"
    printf '%s\n' "${packages[@]}" | sort -u
} | sha)"
# The image depends on the rootfs and every file the Dockerfile uses.
inputs="sha256:$({
    echo "rootfs=$rootfs_key"
    for f in Dockerfile bash.bashrc aws_completer; do
        printf '%s  %s\n' "$(sha <"$here/$f")" "$f"
    done
    printf '%s  kubectl\n' "$(sha <"$kubectl_bin")"
} | sha)"

# One build at a time (concurrent runs would share the cache and the tag);
# a run that waited then usually finds the image up to date.
mkdir -p "$cache/apt-archives"
chmod 0755 "$cache"
exec 9>"$cache/build.lock"
if ! flock -n 9; then
    say "waiting for another image/build.sh to finish"
    flock -w 1800 9 || die "another image/build.sh held $cache/build.lock for 30 minutes"
fi

current="$(docker image inspect --format "{{ index .Config.Labels \"$INPUTS_LABEL\" }}" "$tag" 2>/dev/null || true)"
if [[ "$current" == "$inputs" && "$refresh" == false ]]; then
    say "$tag is up to date ($INPUTS_LABEL=$inputs)"
    exit 0
fi

start=$SECONDS
tarball="$cache/rootfs-$SUITE-${rootfs_key:0:16}.tar"
base="bastion/user-base:${rootfs_key:0:16}"
work="$(mktemp -d "$cache/build.XXXXXX")"
rootfs="$work/rootfs"

cleanup() {
    local m
    # Unmount whatever is still mounted under the rootfs, deepest first.
    if [[ -d "$rootfs" ]]; then
        for m in $(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r); do
            umount -l "$m" || true
        done
    fi
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }

build_rootfs() {
    say "debootstrap $SUITE (minbase) from $mirror"
    mkdir -p "$rootfs"
    # debootstrap's log is long and only useful when it fails.
    if ! debootstrap --variant=minbase --components=main --cache-dir="$cache/apt-archives" \
        "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log above); is $mirror reachable? (set BASTION_MIRROR to use another mirror)"
    fi

    # No docs, man pages or translations, now or for any later install.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-bastion-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/groff/*/doc/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/01-bastion" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
EOF
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security_mirror $SUITE-security main
EOF
    # No service may start inside the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    mount -t proc proc "$rootfs/proc"
    mount --bind "$cache/apt-archives" "$rootfs/var/cache/apt/archives"

    say "installing ${#packages[@]} packages: ${packages[*]}"
    if ! in_root sh -c 'apt-get update -q && apt-get -q -y -o Dpkg::Options::=--force-unsafe-io dist-upgrade && apt-get -q -y -o Dpkg::Options::=--force-unsafe-io install "$@"' \
        apt "${packages[@]}" >"$work/apt.log" 2>&1; then
        tail -n 40 "$work/apt.log" >&2
        die "installing the image's packages failed (log above); check image/packages.txt and the mirror"
    fi
    # The sane default locale plus the one most clients send (LANG via AcceptEnv).
    printf 'C.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n' >"$rootfs/etc/locale.gen"
    in_root locale-gen >"$work/locale.log" 2>&1 || {
        cat "$work/locale.log" >&2
        die "locale-gen failed"
    }

    umount "$rootfs/var/cache/apt/archives" "$rootfs/proc"
    in_root apt-get clean
    rm -f "$rootfs/usr/sbin/policy-rc.d"
    : >"$rootfs/etc/resolv.conf"
    # Docs of the packages debootstrap unpacked before the excludes existed,
    # apt lists, logs, caches; Docker provides /dev, /proc, /sys, /run, hostname.
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    rm -rf "$rootfs"/usr/share/{man,info,lintian}/* "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old "$rootfs"/debootstrap \
        "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/run/* "${rootfs:?}"/dev/*
    : >"$rootfs/etc/hostname"
    rm -f "$rootfs/etc/machine-id"

    tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.tmp" .
    mv -f "$tarball.tmp" "$tarball"
    rm -rf --one-file-system "$rootfs"
    say "rootfs cached at $tarball ($(du -h "$tarball" | cut -f1))"
}

if [[ "$refresh" == true || ! -f "$tarball" ]]; then
    build_rootfs
    docker image rm "$base" >/dev/null 2>&1 || true
else
    say "using cached rootfs $tarball"
fi

if ! docker image inspect "$base" >/dev/null 2>&1; then
    say "importing the rootfs as $base"
    docker import --message "bastion rootfs $SUITE ${rootfs_key:0:16}" - "$base" <"$tarball" >/dev/null ||
        die "docker import of $tarball failed"
fi

# The build context: the Dockerfile's inputs only (kubectl with mode 0755).
context="$work/context"
mkdir -p "$context"
cp "$here/Dockerfile" "$here/bash.bashrc" "$context/"
install -m 0755 "$here/aws_completer" "$context/aws_completer"
install -m 0755 "$kubectl_bin" "$context/kubectl"

previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
say "building $tag from $base"
# Docker's legacy builder: works with Debian's docker.io (no buildx) and,
# with --network none, never reaches out (the FROM image is local).
if ! DOCKER_BUILDKIT=0 docker build --quiet --network none --force-rm \
    --build-arg "BASE=$base" --label "$INPUTS_LABEL=$inputs" \
    --tag "$tag" "$context" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    die "docker build of $tag failed (log above)"
fi

# The replaced image goes unless a container still uses it (then Docker keeps it).
if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
# Older rootfs tarballs and base images (another package list) are garbage.
find "$cache" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -path "$tarball" -delete
docker image ls --format '{{.Repository}}:{{.Tag}}' bastion/user-base | grep -vxF "$base" |
    xargs -r docker image rm >/dev/null 2>&1 || true
size="$(docker image inspect --format '{{.Size}}' "$tag")"
say "built $tag ($((size / 1000000)) MB) in $((SECONDS - start)) s; $INPUTS_LABEL=$inputs"
