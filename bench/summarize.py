#!/usr/bin/env python3
"""Turns bench/session.sh's raw results into the Markdown of BENCHMARKS.md."""
import json
import os
import platform
import random
import statistics
import subprocess
import sys

out = sys.argv[1]


def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)["results"]


def ms(xs):
    xs = sorted(x * 1000 for x in xs)
    return statistics.median(xs), xs[0], xs[-1], statistics.pstdev(xs)


def row(name, times):
    med, lo, hi, sd = ms(times)
    return f"| {name} | {med:.1f} | {lo:.1f} – {hi:.1f} | {sd:.1f} |"


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
docker = subprocess.run(["docker", "version", "-f", "{{.Server.Version}}"],
                        capture_output=True, text=True).stdout.strip()
ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
print(f"Machine: {os.cpu_count()} cores ({cpu}), kernel {platform.release()}, "
      f"Docker Engine {docker}, {ssh}.\n")

warm = load("warm.json")
print("### Login (milliseconds; median, min – max, stdev; rows interleaved)\n")
print("| what | median | range | stdev |\n|---|---|---|---|")
for r in warm:
    print(row(r["command"], r["times"]))
cold = load("cold.json")
for r in cold:
    print(row(r["command"], r["times"]))


def goal(rows, label):
    """Warm overhead over plain sshd against one raw exec + 10 ms, with a
    bootstrap interval of the margin (rows: bastion, plain, raw)."""
    b, p, x = ([t * 1000 for t in r["times"]] for r in rows[:3])
    overhead = statistics.median(b) - statistics.median(p)
    margin = statistics.median(x) + 10 - overhead
    rng = random.Random(1)
    pick = lambda xs: statistics.median(rng.choices(xs, k=len(xs)))
    margins = sorted(pick(x) + 10 - (pick(b) - pick(p)) for _ in range(2000))
    lo, hi = margins[50], margins[1949]
    print(f"\n{label}: overhead over plain sshd **{overhead:.1f} ms**; goal: at most one raw "
          f"exec round trip + 10 ms = {statistics.median(x) + 10:.1f} ms → "
          f"{'met' if margin >= 0 else 'NOT met'}, margin **{margin:.1f} ms** "
          f"(95% bootstrap interval of the margin: {lo:.1f} to {hi:.1f} ms).")


goal(warm, "Warm login")
if os.path.exists(os.path.join(out, "warm-mux.json")):
    mux = load("warm-mux.json")
    print("\n#### Over a multiplexed connection (ControlMaster; rows interleaved)\n")
    print("| what | median | range | stdev |\n|---|---|---|---|")
    for r in mux:
        print(row(r["command"], r["times"]))
    goal(mux, "Warm login, multiplexed")
print()

print("### Stream: 512 MiB of text (`yes … | head -c 512M`), all recorded in the bastion rows (MB/s; rows interleaved)\n")
print("| path | MB/s (median) | seconds: median (min – max) |\n|---|---|---|")
stream = load("stream.json")
rates = {}
for r in stream:
    sec = statistics.median(r["times"])
    rates[r["command"]] = 512 / sec
    print(f"| {r['command']} | {512 / sec:.0f} | {sec:.2f} ({min(r['times']):.2f} – {max(r['times']):.2f}) |")
for ours, theirs in (("bastion-shell, no ssh", "docker exec CLI"),
                     ("bastion session (ssh)", "ssh, then docker exec CLI")):
    print(f"\n{ours} vs {theirs}: **{100 * rates[ours] / rates[theirs]:.0f}%** (goal ≥ 90%).")
