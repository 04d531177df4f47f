#!/usr/bin/env python3
"""Turns bench/session.sh's raw results into the Markdown of BENCHMARKS.md."""
import json
import os
import platform
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
b, p, x = (statistics.median(r["times"]) * 1000 for r in warm)
print(f"\nWarm-login overhead over plain sshd: **{b - p:.1f} ms**; "
      f"goal: at most one raw exec round trip + 10 ms = {x + 10:.1f} ms → "
      f"{'met' if b - p <= x + 10 else 'NOT met'}.\n")

print("### Stream: `head -c 1G /dev/zero` (MB/s; rows interleaved)\n")
print("| path | MB/s (median) | seconds: median (min – max) |\n|---|---|---|")
stream = load("stream.json")
rates = {}
for r in stream:
    sec = statistics.median(r["times"])
    rates[r["command"]] = 1024 / sec
    print(f"| {r['command']} | {1024 / sec:.0f} | {sec:.2f} ({min(r['times']):.2f} – {max(r['times']):.2f}) |")
for ours, theirs in (("bastion-shell, no ssh", "docker exec CLI"),
                     ("bastion session (ssh)", "ssh, then docker exec CLI")):
    print(f"\n{ours} vs {theirs}: **{100 * rates[ours] / rates[theirs]:.0f}%** (goal ≥ 90%).")
