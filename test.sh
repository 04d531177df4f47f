#!/usr/bin/env bash
# bastion's one test command: installs and starts what the tests need
# (idempotent; provisioning/install.sh --test), then runs every check and
# test of the workspace, unit to end-to-end (real sshd, Docker Engine, STS).
#
#   sudo ./test.sh [ARGS...]     ARGS go to `cargo test --workspace`
#                                (e.g. `sudo ./test.sh -- --nocapture`)
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

cargo="$(find_cargo)" || die "cargo not found (PATH, ~/.cargo/bin): install Rust and re-run"
PATH="$(dirname "$cargo"):$PATH"
export PATH

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast "$@"

say "all checks and tests passed"
