"""Helpers for test_hostile.py and Tests/soak/soak.py (issue 6, SPEC §8): a
single-threaded echo upstream and a connect-storm client that run as their own
processes (so 20 000 connections do not fight this interpreter's GIL), a flood
of simultaneous connects watched by one epoll thread, descriptor counts by kind,
CPU over an interval, and running a snippet as another user.

Run as a script it is the worker those helpers start:
    python3 helpers_hostile.py echo-server
    python3 helpers_hostile.py storm HOST PORT COUNT SECONDS
"""
import json
import os
import select
import selectors
import socket
import subprocess
import sys
import threading
import time

# ---------------------------------------------------------------- measuring the daemon

def cpu_over(d, seconds):
    """CPU seconds (user + system, from /proc) the daemon burns during the next
    `seconds` of wall time."""
    before = d.cpu_seconds()
    time.sleep(seconds)
    return d.cpu_seconds() - before


def fd_kinds(pid):
    """The descriptors of process `pid` by kind: socket, pipe, anon (epoll,
    timerfd, signalfd), other. Descriptors closed while listing are skipped."""
    kinds = {"socket": 0, "pipe": 0, "anon": 0, "other": 0}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if link.startswith("socket:"):
            kinds["socket"] += 1
        elif link.startswith("pipe:"):
            kinds["pipe"] += 1
        elif link.startswith("anon_inode:"):
            kinds["anon"] += 1
        else:
            kinds["other"] += 1
    return kinds


def asan_build(binary):
    """True when `binary` carries AddressSanitizer (make test-sanitize). Its
    allocator keeps freed memory in a quarantine (256 MiB by default) to catch
    use-after-free, so RSS after churn says nothing about leaks there."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def log_lines(d, text):
    return [line for line in d.log().splitlines() if text in line]


RESULTS = os.environ.get("REAPERD_HOSTILE_RESULTS", "/tmp/reaperd-hostile-results.json")


def record(scenario, **figures):
    """Prints a measured figure (visible with -s) and merges it into the JSON
    results file, one object per scenario."""
    print(f"\n[hostile] {scenario}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    try:
        with open(RESULTS) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    results[scenario] = figures
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(tmp, RESULTS)


# ---------------------------------------------------------------- worker processes

class Worker:
    """This file run as a script in a child process; stdout is one JSON line."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def result(self, timeout):
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, (
            f"worker exited {self.proc.returncode}: {err.decode(errors='replace')[-2000:]}")
        return json.loads(out.decode().strip().splitlines()[-1])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class EchoServerProcess:
    """An echo upstream in its own process, single-threaded on selectors: cheap
    per connection, so it keeps up with a connect storm."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "echo-server"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode().strip()
        assert line.isdigit(), f"echo server did not start: {line!r}"
        self.port = int(line)

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()


def storm(address, total, processes, seconds):
    """`total` short connections (connect, 16 B round trip, close) spread over
    `processes` worker processes, each bounded to `seconds`. Returns the summed
    result: ok, failed, first errors, wall seconds."""
    host, port = address
    share = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
    started = time.monotonic()
    workers = [Worker("storm", host, port, n, seconds) for n in share]
    try:
        results = [w.result(timeout=seconds + 30) for w in workers]
    finally:
        for w in workers:
            w.kill()
    return {
        "ok": sum(r["ok"] for r in results),
        "failed": sum(r["failed"] for r in results),
        "errors": [e for r in results for e in r["errors"]][:10],
        "seconds": round(time.monotonic() - started, 2),
    }


# ---------------------------------------------------------------- a flood of simultaneous connects

class Flood:
    """`count` clients connect at once from `threads` threads. One epoll thread
    notes, for each, when it first turns readable (EOF or RST: a refusal), so the
    time from connect to close is measured per client, not after the fact."""

    def __init__(self, address, count, threads=8):
        self.address = address
        self.count = count
        self.sockets = [None] * count
        self.connected_at = [None] * count
        self.closed_at = {}
        self.errors = []
        self.epoll = select.epoll()
        self.by_fd = {}
        self.lock = threading.Lock()
        self.watching = True
        self.threads = threads

    def run(self, timeout=30):
        watcher = threading.Thread(target=self._watch, daemon=True)
        watcher.start()
        barrier = threading.Barrier(self.threads)

        def connect_share(first):
            try:
                barrier.wait(10)
            except threading.BrokenBarrierError:
                return
            for i in range(first, self.count, self.threads):
                try:
                    s = socket.create_connection(self.address, timeout=10)
                except OSError as error:
                    with self.lock:
                        self.errors.append(f"client {i}: {error!r}")
                    continue
                self.connected_at[i] = time.monotonic()
                self.sockets[i] = s
                with self.lock:
                    self.by_fd[s.fileno()] = i
                self.epoll.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)

        workers = [threading.Thread(target=connect_share, args=(t,), daemon=True) for t in range(self.threads)]
        started = time.monotonic()
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout)
        assert not any(w.is_alive() for w in workers), "flood connects hung"
        return time.monotonic() - started

    def _watch(self):
        while self.watching:
            for fd, _ in self.epoll.poll(0.05):
                now = time.monotonic()
                with self.lock:
                    i = self.by_fd.get(fd)
                if i is None:
                    continue
                try:
                    self.epoll.unregister(fd)
                except OSError:
                    pass
                self.closed_at[i] = now

    def settle(self, quiet=1.5, timeout=15):
        """Waits until no client has been closed for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = len(self.closed_at)
            if n != seen:
                seen, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
            time.sleep(0.05)

    def refused(self):
        """Indices of clients the daemon closed, with seconds from connect to close."""
        return {i: self.closed_at[i] - self.connected_at[i] for i in list(self.closed_at)}

    def served(self):
        closed = set(self.closed_at)
        return [i for i in range(self.count) if self.sockets[i] is not None and i not in closed]

    def close(self):
        self.watching = False
        for s in self.sockets:
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self.epoll.close()


