#!/usr/bin/env bash
# Builds the bastion users' container image offline: debootstrap a Debian
# rootfs with the packages of image/packages.txt (pinned by image/versions.env),
# import it into Docker, then apply image/Dockerfile (kubectl, k9s when given,
# /etc/bash.bashrc, locales, completions, no setuid) and label the result with
# its tools' versions.
#
#   image/build.sh [--tag bastion/user:latest] [--k9s FILE] [--kubectl FILE] [--refresh]
#
#   --k9s FILE      the k9s release tarball versions.env pins for this machine
#                   (k9s_Linux_amd64.tar.gz or k9s_Linux_arm64.tar.gz, as
#                   downloaded): checked against its pinned SHA-256, then kept
#                   in the cache for later builds. Without it (and none kept),
#                   the image has no k9s and says so at login.
#   --kubectl FILE  the kubectl release binary versions.env pins, checked and
#                   kept alike. Without it: the one kept, else the host's
#                   (BASTION_KUBECTL, default /usr/bin/kubectl), unchecked.
#   --refresh       rebuild the rootfs (fresh security updates) and the image
#                   even when nothing changed
#
# Fast when nothing changed: the image carries the SHA-256 of its inputs
# (label bastion.image.inputs) and is not rebuilt when that matches; the
# rootfs tarball is cached in /var/cache/bastion keyed by the package list.
# docs/image.md tells more.
#
# Environment: BASTION_MIRROR (default http://deb.debian.org/debian),
# BASTION_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
# BASTION_KUBECTL (default /usr/bin/kubectl), BASTION_K9S (as --k9s),
# BASTION_CACHE (default /var/cache/bastion); BASTION_IMAGE_VERSIONS is for
# the tests only (a versions file saying BASTION_TEST_VERSIONS=1).
set -euo pipefail

readonly SUITE=bookworm
# Bump when the rootfs recipe below changes in a way its inputs do not show.
readonly ROOTFS_RECIPE=2
# Bump when the image recipe (context, probe, labels) changes likewise.
readonly IMAGE_RECIPE=2
readonly INPUTS_LABEL=bastion.image.inputs
readonly DEFAULT_TAG=bastion/user:latest

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag="$DEFAULT_TAG"
refresh=false
k9s_src="${BASTION_K9S-}"
kubectl_given=
mirror="${BASTION_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${BASTION_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
cache="${BASTION_CACHE:-/var/cache/bastion}"

say() { printf 'image/build.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    sed -n '2,33s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

while (($#)); do
    case "$1" in
    --tag | --k9s | --kubectl)
        (($# >= 2)) || die "$1 needs a value (image/build.sh --help)"
        case "$1" in
        --tag) tag="$2" ;;
        --k9s) k9s_src="$2" ;;
        --kubectl) kubectl_given="$2" ;;
        esac
        shift 2
        ;;
    --tag=*)
        tag="${1#--tag=}"
        shift
        ;;
    --k9s=*)
        k9s_src="${1#--k9s=}"
        shift
        ;;
    --kubectl=*)
        kubectl_given="${1#--kubectl=}"
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

use_versions "$here"
if [[ "$VERSIONS_TEST" == true ]]; then
    [[ "$tag" != "$DEFAULT_TAG" ]] ||
        die "BASTION_IMAGE_VERSIONS is for the tests only: it never builds $DEFAULT_TAG (unset it, or use a test tag)"
    say "warning: versions from $VERSIONS_FILE (BASTION_IMAGE_VERSIONS, tests only), not image/versions.env"
fi
arch="$(deb_arch)"
artifacts="$cache/artifacts"

# Files ops give are checked first, before anything is locked or built: a
# wrong file stops here, naming it.
if [[ -n "$k9s_src" ]]; then
    "$here/fetch.sh" --check k9s "$arch" "$k9s_src" ||
        die "--k9s $k9s_src refused (above): nothing was built. Give the k9s release tarball versions.env pins, as downloaded"
fi
if [[ -n "$kubectl_given" ]]; then
    "$here/fetch.sh" --check kubectl "$arch" "$kubectl_given" ||
        die "--kubectl $kubectl_given refused (above): nothing was built. Give the kubectl release binary versions.env pins, as downloaded"
fi

docker info >/dev/null 2>&1 ||
    die "the Docker Engine does not answer (docker info failed); start it (provisioning/install.sh does) and retry"

