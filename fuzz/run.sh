#!/usr/bin/env bash
# Builds and runs bastion's fuzz targets (fuzz/README.md).
#
#   fuzz/run.sh [--jobs N] [SECONDS] [TARGET...]
#       installs cargo-fuzz if missing, builds every target (release, debug
#       assertions, AddressSanitizer), runs each TARGET (default: all) for
#       SECONDS (default 600) at nice 19 on the committed corpus, then merges
#       what it found into fuzz/corpus/TARGET, keeping the seeds and only the
#       inputs that add coverage. N targets run at once (default 1; each
#       libFuzzer job uses one core).
#   fuzz/run.sh --smoke [--jobs N] [SECONDS] [TARGET...]
#       the same with SECONDS default 5 and the corpus left as it is (for a
#       test command): replays the corpus, fuzzes briefly, fails on a crash.
#
# Prints one summary line per target; exits non-zero when any target
# crashed (the input is then in fuzz/artifacts/TARGET/) or failed to run.
# cargo-fuzz needs nightly compiler features: the stable toolchain is used
# with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

smoke=0
jobs=1
seconds=
targets=()
while (($#)); do
    case "$1" in
    --smoke) smoke=1 ;;
    --jobs) jobs="${2:?--jobs needs a number}"; shift ;;
    --jobs=*) jobs="${1#--jobs=}" ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    [0-9]*) seconds="$1" ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) targets+=("$1") ;;
    esac
    shift
done
if [[ -z "$seconds" ]]; then
    if ((smoke)); then seconds=5; else seconds=600; fi
fi

if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup)" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# -a: debug assertions (overflow checks) on; AddressSanitizer is the default.
build_flags=(--release -a)
echo "== cargo fuzz build" >&2
cargo fuzz build "${build_flags[@]}"
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cargo fuzz list)
fi

logs="target/run-logs"
mkdir -p "$logs"

# Runs one target; writes its summary line to $logs/TARGET.summary.
run_one() {
    local target="$1" found log start status crashes crashes_before
    found="$(mktemp -d)"
    log="$logs/$target.log"
    mkdir -p "corpus/$target" "artifacts/$target"
    crashes_before="$(find "artifacts/$target" -type f | wc -l)"
    start="$(date +%s)"
    status=0
    # New inputs go to $found (the first directory); corpus/ is only read.
    nice -n 19 cargo fuzz run "${build_flags[@]}" "$target" "$found" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    local elapsed=$(($(date +%s) - start))
    crashes=$(($(find "artifacts/$target" -type f | wc -l) - crashes_before))
    local runs cov ft
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)"
    ft="$(grep -oE 'ft: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)"
    local added=0
    # After a crash too: what was found before it passed its checks.
    if ((!smoke)); then
        # Merge: the seeds stay, then every input (old or new) that covers
        # an edge nothing kept so far covers (libFuzzer -merge=1, what
        # `cargo fuzz cmin` runs, with -use_counters=0: edges, not hit
        # counts, so the corpus stays a few hundred files).
        local merged old
        merged="$(mktemp -d)"
        old="$(mktemp -d)"
        find "corpus/$target" -maxdepth 1 -type f ! -name 'seed-*' -exec mv -t "$old" {} +
        find "corpus/$target" -maxdepth 1 -type f -name 'seed-*' -exec cp -t "$merged" {} +
        local before_merge
        before_merge="$(find "$merged" -type f | wc -l)"
        if nice -n 19 cargo fuzz run "${build_flags[@]}" "$target" "$merged" "$old" "$found" -- \
            -merge=1 -use_counters=0 -timeout=10 >>"$log" 2>&1; then
            find "$merged" -maxdepth 1 -type f ! -name 'seed-*' -exec cp -t "corpus/$target" {} +
            added=$(($(find "$merged" -type f | wc -l) - before_merge - $(find "$old" -type f | wc -l)))
        else
            echo "$target: merge failed (see $log); corpus left as it was" >&2
            find "$old" -maxdepth 1 -type f -exec mv -t "corpus/$target" {} +
            status=1
        fi
        rm -rf "$merged" "$old"
    fi
    rm -rf "$found"
    local size
    size="$(find "corpus/$target" -type f | wc -l)"
    printf '%-13s runs=%s time=%ss cov=%s ft=%s corpus=%s (%+d) crashes=%d exit=%d\n' \
        "$target" "${runs:-?}" "$elapsed" "${cov:-?}" "${ft:-?}" "$size" "$added" "$crashes" "$status" \
        >"$logs/$target.summary"
}

for target in "${targets[@]}"; do
    while (($(jobs -rp | wc -l) >= jobs)); do
        wait -n || true
    done
    echo "== $target: ${seconds}s (log: fuzz/$logs/$target.log)" >&2
    run_one "$target" &
done
wait

failed=0
for target in "${targets[@]}"; do
    if [[ -f "$logs/$target.summary" ]]; then
        cat "$logs/$target.summary"
        grep -q 'crashes=0 exit=0$' "$logs/$target.summary" || failed=1
        rm -f "$logs/$target.summary"
    else
        echo "$target: no summary (see fuzz/$logs/$target.log)"
        failed=1
    fi
done
if ((failed)); then
    echo "FAILED: a target crashed or did not run; inputs are in fuzz/artifacts/, logs in fuzz/$logs/" >&2
    exit 1
fi