def peer_closed(s):
    """True when the peer closed `s` (EOF or RST) and sent nothing first."""
    s.settimeout(1)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, ConnectionAbortedError):
        return True
    except socket.timeout:
        return False


# ---------------------------------------------------------------- another user

CONNECT_AS_OTHER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print("EACCES"); sys.exit(0)
except OSError as e:
    print("ERROR " + repr(e)); sys.exit(0)
s.sendall(b"status\n")
print("ANSWER " + s.recv(64).decode(errors="replace").splitlines()[0])
"""


def connect_as(path, user, group, timeout=15):
    """Connects to the Unix socket `path` as `user`:`group` with no supplementary
    groups and sends `status`; returns "EACCES", "ANSWER <first line>" or "ERROR ..."."""
    result = subprocess.run(
        ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups", "--", "/usr/bin/python3", "-c",
         CONNECT_AS_OTHER, path],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# ---------------------------------------------------------------- workers (script mode)

def _echo_server():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    pending = {}  # socket -> bytes waiting to be written back
    print(listener.getsockname()[1], flush=True)

    def drop(conn):
        sel.unregister(conn)
        pending.pop(conn, None)
        conn.close()

    while True:
        for key, events in sel.select():
            if key.data is None:
                for _ in range(64):
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    pending[conn] = b""
                    sel.register(conn, selectors.EVENT_READ, "conn")
                continue
            conn = key.fileobj
            if events & selectors.EVENT_READ and not pending[conn]:
                try:
                    data = conn.recv(65536)
                except (ConnectionResetError, OSError):
                    drop(conn)
                    continue
                if not data:
                    try:
                        conn.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    drop(conn)
                    continue
                pending[conn] = data
            if pending[conn]:
                try:
                    sent = conn.send(pending[conn])
                except BlockingIOError:
                    sent = 0
                except OSError:
                    drop(conn)
                    continue
                pending[conn] = pending[conn][sent:]
                sel.modify(conn, selectors.EVENT_WRITE if pending[conn] else selectors.EVENT_READ, "conn")


def _storm(host, port, count, seconds):
    count, seconds, port = int(count), float(seconds), int(port)
    deadline = time.monotonic() + seconds
    ok = failed = 0
    errors = []
    for i in range(count):
        if time.monotonic() > deadline:
            failed += count - i
            errors.append(f"out of time after {i} connections")
            break
        payload = b"%07d-%08d" % (os.getpid() % 10_000_000, i)  # 16 bytes
        try:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(payload)
                got = b""
                while len(got) < 16:
                    data = s.recv(16 - len(got))
                    if not data:
                        break
                    got += data
            if got == payload:
                ok += 1
            else:
                failed += 1
                if len(errors) < 5:
                    errors.append(f"connection {i}: got {got!r}")
        except OSError as error:
            failed += 1
            if len(errors) < 5:
                errors.append(f"connection {i}: {error!r}")
    print(json.dumps({"ok": ok, "failed": failed, "errors": errors}))


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "echo-server":
        _echo_server()
    elif command == "storm":
        _storm(*sys.argv[2:6])
    else:
        sys.exit(f"unknown command {command}")
