#!/usr/bin/env python3
"""Soak (issue 6, SPEC §8): one reaperd under mixed churn for SOAK_MINUTES
(default 2; `make soak SOAK_MINUTES=10` for the full run).

Against one running daemon, all at once:
  - long-lived clients (20) that stay connected throughout and round-trip a
    checksummed line every 2 s: none may ever be dropped;
  - short connections (connect, 16 B round trip, close), about 50 a second;
  - transfers (3 threads): 16 KiB .. 2 MiB echoed back and checksummed, ended by
    an ordinary close or a half-close (client FIN, then the echo's EOF);
  - silent vanishings: every 4 s a client's flow is dropped with nft (a pulled
    cable), idle (-> keepalive) or with an echo in flight (-> user-timeout);
    keepalive 1 s / 1 s / 2, so each is reaped within about 3.5 s;
  - reloads every 5 s, alternately SIGHUP and `reaperctl reload`, the file
    alternating between two versions (one adds a second listener).

The first 30 s (a quarter of the run, if shorter) are warm-up: the churn then
pauses, the vanished are reaped, and the baseline (descriptors, RSS) is taken
with only the long-lived clients connected. The same quiet state is reached at
the end and compared:
  - descriptors: within 5 % of the baseline; idle pipes kept by the pipe pool
    (at most 64 pipes = 128 descriptors) are a bounded cache, not a leak, so
    they are reported and checked against that bound separately;
  - RSS: within 5 % or 1 MiB of the baseline, whichever is larger (an idle
    daemon's RSS is ~13 MiB, and 5 % of that is below malloc's granularity);
  - every vanished client reaped: reaped.keepalive + reaped.user-timeout ==
    the number vanished, and no other reap reason;
  - no long-lived client dropped, no transfer or short connection failed;
  - counters add up: accepted == closed + reaped + open, nothing refused;
  - CPU back to idle (< 0.1 s over 2 s), and SIGTERM exits 0.

Prints one PASS/FAIL line per check, then `N passed, M failed`; exits non-zero
on any failure. Figures go to $SOAK_RESULTS (default /tmp/reaperd-soak-results.json).
Needs root (nft) and the binaries in $REAPERD_BIN_DIR (default .build/debug).
"""
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from conftest import Daemon, Vanish, listener_section, wait_for  # noqa: E402
from helpers_core import pattern, recv_hash, send_in_thread, sha256  # noqa: E402
from helpers_hostile import EchoServerProcess, cpu_over, fd_kinds  # noqa: E402
from helpers_reaper import drop_flow  # noqa: E402

MiB = 1024 * 1024
LONG_LIVED = 20
KEEPALIVE = {"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": 2}
# SPEC §5: idle + interval * count + poll_interval (= user_timeout + poll_interval here).
SPEC_DEADLINE = 1 + 1 * 2 + 0.5
# Each reap is timed by a monitor polling every 0.5 s, plus the slack test_reaper.py allows.
REAP_LATENCY_LIMIT = SPEC_DEADLINE + 1.5 + 0.5
REAP_DEADLINE = SPEC_DEADLINE + 3  # how long the quiet phases wait for the last vanished


