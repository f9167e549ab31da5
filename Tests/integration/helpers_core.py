"""Helpers shared by the core integration tests (relay, lifecycle, CLI, socket options).

Everything here is bounded in time; nothing sleeps longer than it must.
"""
import ctypes
import errno
import hashlib
import os
import random
import resource
import socket
import struct
import subprocess
import threading
import time

from conftest import REAPERD, Upstream, wait_for

MiB = 1024 * 1024


# ---------------------------------------------------------------- process limits

def raise_nofile(wanted):
    """Raises the soft RLIMIT_NOFILE of this process towards `wanted` (at most the
    hard limit) and returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------- bytes

def pattern(seed, size):
    """`size` deterministic pseudo-random bytes (incompressible, never repeating
    at a short period, so a lost or duplicated chunk changes the hash)."""
    return random.Random(seed).randbytes(size)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def recv_hash(sock, count, timeout=30.0):
    """Reads exactly `count` bytes (or until EOF) within `timeout` seconds in total;
    returns (bytes received, sha256 hex of them)."""
    digest = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + timeout
    while got < count:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(min(1 << 18, count - got))
        except socket.timeout:
            break
        if not data:
            break
        digest.update(data)
        got += len(data)
    return got, digest.hexdigest()


def send_in_thread(sock, data, timeout=30.0):
    """Starts sendall(data) in a thread; returns (thread, result dict with 'error')."""
    result = {"error": None, "done": False}

    def run():
        try:
            sock.settimeout(timeout)
            sock.sendall(data)
            result["done"] = True
        except OSError as error:  # includes socket.timeout
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def read_until_closed(sock, timeout=5.0):
    """Reads until EOF or reset. Returns (how, data, seconds) where how is 'eof',
    'reset' or 'timeout'."""
    started = time.monotonic()
    chunks = []
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", b"".join(chunks), time.monotonic() - started
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return "timeout", b"".join(chunks), time.monotonic() - started
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return "reset", b"".join(chunks), time.monotonic() - started
        if not data:
            return "eof", b"".join(chunks), time.monotonic() - started
        chunks.append(data)


def closed_by_peer(sock, timeout=5.0):
    """True when the peer closed (EOF or RST) within `timeout` with no data first."""
    how, data, _ = read_until_closed(sock, timeout)
    return how in ("eof", "reset") and data == b""


def connect_refused(address, timeout=2.0):
    """True when nothing listens at `address` any more (RST to the SYN)."""
    try:
        s = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # raced with the listener closing: not conclusive, ask again
    s.close()
    return False


def close_all(sockets):
    for s in sockets:
        try:
            s.close()
        except OSError:
            pass


# ---------------------------------------------------------------- daemon status

def counters(d, name):
    """The status entry of listener `name`."""
    return d.listener(name)


def wait_counter(d, name, path, expected, timeout=5.0):
    """Waits until status listener `name` has `path` (e.g. ("refused", "upstream"))
    equal to `expected`; returns the listener entry."""
    def check():
        entry = d.listener(name)
        value = entry
        for key in path:
            value = value[key]
        return entry if value == expected else None
    return wait_for(check, timeout=timeout, what=f"{name} {'.'.join(path)} == {expected}")


def wait_open(d, name, expected, timeout=5.0):
    return wait_counter(d, name, ("open",), expected, timeout)


def run_reaperd(*args, timeout=15):
    return subprocess.run([str(REAPERD), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# ---------------------------------------------------------------- unix upstream

class UnixUpstream(Upstream):
    """The same threaded server on a Unix stream socket."""

    def __init__(self, path, handler):
        self.path = str(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        sock.listen(128)
        self._serve(sock, handler)

    @property
    def address(self):
        return f"unix:{self.path}"


# ---------------------------------------------------------------- another process's sockets

SYS_pidfd_open = 434
SYS_pidfd_getfd = 438
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args):
    result = _libc.syscall(*[ctypes.c_long(a) for a in args])
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


class ProcessSockets:
    """Duplicates every socket descriptor of process `pid` into this process
    (pidfd_open + pidfd_getfd), so getsockopt reads the very sockets the daemon
    holds. Use as a context manager: the duplicates are closed on exit."""

    def __init__(self, pid):
        self.pid = pid
        self.sockets = []  # (fd number in pid, inode, socket.socket)

    def __enter__(self):
        if self.sockets:
            return self  # already open
        pidfd = _syscall(SYS_pidfd_open, self.pid, 0)
        try:
            for name in os.listdir(f"/proc/{self.pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{self.pid}/fd/{name}")
                except OSError:
                    continue  # closed meanwhile
                if not link.startswith("socket:["):
                    continue
                try:
                    dup = _syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
                except OSError as error:
                    if error.errno == errno.EBADF:
                        continue
                    raise
                self.sockets.append((int(name), link[8:-1], socket.socket(fileno=dup)))
        finally:
            os.close(pidfd)
        return self

    def __exit__(self, *exc):
        for _, _, s in self.sockets:
            s.close()
        self.sockets = []

    def tcp(self):
        return [(fd, inode, s) for fd, inode, s in self.sockets
                if s.family in (socket.AF_INET, socket.AF_INET6) and s.type == socket.SOCK_STREAM]

    def find(self, local_port=None, peer_port=None):
        """The one connected TCP socket with that local and/or peer port."""
        found = []
        for fd, inode, s in self.tcp():
            try:
                peer = s.getpeername()
            except OSError:
                continue  # listening or unconnected
            local = s.getsockname()
            if peer_port is not None and peer[1] != peer_port:
                continue
            if local_port is not None and local[1] != local_port:
                continue
            found.append((fd, inode, s))
        assert len(found) == 1, (
            f"expected one socket of pid {self.pid} with local port {local_port} and peer port {peer_port}, "
            f"found {len(found)}: {[(fd, s.getsockname(), self._peer(s)) for fd, _, s in self.tcp()]}")
        return found[0]

    def listening(self, port):
        """The listening TCP socket bound to local `port`."""
        found = [(fd, inode, s) for fd, inode, s in self.tcp()
                 if s.getsockname()[1] == port and s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)]
        # Each worker holds its own descriptor of the one socket: one inode.
        found = list({inode: (fd, inode, s) for fd, inode, s in found}.values())
        assert len(found) == 1, f"expected one listening socket on port {port} in pid {self.pid}, found {len(found)}"
        return found[0]

    @staticmethod
    def _peer(s):
        try:
            return s.getpeername()
        except OSError:
            return None


TCP_USER_TIMEOUT = getattr(socket, "TCP_USER_TIMEOUT", 18)


def keepalive_options(s):
    """The keepalive options of socket `s` as the kernel holds them."""
    return {
        "keepalive": s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "interval": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "count": s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        "user_timeout": s.getsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT),
    }


# ---------------------------------------------------------------- kernel socket table

def tcp_states_on_port(port):
    """States (hex strings as in /proc/net/tcp) of every TCP socket whose local
    port is `port`, IPv4 and IPv6."""
    states = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local = fields[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                states.append(fields[3])
    return states


TCP_FIN_WAIT2 = "05"
TCP_TIME_WAIT = "06"
TCP_LISTEN = "0A"


def pack_linger_rst():
    """SO_LINGER value that makes close() send RST."""
    return struct.pack("ii", 1, 0)
