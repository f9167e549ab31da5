#!/usr/bin/env bash
# Runs the libFuzzer targets built by Tests/fuzz/build.sh; `make fuzz` builds, then calls this.
#
#   Tests/fuzz/run.sh [NAME...]         default: every Tests/fuzz/*.swift
#
# For each target: replay every saved crash in Tests/fuzz/regressions/NAME (each must now pass),
# then fuzz for FUZZ_SECONDS from a copy of Tests/fuzz/corpus/NAME in a temporary directory, so
# the inputs libFuzzer adds never reach the repository. An input that crashes, times out
# (-timeout=5) or exhausts memory (-rss_limit_mb=2048) fails the target and is copied to
# Tests/fuzz/regressions/NAME, where the fix is checked by every later run. All targets run;
# the exit status is non-zero if any failed.
#
# Environment:
#   SWIFT               the swift driver, to find the toolchain's symbolizer and demangler
#   FUZZ_SECONDS        fuzzing time per target (default 60)
#   FUZZ_SCRATCH        where build.sh put the executables (default: .build/fuzz)
#   FUZZ_FLAGS          extra libFuzzer flags, e.g. FUZZ_FLAGS=-seed=1
#   FUZZ_KEEP=1         keep the temporary directory (grown corpus, logs) and print its path
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
scratch=${FUZZ_SCRATCH:-$root/.build/fuzz}
seconds=${FUZZ_SECONDS:-60}
read -r -a extra <<<"${FUZZ_FLAGS:-}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "run.sh: FUZZ_SECONDS must be a whole number" >&2; exit 64; }
# Swift's own crash handler reads the crashed process's memory in a way ASan reports as a
# heap-use-after-free, which would hide a precondition's message and stack behind a bogus
# report; without it, libFuzzer prints the message, the stack, and saves the input.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}
# The toolchain's symbolizer puts file:line on ASan's stacks even when it is not on PATH, and
# its demangler makes the Swift frames of a failure readable.
toolchain=$(dirname "$(command -v "${SWIFT:-swift}" 2>/dev/null || echo /opt/swift/usr/bin/swift)")
[ -x "$toolchain/llvm-symbolizer" ] && export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$toolchain/llvm-symbolizer}
demangle=cat
[ -x "$toolchain/swift-demangle" ] && demangle="$toolchain/swift-demangle --simplified"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for harness in "$here"/*.swift; do targets+=("$(basename "$harness" .swift)"); done
fi

# Longest input per target: what the daemon reads before judging. The control socket and the
# metrics port read one byte past their limit (1024 and 8192) so an oversized request is seen.
max_len() {
    case "$1" in
        control) echo 1025 ;;
        metrics) echo 8193 ;;
        *) echo 8192 ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/reaperd-fuzz.XXXXXX")
if [ "${FUZZ_KEEP:-0}" = 1 ]; then
    trap 'echo "kept $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi

failed=()
for target in "${targets[@]}"; do
    fuzzer=$scratch/fuzzers/$target
    [ -x "$fuzzer" ] || { echo "run.sh: $fuzzer not built; run Tests/fuzz/build.sh" >&2; exit 1; }
    regressions=$here/regressions/$target
    dir=$work/$target
    mkdir -p "$dir/corpus" "$dir/artifacts" "$regressions"
    cp -R "$here/corpus/$target/." "$dir/corpus/"
    flags=(-timeout=5 -rss_limit_mb=2048 -max_len="$(max_len "$target")" -artifact_prefix="$dir/artifacts/")
    [ -f "$here/dict/$target.dict" ] && flags+=(-dict="$here/dict/$target.dict")

    inputs=()
    while IFS= read -r input; do inputs+=("$input"); done < <(find "$regressions" -type f ! -name '.*' | sort)
    if [ ${#inputs[@]} -gt 0 ]; then
        echo "== $target: replaying ${#inputs[@]} regression input(s)"
        if ! "$fuzzer" "${flags[@]}" "${inputs[@]}" >"$dir/replay.log" 2>&1; then
            tail -n 40 "$dir/replay.log" | $demangle
            echo "== $target: FAILED: a regression input still crashes ($regressions)"
            failed+=("$target")
            continue
        fi
    fi

    echo "== $target: fuzzing for ${seconds}s"
    status=0
    "$fuzzer" "${flags[@]}" -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}" \
        "$dir/corpus" >"$dir/fuzz.log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$dir/fuzz.log" | sed "s/^/   $target /" || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$dir/fuzz.log" \
        | sed "s/^/   $target /" || true
    found=$(find "$dir/artifacts" -type f | sort)
    if [ "$status" -ne 0 ] || [ -n "$found" ]; then
        tail -n 60 "$dir/fuzz.log" | $demangle
        for artifact in $found; do
            cp "$artifact" "$regressions/"
            echo "== $target: saved $regressions/$(basename "$artifact")"
        done
        echo "== $target: FAILED (libFuzzer exit status $status)"
        failed+=("$target")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${targets[*]}: no crash"
