#!/usr/bin/env bash
# Fuzz jitgate's parsers and header rewriting with cargo-fuzz (libFuzzer), on the stable toolchain.
#
#   scripts/fuzz.sh                  every target for FUZZ_SECONDS (default 60) each, one at a time
#   scripts/fuzz.sh http_allow       just that target (or several: scripts/fuzz.sh config api_key)
#   FUZZ_SECONDS=600 scripts/fuzz.sh config
#   FUZZ_KEEP_GOING=1 scripts/fuzz.sh   keep fuzzing past a crash (libFuzzer fork mode), to find
#                                       more than the first one per target
#
# Each target first replays its saved crashes (fuzz/regressions/<target>/), then fuzzes from the
# committed seeds (fuzz/seeds/<target>/, copied into the gitignored working corpus
# fuzz/corpus/<target>/). Exits non-zero when any target crashed, naming each crash file.
#
# On stable Rust, RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags (sanitizer, coverage);
# `--sanitizer none` because ASan adds little to #![forbid(unsafe_code)] Rust and halves the
# speed (set FUZZ_SANITIZER=address for it). Builds run under nice -n 15 (2-core machines).
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_KEEP_GOING=${FUZZ_KEEP_GOING:-0}
export RUSTC_BOOTSTRAP=1

if ! [[ $FUZZ_SECONDS =~ ^[0-9]+$ ]] || ((FUZZ_SECONDS < 1)); then
    echo "fuzz.sh: FUZZ_SECONDS must be a whole number of seconds, not '$FUZZ_SECONDS'" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    nice -n 15 cargo install cargo-fuzz --locked
fi

cd fuzz
mapfile -t all < <(cargo fuzz list)
targets=("${@:-${all[@]}}")
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all[@]}" | grep -qx -- "$t"; then
        echo "usage: scripts/fuzz.sh [TARGET...]; no fuzz target '$t' (the targets: ${all[*]})" >&2
        exit 2
    fi
done

echo "fuzz.sh: building the fuzz targets (sanitizer: $FUZZ_SANITIZER)" >&2
nice -n 15 cargo fuzz build --sanitizer "$FUZZ_SANITIZER"

# Run the binaries just built (not `cargo fuzz run`, which would rebuild whenever src/ changes
# mid-run): every target then fuzzes the same build.
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=target/$triple/release
mkdir -p logs
# The targets' scratch files (an audit log, cast files) go here, in memory where possible.
scratch=$(mktemp -d /dev/shm/jitgate-fuzz.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export JITGATE_FUZZ_SCRATCH=$scratch
failed=()
for t in "${targets[@]}"; do
    log="logs/$t.log"
    : >"$log"
    # 1. Saved crashes must no longer crash.
    if compgen -G "regressions/$t/*" >/dev/null; then
        if ! nice -n 15 "$bin_dir/$t" -runs=1 regressions/"$t"/* >>"$log" 2>&1; then
            echo "fuzz.sh: $t: a saved crash in fuzz/regressions/$t/ still crashes (see fuzz/$log)" >&2
            grep -E '^(Running|thread .* panicked|  left|  right|\S.*panicked at)' "$log" | head -20 >&2 || true
            failed+=("$t: fuzz/regressions/$t/ (still crashes)")
            [[ $FUZZ_KEEP_GOING == 1 ]] || continue
        fi
    fi
    # 2. Fuzz from the seeds.
    mkdir -p "corpus/$t" "artifacts/$t"
    cp -n "seeds/$t"/* "corpus/$t"/ 2>/dev/null || true
    args=(-max_total_time="$FUZZ_SECONDS" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1)
    case $t in
        webhook_*) dict=dict/webhook.dict ;;
        *) dict=dict/$t.dict ;;
    esac
    [[ -f $dict ]] && args+=(-dict="$dict")
    [[ $FUZZ_KEEP_GOING == 1 ]] && args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
    before=$(ls "artifacts/$t" | sort)
    echo "fuzz.sh: $t for ${FUZZ_SECONDS}s" >&2
    rc=0
    nice -n 15 "$bin_dir/$t" -artifact_prefix="artifacts/$t/" "${args[@]}" "corpus/$t" >>"$log" 2>&1 || rc=$?
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    speed=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
    new=$(comm -13 <(echo "$before") <(ls "artifacts/$t" | sort) | sed "s|^|fuzz/artifacts/$t/|")
    if ((rc != 0)) || [[ -n $new ]]; then
        echo "fuzz.sh: $t CRASHED (exit $rc; log fuzz/$log):" >&2
        grep -E 'panicked at|^(  left|  right)|SUMMARY|Test unit written' "$log" | head -20 >&2 || true
        [[ -n $new ]] || new="(no crash file: see the log)"
        count=$(wc -l <<<"$new")
        while read -r f; do
            echo "  crash file: $f" >&2
            failed+=("$t: $f")
        done < <(head -5 <<<"$new")
        ((count <= 5)) || failed+=("$t: ... and $((count - 5)) more in fuzz/artifacts/$t/")
    else
        echo "fuzz.sh: $t ok: ${runs:-?} runs, ${speed:-?} exec/s, corpus $(ls "corpus/$t" | wc -l) inputs" >&2
    fi
done

if ((${#failed[@]})); then
    echo "fuzz.sh: crashes found; reproduce one with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $FUZZ_SANITIZER TARGET FILE" >&2
    echo "  (minimize it with: ... cargo fuzz tmin --sanitizer $FUZZ_SANITIZER TARGET FILE)" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${#targets[@]} target(s)" >&2
