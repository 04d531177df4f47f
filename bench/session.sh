#!/usr/bin/env bash
# Session benchmarks of issue 2, run side by side in one run on this machine:
#   - warm login: `ssh alice true` through bastion vs the same sshd with a
#     /bin/bash login shell, vs one raw Engine API exec round trip;
#   - cold login (no container yet) vs `docker run --rm IMAGE true`;
#   - stream: bytes/s of 512 MiB of text through a session vs the
#     `docker exec` CLI, each both locally and behind ssh (and the same sshd
#     without any container, the ceiling of anything behind ssh).
# Needs the demo bastion up (sudo provisioning/install.sh --demo). Every
# table's rows run interleaved, round by round (bench/interleave.py).
# Prints a Markdown report on stdout; raw data in $OUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
RUNS="${RUNS:-30}"   # cold logins: RUNS/3+1 rounds; warm: WARM_RUNS (300)
IMAGE="${IMAGE:-bastion/user:latest}"
key=/etc/bastion/demo/keys/alice
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p 2222)

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
# The stream runs leave a 64 MiB recording each (the default cap). At the
# end the demo user alice's recordings are pruned the audited way (a
# `recording.pruned` event each, so `bastionctl audit verify` still passes).
cleanup() {
    for cm in "$OUT"/cm-*; do [[ -S $cm ]] && ssh -o ControlPath="$cm" -O exit x 2>/dev/null; done
    rm -f "/etc/bastion/authorized_keys/$plain"; userdel -r "$plain" 2>/dev/null || true
    bastionctl sessions prune --older-than 0s --user alice >/dev/null
}
trap cleanup EXIT

ssh "${ssh_opts[@]}" -i "$key" alice@127.0.0.1 true # warm the container
cargo build --release -q -p bastion-bench --manifest-path "$repo/Cargo.toml"
rtt_bin="${CARGO_TARGET_DIR:-$repo/target}/release/raw-exec-rtt"

run() { python3 "$here/interleave.py" "$@"; }
ssh_alice="ssh ${ssh_opts[*]} -i $key alice@127.0.0.1"
ssh_plain="ssh ${ssh_opts[*]} -i $plainkey $plain@127.0.0.1"

# Each row below is measured interleaved with the others of its table.
# Warm logins are cheap (~0.3 s) but ssh alone varies by ±25 ms here, so
# they get many rounds (summarize.py prints a bootstrap interval of the
# goal's margin; the multiplexed table below is the low-noise view).
alice_ids="$(id -u alice):$(id -g alice)"
run --runs "${WARM_RUNS:-300}" --warmup 3 --out "$OUT/warm.json" \
    "bastion: ssh alice true=$ssh_alice true" \
    "plain sshd: ssh $plain true=$ssh_plain true" \
    "raw Engine API exec round trip (\`true\`, in-process)@self=$rtt_bin bastion-alice --runs 1 --warmup 1" \
    "raw Engine API exec round trip of what bastion runs (\`/bin/bash -c true\` as alice, stdin attached)@self=$rtt_bin bastion-alice --runs 1 --warmup 1 --stdin --user $alice_ids -- /bin/bash -c true"

# The same over one multiplexed SSH connection each (ControlMaster): no key
# exchange or authentication per run, only the session channel and the
# login shell, so what bastion adds stands out of ssh's own noise.
ssh "${ssh_opts[@]}" -i "$key" -o ControlMaster=yes -o ControlPath="$OUT/cm-alice" -o ControlPersist=yes -fN alice@127.0.0.1
ssh "${ssh_opts[@]}" -i "$plainkey" -o ControlMaster=yes -o ControlPath="$OUT/cm-plain" -o ControlPersist=yes -fN "$plain@127.0.0.1"
run --runs "${WARM_RUNS:-300}" --warmup 3 --out "$OUT/warm-mux.json" \
    "bastion, multiplexed: ssh alice true=$ssh_alice -o ControlPath=$OUT/cm-alice true" \
    "plain sshd, multiplexed: ssh $plain true=$ssh_plain -o ControlPath=$OUT/cm-plain true" \
    "raw Engine API exec round trip (\`true\`, in-process)@self=$rtt_bin bastion-alice --runs 1 --warmup 1"

run --runs "$((RUNS / 3 + 1))" --warmup 1 --out "$OUT/cold.json" \
    --before "cold bastion: ssh alice true (no container)=docker rm -f bastion-alice" \
    "cold bastion: ssh alice true (no container)=$ssh_alice true" \
    "docker run --rm $IMAGE true=docker run --rm $IMAGE true"
$ssh_alice true

# The comparison user may use Docker for the "ssh, then docker exec" row:
# what bastion replaces (an ops host where people run docker exec).
usermod -aG docker "$plain"
# The stream: 512 MiB of text, all of it recorded in the bastion rows (a
# session whose recording reaches its cap is ended, so the cap is raised
# for the run; alice's recordings are pruned before each bastion run, so
# her budget never ends one).
text="yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c 512M"
prune="bastionctl sessions prune --older-than 0s --user alice"
printf '\n# >>> bench/session.sh\n[recording]\nmax_recording_bytes = "8GiB"\n# <<< bench/session.sh\n' >>/etc/bastion/bastion.toml
restore_config() { sed -i '/^# >>> bench\/session.sh$/,/^# <<< bench\/session.sh$/d' /etc/bastion/bastion.toml; }
trap 'restore_config; cleanup' EXIT
run --runs "${STREAM_RUNS:-5}" --warmup 1 --out "$OUT/stream.json" \
    --before "bastion session (ssh)=$prune" --before "bastion-shell, no ssh=$prune" \
    "bastion session (ssh)=$ssh_alice '$text' >/dev/null" \
    "ssh, then docker exec CLI=$ssh_plain 'docker exec bastion-alice sh -c \"$text\"' >/dev/null" \
    "bastion-shell, no ssh=setpriv --reuid=alice --regid=alice --init-groups /usr/local/bin/bastion-shell -c '$text' >/dev/null" \
    "docker exec CLI=docker exec bastion-alice sh -c '$text' >/dev/null" \
    "plain sshd (no container)=$ssh_plain '$text' >/dev/null"
restore_config

python3 "$here/summarize.py" "$OUT"
