#!/usr/bin/env bash
# Two builds of bastiond side by side: warm login (`ssh alice true`, plain
# and over one multiplexed connection) and stream (512 MiB of text through
# a session, all of it recorded), in alternating blocks (A B, B A, A B, …), so slow drifts of
# a noisy machine hit both builds alike. Used for "login and stream figures
# unchanged within noise" (issue 9): A is the build before a change, B the
# build after.
#
#   sudo bench/ab.sh A_BASTIOND B_BASTIOND [BLOCKS]
#
# Needs the demo bastion up (sudo provisioning/install.sh --demo). Both
# builds run with the same configuration: the installed one without the e2e
# tests' block (so that an older build can read it). bastiond is restarted
# between blocks (the first logins after a switch, which recreate the
# container, are warm-ups) and the installed one is started again at the
# end. Prints a Markdown report; raw data in $OUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
(($# >= 2)) || {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
a_bin="$1" b_bin="$2" blocks="${3:-6}"
OUT="${OUT:-$(mktemp -d)}"
LOGINS="${LOGINS:-60}" STREAMS="${STREAMS:-2}"
key=/etc/bastion/demo/keys/alice
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p 2222 -i "$key")
[[ -r $key ]] || { echo "no demo keys: run sudo provisioning/install.sh --demo" >&2; exit 1; }
for b in "$a_bin" "$b_bin"; do [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 1; }; done

config="$OUT/bastion.toml"
{
    awk '/^# >>> bastion e2e tests/{skip=1} !skip{print} /^# <<< bastion e2e tests/{skip=0}' \
        /etc/bastion/bastion.toml
    # A session whose recording reaches its cap is ended: the stream must
    # fit (both builds read this key).
    printf '\n[recording]\nmax_recording_bytes = "8GiB"\n'
} >"$config"
chmod 0644 "$config"
socket=/run/bastion/bastiond.sock
pid=""

stop_running() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
cleanup() {
    stop_running
    if [[ -S $OUT/cm ]]; then ssh -o ControlPath="$OUT/cm" -O exit x 2>/dev/null || true; fi
    "$repo/provisioning/bastion-service" start bastiond >/dev/null
    bastionctl sessions prune --older-than 0s --user alice >/dev/null || true
}
trap cleanup EXIT
"$repo/provisioning/bastion-service" stop bastiond >/dev/null

# Starts build $1 on the installed socket and warms alice's container.
start_build() {
    stop_running
    setsid "$1" --config "$config" >>"$OUT/bastiond.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [[ -S $socket ]] && break; sleep 0.1; done
    for _ in 1 2 3; do ssh "${ssh_opts[@]}" alice@127.0.0.1 true; done
}

# Appends "NAME KIND START END" lines (bash's $EPOCHREALTIME).
measure() {
    local name="$1" i t0 t1
    ssh "${ssh_opts[@]}" -o ControlMaster=yes -o ControlPath="$OUT/cm" -o ControlPersist=yes -fN alice@127.0.0.1
    for ((i = 0; i < LOGINS; i++)); do
        t0=$EPOCHREALTIME
        ssh "${ssh_opts[@]}" alice@127.0.0.1 true
        t1=$EPOCHREALTIME
        echo "$name login $t0 $t1" >>"$OUT/raw.txt"
        t0=$EPOCHREALTIME
        ssh "${ssh_opts[@]}" -o ControlPath="$OUT/cm" alice@127.0.0.1 true
        t1=$EPOCHREALTIME
        echo "$name login-mux $t0 $t1" >>"$OUT/raw.txt"
    done
    ssh -o ControlPath="$OUT/cm" -O exit x 2>/dev/null || true
    for ((i = 0; i < STREAMS; i++)); do
        t0=$EPOCHREALTIME
        ssh "${ssh_opts[@]}" alice@127.0.0.1 'yes abcdefghijklmnopqrstuvwxyz0123456789 | head -c 512M' >/dev/null
        t1=$EPOCHREALTIME
        echo "$name stream $t0 $t1" >>"$OUT/raw.txt"
        bastionctl sessions prune --older-than 0s --user alice >/dev/null
    done
}

: >"$OUT/raw.txt"
for ((k = 0; k < blocks; k++)); do
    if ((k % 2 == 0)); then order=(A B); else order=(B A); fi
    for v in "${order[@]}"; do
        if [[ $v == A ]]; then start_build "$a_bin"; else start_build "$b_bin"; fi
        measure "$v"
        echo "block $((k + 1))/$blocks: $v done" >&2
    done
done
stop_running
python3 - "$OUT/raw.txt" "$blocks" <<'PY'
import random, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
data = {}
for name, kind, t0, t1 in rows:
    seconds = float(t1) - float(t0)
    value = 536.870912 / seconds if kind == "stream" else seconds
    data.setdefault(kind, {}).setdefault(name, []).append(value)
def boot(a, b, f, n=2000):
    rnd = random.Random(9)
    diffs = sorted(f([rnd.choice(b) for _ in b]) - f([rnd.choice(a) for _ in a]) for _ in range(n))
    return diffs[int(0.025 * n)], diffs[int(0.975 * n)]
print(f"Blocks: {sys.argv[2]}, alternating (A B, B A, …).\n")
print("| what | A (before) median | B (after) median | B − A | 95% bootstrap interval of B − A |")
print("|---|---|---|---|---|")
for kind, unit, scale in [("login", "ms", 1000), ("login-mux", "ms", 1000), ("stream", "MB/s", 1)]:
    a = [x * scale for x in data[kind]["A"]]
    b = [x * scale for x in data[kind]["B"]]
    ma, mb = statistics.median(a), statistics.median(b)
    lo, hi = boot(a, b, statistics.median)
    label = {"login": "warm login `ssh alice true`", "login-mux": "warm login, multiplexed", "stream": "stream 512 MiB of text through a session (all recorded)"}[kind]
    print(f"| {label} ({len(a)}+{len(b)} runs) | {ma:.1f} {unit} | {mb:.1f} {unit} | {mb - ma:+.1f} {unit} | {lo:+.1f} to {hi:+.1f} |")
PY