# Where a pinned artifact ops gave once is kept for later builds: one file
# per name, version and architecture, used only while it matches its pin.
kept() {
    pin "$1" "$arch"
    printf '%s/%s-%s-%s-%s\n' "$artifacts" "$1" "$PIN_VERSION" "$arch" "$PIN_FILE"
}

# kubectl: the file given, else the one kept, else the host's.
kubectl_kept="$(kept kubectl)"
if [[ -n "$kubectl_given" ]]; then
    kubectl_bin="$kubectl_given"
    kubectl_from="--kubectl $kubectl_given (checked)"
elif [[ -z "${BASTION_KUBECTL-}" && -f "$kubectl_kept" ]]; then
    "$here/fetch.sh" --check kubectl "$arch" "$kubectl_kept" >/dev/null 2>&1 ||
        die "$kubectl_kept does not match versions.env any more (damaged?): remove it and give the file again with --kubectl FILE"
    kubectl_bin="$kubectl_kept"
    kubectl_from="$kubectl_kept (given earlier with --kubectl, checked)"
else
    kubectl_src="${BASTION_KUBECTL:-/usr/bin/kubectl}"
    kubectl_bin="$(readlink -f "$kubectl_src" 2>/dev/null || true)"
    [[ -n "$kubectl_bin" && -f "$kubectl_bin" && -x "$kubectl_bin" ]] ||
        die "kubectl not found at $kubectl_src; give the pinned release with --kubectl FILE (docs/image.md), or set BASTION_KUBECTL=/path/to/kubectl"
    kubectl_from="$kubectl_src (this host's, not checked against versions.env)"
fi

# k9s: the file given, else the one kept, else none.
k9s_kept="$(kept k9s)"
k9s_file=
if [[ -n "$k9s_src" ]]; then
    k9s_file="$k9s_src"
elif [[ -f "$k9s_kept" ]]; then
    "$here/fetch.sh" --check k9s "$arch" "$k9s_kept" >/dev/null 2>&1 ||
        die "$k9s_kept does not match versions.env any more (damaged?): remove it and give the file again with --k9s FILE"
    k9s_file="$k9s_kept"
fi

apt_args="$("$here/setup.sh" apt-args)" || die "image/setup.sh apt-args failed (above)"
mapfile -t packages <<<"$apt_args"
[[ -n "$apt_args" ]] || die "$here/packages.txt lists no packages"

sha() { sha256sum | cut -d' ' -f1; }
# The rootfs depends on the packages (and their pins), the suite, the dpkg
# and apt settings and this script's recipe.
rootfs_key="$({
    echo "suite=$SUITE recipe=$ROOTFS_RECIPE"
    printf '%s\n' "${packages[@]}" | sort -u
    cat "$here/dpkg-nodoc.cfg" "$here/apt.conf"
} | sha)"
# The image depends on the rootfs, every file of the context, kubectl and k9s.
inputs="sha256:$({
    echo "rootfs=$rootfs_key recipe=$IMAGE_RECIPE"
    for f in Dockerfile bash.bashrc aws_completer lib.sh fetch.sh setup.sh packages.txt locales.txt; do
        printf '%s  %s\n' "$(sha <"$here/$f")" "$f"
    done
    printf '%s  versions.env\n' "$(sha <"$VERSIONS_FILE")"
    printf '%s  kubectl\n' "$(sha <"$kubectl_bin")"
    if [[ -n "$k9s_file" ]]; then
        printf '%s  k9s\n' "$(sha <"$k9s_file")"
    else
        echo "k9s absent"
    fi
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

# A file ops gave is kept for the next builds (install.sh runs build.sh
# without --k9s): the pinned version stays in the image until versions.env
# moves on.
keep() {
    local name="$1" file="$2" dest="$3"
    [[ "$file" != "$dest" ]] || return 0
    mkdir -p "$artifacts"
    chmod 0755 "$artifacts"
    install -m 0644 "$file" "$dest.tmp"
    mv -f "$dest.tmp" "$dest"
    say "kept $name for later builds: $dest"
}
[[ -n "$k9s_src" ]] && keep k9s "$k9s_src" "$k9s_kept"
[[ -n "$kubectl_given" ]] && keep kubectl "$kubectl_given" "$kubectl_kept"

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
unlabelled=

