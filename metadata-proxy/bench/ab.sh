#!/usr/bin/env bash
# Two builds of bastion-metadata-proxy side by side through the real DNAT
# path (dnat-wrk.sh: cached credential requests with wrk at 1/16/64
# connections, and the first request of new containers), in alternating
# blocks (A B, B A, A B, …), so slow drifts of a noisy machine hit both
# builds alike. A is the build before a change, B the build after.
#
#   sudo metadata-proxy/bench/ab.sh A_PROXY B_PROXY [BLOCKS] [DURATION]
#
# BLOCKS defaults to 6, DURATION (per wrk row) to 5s. Prints each run's
# rows tagged with its build, then the median of each row per build; raw
# output in $OUT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(($# >= 2)) || {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
a_bin="$1" b_bin="$2" blocks="${3:-6}" duration="${4:-5s}"
for b in "$a_bin" "$b_bin"; do [[ -x $b ]] || { echo "not an executable: $b" >&2; exit 1; }; done
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
echo "raw output in $OUT" >&2

run() { # TAG BINARY N
    PROXY_BIN="$2" "$here/dnat-wrk.sh" --duration "$duration" --containers 0 --no-nginx --no-metadataproxy \
        >"$OUT/$1-$3.txt" 2>&1 || { cat "$OUT/$1-$3.txt" >&2; exit 1; }
}
for ((i = 1; i <= blocks; i++)); do
    if ((i % 2)); then run A "$a_bin" "$i"; run B "$b_bin" "$i"; else run B "$b_bin" "$i"; run A "$a_bin" "$i"; fi
    echo "block $i of $blocks done" >&2
done
head -1 "$OUT/A-1.txt"
python3 - "$OUT" <<'PY'
import glob, os, re, statistics, sys
out = sys.argv[1]
def us(v):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", v)
    return float(m[1]) * {"us": 1, "ms": 1e3, "s": 1e6}[m[2]]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "*.txt"))):
    tag = os.path.basename(path)[0]
    lines = open(path).read().splitlines()
    for line in lines:
        f = line.split()
        if len(f) == 4 and f[0] in ("1", "16", "64"):
            rows.setdefault((f[0], tag), []).append((float(f[1]), us(f[2]), us(f[3])))
        elif re.fullmatch(r"\s+[\d.]+s", line):
            rows.setdefault(("first", tag), []).append(float(line.strip()[:-1]) * 1e3)
print("| what | A | B | B/A |")
print("|---|---|---|---|")
for c in ("1", "16", "64"):
    a, b = rows[(c, "A")], rows[(c, "B")]
    for i, name in ((0, "req/s"), (1, "p50 µs"), (2, "p99 µs")):
        ma, mb = statistics.median(x[i] for x in a), statistics.median(x[i] for x in b)
        print(f"| {c} conn, {name} (median of {len(a)}+{len(b)}) | {ma:.0f} | {mb:.0f} | {mb / ma:.2f} |")
a, b = rows[("first", "A")], rows[("first", "B")]
ma, mb = statistics.median(a), statistics.median(b)
print(f"| first request of a new container, ms (median of {len(a)}+{len(b)}) | {ma:.2f} | {mb:.2f} | {mb / ma:.2f} |")
PY
