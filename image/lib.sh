# shellcheck shell=bash
# Sourced by the users' image's scripts (fetch.sh, setup.sh, build.sh,
# build-online.sh), on the build host and inside the online build: the
# versions file, the pinned artifacts, the architecture. The sourcing script
# defines die() (its name and the message on stderr, exit 1).

declare -gA VERSIONS=()
VERSIONS_FILE=
VERSIONS_TEST=false
LABELS=

# use_versions DIR: loads the versions file in use into VERSIONS: DIR's
# versions.env or, for the tests only, $BASTION_IMAGE_VERSIONS, a file that
# must say BASTION_TEST_VERSIONS=1 (so no real versions file can be swapped
# in by a stray variable).
use_versions() {
    VERSIONS_FILE="$1/versions.env"
    VERSIONS_TEST=false
    if [[ -n "${BASTION_IMAGE_VERSIONS-}" ]]; then
        VERSIONS_FILE="$BASTION_IMAGE_VERSIONS"
        VERSIONS_TEST=true
    fi
    load_versions "$VERSIONS_FILE"
    if [[ "$VERSIONS_TEST" == true && "${VERSIONS[BASTION_TEST_VERSIONS]-}" != 1 ]]; then
        die "BASTION_IMAGE_VERSIONS=$VERSIONS_FILE is for the tests only, and that file does not say BASTION_TEST_VERSIONS=1; unset BASTION_IMAGE_VERSIONS to use image/versions.env"
    fi
}

# load_versions FILE: KEY=VALUE lines and '#' comments; anything else is an
# error naming the line (values have no quotes, spaces or `$`, so the file is
# also safe to source).
load_versions() {
    local file="$1" line n=0
    [[ -f "$file" && -r "$file" ]] || die "versions file $file not found (or not readable)"
    VERSIONS=()
    while IFS= read -r line || [[ -n "$line" ]]; do
        n=$((n + 1))
        [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
        if [[ "$line" =~ ^([A-Z][A-Z0-9_]*)=([^[:space:]\"\'\$\`\\]*)$ ]]; then
            VERSIONS[${BASH_REMATCH[1]}]="${BASH_REMATCH[2]}"
        else
            die "$file line $n is not KEY=VALUE (no quotes, spaces or \$ in the value): $line"
        fi
    done <"$file"
}

# version_of KEY: a value of the versions file; an error when it is missing.
version_of() {
    [[ -n "${VERSIONS[$1]-}" ]] || die "$VERSIONS_FILE has no $1"
    printf '%s\n' "${VERSIONS[$1]}"
}

# pin NAME ARCH: the pinned artifact NAME (kubectl or k9s) for Debian
# architecture ARCH: sets PIN_VERSION, PIN_URL, PIN_FILE (the file name
# upstream publishes) and PIN_SHA256.
pin() {
    local name="$1" arch="$2" prefix url key
    case "$name" in
    kubectl) prefix=KUBECTL ;;
    k9s) prefix=K9S ;;
    *) die "unknown artifact '$name' (kubectl or k9s)" ;;
    esac
    case "$arch" in
    amd64 | arm64) ;;
    *) die "no pinned $name for architecture '$arch': $VERSIONS_FILE pins amd64 and arm64" ;;
    esac
    key="${prefix}_SHA256_${arch^^}"
    PIN_VERSION="$(version_of "${prefix}_VERSION")"
    url="$(version_of "${prefix}_URL")"
    PIN_SHA256="${VERSIONS[$key]-}"
    [[ "$PIN_SHA256" =~ ^[0-9a-f]{64}$ ]] ||
        die "$VERSIONS_FILE has no SHA-256 for $name $PIN_VERSION on $arch ($key must be 64 lowercase hex digits, the checksum upstream publishes)"
    url="${url//@VERSION@/$PIN_VERSION}"
    PIN_URL="${url//@ARCH@/$arch}"
    PIN_FILE="${PIN_URL##*/}"
}

# sha256_of FILE
sha256_of() {
    local sum
    sum="$(sha256sum <"$1")" || die "cannot read $1"
    printf '%s\n' "${sum%% *}"
}

# check_pinned NAME ARCH FILE [SHOWN]: FILE must be the pinned artifact
# (after `pin NAME ARCH`); else an error naming SHOWN (default FILE), the
# expected and the actual checksum.
check_pinned() {
    local name="$1" arch="$2" file="$3" shown="${4:-$3}" actual
    [[ -f "$file" ]] || die "$shown: no such file"
    actual="$(sha256_of "$file")"
    [[ "$actual" == "$PIN_SHA256" ]] ||
        die "checksum mismatch: $shown is not $PIN_FILE of $name $PIN_VERSION ($arch): expected sha256 $PIN_SHA256, actual sha256 $actual. Nothing was installed. Use the file from $PIN_URL, or bump the pin as docs/image.md says"
}

# deb_arch: this machine's Debian architecture (amd64, arm64, ...).
deb_arch() {
    if command -v dpkg >/dev/null 2>&1; then
        dpkg --print-architecture
        return
    fi
    case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
    esac
}

# label_image IMAGE TAG WORK [PLATFORM] [DOCKER-BUILD-ARGS...]: probes the
# built IMAGE (setup.sh probe, as an unprivileged user: every tool must run)
# and tags it TAG with the labels the probe printed plus DOCKER-BUILD-ARGS
# (e.g. --label K=V). WORK is a scratch directory; LABELS is set to the
# labels, one K=V a line. Nothing is tagged TAG when any step fails.
label_image() {
    local image="$1" tag="$2" work="$3" platform="${4-}" line tmp
    shift 4 || shift $#
    local labels=() platform_args=()
    [[ -z "$platform" ]] || platform_args=(--platform "$platform")
    if ! docker run --rm --network none --user 65534:65534 "${platform_args[@]}" \
        --entrypoint /usr/local/lib/bastion-image/setup.sh "$image" probe >"$work/labels" 2>"$work/probe.log"; then
        cat "$work/probe.log" >&2
        die "the built image failed its probe (above): $tag was not tagged"
    fi
    while IFS= read -r line; do
        [[ "$line" =~ ^bastion\.image\.[a-z0-9.]+=.+$ ]] || die "the image's probe printed an unexpected line: $line"
        labels+=(--label "$line")
    done <"$work/labels"
    # Labels need a build: FROM the image (by a temporary tag, which any
    # builder resolves locally), with nothing but the labels added.
    tmp="bastion/user-unlabelled:$$-$RANDOM"
    docker tag "$image" "$tmp" || die "cannot tag $image as $tmp"
    if ! printf 'FROM %s\n' "$tmp" | docker build --network none --quiet "${platform_args[@]}" \
        "${labels[@]}" "$@" --tag "$tag" - >"$work/label.log" 2>&1; then
        docker image rm "$tmp" >/dev/null 2>&1 || true
        cat "$work/label.log" >&2
        die "labelling $tag failed (log above)"
    fi
    # Only the temporary name goes: the image is the labelled one's parent.
    docker image rm "$tmp" >/dev/null 2>&1 || true
    # shellcheck disable=SC2034 # read by the scripts that source this file
    LABELS="$(cat "$work/labels")"
}