cleanup() {
    local m
    # Unmount whatever is still mounted under the rootfs, deepest first.
    if [[ -d "$rootfs" ]]; then
        for m in $(findmnt -rn -o TARGET | grep -F "$rootfs/" | sort -r); do
            umount -l "$m" || true
        done
    fi
    rm -rf --one-file-system "$work"
    # The image before its labels, when the build stopped half-way (after a
    # success it is the labelled image's parent and stays).
    [[ -z "$unlabelled" ]] || docker image rm "$unlabelled" >/dev/null 2>&1 || true
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

    # No docs, man pages or translations, now or for any later install; no
    # recommends (the same files as Dockerfile.online's).
    install -m 0644 "$here/dpkg-nodoc.cfg" "$rootfs/etc/dpkg/dpkg.cfg.d/01-bastion-nodoc"
    install -m 0644 "$here/apt.conf" "$rootfs/etc/apt/apt.conf.d/01-bastion"
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
        die "installing the image's packages failed (log above); check image/packages.txt, the *_DEB_VERSION pins of image/versions.env (a pinned version the mirror no longer has must be bumped) and the mirror"
    fi

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

# The build context: the Dockerfile's inputs only, laid out as in image/
# (Dockerfile.online uses the same names), plus bin/ with the programs.
context="$work/context"
mkdir -p "$context/bin"
cp "$here/Dockerfile" "$here/bash.bashrc" "$here/packages.txt" "$here/locales.txt" "$here/lib.sh" "$context/"
install -m 0644 "$VERSIONS_FILE" "$context/versions.env"
install -m 0755 "$here/fetch.sh" "$here/setup.sh" "$here/aws_completer" "$context/"
if [[ -n "$kubectl_given" || "$kubectl_bin" == "$kubectl_kept" ]]; then
    "$here/fetch.sh" kubectl "$arch" "$context/bin/kubectl" --from "$kubectl_bin" 2>"$work/fetch.log" || {
        cat "$work/fetch.log" >&2
        die "kubectl $kubectl_bin could not be taken (above): nothing was built"
    }
else
    install -m 0755 "$kubectl_bin" "$context/bin/kubectl"
fi
say "kubectl: $kubectl_from"
if [[ -n "$k9s_file" ]]; then
    "$here/fetch.sh" k9s "$arch" "$context/bin/k9s" --from "$k9s_file" 2>"$work/fetch.log" || {
        cat "$work/fetch.log" >&2
        die "k9s $k9s_file could not be taken (above): nothing was built"
    }
    pin k9s "$arch"
    say "k9s: $PIN_VERSION from $k9s_file (checked)"
else
    others="$(find "$artifacts" -maxdepth 1 -name 'k9s-*' -printf '%f ' 2>/dev/null || true)"
    pin k9s "$arch"
    say "k9s: none given (--k9s FILE) or kept for $PIN_VERSION${others:+ (kept for other versions: $others)}, so the image has none and says so at login (docs/image.md)"
fi

previous="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
say "building $tag from $base"
# Docker's legacy builder: works with Debian's docker.io (no buildx) and,
# with --network none, never reaches out (the FROM image is local).
if ! DOCKER_BUILDKIT=0 docker build --network none --force-rm --iidfile "$work/iid" \
    --build-arg "BASE=$base" "$context" >"$work/build.log" 2>&1; then
    cat "$work/build.log" >&2
    die "docker build of $tag failed (log above)"
fi
unlabelled="$(cat "$work/iid")"

# Labels: what the built image says of itself, asked as an unprivileged user
# (each tool must run), then the input hash; tagged only when all went well.
DOCKER_BUILDKIT=0 label_image "$unlabelled" "$tag" "$work" "" --label "$INPUTS_LABEL=$inputs"
unlabelled=

# The replaced image goes unless a container still uses it (then Docker keeps it).
if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
# Older rootfs tarballs and base images (another package list) are garbage.
find "$cache" -maxdepth 1 -name "rootfs-$SUITE-*.tar" ! -path "$tarball" -delete
docker image ls --format '{{.Repository}}:{{.Tag}}' bastion/user-base | grep -vxF "$base" |
    xargs -r docker image rm >/dev/null 2>&1 || true
size="$(docker image inspect --format '{{.Size}}' "$tag")"
say "built $tag ($((size / 1000000)) MB) in $((SECONDS - start)) s; labels: ${LABELS//$'\n'/, }"
say "$INPUTS_LABEL=$inputs"
