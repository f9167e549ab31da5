#!/usr/bin/env python3
"""Real clients through each proxy (issue 14, item 1): redis-benchmark (no pipelining
and -P 16) against Debian's redis-server, pgbench -S and -S -C against a PostgreSQL 15
cluster of its own, each direct, through a reaperd relay and through HAProxy
at the same thread count (reaperd `workers = N`, HAProxy `nbthread N`; one table per
count, 1 and 2 by default), interleaved round by round; medians, and each proxy's CPU
per request (its own user + system time over the requests it carried), which does not
depend on how much of the cores the load generator takes.

    python3 bench/realclients.py --reaperd .build/release/reaperd [--rounds 3] [--seconds 5] [--threads 1,2]
"""
import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adopt import Reaperd, free_port, wait_listening  # noqa: E402

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:] or [""]


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_run(port, requests, pipeline):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", str(requests), "-c", "50",
                          "-P", str(pipeline), "-t", "set,get", "--csv"], capture_output=True, text=True,
                         timeout=300).stdout
    rates = [float(line.split(",")[1].strip('"')) for line in out.splitlines()[1:] if line.count(",") >= 1]
    if len(rates) != 2:
        sys.exit(f"realclients: redis-benchmark printed {out!r}")
    # SET then GET, `requests` each: the mean of the two rates, and 2 x requests carried.
    return sum(rates) / 2, 2 * requests


def pgbench_run(port, seconds, connect_each):
    args = ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-n", "-S", "-c", "16", "-j", "2",
            "-T", str(seconds)] + (["-C"] if connect_each else []) + ["postgres"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    tps = re.search(r"^tps = ([0-9.]+)", result.stdout, re.M)
    done = re.search(r"^number of transactions actually processed: (\d+)", result.stdout, re.M)
    if result.returncode != 0 or not tps or not done:
        sys.exit(f"realclients: pgbench failed: {result.stdout}{result.stderr}")
    return float(tps.group(1)), int(done.group(1))


class Postgres:
    """A throwaway cluster on loopback, trust authentication, as the postgres user."""

    def __init__(self):
        if not PG_BIN[0]:
            sys.exit("realclients: no PostgreSQL server (apt-get install postgresql)")
        self.dir = tempfile.mkdtemp(prefix="reaperd-bench-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PG_BIN[0]}/initdb", "-D", f"{self.dir}/data",
                        "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", f"{PG_BIN[0]}/postgres", "-D", f"{self.dir}/data",
             "-p", str(self.port), "-k", self.dir, "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
             "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/log", "w"))
        wait_listening(self.port, self.proc)
        for _ in range(100):
            if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-i", "-s", "10",
                        "-q", "postgres"], check=True, capture_output=True)

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class HAProxy:
    def __init__(self, port, upstream, threads=1):
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
        self.cfg.write(f"global\n    maxconn 9000\n    nbthread {threads}\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                       f"    timeout client 1h\n    timeout server 1h\nlisten l\n    bind 127.0.0.1:{port}\n"
                       f"    server s 127.0.0.1:{upstream}\n")
        self.cfg.close()
        self.proc = subprocess.Popen(["haproxy", "-f", self.cfg.name, "-db"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_listening(port, self.proc)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.cfg.name)


def syscalls(pid, run):
    """System calls `pid` makes (strace -c, every thread) while `run()` carries its
    requests: (calls per 10 000 requests, the top calls by count as "name n")."""
    out = tempfile.NamedTemporaryFile(suffix=".strace", delete=False)
    out.close()
    tracer = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out.name, "-p", str(pid)],
                              stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the first request
    _, carried = run()
    tracer.send_signal(2)
    tracer.wait(30)
    with open(out.name) as f:
        text = f.read()
    os.unlink(out.name)
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    scale = 10000 / carried
    top = sorted(calls.items(), key=lambda item: -item[1])[:5]
    return sum(calls.values()) * scale, ", ".join(f"{name} {count * scale:,.0f}" for name, count in top)


def syscall_table(binary, upstream):
    """redis-benchmark SET+GET, 50 clients, no pipelining, 10 000 requests through each proxy (one thread)."""
    rows = []
    for who, start in proxies(binary, "redis", upstream, threads=1):
        port = free_port()
        proxy = start(port)
        try:
            rows.append((who, *syscalls(proxy.proc.pid, lambda: redis_run(port, 5000, 1))))
        finally:
            proxy.close()
    print("System calls per 10 000 requests (redis-benchmark SET+GET, 50 clients, no pipelining; strace -c):")
    print("| proxy | calls | most frequent |")
    print("| --- | ---: | --- |")
    for who, total, top in rows:
        print(f"| {who} | {total:,.0f} | {top} |")


