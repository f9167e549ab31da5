"""Harness for reaperd's integration tests: the real binaries, real sockets.

Every test starts its own reaperd on ephemeral loopback ports with its own
control socket, so tests are independent. Every wait is bounded in time.
"""
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("REAPERD_BIN_DIR", ROOT / ".build" / "debug"))
REAPERD = BIN / "reaperd"
REAPERCTL = BIN / "reaperctl"


def free_port():
    """A port that was free a moment ago (SO_REUSEADDR makes reuse safe)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def listener_section(name, listen, mode="relay", upstream=None, **keys):
    lines = [f"[listener:{name}]"]
    if listen:
        lines.append(f"listen = {listen}")
    lines.append(f"mode = {mode}")
    if upstream:
        lines.append(f"upstream = {upstream}")
    for key, value in keys.items():
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


class Daemon:
    """One reaperd process with its own config file and control socket."""

    def __init__(self, tmp_path, listeners, daemon_keys=None, defaults=None, env=None, extra_args=(), wrapper=()):
        self.dir = Path(tmp_path)
        self.config = self.dir / "reaperd.conf"
        self.control = str(self.dir / "control.sock")
        self.stderr_path = self.dir / "reaperd.stderr"
        self.daemon_keys = {"control_socket": self.control, "log_level": "debug", "log_target": "console"}
        self.daemon_keys.update(daemon_keys or {})
        self.defaults = defaults or {}
        self.env = env
        self.extra_args = list(extra_args)
        # A command reaperd runs under, e.g. unshare with its own resolv.conf (test_resolve).
        self.wrapper = list(wrapper)
        self.write_config(listeners)
        self.proc = None

    def render(self, listeners):
        text = "[daemon]\n" + "".join(f"{k} = {v}\n" for k, v in self.daemon_keys.items())
        if self.defaults:
            text += "\n[defaults]\n" + "".join(f"{k} = {v}\n" for k, v in self.defaults.items())
        return text + "\n" + "\n".join(listeners)

    def write_config(self, listeners):
        text = listeners if isinstance(listeners, str) else self.render(listeners)
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config)

    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        if self.env:
            env.update(self.env)
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrapper, str(REAPERD), "--config", str(self.config), *self.extra_args],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr, env=env,
            pass_fds=getattr(self, "pass_fds", ()),
        )
        self.stderr.close()  # the child holds its own copy
        if wait:
            wait_for(lambda: self.proc.poll() is not None or self.ctl("status").returncode == 0,
                     timeout=15, what="reaperd to answer on its control socket")
            assert self.proc.poll() is None, f"reaperd exited {self.proc.returncode}: {self.log()}"
        return self

    def ctl(self, *args, timeout=30):
        return subprocess.run([str(REAPERCTL), "--socket", self.control, *args],
                              capture_output=True, text=True, timeout=timeout)

    def status(self):
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def connections(self, listener=None):
        args = ["connections", "--json"] + (["--listener", listener] if listener else [])
        result = self.ctl(*args)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def listener(self, name):
        return next(l for l in self.status()["listeners"] if l["name"] == name)

    def address(self, name):
        """The first bound address of a listener, as (host, port)."""
        text = self.listener(name)["addresses"][0]["address"]
        host, port = text.rsplit(":", 1)
        return host.strip("[]"), int(port)

    def log(self):
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def signal(self, number):
        self.proc.send_signal(number)

    def stop(self, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("reaperd did not stop within %ss of SIGTERM" % timeout)
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks


@pytest.fixture
def daemon_factory(tmp_path):
    started = []

    def make(listeners, **kwargs):
        index = len(started)
        directory = tmp_path / f"d{index}"
        directory.mkdir()
        d = Daemon(directory, listeners, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(5)


# ---------------------------------------------------------------- upstreams

class Upstream:
    """A threaded TCP server on loopback: each accepted connection runs `handler`."""

    def __init__(self, handler, port=0, host="127.0.0.1"):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        self.port = sock.getsockname()[1]
        self._serve(sock, handler)

    def _serve(self, sock, handler):
        """Accepts on the listening `sock` in a thread, one thread per connection."""
        self.handler = handler
        self.sock = sock
        self.accepted = []
        self.closed_count = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            with self.lock:
                self.closed_count += 1
            try:
                conn.close()
            except OSError:
                pass

    def close(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def echo_handler(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        conn.sendall(data)


@pytest.fixture
def echo_upstream():
    up = Upstream(echo_handler)
    yield up
    up.close()


def connect(address, timeout=5.0):
    host, port = address
    s = socket.create_connection((host, port), timeout=timeout)
    return s


def recv_exactly(s, count, timeout=10.0):
    s.settimeout(timeout)
    chunks = []
    got = 0
    while got < count:
        data = s.recv(min(65536, count - got))
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def round_trip(s, payload=b"ping\n", timeout=5.0):
    s.sendall(payload)
    return recv_exactly(s, len(payload), timeout) == payload


# ---------------------------------------------------------------- vanishing peers

class Vanish:
    """Makes loopback clients vanish: an nft table that drops every packet to or
    from the given client ports, as a pulled cable would. Removed on exit."""

    def __init__(self):
        self.table = f"reaperd_test_{os.getpid()}_{random.randrange(1 << 30)}"
        self.ports = []
        self._nft(f"add table inet {self.table}")
        self._nft(f"add chain inet {self.table} out {{ type filter hook output priority -10 ; policy accept ; }}")

    @staticmethod
    def _nft(command):
        subprocess.run(["nft", *command.split()], check=True, capture_output=True, timeout=10)

    def drop(self, port):
        self.ports.append(port)
        self._nft(f"add rule inet {self.table} out tcp sport {port} drop")
        self._nft(f"add rule inet {self.table} out tcp dport {port} drop")

    def close(self):
        subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True, timeout=10)


@pytest.fixture
def vanish():
    v = Vanish()
    yield v
    v.close()
