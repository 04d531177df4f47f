#!/usr/bin/env bash
# Session benchmarks of issue 2, run side by side in one run on this machine:
#   - warm login: `ssh alice true` through bastion vs the same sshd with a
#     /bin/bash login shell, vs one raw Engine API exec round trip;
#   - cold login (no container yet) vs `docker run --rm IMAGE true`;
#   - stream: bytes/s of `head -c 1G /dev/zero` through a session vs the
#     `docker exec` CLI (and vs the same sshd without bastion, the ceiling
#     of anything behind ssh).
# Needs the demo bastion up (sudo provisioning/install.sh --demo) and
# hyperfine. Prints a Markdown report on stdout; raw data in $OUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
RUNS="${RUNS:-30}"
IMAGE="${IMAGE:-bastion/user:latest}"
key=/etc/bastion/demo/keys/alice
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p 2222)

command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null
[[ -r $key ]] || { echo "no demo keys: run sudo provisioning/install.sh --demo" >&2; exit 1; }

# A comparison user on the same sshd whose login shell is plain bash.
plain=bench-plain
if ! id "$plain" >/dev/null 2>&1; then
    useradd -m -s /bin/bash -G bastion-users "$plain"
    usermod -p '*' "$plain"
fi
plainkey="$OUT/plainkey"
rm -f "$plainkey" "$plainkey.pub"; ssh-keygen -q -t ed25519 -N "" -f "$plainkey" >/dev/null
install -m 0644 "$plainkey.pub" "/etc/bastion/authorized_keys/$plain"
cleanup() { rm -f "/etc/bastion/authorized_keys/$plain"; userdel -r "$plain" 2>/dev/null || true; }
trap cleanup EXIT

ssh "${ssh_opts[@]}" -i "$key" alice@127.0.0.1 true # warm the container
cargo build --release -q -p bastion-bench --manifest-path "$repo/Cargo.toml"
rtt_bin="${CARGO_TARGET_DIR:-$repo/target}/release/raw-exec-rtt"

hyperfine -N -w 3 -r "$RUNS" --export-json "$OUT/warm.json" \
    -n "bastion: ssh alice true" "ssh ${ssh_opts[*]} -i $key alice@127.0.0.1 true" \
    -n "plain sshd: ssh $plain true" "ssh ${ssh_opts[*]} -i $plainkey $plain@127.0.0.1 true" \
    >"$OUT/warm.txt"
"$rtt_bin" bastion-alice --runs "$RUNS" >"$OUT/raw-exec.txt"

hyperfine -N -w 1 -r "$((RUNS / 3 + 1))" --export-json "$OUT/cold.json" \
    -n "bastion cold: ssh alice true (no container)" \
    --prepare "docker rm -f bastion-alice" \
    "ssh ${ssh_opts[*]} -i $key alice@127.0.0.1 true" \
    -n "docker run --rm $IMAGE true" "docker run --rm --network none $IMAGE true" \
    >"$OUT/cold.txt"
ssh "${ssh_opts[@]}" -i "$key" alice@127.0.0.1 true

hyperfine -w 1 -r 5 --export-json "$OUT/stream.json" \
    -n "bastion session (ssh)" "ssh ${ssh_opts[*]} -i $key alice@127.0.0.1 'head -c 1G /dev/zero' >/dev/null" \
    -n "bastion-shell, no ssh" "setpriv --reuid=alice --regid=alice --init-groups /usr/local/bin/bastion-shell -c 'head -c 1G /dev/zero' >/dev/null" \
    -n "docker exec CLI" "docker exec bastion-alice head -c 1G /dev/zero >/dev/null" \
    -n "plain sshd (no container)" "ssh ${ssh_opts[*]} -i $plainkey $plain@127.0.0.1 'head -c 1G /dev/zero' >/dev/null" \
    >"$OUT/stream.txt"

python3 "$here/summarize.py" "$OUT"
