#!/usr/bin/env python3
"""Adopt mode's costs, measured on loopback (root: BPF and cgroups).

1. Requests: redis-benchmark against Debian's redis-server, direct and unadopted,
   direct with reaperd adopting it, through a reaperd relay listener and through
   HAProxy (nbthread 1); interleaved rounds, medians. Adopted should equal direct: nothing is in the path.
2. Sweep cost per adopted socket: N idle connections held to a server in a cgroup,
   reaperd adopting it, the sweep's own timing (reaperctl status) per socket.

    python3 bench/adopt.py --reaperd .build/release/reaperd [--rounds 3] [--sizes 5000,19000]
"""
import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

HOLD_SERVER = textwrap.dedent("""
    import resource, selectors, socket, sys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    print(server.getsockname()[1], flush=True)
    held = []
    while True:
        conn, _ = server.accept()
        held.append(conn)
""")


def cgroup_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index("-") + 1] == "cgroup2":
                return fields[4]
    sys.exit("no cgroup v2 hierarchy")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cgroup:
    def __init__(self):
        self.path = os.path.join(cgroup_mount(), f"reaperd-bench-{os.getpid()}")
        os.makedirs(self.path, exist_ok=True)
        self.relative = "/" + os.path.relpath(self.path, cgroup_mount())

    def enter(self):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def close(self):
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            for pid in f.read().split():
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.05)


class Reaperd:
    def __init__(self, binary, text):
        self.dir = tempfile.mkdtemp(prefix="reaperd-adopt-bench-")
        self.control = os.path.join(self.dir, "control.sock")
        path = os.path.join(self.dir, "reaperd.conf")
        with open(path, "w") as f:
            f.write(f"[daemon]\ncontrol_socket = {self.control}\nlog_level = notice\nlog_target = console\n"
                    + text)
        self.proc = subprocess.Popen([binary, "--config", path], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "log"), "w"))
        self.ctl = os.path.join(os.path.dirname(binary), "reaperctl")
        for _ in range(200):
            if self.status():
                return
            time.sleep(0.05)
        sys.exit(f"reaperd did not start: {open(os.path.join(self.dir, 'log')).read()}")

    def status(self):
        result = subprocess.run([self.ctl, "--socket", self.control, "status", "--json"], capture_output=True,
                                text=True)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self):
        self.proc.terminate()
        self.proc.wait(20)


def wait_listening(port, proc):
    """Until something accepts on `port`; exits with a message if `proc` died first."""
    for _ in range(100):
        if proc.poll() is not None:
            sys.exit(f"adopt bench: {proc.args[0]} exited {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"adopt bench: nothing listens on {port}")


def redis_rate(port, requests, pipeline=1):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", str(requests), "-c", "50",
                          "-P", str(pipeline), "-t", "set,get", "--csv"], capture_output=True, text=True,
                         timeout=120).stdout
    rates = [float(line.split(",")[1].strip('"')) for line in out.splitlines()[1:] if line.count(",") >= 1]
    return sum(rates) / len(rates)


def requests_bench(binary, rounds, requests):
    group = Cgroup()
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--protected-mode", "no"], stdout=subprocess.DEVNULL,
                             preexec_fn=group.enter)
    wait_listening(port, redis)
    relay_port = free_port()
    haproxy_port = free_port()
    haproxy_cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg", delete=False)
    haproxy_cfg.write(f"global\n    maxconn 9000\n    nbthread 1\ndefaults\n    mode tcp\n    timeout connect 5s\n"
                      f"    timeout client 1h\n    timeout server 1h\nlisten redis\n    bind 127.0.0.1:{haproxy_port}\n"
                      f"    server r 127.0.0.1:{port}\n")
    haproxy_cfg.close()
    results = {"direct": [], "adopted": [], "relay": [], "haproxy": []}
    try:
        for _ in range(rounds):
            results["direct"].append(redis_rate(port, requests))
            adopter = Reaperd(binary, f"\n[service:redis]\ncgroup = {group.relative}\nports = {port}\n"
                                      "keepalive_idle = 60s\n")
            try:
                results["adopted"].append(redis_rate(port, requests))
            finally:
                adopter.close()
            relay = Reaperd(binary, f"\n[listener:redis]\nlisten = 127.0.0.1:{relay_port}\nmode = relay\n"
                                    f"upstream = 127.0.0.1:{port}\nmax_connections = 10000\n")
            try:
                results["relay"].append(redis_rate(relay_port, requests))
            finally:
                relay.close()
            haproxy = subprocess.Popen(["haproxy", "-f", haproxy_cfg.name, "-db"], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            try:
                wait_listening(haproxy_port, haproxy)
                results["haproxy"].append(redis_rate(haproxy_port, requests))
            finally:
                haproxy.kill()
                haproxy.wait()
    finally:
        redis.kill()
        redis.wait()
        group.close()
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"redis-benchmark SET+GET, 50 clients, {requests} requests each, medians of {rounds} interleaved rounds:")
    for name in ("direct", "adopted", "relay", "haproxy"):
        runs = ", ".join(f"{r:.0f}" for r in results[name])
        print(f"  {name:8} {medians[name]:10.0f} req/s  {medians[name] / medians['direct']:.2f}x direct  ({runs})")
    return medians


def sweep_bench(binary, size):
    group = Cgroup()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    server = subprocess.Popen([sys.executable, "-c", HOLD_SERVER], stdout=subprocess.PIPE, text=True,
                              preexec_fn=group.enter)
    port = int(server.stdout.readline())
    clients = []
    try:
        for _ in range(size):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        adopter = Reaperd(binary, f"poll_interval = 1s\n\n[service:held]\ncgroup = {group.relative}\n"
                                  "keepalive_idle = 600s\n")
        try:
            samples = []
            cpu_before = adopter.cpu_seconds()
            started = time.monotonic()
            seen = 0
            while len(samples) < 8 and time.monotonic() - started < 60:
                status = adopter.status()
                sweep = status["sweep"]
                if sweep["count"] > seen and sweep["last_sockets"] >= size:
                    seen = sweep["count"]
                    samples.append(sweep["last_seconds"])
                time.sleep(0.25)
            cpu = (adopter.cpu_seconds() - cpu_before) / (time.monotonic() - started)
        finally:
            adopter.close()
    finally:
        for s in clients:
            s.close()
        server.kill()
        server.wait()
        group.close()
    median = statistics.median(samples) if samples else float("nan")
    print(f"sweep over {size} adopted sockets: {median * 1000:.2f} ms ({median / size * 1e6:.2f} us per socket, "
          f"median of {len(samples)}); reaperd CPU {cpu * 100:.1f}% of a core at poll_interval 1s")
    return median


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reaperd", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200000)
    parser.add_argument("--sizes", default="5000,19000")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("adopt bench: needs root (BPF, cgroups)")
    requests_bench(args.reaperd, args.rounds, args.requests)
    for size in (int(s) for s in args.sizes.split(",")):
        sweep_bench(args.reaperd, size)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    main()
