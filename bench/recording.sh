#!/usr/bin/env bash
# Recording benchmarks of issue 4, side by side in one run:
#   - bytes/s of `head -c 1G /dev/zero` through an interactive (TTY)
#     session with recording on vs off. "Off" is max_recording_bytes = 1KiB:
#     after the first KiB the recorder only counts bytes, which is as close
#     to off as bastion gets (it never runs a session without its records);
#   - the size of an idle interactive session's recording after IDLE seconds
#     (an idle session writes no events, so it does not grow with time).
# Needs the demo bastion up (sudo provisioning/install.sh --demo).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUNS="${RUNS:-5}"
IDLE="${IDLE:-60}"
config=/etc/bastion/bastion.toml
key=/etc/bastion/demo/keys/alice
ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -p 2222 -i "$key")

# --set-cap SIZE: the demo config (saved by the running benchmark in
# $config.bench-original) with [recording] max_recording_bytes = SIZE.
if [[ "${1:-}" == --set-cap ]]; then
    { cat "$config.bench-original"; printf '\n[recording]\nmax_recording_bytes = "%s"\n' "$2"; } >"$config.tmp"
    chmod 0644 "$config.tmp" && mv "$config.tmp" "$config"
    exit 0
fi
grep -q '^\[recording\]' "$config" && { echo "$config has a [recording] table; run on the demo config" >&2; exit 1; }
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
original="$config.bench-original"
cp -p "$config" "$original"
# The 1 GiB sessions leave large recordings: the demo user alice's
# recordings are pruned at the end, the audited way (see bench/session.sh).
restore() {
    cp -p "$original" "$config"; rm -f "$original"
    bastionctl sessions prune --older-than 0s --user alice >/dev/null
}
trap restore EXIT

tty_stream="ssh ${ssh_opts[*]} -tt alice@127.0.0.1 'head -c 1G /dev/zero' </dev/null >/dev/null"
ssh "${ssh_opts[@]}" alice@127.0.0.1 true
# Interleaved, round by round: the cap is switched before each run (bastiond
# reads a changed config at the next login).
on="recording on (cap 64MiB, the default)"
off="recording off (cap 1KiB)"
python3 "$here/interleave.py" --runs "$RUNS" --warmup 1 --out "$OUT/rec.json" \
    --before "$on=$here/recording.sh --set-cap 64MiB" --before "$off=$here/recording.sh --set-cap 1KiB" \
    "$on=$tty_stream" "$off=$tty_stream"
cp -p "$original" "$config"

# An idle interactive session, held open by tmux.
sock="bench-idle-$$"
tmux -L "$sock" new-session -d -x 120 -y 40 "ssh ${ssh_opts[*]} -tt alice@127.0.0.1"
sleep "$IDLE"
tmux -L "$sock" send-keys "exit" Enter
sleep 2
tmux -L "$sock" kill-server 2>/dev/null || true
cast="$(find /var/log/bastion/sessions/alice -name "*.cast" -printf "%T@ %p\n" | sort -n | tail -1 | cut -d" " -f2)"

python3 - "$IDLE" "$cast" "$OUT" <<'PY'
import json, os, statistics, sys
idle, cast, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = []
for name in ("on", "off"):
    r = json.load(open(os.path.join(out, "rec.json")))["results"][name == "off"]
    sec = statistics.median(r["times"])
    rows.append((r["command"], 1024 / sec, sec, min(r["times"]), max(r["times"])))
print("### Recording cost: `head -c 1G /dev/zero` through `ssh -tt` (MB/s; rows interleaved)\n")
print("| recording | MB/s (median) | seconds: median (min – max) |\n|---|---|---|")
for name, rate, sec, lo, hi in rows:
    print(f"| {name} | {rate:.0f} | {sec:.2f} ({lo:.2f} – {hi:.2f}) |")
cost = 100 * (1 - rows[0][1] / rows[1][1])
print(f"\nRecording costs **{cost:.1f}%** of throughput (goal < 10%).\n")
size = os.path.getsize(cast)
print(f"An interactive session left idle for {idle} s: recording of **{size} bytes** "
      f"({sum(1 for _ in open(cast)) - 1} events: the banner, the prompt, the exit). "
      "Idle time writes nothing, so an hour idle is the same size.")
PY