def log(message):
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Soak:
    def __init__(self, minutes):
        self.total_seconds = minutes * 60
        self.warm_up_seconds = min(30.0, self.total_seconds / 4)
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.idle_workers = {}  # pausable worker name -> Event set while it is parked
        self.measuring = threading.Lock()
        self.lock = threading.Lock()
        self.counts = {"short": 0, "short_failed": 0, "transfers": 0, "transfer_failed": 0, "half_closes": 0,
                       "bytes_checked": 0, "long_round_trips": 0, "long_failed": 0, "reloads": 0,
                       "reloads_failed": 0, "vanished": 0, "vanished_idle": 0, "vanished_in_flight": 0}
        self.errors = []
        self.vanished = []  # (socket, port, connection id, monotonic time of the drop)
        self.reaped_after = {}  # connection id -> seconds from drop to gone
        self.checks = []
        self.figures = {}

    # ------------------------------------------------------------ set-up

    def config(self, variant):
        up = self.upstream.address
        sections = [listener_section("soak", "127.0.0.1:0", "relay", up,
                                     connect_timeout="5s" if variant == 0 else "6s")]
        if variant == 1:
            sections.append(listener_section("extra", "127.0.0.2:0", "echo"))
        return sections

    def start(self):
        self.upstream = EchoServerProcess()
        self.directory = tempfile.mkdtemp(prefix="reaperd-soak-")
        self.daemon = Daemon(self.directory, self.config(0),
                             daemon_keys={"log_level": "info", "poll_interval": "500ms"}, defaults=KEEPALIVE)
        self.daemon.start()
        self.address = self.daemon.address("soak")
        self.vanish = Vanish()
        self.long_lived = []
        for i in range(LONG_LIVED):
            s = socket.create_connection(self.address, timeout=10)
            self.long_lived.append(s)
        rows = {int(r["peer"].rsplit(":", 1)[1]): r["id"] for r in self.daemon.connections("soak")}
        self.long_ids = [rows[s.getsockname()[1]] for s in self.long_lived]
        log(f"reaperd pid {self.daemon.proc.pid} on {self.address}, upstream {self.upstream.address}, "
            f"{LONG_LIVED} long-lived clients, logs in {self.directory}")

    def error(self, what):
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {what}")

    def bump(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    # ------------------------------------------------------------ workers

    def worker(self, name, body, period, pausable=True):
        """Runs body() every `period` seconds until stop; a pausable worker parks
        while the churn is paused (the long-lived clients and the monitor never do)."""
        parked = threading.Event()
        if pausable:
            self.idle_workers[name] = parked
        rng = random.Random(name)

        def loop():
            while not self.stop.is_set():
                if pausable and self.paused.is_set():
                    parked.set()
                    time.sleep(0.05)
                    continue
                parked.clear()
                started = time.monotonic()
                try:
                    body(rng)
                except Exception:  # noqa: BLE001 - every surprise is a finding
                    self.error(f"{name}: {traceback.format_exc(limit=3)}")
                time.sleep(max(0.0, period - (time.monotonic() - started)))
            parked.set()

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        return thread

    def short_connection(self, rng):
        payload = b"%016x" % rng.getrandbits(64)
        try:
            with socket.create_connection(self.address, timeout=10) as s:
                s.sendall(payload)
                got, digest = recv_hash(s, 16, timeout=10)
            if (got, digest) == (16, sha256(payload)):
                self.bump("short")
                return
            self.error(f"short connection: got {got} bytes, wrong echo")
        except OSError as error:
            self.error(f"short connection: {error!r}")
        self.bump("short_failed")

    def transfer(self, rng):
        size = rng.randrange(16 * 1024, 2 * MiB)
        data = pattern(rng.getrandbits(32), size)
        half_close = rng.random() < 0.5
        try:
            with socket.create_connection(self.address, timeout=10) as s:
                thread, result = send_in_thread(s, data, timeout=60)
                got, digest = recv_hash(s, size, timeout=60)
                thread.join(60)
                ok = result["done"] and (got, digest) == (size, sha256(data))
                if ok and half_close:
                    s.shutdown(socket.SHUT_WR)
                    s.settimeout(10)
                    ok = s.recv(1) == b""  # the echo upstream's FIN, passed on
                    self.bump("half_closes")
            if ok:
                self.bump("transfers")
                self.bump("bytes_checked", size)
                return
            self.error(f"transfer of {size} B: sent={result['done']} got {got} bytes, hash ok={digest == sha256(data)}")
        except OSError as error:
            self.error(f"transfer of {size} B: {error!r}")
        self.bump("transfer_failed")

    def long_round_trips(self, rng):
        with self.measuring:  # never in the middle of a round trip when fds are counted
            for i, s in enumerate(self.long_lived):
                line = b"long-lived %02d %016x\n" % (i, rng.getrandbits(64))
                try:
                    s.sendall(line)
                    ok = recv_hash(s, len(line), timeout=10) == (len(line), sha256(line))
                except OSError as error:
                    ok = False
                    self.error(f"long-lived {i}: {error!r}")
                if ok:
                    self.bump("long_round_trips")
                else:
                    self.error(f"long-lived {i} (connection {self.long_ids[i]}) failed a round trip")
                    self.bump("long_failed")

    def vanish_one(self, rng):
        in_flight = rng.random() < 0.5
        s = socket.create_connection(self.address, timeout=10)
        port = s.getsockname()[1]
        line = b"about to vanish\n"
        s.sendall(line)
        assert recv_hash(s, len(line), timeout=10)[0] == len(line), "no echo before the vanish"
        rows = [r for r in self.daemon.connections("soak") if r["peer"].endswith(f":{port}")]
        assert len(rows) == 1, f"connection of port {port} not listed"
        if in_flight:
            # The echo of this is still on its way back when the cable is pulled.
            s.sendall(b"x" * (256 * 1024))
        else:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            time.sleep(0.25)  # past the delayed-ACK timer: nothing left in flight
        drop_flow(self.vanish, port, self.address[1])
        with self.lock:
            self.vanished.append((s, port, rows[0]["id"], time.monotonic()))
            self.counts["vanished"] += 1
            self.counts["vanished_in_flight" if in_flight else "vanished_idle"] += 1

    def reload(self, rng):
        n = self.counts["reloads"]
        self.daemon.write_config(self.config((n + 1) % 2))
        if n % 2 == 0:
            result = self.daemon.ctl("reload", timeout=20)
            ok = result.returncode == 0
            if not ok:
                self.error(f"reaperctl reload: {result.returncode} {result.stderr.strip()}")
        else:
            before = self.daemon.log().count("configuration reloaded")
            self.daemon.signal(signal.SIGHUP)
            try:
                wait_for(lambda: self.daemon.log().count("configuration reloaded") > before, timeout=10,
                         what="the SIGHUP reload to be logged")
                ok = True
            except AssertionError as error:
                ok = False
                self.error(str(error))
        self.bump("reloads")
        if not ok:
            self.bump("reloads_failed")

    def monitor(self, rng):
        """Notes when each vanished connection disappears from the table."""
        with self.lock:
            pending = [(cid, dropped) for _, _, cid, dropped in self.vanished if cid not in self.reaped_after]
        if not pending:
            return
        with self.measuring:  # its control connection is not counted with the daemon's descriptors
            present = {r["id"] for r in self.daemon.connections("soak")}
        now = time.monotonic()
        with self.lock:
            for cid, dropped in pending:
                if cid not in present:
                    self.reaped_after[cid] = round(now - dropped, 2)
        if self.daemon.proc.poll() is not None:
            self.error(f"reaperd exited with {self.daemon.proc.returncode}")
            self.stop.set()

    # ------------------------------------------------------------ phases

    def quiesce(self, what):
        """Pauses the churn, waits for the vanished to be reaped and the table to
        hold only the long-lived clients; returns the daemon's figures."""
        self.paused.set()
        wait_for(lambda: all(e.is_set() for e in self.idle_workers.values()), timeout=120,
                 what="the churn to pause")
        with self.lock:
            last_drop = max([v[3] for v in self.vanished], default=0)
        quiet = True
        try:
            wait_for(lambda: self.daemon.status()["connections"] == LONG_LIVED,
                     timeout=max(0.0, last_drop + REAP_DEADLINE - time.monotonic()) + 15,
                     what=f"only the long-lived clients to remain ({what})")
        except AssertionError as error:
            quiet = False
            self.error(str(error))
        self.monitor(None)
        time.sleep(1.0)
        with self.measuring:
            kinds = fd_kinds(self.daemon.proc.pid)
            rss = self.daemon.rss_kib()
        return {"fds": sum(kinds.values()), "fd_kinds": kinds, "rss_kib": rss, "quiet": quiet}

    def run(self):
        self.start()
        threads = [
            self.worker("long-lived", self.long_round_trips, 2.0, pausable=False),
            self.worker("short", self.short_connection, 0.02),
            self.worker("transfer-1", self.transfer, 0.1),
            self.worker("transfer-2", self.transfer, 0.1),
            self.worker("transfer-3", self.transfer, 0.1),
            self.worker("vanish", self.vanish_one, 4.0),
            self.worker("reload", self.reload, 5.0),
            self.worker("monitor", self.monitor, 0.5, pausable=False),
        ]
        started = time.monotonic()
        log(f"warm-up {self.warm_up_seconds:.0f}s")
        self.stop.wait(self.warm_up_seconds)
        self.baseline = self.quiesce("baseline")
        self.cpu_at_baseline = self.daemon.cpu_seconds()
        log(f"baseline: {self.baseline}; churn for {self.total_seconds - self.warm_up_seconds:.0f}s")
        self.paused.clear()
        next_report = time.monotonic() + 60
        end = started + self.total_seconds
        while time.monotonic() < end and not self.stop.is_set():
            time.sleep(1)
            if time.monotonic() >= next_report:
                next_report += 60
                with self.lock:
                    counts = dict(self.counts)
                log(f"{counts}; fds {self.daemon.fd_count()}, RSS {self.daemon.rss_kib()} KiB, "
                    f"connections {self.daemon.status()['connections']}, errors {len(self.errors)}")
        self.final = self.quiesce("end")
        self.churn_cpu = self.daemon.cpu_seconds() - self.cpu_at_baseline
        self.judge()
        self.stop.set()
        for t in threads:
            t.join(30)
        self.shutdown()

    # ------------------------------------------------------------ verdict

    def check(self, name, ok, detail):
        self.checks.append((name, bool(ok), detail))
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)

    def judge(self):
        d = self.daemon
        c = self.counts
        alive = d.proc.poll() is None
        self.check("daemon alive", alive, f"pid {d.proc.pid}, exit status {d.proc.returncode}")
        if not alive:
            return
        entry = d.listener("soak")
        reaped = entry["reaped"]
        present = {r["id"] for r in d.connections("soak")}

        dropped = [cid for cid in self.long_ids if cid not in present]
        self.check("no long-lived client dropped", c["long_failed"] == 0 and not dropped,
                   f"{LONG_LIVED} clients, {c['long_round_trips']} round trips, {c['long_failed']} failed, "
                   f"missing from the table: {dropped}")
        self.check("short connections all answered", c["short_failed"] == 0 and c["short"] > 0,
                   f"{c['short']} ok, {c['short_failed']} failed")
        self.check("transfers all intact", c["transfer_failed"] == 0 and c["transfers"] > 0,
                   f"{c['transfers']} ok ({c['half_closes']} half-closed, {c['bytes_checked'] / MiB:.0f} MiB "
                   f"checksummed each way), {c['transfer_failed']} failed")
        self.check("reloads all applied", c["reloads_failed"] == 0 and c["reloads"] > 0,
                   f"{c['reloads']} reloads, {c['reloads_failed']} failed")

        vanished_ids = [v[2] for v in self.vanished]
        still_there = [cid for cid in vanished_ids if cid in present]
        by_vanish = reaped["keepalive"] + reaped["user-timeout"]
        others = {k: v for k, v in reaped.items() if k not in ("keepalive", "user-timeout") and v}
        latencies = [self.reaped_after[cid] for cid in vanished_ids if cid in self.reaped_after]
        late = [s for s in latencies if s > REAP_LATENCY_LIMIT]
        self.check("every vanished client reaped", by_vanish == c["vanished"] and not still_there and not others
                   and not late and len(latencies) == c["vanished"],
                   f"{c['vanished']} vanished ({c['vanished_idle']} idle, {c['vanished_in_flight']} with data in "
                   f"flight); reaped keepalive {reaped['keepalive']} + user-timeout {reaped['user-timeout']}; "
                   f"other reasons {others}; still listed {still_there}; "
                   f"seconds to reap max {max(latencies, default=None)}, "
                   f"median {sorted(latencies)[len(latencies) // 2] if latencies else None}, "
                   f"{len(late)} later than {REAP_LATENCY_LIMIT}s")

        total_reaped = sum(reaped.values())
        self.check("counters add up", entry["accepted"] == entry["closed"] + total_reaped + entry["open"]
                   and entry["refused"] == {"limit": 0, "upstream": 0, "proxy_header": 0},
                   f"accepted {entry['accepted']} = closed {entry['closed']} + reaped {total_reaped} + "
                   f"open {entry['open']}; refused {entry['refused']}")

        base, final = self.baseline, self.final
        pool_cap = 2 * 64
        base_fixed = base["fds"] - base["fd_kinds"]["pipe"]
        final_fixed = final["fds"] - final["fd_kinds"]["pipe"]
        self.check("descriptors back to the baseline",
                   abs(final_fixed - base_fixed) <= 0.05 * base_fixed and final["fd_kinds"]["pipe"] <= pool_cap
                   and abs(final["fds"] - base["fds"]) <= max(0.05 * base["fds"], final["fd_kinds"]["pipe"]
                                                              - base["fd_kinds"]["pipe"]),
                   f"baseline {base['fds']} {base['fd_kinds']}, end {final['fds']} {final['fd_kinds']} "
                   f"(pool pipes <= {pool_cap} are a bounded cache; everything else within 5 %)")
        allowed = max(0.05 * base["rss_kib"], 1024)
        self.check("RSS back to the baseline", final["rss_kib"] - base["rss_kib"] <= allowed,
                   f"baseline {base['rss_kib']} KiB, end {final['rss_kib']} KiB, "
                   f"growth {final['rss_kib'] - base['rss_kib']} KiB, allowed {allowed:.0f} KiB (5 % or 1 MiB)")
        idle = cpu_over(d, 2.0)
        self.check("CPU back to idle", idle < 0.1,
                   f"{idle:.3f}s over 2 s; {self.churn_cpu:.1f}s CPU during the churn phase")
        self.check("no unexpected errors", not self.errors, f"{len(self.errors)} errors: {self.errors[:5]}")
        self.figures = {"counts": dict(c), "baseline": base, "end": final, "reaped": reaped,
                        "reap_seconds_max": max(latencies, default=None), "idle_cpu_2s": round(idle, 3),
                        "churn_cpu_s": round(self.churn_cpu, 1), "errors": self.errors,
                        "minutes": self.total_seconds / 60, "warm_up_s": self.warm_up_seconds}

    def shutdown(self):
        d = self.daemon
        for s in self.long_lived + [v[0] for v in self.vanished]:
            try:
                s.close()
            except OSError:
                pass
        self.vanish.close()
        if d.proc.poll() is None:
            d.signal(signal.SIGTERM)
            try:
                d.proc.wait(30)
            except Exception:  # noqa: BLE001
                d.proc.kill()
                d.proc.wait(5)
        self.check("SIGTERM exits 0", d.proc.returncode == 0, f"exit status {d.proc.returncode}")
        self.upstream.close()


def main():
    minutes = float(os.environ.get("SOAK_MINUTES", "2"))
    if os.geteuid() != 0:
        print("soak: needs root (nft makes the vanishing clients)", file=sys.stderr)
        return 2
    soak = Soak(minutes)
    try:
        soak.run()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        soak.check("soak ran to the end", False, "see the traceback above")
        try:
            soak.vanish.close()
            soak.daemon.proc.kill()
            soak.upstream.close()
        except Exception:  # noqa: BLE001
            pass
    results = os.environ.get("SOAK_RESULTS", "/tmp/reaperd-soak-results.json")
    with open(results, "w") as f:
        json.dump({"checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in soak.checks],
                   "figures": soak.figures}, f, indent=2, default=str)
    passed = sum(1 for _, ok, _ in soak.checks if ok)
    failed = len(soak.checks) - passed
    directory = getattr(soak, "directory", None)
    if directory and failed == 0:
        shutil.rmtree(directory, ignore_errors=True)
    elif directory:
        print(f"reaperd's configuration and log kept in {directory}", flush=True)
    print(f"figures in {results}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
