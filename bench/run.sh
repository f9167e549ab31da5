#!/bin/bash
# The benchmark of issue 5: reaperd against HAProxy and a direct connection on
# loopback. `make bench` builds reaperd in release mode and runs this; by hand:
#
#   REAPERD=/tmp/bench-build/release/reaperd bash bench/run.sh [bench.py options]
#
# e.g. `--runs 1 --only throughput,rate` for a quick look. Needs root (nft for
# the detection test), haproxy, gcc, ss, python3. Results: bench/results/ (and
# bench/results/workers-N/ for BENCH_WORKERS, default 2).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
REAPERD=${REAPERD:-$here/../.build/release/reaperd}
OUT=${BENCH_OUT:-$here/results}

for tool in haproxy gcc ss nft taskset /usr/bin/python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool not found (make deps-bench)" >&2; exit 1; }
done
if [ ! -x "$REAPERD" ]; then
    echo "bench: no reaperd at $REAPERD (make release)" >&2
    exit 1
fi
[ "$(id -u)" = 0 ] || { echo "bench: needs root (nft rules for the vanishing clients)" >&2; exit 1; }

mkdir -p "$OUT"
gcc -O2 -Wall -Wextra -o "$OUT/loadgen" "$here/loadgen.c"
gcc -O2 -Wall -Wextra -pthread -o "$OUT/spread" "$here/spread.c"

# A relayed connection costs two descriptors; take all the hard limit allows.
ulimit -n "$(ulimit -Hn)"
echo "bench: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), Linux $(uname -r)" >&2
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
/usr/bin/python3 "$here/bench.py" --loadgen "$OUT/loadgen" --reaperd "$REAPERD" --out "$OUT" "$@"

# Then every core (issue 14): reaperd `workers = N` against HAProxy `nbthread N`,
# unpinned, for each N in BENCH_WORKERS (default 2 where there are 2 CPUs or more;
# empty skips it): throughput, connection rate, idle memory and CPU, and how the
# kernel spreads clients (bench/spread.c), in OUT/workers-N.
workers=${BENCH_WORKERS-$( (( $(nproc) >= 2 )) && echo 2)}
for n in $workers; do
    /usr/bin/python3 "$here/bench.py" --loadgen "$OUT/loadgen" --reaperd "$REAPERD" --out "$OUT/workers-$n" \
        --workers "$n" --only throughput,rate,idle,spread "$@"
done
