#!/usr/bin/env bash
# Gets a pinned artifact of the users' image (kubectl, k9s) and checks its
# SHA-256 against image/versions.env before anything uses it. Both builds use
# it: image/build.sh (offline, files ops provide) and image/Dockerfile.online
# (downloads).
#
#   image/fetch.sh NAME ARCH DEST [--from FILE]
#       downloads NAME's pinned file for ARCH (or takes FILE), checks it, and
#       installs the program at DEST (mode 0755): kubectl as it is, k9s
#       extracted from the release tarball
#   image/fetch.sh --check NAME ARCH FILE
#       only checks FILE (exit 0: it is the pinned file; 1: it is not)
#   image/fetch.sh --print NAME ARCH
#       prints the pinned VERSION URL SHA256
#
# NAME: kubectl or k9s. ARCH: amd64 or arm64 (Debian's names, as
# `dpkg --print-architecture` prints them). A mismatch exits 1 with a message
# naming the file, the expected and the actual checksum, and installs nothing.
#
# The versions file is versions.env beside this script. For the tests only,
# BASTION_IMAGE_VERSIONS=FILE replaces it (FILE must say BASTION_TEST_VERSIONS=1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf 'fetch.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
usage() {
    sed -n '2,22s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

mode=install
case "${1-}" in
--check)
    mode=check
    shift
    ;;
--print)
    mode=print
    shift
    ;;
-h | --help | '') usage ;;
esac

name="${1-}"
arch="${2-}"
[[ -n "$name" && -n "$arch" ]] || usage
use_versions "$here"
pin "$name" "$arch"

case "$mode" in
print)
    (($# == 2)) || usage
    printf '%s %s %s\n' "$PIN_VERSION" "$PIN_URL" "$PIN_SHA256"
    exit 0
    ;;
check)
    (($# == 3)) || usage
    check_pinned "$name" "$arch" "$3"
    exit 0
    ;;
esac

dest="${3-}"
from=
[[ -n "$dest" ]] || usage
shift 3
while (($#)); do
    case "$1" in
    --from)
        (($# >= 2)) || die "--from needs a file"
        from="$2"
        shift 2
        ;;
    *) usage ;;
    esac
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$work/$PIN_FILE"

# The check applies to a private copy: what is checked is what is used.
if [[ -n "$from" ]]; then
    [[ -f "$from" ]] || die "$from: no such file (expected $PIN_FILE of $name $PIN_VERSION for $arch)"
    cp -- "$from" "$file"
    shown="$from"
else
    command -v curl >/dev/null || die "curl is needed to download $PIN_URL"
    say "downloading $name $PIN_VERSION ($arch): $PIN_URL"
    curl -fsSL --retry 3 --connect-timeout 30 -o "$file" "$PIN_URL" ||
        die "cannot download $PIN_URL (curl failed); without internet access use image/build.sh, which takes the file ops provide"
    shown="$PIN_URL"
fi
check_pinned "$name" "$arch" "$file" "$shown"

case "$name" in
kubectl)
    install -m 0755 "$file" "$dest"
    ;;
k9s)
    # The release tarball holds the binary `k9s` at its top level (plus
    # LICENSE and README.md); only that member is extracted.
    mkdir "$work/x"
    tar -xzf "$file" -C "$work/x" --no-same-owner --no-same-permissions k9s ||
        die "$shown has the right checksum but no k9s at its top level: tar failed"
    [[ -f "$work/x/k9s" && ! -L "$work/x/k9s" ]] || die "$shown: its k9s is not a regular file"
    install -m 0755 "$work/x/k9s" "$dest"
    ;;
esac
say "installed $name $PIN_VERSION ($arch, sha256 $PIN_SHA256 checked) at $dest"
