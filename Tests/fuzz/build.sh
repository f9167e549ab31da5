#!/usr/bin/env bash
# Builds the libFuzzer targets of Tests/fuzz: one executable per Tests/fuzz/NAME.swift, each
# linked against a ReaperCore instrumented for libFuzzer and AddressSanitizer.
#
#   Tests/fuzz/build.sh [NAME...]       default: every Tests/fuzz/*.swift
#
# Environment:
#   SWIFT               the swift driver (default: swift from PATH, else /opt/swift/usr/bin/swift)
#   FUZZ_SCRATCH        SwiftPM scratch path for the instrumented build (default: .build/fuzz);
#                       kept apart from the ordinary build, whose flags differ
#   FUZZ_CONFIGURATION  release (default: about 5x the executions of debug, and the parsers
#                       have no assert() that debug would add) or debug
#
# The executables land in $FUZZ_SCRATCH/fuzzers/NAME; Tests/fuzz/run.sh runs them.
#
# The recipe: SwiftPM compiles the ReaperCore target only (no link) with -sanitize=fuzzer,address,
# which adds libFuzzer's coverage and comparison hooks and ASan's checks, and compiles CLinuxShim
# with clang's -fsanitize=fuzzer-no-link,address. Then swiftc compiles each harness against the
# built module (which needs the module maps of its C dependencies) and links it with the objects
# SwiftPM lists for the current sources, libsystemd, and libFuzzer's main and runtime, which
# ship with the toolchain (lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a). lld, also in the
# toolchain, links ASan objects without the "cannot export local symbol" warnings of gold.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
swift=${SWIFT:-$(command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)}
swift=$(command -v "$swift")
swiftc=$(dirname "$swift")/swiftc
scratch=${FUZZ_SCRATCH:-$root/.build/fuzz}
configuration=${FUZZ_CONFIGURATION:-release}
case "$configuration" in
    release | debug) ;;
    *) echo "build.sh: FUZZ_CONFIGURATION must be release or debug, not '$configuration'" >&2; exit 64 ;;
esac

if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for harness in "$here"/*.swift; do targets+=("$(basename "$harness" .swift)"); done
fi
for target in "${targets[@]}"; do
    [ -f "$here/$target.swift" ] || { echo "build.sh: no harness $here/$target.swift" >&2; exit 64; }
done

swiftpm=(--package-path "$root" --scratch-path "$scratch" -c "$configuration")
echo "building ReaperCore for fuzzing ($configuration) in $scratch"
"$swift" build "${swiftpm[@]}" --target ReaperCore \
    -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address
bin=$("$swift" build "${swiftpm[@]}" --show-bin-path)

# Link exactly the objects of today's sources, as SwiftPM's output file map lists them per
# source file: a file deleted since the last build leaves its object behind in ReaperCore.build,
# and linking that would bring back code that is gone. (The map's whole-module entry names a
# ReaperCore.o that a release build does not write.)
objects=()
while IFS= read -r object; do
    objects+=("$object")
done < <(awk -F'"' '/^  "/ { source = ($2 ~ /\.swift$/) } source && $2 == "object" { print $4 }' \
    "$bin/ReaperCore.build/output-file-map.json")
while IFS= read -r source; do
    objects+=("$bin/CLinuxShim.build/${source#"$root/Sources/CLinuxShim/"}.o")
done < <(find "$root/Sources/CLinuxShim" -name '*.c' | sort)
for object in "${objects[@]}"; do
    [ -f "$object" ] || { echo "build.sh: missing object $object" >&2; exit 1; }
done
[ ${#objects[@]} -gt 1 ] || { echo "build.sh: no ReaperCore objects found under $bin" >&2; exit 1; }

optimize=-Onone
[ "$configuration" = release ] && optimize=-O
mkdir -p "$scratch/fuzzers"
for target in "${targets[@]}"; do
    echo "linking $scratch/fuzzers/$target"
    module=Fuzz$(tr '[:lower:]' '[:upper:]' <<<"${target:0:1}")${target:1}
    "$swiftc" "$optimize" -g -swift-version 6 -parse-as-library -module-name "$module" \
        -sanitize=fuzzer,address -use-ld=lld \
        -I "$bin/Modules" \
        -Xcc -fmodule-map-file="$bin/CLinuxShim.build/module.modulemap" \
        -Xcc -fmodule-map-file="$root/Sources/CSystemd/module.modulemap" \
        "$here/$target.swift" "${objects[@]}" -lsystemd \
        -o "$scratch/fuzzers/$target"
done
