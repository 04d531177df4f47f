#!/usr/bin/env bash
# The steps both builds of the users' image share (image/Dockerfile, offline,
# and image/Dockerfile.online). Kept in the image at /usr/local/lib/bastion-image/
# with the versions file and lists it was built from.
#
#   setup.sh apt-args   the Debian packages to install, one per line:
#                       packages.txt, pinned to versions.env's *_DEB_VERSION
#                       (e.g. awscli=2.9.19-1); on the build host or inside
#   setup.sh finish     inside the image build, as root: checks the pinned
#                       packages, generates the locales of locales.txt and the
#                       bash completions, removes every setuid/setgid bit
#   setup.sh probe      inside the built image, as an unprivileged user: runs
#                       each tool and prints the image's labels, one
#                       bastion.image.NAME=VALUE a line; fails when a tool
#                       does not run, a locale is missing or a setuid/setgid
#                       file is left
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
say() { printf 'setup.sh: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

# Lines of a list file without comments and blanks.
list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$1"; }

# The Debian version versions.env pins for package $1 (kubectx ->
# KUBECTX_DEB_VERSION), or nothing.
deb_pin() {
    local key="${1^^}"
    key="${key//[-.+]/_}_DEB_VERSION"
    printf '%s' "${VERSIONS[$key]-}"
}

apt_args() {
    local p v
    [[ -f "$here/packages.txt" ]] || die "$here/packages.txt not found"
    while IFS= read -r p; do
        v="$(deb_pin "$p")"
        printf '%s\n' "$p${v:+=$v}"
    done < <(list "$here/packages.txt")
}

# The locales of locales.txt, as clients send them (de_DE.UTF-8).
locales() {
    local l
    while IFS= read -r l; do
        [[ "$l" =~ ^(C|[a-z]{2,3}_[A-Z]{2}(@[a-z]+)?)\.UTF-8$ ]] ||
            die "locales.txt: '$l' is not a UTF-8 locale as clients send it (like de_DE.UTF-8)"
        printf '%s\n' "$l"
    done < <(list "$here/locales.txt")
}

finish() {
    [[ "$(id -u)" == 0 ]] || die "finish runs as root, in the image build"
    local arg pkg want have l comp=/usr/share/bash-completion/completions scratch left

    # What versions.env pins is what got installed (a mirror that moved on
    # would otherwise go unnoticed by the offline build's cached rootfs).
    while IFS= read -r arg; do
        [[ "$arg" == *=* ]] || continue
        pkg="${arg%%=*}" want="${arg#*=}"
        have="$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null || true)"
        [[ "$have" == "$want" ]] ||
            die "$pkg ${have:-is not installed}${have:+ is installed}, versions.env pins $want: bump the pin (docs/image.md) or rebuild the rootfs (image/build.sh --refresh)"
    done < <(apt_args)

    # Locales: C.UTF-8 is built into Debian's glibc; the others are
    # compiled into /usr/lib/locale/locale-archive.
    : >/etc/locale.gen
    while IFS= read -r l; do
        [[ "$l" == C.UTF-8 ]] && continue
        [[ -f "/usr/share/i18n/locales/${l%.UTF-8}" ]] ||
            die "locales.txt: glibc has no locale ${l%.UTF-8} (/usr/share/i18n/locales)"
        printf '%s UTF-8\n' "$l" >>/etc/locale.gen
    done < <(locales)
    locale-gen >/tmp/locale-gen.log 2>&1 || {
        cat /tmp/locale-gen.log >&2
        die "locale-gen failed"
    }
    rm -f /tmp/locale-gen.log

    # Completions, generated once here rather than at every login; bash-
    # completion loads them on first use. kubectx and kubens: Debian's
    # (kubectx.bash, kubens.bash); aws: `complete -C aws_completer` in
    # /etc/bash.bashrc. Tools write nothing to the image's home meanwhile.
    scratch="$(mktemp -d)"
    HOME="$scratch" XDG_CONFIG_HOME="$scratch" XDG_STATE_HOME="$scratch" XDG_DATA_HOME="$scratch" XDG_CACHE_HOME="$scratch" \
        kubectl completion bash >"$comp/kubectl"
    [[ -s "$comp/kubectl" ]] || die "kubectl completion bash printed nothing"
    if command -v k9s >/dev/null; then
        HOME="$scratch" XDG_CONFIG_HOME="$scratch" XDG_STATE_HOME="$scratch" XDG_DATA_HOME="$scratch" XDG_CACHE_HOME="$scratch" \
            k9s completion bash >"$comp/k9s" || die "k9s completion bash failed"
        [[ -s "$comp/k9s" ]] || die "k9s completion bash printed nothing"
    fi
    rm -rf "$scratch"
    for f in kubectx.bash kubens.bash; do
        [[ -e "$comp/$f" ]] || die "$comp/$f is missing: Debian's kubectx ships it"
    done

    # No file keeps a setuid/setgid bit: containers run with
    # no-new-privileges and no capabilities anyway; defense in depth.
    find / -xdev -type f -perm /6000 -exec chmod ug-s {} +
    left="$(find / -xdev -type f -perm /6000)"
    [[ -z "$left" ]] || die "setuid/setgid files left: $left"
}

# label NAME VALUE
label() { printf 'bastion.image.%s=%s\n' "$1" "$2"; }

# Debian's version of package $1, after checking its program $2 runs.
deb_tool() {
    local pkg="$1" v
    shift
    "$@" >/dev/null 2>&1 || die "'$*' fails in the image"
    v="$(dpkg-query -W -f '${Version}' "$pkg" 2>/dev/null)" || die "package $pkg is not installed"
    printf '%s\n' "$v"
}

probe() {
    local arch v kubectl pinned=false l out names=() left
    [[ "$(id -u)" != 0 ]] || die "probe runs as an unprivileged user (docker run --user 65534:65534)"
    export HOME="${TMPDIR:-/tmp}"
    arch="$(deb_arch)"

    kubectl="$(command -v kubectl)" || die "kubectl is not in the image"
    v="$(kubectl version --client -o json | jq -r '.clientVersion.gitVersion // empty')" ||
        die "'kubectl version --client' fails in the image"
    [[ -n "$v" ]] || die "kubectl did not tell its version"
    label kubectl "$v"
    # Whether it is the release versions.env pins (the online build's always
    # is; the offline build's is the file ops gave, or the host's).
    pin kubectl "$arch"
    [[ "$(sha256_of "$kubectl")" == "$PIN_SHA256" ]] && pinned=true
    label kubectl.pinned "$pinned"

    if command -v k9s >/dev/null; then
        # Only a file matching versions.env's checksum is installed, so its
        # version is the pinned one.
        k9s version >/dev/null 2>&1 || die "'k9s version' fails in the image"
        [[ -s /usr/share/bash-completion/completions/k9s ]] || die "k9s has no bash completion"
        label k9s "$(version_of K9S_VERSION)"
    else
        label k9s absent
    fi

    label kubectx "$(deb_tool kubectx kubectx --help)"
    deb_tool kubectx kubens --help >/dev/null
    label awscli "$(deb_tool awscli aws --version)"
    command -v git-upload-pack >/dev/null || die "git-upload-pack is not in the image"
    label git "$(deb_tool git git --version)"

    while IFS= read -r l; do
        out="$(LC_ALL="$l" locale charmap 2>&1)"
        [[ "$out" == UTF-8 ]] || die "locale $l does not work in the image: $out"
        names+=("$l")
    done < <(locales)
    label locales "${names[*]}"

    left="$(find / -xdev -type f -perm /6000 2>/dev/null || true)"
    [[ -z "$left" ]] || die "setuid/setgid files in the image: $left"
}

case "${1-}" in
apt-args | finish | probe)
    use_versions "$here"
    "${1//-/_}"
    ;;
*)
    sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
    ;;
esac