def proxies(binary, name, upstream, threads):
    """(who, a function starting that proxy on a port) for reaperd and HAProxy, in front of `upstream`,
    each with `threads` event loops."""
    def reaperd(port):
        return Reaperd(binary, f"workers = {threads}\n\n[listener:{name}]\nlisten = 127.0.0.1:{port}\nmode = relay\n"
                               f"upstream = 127.0.0.1:{upstream}\nmax_connections = 10000\n")
    return [("reaperd", reaperd), ("haproxy", lambda port: HAProxy(port, upstream, threads))]


def through(binary, name, upstream, run, threads):
    """Runs `run(port)` direct, through reaperd, through HAProxy; (rate, cpu per request or None) each."""
    results = {"direct": (run(upstream)[0], None)}
    for who, start in proxies(binary, name, upstream, threads):
        port = free_port()
        proxy = start(port)
        try:
            before = process_cpu(proxy.proc.pid)
            rate, carried = run(port)
            results[who] = (rate, (process_cpu(proxy.proc.pid) - before) / carried)
        finally:
            proxy.close()
    return results


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reaperd", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100000, help="redis-benchmark requests per test")
    parser.add_argument("--seconds", type=int, default=5, help="pgbench duration")
    parser.add_argument("--only-syscalls", action="store_true", help="only the system call table")
    parser.add_argument("--threads", default="1,2", help="reaperd workers = HAProxy nbthread, one table each")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("realclients: needs root (a PostgreSQL cluster run as postgres)")
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--protected-mode", "no"], stdout=subprocess.DEVNULL)
    wait_listening(redis_port, redis)
    try:
        if shutil.which("strace"):
            syscall_table(args.reaperd, redis_port)
        else:
            print("realclients: no strace, no system call table (make deps-bench)", file=sys.stderr)
    except BaseException:
        redis.kill()
        raise
    if args.only_syscalls:
        redis.kill()
        redis.wait()
        return
    pg = Postgres()
    rows = {
        "redis-benchmark SET+GET, 50 clients (req/s)":
            ("redis", redis_port, lambda p: redis_run(p, args.requests, 1)),
        "redis-benchmark SET+GET, 50 clients, -P 16 (req/s)":
            ("redis", redis_port, lambda p: redis_run(p, args.requests * 4, 16)),
        "pgbench -S, 16 clients (tps)": ("pg", pg.port, lambda p: pgbench_run(p, args.seconds, False)),
        "pgbench -S -C, 16 clients, a connection per transaction (tps)":
            ("pg", pg.port, lambda p: pgbench_run(p, args.seconds, True)),
    }
    counts = [int(n) for n in args.threads.split(",")]
    samples = {(n, row): {"direct": [], "reaperd": [], "haproxy": []} for n in counts for row in rows}
    cpu = {(n, row): {"reaperd": [], "haproxy": []} for n in counts for row in rows}
    try:
        for round_number in range(args.rounds):
            for n in counts:
                for row, (name, upstream, run) in rows.items():
                    for who, (rate, per) in through(args.reaperd, name, upstream, run, n).items():
                        samples[(n, row)][who].append(rate)
                        if per is not None:
                            cpu[(n, row)][who].append(per)
            print(f"realclients: round {round_number + 1} of {args.rounds} done", file=sys.stderr)
    finally:
        pg.close()
        redis.kill()
        redis.wait()
    for n in counts:
        print(f"\nReal clients on loopback, one relay process with {n} thread(s) (reaperd workers = {n}, "
              f"HAProxy nbthread {n}), {os.cpu_count()} cores shared with the load generator; medians of "
              f"{args.rounds} interleaved rounds; CPU per request is the proxy's own.")
        print("| workload | direct | HAProxy 2.6 | reaperd | reaperd / HAProxy | CPU/request HAProxy | reaperd |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in rows:
            m = {who: statistics.median(v) for who, v in samples[(n, row)].items()}
            c = {who: statistics.median(v) * 1e6 for who, v in cpu[(n, row)].items()}
            print(f"| {row} | {m['direct']:,.0f} | {m['haproxy']:,.0f} | {m['reaperd']:,.0f} | "
                  f"{m['reaperd'] / m['haproxy']:.2f}x | {c['haproxy']:.1f} us | {c['reaperd']:.1f} us |")

if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    main()
