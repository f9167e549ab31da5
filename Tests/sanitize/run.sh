#!/usr/bin/env bash
# `make test-sanitize`: the test suites under AddressSanitizer and ThreadSanitizer (issue 6).
#
#   1. ASan build (debug) in $ASAN_SCRATCH; `swift test` there; then the pytest integration
#      suite (Tests/integration) against the instrumented reaperd and reaperctl. Every daemon's
#      stderr is searched for sanitizer reports afterwards: a report from a daemon that a test
#      killed, or whose exit status no test checks, would otherwise go unseen.
#   2. TSan build in $TSAN_SCRATCH; `swift test` there; then the integration suites where
#      worker threads meet (test_workers, relay, lifecycle, operator); TSAN_INTEGRATION=1 runs
#      every suite under TSan.
#
# Every stage runs (a failed build skips only the stages that need it); the exit status is
# non-zero if any failed. Daemon logs of a failed integration stage are kept and named.
#
# Environment (the Makefile passes these): SWIFT, SWIFTFLAGS, PYTHON, ASAN_SCRATCH,
# TSAN_SCRATCH, TSAN_INTEGRATION (0|1), SANITIZE_PYTEST_ARGS (e.g. '-k hostile').
# Tests/sanitize/lsan.supp silences false leaks it explains one by one: XCTest's bookkeeping,
# Swift weak-reference side tables, glibc's per-thread resolver state.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
swift=${SWIFT:-$(command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)}
asan_scratch=${ASAN_SCRATCH:-$root/.build/asan}
tsan_scratch=${TSAN_SCRATCH:-$root/.build/tsan}
read -r -a extra <<<"${SWIFTFLAGS:-}"
read -r -a pytest_args <<<"${SANITIZE_PYTEST_ARGS:-}"
python=${PYTHON:-python3}
"$python" -c 'import pytest' 2>/dev/null || python=/usr/bin/python3

export LSAN_OPTIONS="suppressions=$here/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export TSAN_OPTIONS="halt_on_error=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
REPORTS='ERROR: (Address|Leak)Sanitizer|WARNING: ThreadSanitizer|runtime error:'

failed=()
banner() { printf '\n==================== %s ====================\n' "$*"; }

# stage NAME CMD...: runs CMD under banners with its duration and outcome.
stage() {
    local name=$1 start=$SECONDS rc=0
    shift
    banner "$name"
    "$@" || rc=$?
    if ((rc == 0)); then
        banner "$name: passed in $((SECONDS - start)) s"
    else
        banner "$name: FAILED (exit $rc) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
    return $rc
}

# integration KIND BIN_DIR [TESTS...]: the pytest suite (or the files TESTS) against BIN_DIR,
# then the search for reports.
integration() {
    local kind=$1 bin=$2 tmp rc=0
    shift 2
    local tests=("$@")
    ((${#tests[@]} > 0)) || tests=(Tests/integration)
    tmp=$(mktemp -d "/tmp/reaperd-$kind.XXXXXX")
    echo "REAPERD_BIN_DIR=$bin $python -m pytest ${tests[*]} --basetemp=$tmp ${pytest_args[*]}"
    REAPERD_BIN_DIR="$bin" REAPERD_HOSTILE_RESULTS="$tmp/hostile-results.json" \
        "$python" -m pytest "${tests[@]}" -p no:cacheprovider --basetemp="$tmp" "${pytest_args[@]}" || rc=$?
    if grep -rlE "$REPORTS" "$tmp" >/dev/null 2>&1; then
        echo "$kind: sanitizer reports in these daemon logs:"
        grep -rlE "$REPORTS" "$tmp"
        grep -rhE -A30 "$REPORTS" "$tmp" | head -120
        rc=1
    fi
    if ((rc == 0)); then rm -rf "$tmp"; else echo "$kind: daemon logs kept in $tmp"; fi
    return $rc
}

asan=(--scratch-path "$asan_scratch" "${extra[@]}" --sanitize=address -Xswiftc -warnings-as-errors)
tsan=(--scratch-path "$tsan_scratch" "${extra[@]}" --sanitize=thread -Xswiftc -warnings-as-errors)

# The randomized relay test runs 240 seeds in make test; under a sanitizer a few
# dozen keep the stage short and still put every relay path under its eye.
export REAPERD_RELAY_SEEDS=${REAPERD_RELAY_SEEDS:-48}

banner "reaperd under sanitizers: $("$swift" --version 2>/dev/null | head -1)"
if stage "ASan: build" "$swift" build "${asan[@]}"; then
    # Leaks are checked; lsan.supp names the few false reports it silences, each with its reason.
    stage "ASan: swift test" env LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$here/lsan.supp" \
        "$swift" test "${asan[@]}"
    stage "ASan: integration tests" integration asan "$asan_scratch/debug"
fi
if stage "TSan: build" "$swift" build "${tsan[@]}"; then
    stage "TSan: swift test" "$swift" test "${tsan[@]}"
    if [ "${TSAN_INTEGRATION:-0}" = 1 ]; then
        stage "TSan: integration tests" integration tsan "$tsan_scratch/debug"
    else
        # The suites where workers meet: several loops, the primary's questions,
        # reloads, shutdown, reaps (test_workers runs two workers on any machine;
        # the others run workers = auto). TSAN_INTEGRATION=1 runs every suite.
        stage "TSan: integration tests (workers)" integration tsan "$tsan_scratch/debug" \
            Tests/integration/test_workers.py Tests/integration/test_relay.py Tests/integration/test_lifecycle.py \
            Tests/integration/test_operator.py
    fi
fi

if ((${#failed[@]} > 0)); then
    banner "test-sanitize failed: ${failed[*]}"
    exit 1
fi
banner "test-sanitize passed"
