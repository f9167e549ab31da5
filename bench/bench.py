#!/usr/bin/python3
"""reaperd against HAProxy and a direct connection, on loopback (issue 5).

Run through bench/run.sh (or `make bench`), which builds the load generator
and finds the binaries. Every figure is the median of --runs runs; within a
run the peers are measured one after the other under the same conditions.
Raw runs go to OUT/raw.json, the table to OUT/results.md and stdout.
"""
import argparse
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from report import DETECT_DEADLINE, DETECT_KA, busiest, render, summarize

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
NFT_TABLE = "reaperd_bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HAPROXY_MAXCONN = 9500


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


SOCKET_PROXYD = "/lib/systemd/systemd-socket-proxyd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ss_count(*filters):
    out = subprocess.run(["ss", "-Htn", *filters], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def listening(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return bool(out.strip())


def established_from(port):
    """Established sockets whose local port is `port` (a server's accepted ones)."""
    return ss_count("state", "established", f"( sport = :{port} )")


def proc_status(pid):
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def cpu_seconds(pid):
    """utime + stime from /proc/PID/stat, and the scheduler's own ns count (all threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rindex(")") + 2:].split()
    ticks = int(rest[11]) + int(rest[12])
    # /proc/PID/schedstat is the main thread's alone: every thread's, for workers.
    return ticks / CLK_TCK, sum(thread_cpu(pid).values())


class Target:
    """What a client connects to: a proxy in front of an upstream, or the upstream."""

    def __init__(self, kind, port, proc=None, workdir=None, metrics_port=None):
        self.kind = kind
        self.port = port
        self.proc = proc
        self.dir = workdir
        self.metrics_port = metrics_port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
        return values

    def connections(self):
        """Open connections, from the reaperd_connections gauges."""
        return sum(value for name, value in self.metrics().items() if name.startswith("reaperd_connections{"))


class Bench:
    def __init__(self, args):
        self.args = args
        self.loadgen = args.loadgen
        self.reaperd = args.reaperd
        self.tmp = Path(tempfile.mkdtemp(prefix="reaperd-bench-"))
        self.procs = []
        self.serial = 0
        self.raw = {"runs": []}
        # Pinned: the proxy alone on the last CPU, generator and upstream on the first
        # (on the direct path the upstream takes the proxy's CPU). Fewer migrations,
        # steadier runs; --no-pin leaves placement to the scheduler.
        # With more than one worker the proxy may use every CPU (as a multi-threaded
        # proxy would in production), so nothing is pinned.
        last = max(os.sched_getaffinity(0))
        pin = args.pin and last > 0 and args.workers == 1
        self.cpus = {"proxy": last, "load": min(os.sched_getaffinity(0))} if pin else {}
        self.raw["workers"] = args.workers
        self.raw["pinning"] = self.cpus

    # ------------------------------------------------------------ processes

    def pinned(self, argv, role):
        """argv run on the proxy's CPU or the load side's (taskset execs: same pid)."""
        cpu = self.cpus.get(role)
        return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]

    def spawn(self, argv, name, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL):
        self.serial += 1
        err_path = self.tmp / f"{self.serial:03d}-{name}.stderr"
        with open(err_path, "w") as err:
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=err, text=True)
        proc.stderr_path = err_path
        self.procs.append(proc)
        return proc

    def stop(self, proc, timeout=10):
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(self.procs):
            if proc.stdin:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            self.stop(proc, timeout=5)

    def server(self, kind, role="load"):
        """A C upstream: `sink` or `echo`."""
        port = free_port()
        proc = self.spawn(self.pinned([self.loadgen, kind, str(port)], role), kind, stdout=subprocess.PIPE)
        line = proc.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"loadgen {kind} did not start: {line!r}")
        return Target(kind, port, proc)

    def proxy(self, kind, upstream_port, mode="relay", keepalive=(60, 10, 3), log_level="warning"):
        """Starts `kind` (reaperd, haproxy) in front of upstream_port; `direct` is the upstream."""
        if kind == "direct":
            return Target("direct", upstream_port)
        self.serial += 1
        workdir = self.tmp / f"{self.serial:03d}-{kind}"
        workdir.mkdir()
        port = free_port()
        idle, interval, count = keepalive
        if kind == "reaperd":
            metrics_port = free_port()
            mode_lines = "mode = echo" if mode == "echo" else f"mode = relay\nupstream = 127.0.0.1:{upstream_port}"
            text = (HERE / "reaperd.conf.in").read_text()
            for key, value in {"DIR": workdir, "MPORT": metrics_port, "PORT": port, "KA_IDLE": idle,
                               "KA_INTVL": interval, "KA_CNT": count, "MODE_LINES": mode_lines,
                               "LOG_LEVEL": log_level, "WORKERS": self.args.workers}.items():
                text = text.replace(f"@{key}@", str(value))
            config = workdir / "reaperd.conf"
            config.write_text(text)
            proc = self.spawn(self.pinned([self.reaperd, "--config", str(config)], "proxy"), "reaperd")
            target = Target("reaperd", port, proc, workdir, metrics_port)
            wait_for(lambda: proc.poll() is not None or (listening(port) and listening(metrics_port)), 15,
                     "reaperd to listen")
        elif kind == "haproxy":
            text = (HERE / "haproxy.cfg.in").read_text()
            for key, value in {"DIR": workdir, "PORT": port, "UPORT": upstream_port, "MAXCONN": HAPROXY_MAXCONN,
                               "KA_IDLE": idle, "KA_INTVL": interval, "KA_CNT": count,
                               "THREADS": self.args.workers}.items():
                text = text.replace(f"@{key}@", str(value))
            config = workdir / "haproxy.cfg"
            config.write_text(text)
            proc = self.spawn(self.pinned(["haproxy", "-db", "-f", str(config)], "proxy"), "haproxy")
            target = Target("haproxy", port, proc, workdir)
            wait_for(lambda: proc.poll() is not None or listening(port), 15, "haproxy to listen")
        elif kind == "socket-proxyd":
            # systemd's own relay, socket-activated the way a unit would start it:
            # systemd-socket-activate binds, and execs the proxy (same PID) at the
            # first connection, which is made here and closed.
            argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", SOCKET_PROXYD,
                    "--connections-max", str(HAPROXY_MAXCONN), f"127.0.0.1:{upstream_port}"]
            proc = self.spawn(self.pinned(argv, "proxy"), "socket-proxyd")
            wait_for(lambda: proc.poll() is not None or listening(port), 15, "socket-activate to listen")
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            wait_for(lambda: proc.poll() is not None or os.readlink(f"/proc/{proc.pid}/exe") == os.path.realpath(SOCKET_PROXYD),
                     15, "socket-proxyd to start")
            target = Target("socket-proxyd", port, proc, workdir)
        else:
            raise ValueError(kind)
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited at start (rc {proc.returncode}); see {self.tmp}")
        return target

    def loadgen_json(self, argv, timeout):
        out = subprocess.run(self.pinned([self.loadgen, *argv], "load"), capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"loadgen {' '.join(argv)} failed: {out.stderr.strip()}")
        return json.loads(out.stdout)

    def hold(self, port, count, src_first, src_count=10):
        """A process holding `count` idle connections to `port` until released."""
        argv = [self.loadgen, "hold", "127.0.0.1", str(port), str(count), str(src_first), str(src_count)]
        proc = self.spawn(self.pinned(argv, "load"), "hold", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = proc.stdout.readline().strip()
        if line != f"ready {count}":
            raise RuntimeError(f"hold {count} on :{port}: {line!r}")
        return proc

    def release(self, proc):
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.procs.remove(proc)

    # ------------------------------------------------------------ measurements

    def throughput(self, kind):
        sink = self.server("sink", "proxy" if kind == "direct" else "load")
        target = self.proxy(kind, sink.port)
        try:
            self.loadgen_json(["stream", "127.0.0.1", str(target.port), "1", str(64 << 20)], 60)  # warm-up
            result = {}
            for streams in (1, 4):
                before = cpu_seconds(target.pid)[1] if target.pid else 0
                result[streams] = self.loadgen_json(
                    ["stream", "127.0.0.1", str(target.port), str(streams), str(self.args.gib * GIB)], 300)
                if target.pid:
                    result[streams]["proxy_cpu_seconds"] = cpu_seconds(target.pid)[1] - before
            return result
        finally:
            self.stop(target.proc)
            self.stop(sink.proc)

    def rate(self, kind):
        echo = self.server("echo", "proxy" if kind == "direct" else "load")
        target = self.proxy(kind, echo.port)
        try:
            self.loadgen_json(["rate", "127.0.0.1", str(target.port), "32", "0.5", "100"], 60)  # warm-up
            before = thread_cpu(target.pid) if target.pid else {}
            result = self.loadgen_json(
                ["rate", "127.0.0.1", str(target.port), "32", str(self.args.rate_seconds), "100"], 60)
            if target.pid:
                # Each thread's CPU in the window: the sum is the proxy's, the
                # largest share says how evenly the threads took the work.
                after = thread_cpu(target.pid)
                used = [seconds - before.get(tid, 0) for tid, seconds in after.items()]
                result["proxy_cpu_seconds"] = sum(used)
                result["busiest_thread_share"] = busiest(used)
            return result
        finally:
            self.stop(target.proc)
            self.stop(echo.proc)

    def idle(self, kind):
        """RSS added per idle relayed connection at each step, then CPU over the idle window."""
        sink = self.server("sink")
        target = self.proxy(kind, sink.port)
        holders = []
        result = {"rss": {}, "rss_anon": {}}
        try:
            time.sleep(1.5)  # past the first sweep
            base = proc_status(target.pid)
            total = 0
            for count, src_first in self.args.idle_steps:
                holders.append(self.hold(target.port, count, src_first))
                total += count
                wait_for(lambda: established_from(sink.port) >= total, 60, f"{total} upstream connections")
                time.sleep(2.2)  # two sweeps, so whatever a sweep allocates is in
                now = proc_status(target.pid)
                result["rss"][total] = (now["VmRSS"] - base["VmRSS"]) / total
                result["rss_anon"][total] = (now["RssAnon"] - base["RssAnon"]) / total
            result["connections"] = total
            if kind == "reaperd" and self.args.workers > 1:
                result["per_worker"] = self.per_worker(target)
            # The metrics page is read just outside the CPU window: rendering it walks
            # every connection, which is not what is measured here.
            metrics0 = target.metrics() if kind == "reaperd" else None
            ticks0, sched0 = cpu_seconds(target.pid)
            time.sleep(self.args.idle_seconds)
            ticks1, sched1 = cpu_seconds(target.pid)
            result["cpu_percent"] = 100 * (ticks1 - ticks0) / self.args.idle_seconds
            result["cpu_percent_schedstat"] = 100 * (sched1 - sched0) / self.args.idle_seconds
            if kind == "reaperd":
                metrics1 = target.metrics()
                sweeps = metrics1["reaperd_sweep_seconds_count"] - metrics0["reaperd_sweep_seconds_count"]
                seconds = metrics1["reaperd_sweep_seconds_sum"] - metrics0["reaperd_sweep_seconds_sum"]
                result["sweeps"] = sweeps
                result["sweep_us_per_connection"] = 1e6 * seconds / sweeps / total if sweeps else None
                result["sockets_read_last_sweep"] = metrics1["reaperd_sweep_connections"]
            return result
        finally:
            for holder in holders:
                self.release(holder)
            self.stop(target.proc)
            self.stop(sink.proc)

    def per_worker(self, target):
        """Connections each worker holds: worker k of n numbers its connections
        k, k + n, ... (README "Every core: workers")."""
        reaperctl = Path(self.reaperd).with_name("reaperctl")
        out = subprocess.run([str(reaperctl), "--socket", str(target.dir / "control.sock"), "connections", "--json"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        counts = [0] * self.args.workers
        for connection in json.loads(out):
            counts[int(connection["id"]) % self.args.workers] += 1
        return counts

    def spread(self, mode):
        """How the kernel alone spreads clients over --workers threads (bench/spread.c): a
        shared listener with EPOLLEXCLUSIVE against a SO_REUSEPORT listener each,
        under the connection-rate clients and under 4 000 idle connections."""
        result = {}
        for phase in ("churn", "idle"):
            port = free_port()
            argv = [str(self.args.loadgen.with_name("spread")), mode, str(port), str(self.args.workers)]
            server = self.spawn(argv, f"spread-{mode}", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            if not server.stdout.readline().startswith("listening"):
                raise RuntimeError(f"spread {mode} did not start; see {self.tmp}")
            holder = None
            try:
                if phase == "churn":
                    result["rate"] = self.loadgen_json(
                        ["rate", "127.0.0.1", str(port), "32", str(self.args.rate_seconds), "100"], 60)
                else:
                    holder = self.hold(port, 4000, 60)
            finally:
                server.stdin.close()
                counts = json.loads(server.stdout.readline())
                server.wait(10)
                self.procs.remove(server)
                if holder:
                    self.release(holder)
            per_thread = counts["accepted"] if phase == "churn" else counts["open"]
            result[phase] = {"per_thread": per_thread, "cpu_seconds": counts["cpu_seconds"],
                             "busiest_share": busiest(per_thread)}
        return result

    def sweep(self, keepalive):
        """Sweep cost in echo mode (one descriptor per connection) at each step.

        reaperd reads a socket's TCP_INFO only when a keepalive probe could be out
        (or bytes are moving), so with keepalive_idle = 60 s a sweep over idle
        connections reads nothing after their first sweep: the steady state. With
        keepalive_idle = 1 s every socket is due every sweep: the worst case.

        The sweep sleeps until a connection is due, so with keepalive_idle = 60 s
        there may be no sweep at all in the window: then the figure is zero work,
        as the window's sweep count says."""
        every_second = keepalive[0] <= 1
        target = self.proxy("reaperd", 0, mode="echo", keepalive=keepalive)
        holders = []
        result = {}
        try:
            total = 0
            for count, parts, src_first in self.args.sweep_steps:
                for part in range(parts):
                    holders.append(self.hold(target.port, count // parts, src_first + 10 * part))
                total += count
                wait_for(lambda: target.connections() >= total, 60, f"reaperd to hold {total} connections")
                # Every new connection had its first read.
                self.observe_sweeps(target, 2, required=every_second)
                result[total] = self.observe_sweeps(target, self.args.sweeps, required=every_second)
                result[total]["connections"] = total
                result[total]["us_per_connection"] = 1e6 * result[total]["sweep_seconds"] / total
            return result
        finally:
            for holder in holders:
                self.release(holder)
            self.stop(target.proc)

    def observe_sweeps(self, target, sweeps, required=True):
        """Watches `sweeps` sweeps on the metrics page: mean seconds per sweep, and
        the sockets each one read (reaperd_sweep_connections after each). Not
        `required`: a window of `sweeps` seconds, with however many sweeps ran."""
        first = last = target.metrics()
        reads = []
        deadline = time.monotonic() + (sweeps * 2 + 10 if required else sweeps)
        while len(reads) < sweeps and time.monotonic() < deadline:
            time.sleep(0.2)
            now = target.metrics()
            if now["reaperd_sweep_seconds_count"] != last["reaperd_sweep_seconds_count"]:
                # One new sweep per poll at 1 s sweeps; if two, both read alike.
                new = int(now["reaperd_sweep_seconds_count"] - last["reaperd_sweep_seconds_count"])
                reads += [now["reaperd_sweep_connections"]] * new
                last = now
        if not required and not reads:
            return {"sweeps": 0, "sweep_seconds": 0.0, "sockets_read": 0, "us_per_socket_read": None}
        if required and len(reads) < sweeps:
            raise RuntimeError(f"saw {len(reads)} of {sweeps} sweeps")
        count = last["reaperd_sweep_seconds_count"] - first["reaperd_sweep_seconds_count"]
        seconds = (last["reaperd_sweep_seconds_sum"] - first["reaperd_sweep_seconds_sum"]) / count
        mean_reads = sum(reads) / len(reads)
        return {"sweeps": count, "sweep_seconds": seconds, "sockets_read": mean_reads,
                "us_per_socket_read": 1e6 * seconds / mean_reads if mean_reads else None}

    def detection(self, kind):
        """10 of 20 idle clients vanish (nft drop); seconds until each upstream side closes."""
        upstream = UpstreamRecorder()
        target = self.proxy(kind, upstream.port, keepalive=DETECT_KA, log_level="notice")
        clients = []
        try:
            for i in range(20):
                vanish = i < 10
                sock = socket.socket()
                sock.bind(("127.0.0.77" if vanish else "127.0.0.78", 0))
                sock.connect(("127.0.0.1", target.port))
                sock.sendall(f"{i:02d}\n".encode())
                clients.append((i, vanish, sock))
            wait_for(lambda: len(upstream.opened) == 20, 15, "20 upstream connections")
            time.sleep(2.5)  # steady state: keepalive probes answered
            last_packet = {}
            for i, vanish, sock in clients:
                if vanish:
                    last_packet[i] = time.monotonic()
                    sock.send(b".")  # the client's last packet; keepalive idle starts here
            time.sleep(0.2)  # the byte is delivered and acknowledged: nothing in flight
            ports = ", ".join(str(sock.getsockname()[1]) for i, vanish, sock in clients if vanish)
            nft(f"add table inet {NFT_TABLE}")
            nft(f"add chain inet {NFT_TABLE} out {{ type filter hook output priority -10 ; policy accept ; }}")
            nft(f"add rule inet {NFT_TABLE} out ip saddr 127.0.0.77 tcp sport {{ {ports} }} drop")
            nft(f"add rule inet {NFT_TABLE} out ip daddr 127.0.0.77 tcp dport {{ {ports} }} drop")
            vanished = {i for i, vanish, _ in clients if vanish}
            try:
                wait_for(lambda: vanished <= set(upstream.closed), self.args.detect_wait, "vanished clients reaped")
            except RuntimeError:
                pass
            time.sleep(1.0)
            closed = dict(upstream.closed)
            seconds = sorted(closed[i] - last_packet[i] for i in vanished if i in closed)
            result = {"seconds": seconds, "missed": len(vanished - set(closed)),
                      "survivors_closed": len(set(closed) - vanished)}
            if kind == "reaperd":
                # Reaps are logged at notice: `... reason=keepalive ...`.
                reasons = re.findall(r"\breason=([\w-]+)", target.proc.stderr_path.read_text())
                result["reap_reasons"] = {r: reasons.count(r) for r in sorted(set(reasons))}
            return result
        finally:
            nft_delete()
            for _, vanish, sock in clients:
                if vanish:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            self.stop(target.proc)
            upstream.stop()

    # ------------------------------------------------------------ the run

    def run(self):
        sections = self.args.only
        # socket-proxyd is one thread whatever --workers says: it joins the
        # single-worker run only. The stream's count comes back before any FIN
        # (loadgen's sink), since socket-proxyd closes both sides at one.
        kinds = ["direct", "reaperd", "haproxy"]
        if self.args.workers == 1 and Path(SOCKET_PROXYD).exists():
            kinds.append("socket-proxyd")
        proxies = ["reaperd", "haproxy"]
        started = time.monotonic()
        for run in range(self.args.runs):
            record = {}
            self.raw["runs"].append(record)
            if "throughput" in sections:
                for kind in kinds:
                    log(f"run {run + 1}: throughput {kind}")
                    record.setdefault("throughput", {})[kind] = self.throughput(kind)
            if "rate" in sections:
                for kind in kinds:
                    log(f"run {run + 1}: connection rate {kind}")
                    record.setdefault("rate", {})[kind] = self.rate(kind)
            if "idle" in sections:
                for kind in proxies:
                    log(f"run {run + 1}: idle memory and CPU {kind}")
                    record.setdefault("idle", {})[kind] = self.idle(kind)
            if "spread" in sections and self.args.workers > 1:
                for mode in ("exclusive", "reuseport"):
                    log(f"run {run + 1}: spread over {self.args.workers} threads, {mode}")
                    record.setdefault("spread", {})[mode] = self.spread(mode)
            if "sweep" in sections:
                log(f"run {run + 1}: sweep cost, idle connections (keepalive_idle 60 s)")
                record["sweep"] = self.sweep((60, 10, 3))
                log(f"run {run + 1}: sweep cost, every socket due (keepalive_idle 1 s)")
                record["sweep_due"] = self.sweep((1, 1, 2))
                # The kernel's floor for the same work, without reaperd: C, one process
                # (two descriptors per connection, so 9 000 at most under 20 000).
                record["tcpinfo"] = {n: self.loadgen_json(["tcpinfo", str(n)], 120) for n in (5000, 9000)}
            if "detection" in sections:
                for kind in proxies:
                    log(f"run {run + 1}: detection {kind}")
                    record.setdefault("detection", {})[kind] = self.detection(kind)
            self.save()
        self.raw["elapsed_seconds"] = time.monotonic() - started
        self.save()

    def save(self):
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.raw["machine"] = machine()
        (self.args.out / "raw.json").write_text(json.dumps(self.raw, indent=1, default=str))


class UpstreamRecorder:
    """The detection upstream: learns each connection's client id from its first
    line and records when the proxy closes it (FIN or RST)."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.opened = {}
        self.closed = {}
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        buffers = {}
        while self.running:
            for key, _ in self.selector.select(0.05):
                if key.fileobj is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    buffers[conn] = b""
                    self.selector.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    buffers[conn] += data
                    if conn not in self.opened.values() and b"\n" in buffers[conn]:
                        self.opened[int(buffers[conn].split(b"\n")[0])] = conn
                    continue
                closed_at = time.monotonic()
                for ident, sock in self.opened.items():
                    if sock is conn:
                        self.closed[ident] = closed_at
                self.selector.unregister(conn)
                conn.close()

    def stop(self):
        self.running = False
        self.thread.join(5)
        for conn in list(self.opened.values()):
            conn.close()
        self.listener.close()


def thread_cpu(pid):
    """CPU seconds of each thread of `pid`, by thread id (schedstat, ns)."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            times[task.name] = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):
            pass
    return times


def nft(command):
    subprocess.run(["nft", *command.split()], check=True, capture_output=True, timeout=10)


def nft_delete():
    subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE], capture_output=True, timeout=10)


def haproxy_version():
    return " ".join(subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[:3])


def machine():
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release,
            "haproxy": haproxy_version(),
            "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
            "commit": subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loadgen", required=True, type=Path, help="bench/loadgen.c built; spread beside it")
    parser.add_argument("--reaperd", required=True)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gib", type=int, default=1, help="GiB per throughput stream")
    parser.add_argument("--rate-seconds", type=float, default=5)
    parser.add_argument("--idle-seconds", type=float, default=20)
    parser.add_argument("--sweeps", type=int, default=4, help="sweeps averaged per sweep point")
    parser.add_argument("--detect-wait", type=float, default=DETECT_DEADLINE + 6)
    parser.add_argument("--only", default="throughput,rate,idle,sweep,detection")
    parser.add_argument("--table-only", action="store_true", help="re-render OUT/raw.json")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU pinning (see Bench.__init__)")
    parser.add_argument("--workers", type=int, default=1,
                        help="reaperd workers = N against HAProxy nbthread N (unpinned when N > 1)")
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    # (connections, first source address 127.0.0.X); ten source addresses per holder
    args.idle_steps = [(1000, 10), (4000, 20), (4000, 30)]
    # (connections, holder processes, first source address): 19 000 needs two holders
    args.sweep_steps = [(5000, 1, 40), (14000, 2, 50)]

    if args.table_only:
        raw = json.loads((args.out / "raw.json").read_text())
        print(render(summarize(raw), raw))
        return
    bench = Bench(args)
    bench.raw["gib"] = args.gib
    bench.raw["rate_seconds"] = args.rate_seconds
    bench.raw["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    ok = False
    try:
        nft_delete()
        bench.run()
        ok = True
    finally:
        bench.stop_all()
        nft_delete()
        if ok:
            shutil.rmtree(bench.tmp, ignore_errors=True)
        else:
            log(f"failed; configs and stderr of every process kept in {bench.tmp}")
    table = render(summarize(bench.raw), bench.raw)
    (args.out / "results.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
