#!/usr/bin/env bash
# Builds the bastion users' image online, where a registry and the internet
# are reachable: `docker build` of image/Dockerfile.online (debian:bookworm-slim,
# the packages of packages.txt at the versions.env pins, kubectl and k9s
# downloaded and checked by fetch.sh), then the same probe and labels as the
# offline image/build.sh.
#
#   image/build-online.sh --tag REGISTRY/bastion/user:TAG [--platform linux/arm64] [-- DOCKER-BUILD-ARGS...]
#
#   --platform P   build for P (linux/amd64 or linux/arm64); probing it needs
#                  that platform to run here (the same machine, or binfmt)
#   -- ARGS        passed to `docker build` (e.g. --build-arg BASE=...,
#                  --pull, --no-cache)
#
# Push the tag yourself (docker push) and name it in bastion.toml. With
# BuildKit, use the default `docker` driver (the image must land in the
# local image store to be probed). docs/image.md tells more.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tag=
platform=
extra=()

say() { printf 'image/build-online.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

while (($#)); do
    case "$1" in
    --tag | --platform)
        (($# >= 2)) || die "$1 needs a value (image/build-online.sh --help)"
        [[ "$1" == --tag ]] && tag="$2" || platform="$2"
        shift 2
        ;;
    --tag=*)
        tag="${1#--tag=}"
        shift
        ;;
    --platform=*)
        platform="${1#--platform=}"
        shift
        ;;
    --)
        shift
        extra=("$@")
        break
        ;;
    -h | --help) usage 0 ;;
    *)
        say "unknown argument: $1"
        usage
        ;;
    esac
done
[[ -n "$tag" ]] || die "--tag is required, e.g. --tag registry.example.com/bastion/user:1"
[[ -z "${BASTION_IMAGE_VERSIONS-}" ]] ||
    die "BASTION_IMAGE_VERSIONS is for the offline build's tests; the online build always uses image/versions.env"
command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker Engine does not answer (docker info failed)"
# The pins must parse here already (the build would fail later otherwise).
use_versions "$here"
for name in kubectl k9s; do
    for a in amd64 arm64; do
        pin "$name" "$a"
    done
done

work="$(mktemp -d)"
image=
cleanup() {
    rm -rf "$work"
    [[ -z "$image" ]] || docker image rm "$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT

platform_args=()
[[ -z "$platform" ]] || platform_args=(--platform "$platform")
start=$SECONDS
say "building $tag from image/Dockerfile.online"
docker build --force-rm --file "$here/Dockerfile.online" --iidfile "$work/iid" \
    "${platform_args[@]}" "${extra[@]}" "$here" ||
    die "docker build of image/Dockerfile.online failed (above)"
image="$(cat "$work/iid")"

label_image "$image" "$tag" "$work" "$platform"
image=
size="$(docker image inspect --format '{{.Size}}' "$tag")"
say "built $tag ($((size / 1000000)) MB) in $((SECONDS - start)) s; labels: ${LABELS//$'\n'/, }"
