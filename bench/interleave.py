#!/usr/bin/env python3
"""Runs benchmark commands side by side, interleaved: round after round,
each command once per round, in a rotating order. Slow drifts of a noisy
machine (other jobs, page cache, CPU frequency) then hit every command
alike, which running all runs of one command before the next (hyperfine's
way) does not.

    interleave.py --runs N [--warmup W] [--before NAME=CMD ...] \
        --out FILE.json NAME=COMMAND [NAME=COMMAND ...]

A NAME ending in "@self" marks a self-timed command: it prints its own
duration in milliseconds on the last line of stdout (for in-process
measurements such as raw-exec-rtt, whose start-up is not part of what is
measured). Otherwise the wall time of `sh -c COMMAND` is measured.
--before NAME=CMD runs CMD, untimed, before every run of command NAME
(e.g. removing the container for a cold start, or switching a setting).

Writes {"results": [{"command": NAME, "times": [seconds, ...]}, ...]} in
hyperfine's JSON shape, so summarize.py reads both.
"""
import argparse
import json
import subprocess
import sys
import time


def run_once(name, command, before):
    if name in before:
        subprocess.run(before[name], shell=True, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    self_timed = name.endswith("@self")
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, stdout=subprocess.PIPE if self_timed else subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{name}: `{command}` exited {done.returncode}")
    if self_timed:
        return float(done.stdout.decode().strip().splitlines()[-1]) / 1000
    return elapsed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--before", action="append", default=[])
    p.add_argument("--out", required=True)
    p.add_argument("commands", nargs="+")
    args = p.parse_args()
    commands = [c.split("=", 1) for c in args.commands]
    before = dict(b.split("=", 1) for b in args.before)
    unknown = set(before) - {name for name, _ in commands}
    if unknown:
        sys.exit(f"--before names no command: {', '.join(sorted(unknown))}")
    times = {name: [] for name, _ in commands}
    for round_ in range(args.warmup + args.runs):
        k = round_ % len(commands)
        for name, command in commands[k:] + commands[:k]:
            t = run_once(name, command, before)
            if round_ >= args.warmup:
                times[name].append(t)
    results = [{"command": name.removesuffix("@self"), "times": times[name]} for name, _ in commands]
    with open(args.out, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
