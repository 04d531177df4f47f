#!/usr/bin/env bash
# bastion's one test command: installs and starts what the tests need
# (idempotent; provisioning/install.sh --test), then runs every check and
# test of the workspace, unit to end-to-end (real sshd, Docker Engine, STS),
# and the production install on fresh machines with and without systemd.
#
#   sudo ./test.sh [ARGS...]     ARGS go to `cargo test --workspace`
#                                (e.g. `sudo ./test.sh -- --nocapture`)
#
# In order: install.sh --test; shellcheck on every shell script;
# systemd-analyze verify (and the sandboxing's exposure, capped) on every
# unit; sshd -t on the bastion sshd's configs; cargo fmt, clippy, test;
# tests/systemd/run.sh (BASTION_SKIP_SYSTEMD_TEST=1 skips it).
#
# Runs as root: the end-to-end tests create users and talk to Docker.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
# shellcheck source-path=SCRIPTDIR source=provisioning/lib.sh
source provisioning/lib.sh
require_root

step() { printf '\n== %s\n' "$*" >&2; }

step "provisioning/install.sh --test"
provisioning/install.sh --test

# Every shell script of the repository: tracked or new (not ignored) files
# whose first line runs a shell, or that say `# shellcheck shell=`.
shell_scripts() {
    local f
    {
        if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
            git ls-files --cached --others --exclude-standard
        else
            find . -path ./target -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||'
        fi
    } | sort -u | while read -r f; do
        [[ -f "$f" ]] || continue
        head -c 256 "$f" | grep -qE '^#!.*\b(ba|da)?sh\b|^# shellcheck shell=' && echo "$f"
    done
}

step "shellcheck (every shell script)"
mapfile -t scripts < <(shell_scripts)
shellcheck -x "${scripts[@]}"
say "shellcheck: ${#scripts[@]} scripts clean"

# The most exposure (systemd-analyze security, offline, x10) each unit may
# have; docs/install.md has the scores and why each unit cannot go lower.
declare -A EXPOSURE_MAX=(
    [bastiond.service]=45
    [bastion-sshd.service]=31
    [bastion-metadata-proxy.service]=18
    [bastion-iptables.service]=22
    [bastion-cleanup.service]=12
)

# The units as install.sh installs them, in a root of their own: the
# installed binaries (install.sh --test just put them there), the scripts
# install.sh copies to /usr/local/lib/bastion, the host's own programs and
# system units. So `verify` checks every command line for real.
step "systemd-analyze verify and security (every unit)"
units_root="$(mktemp -d)"
trap 'rm -rf "$units_root"' EXIT
mkdir -p "$units_root/etc/systemd/system" "$units_root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$units_root/usr/lib/systemd/"
cp provisioning/systemd/* "$units_root/etc/systemd/system/"
while read -r exe; do
    case "$exe" in
    /usr/local/lib/bastion/*) src="provisioning/${exe##*/}" ;;
    *) src="$exe" ;;
    esac
    [[ -x "$src" ]] || die "a unit runs $exe, but $src is missing"
    mkdir -p "$units_root$(dirname "$exe")"
    ln -f "$(readlink -f "$src")" "$units_root$exe" 2>/dev/null || cp "$src" "$units_root$exe"
done < <(sed -nE 's/^Exec[A-Za-z]*=[-+!@:]*(\/[^ ]+).*/\1/p' provisioning/systemd/*.service | sort -u)
verify_failed=false
for unit in provisioning/systemd/*; do
    unit="${unit##*/}"
    if ! out="$(systemd-analyze --root="$units_root" verify "$unit" 2>&1)" || [[ -n "$out" ]]; then
        printf '%s: %s\n' "$unit" "$out" >&2
        verify_failed=true
    fi
done
[[ "$verify_failed" == false ]] || die "systemd-analyze verify found problems in provisioning/systemd (above)"
for unit in "${!EXPOSURE_MAX[@]}"; do
    [[ -f "provisioning/systemd/$unit" ]] || die "test.sh caps the exposure of $unit, which provisioning/systemd lacks"
    if ! systemd-analyze security --offline=yes --root="$units_root" --threshold="${EXPOSURE_MAX[$unit]}" "$unit" >"$units_root/security.txt" 2>&1; then
        tail -n 1 "$units_root/security.txt" >&2
        die "$unit is more exposed than its cap ${EXPOSURE_MAX[$unit]} (/10): systemd-analyze security --offline=yes provisioning/systemd/$unit"
    fi
    say "$unit: $(tail -n 1 "$units_root/security.txt" | grep -oE '[0-9]+\.[0-9]+ [A-Z]+') (cap $((EXPOSURE_MAX[$unit] / 10)).$((EXPOSURE_MAX[$unit] % 10)))"
done
for unit in provisioning/systemd/*.service; do
    [[ -n "${EXPOSURE_MAX[${unit##*/}]:-}" ]] || die "no exposure cap for ${unit##*/}: add it to EXPOSURE_MAX in test.sh (and its score to docs/install.md)"
done
say "systemd-analyze: every unit verifies"

# The generated config as installed, and the production renderings of the
# template (IPv4 and IPv6 wildcard), with the installed host keys.
step "sshd -t (the bastion sshd's configs)"
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$BASTION_SSHD_CONFIG"
for listen in "0.0.0.0 2222" ":: 2222"; do
    read -r addr port <<<"$listen"
    sed -e "s|@ADDR@|$addr|g" -e "s|@PORT@|$port|g" provisioning/sshd_config.template >"$units_root/sshd_config"
    /usr/sbin/sshd -t -f "$units_root/sshd_config" || die "provisioning/sshd_config.template rendered for $addr port $port fails sshd -t"
done
say "sshd -t: $BASTION_SSHD_CONFIG and the template's production renderings pass"

cargo="$(find_cargo)" || die "cargo not found (PATH, ~/.cargo/bin): install Rust and re-run"
PATH="$(dirname "$cargo"):$PATH"
export PATH

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "$@"

if [[ "${BASTION_SKIP_SYSTEMD_TEST:-}" == 1 ]]; then
    say "tests/systemd/run.sh skipped (BASTION_SKIP_SYSTEMD_TEST=1)"
else
    step "tests/systemd/run.sh (the production install on fresh machines, with and without systemd)"
    tests/systemd/run.sh
fi

say "all checks and tests passed"
