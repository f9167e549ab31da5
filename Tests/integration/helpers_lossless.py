"""Helpers for the lossless-relay tests (test_lossless.py): paced readers,
upstreams with small buffers, and a look at the daemon's own sockets.

Every loop here is bounded by a deadline.
"""
import fcntl
import hashlib
import socket
import struct
import time

from conftest import Upstream
from helpers_core import ProcessSockets, UnixUpstream

SIOCINQ = 0x541B  # FIONREAD: bytes waiting in a socket's receive queue
TCP_CLOSE = 7  # tcpi_state


class SmallBufferUpstream(Upstream):
    """The harness's threaded TCP upstream, with SO_RCVBUF / SO_SNDBUF set on
    the listening socket before listen(), so accepted sockets inherit them (and
    the window scale matches)."""

    def __init__(self, handler, rcvbuf=None, sndbuf=None):
        sock = socket.socket(socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._serve(sock, handler)


def make_upstream(kind, handler, tmp_path, rcvbuf=None):
    """A TCP or Unix-socket upstream running `handler` per connection."""
    if kind == "tcp":
        return SmallBufferUpstream(handler, rcvbuf=rcvbuf)
    return UnixUpstream(tmp_path / "up.sock", handler)


def connect_small(address, rcvbuf=64 * 1024, timeout=5.0):
    """A client whose SO_RCVBUF is set before connect(), so the path toward it
    holds little and a slow reader really is slow."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(address)
    return s


def read_request(conn, timeout=10.0):
    """Reads until the peer's FIN; returns the bytes."""
    conn.settimeout(timeout)
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk


class PacedReader:
    """Reads a socket at about `rate` bytes/s in `chunk`-byte recvs until EOF,
    reset or `timeout`, hashing what arrives. `stop_when()` (checked every
    `check_every` seconds) ends the read early with how == 'stopped'; calling
    run() again continues where it stopped."""

    def __init__(self, sock, rate, chunk=16 * 1024):
        self.sock = sock
        self.rate = rate
        self.chunk = chunk
        self.digest = hashlib.sha256()
        self.got = 0
        self.how = None
        self.last_byte_at = None

    def run(self, timeout, rate=None, stop_when=None, check_every=0.1):
        rate = rate or self.rate
        started = time.monotonic()
        base = self.got
        deadline = started + timeout
        next_check = started
        while True:
            now = time.monotonic()
            if now >= deadline:
                self.how = "timeout"
                return self.how
            if stop_when is not None and now >= next_check:
                next_check = now + check_every
                if stop_when():
                    self.how = "stopped"
                    return self.how
            due = started + (self.got - base) / rate
            if due > now:
                time.sleep(min(due - now, deadline - now, check_every))
                continue
            self.sock.settimeout(max(0.01, min(check_every, deadline - now)))
            try:
                data = self.sock.recv(self.chunk)
            except socket.timeout:
                continue
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                self.how = "reset"
                return self.how
            if not data:
                self.how = "eof"
                return self.how
            self.digest.update(data)
            self.got += len(data)
            self.last_byte_at = time.monotonic()

    @property
    def hexdigest(self):
        return self.digest.hexdigest()


def paced_upstream_read(conn, rate, timeout, chunk=16 * 1024):
    """An upstream reading its connection slowly until EOF: (how, bytes, sha256)."""
    reader = PacedReader(conn, rate, chunk)
    how = reader.run(timeout)
    return how, reader.got, reader.hexdigest


# ---------------------------------------------------------------- the daemon's sockets

def socket_inode(pid, *, peer_port=None, peer_path=None):
    """The inode of the one connected socket of `pid` whose peer is that TCP
    port or that Unix path (asked while it is still connected: a closed socket
    has no peer name)."""
    with ProcessSockets(pid) as ps:
        if peer_port is not None:
            return ps.find(peer_port=peer_port)[1]
        found = []
        for _, inode, s in ps.sockets:
            if s.family != socket.AF_UNIX:
                continue
            try:
                if s.getpeername() == peer_path:
                    found.append(inode)
            except OSError:
                pass
        assert len(found) == 1, f"expected one Unix socket of pid {pid} connected to {peer_path}, found {found}"
        return found[0]


def socket_queue(pid, inode):
    """(tcpi_state or None for a Unix socket, bytes in its receive queue) of the
    daemon's socket `inode`, or None once the daemon has closed it."""
    with ProcessSockets(pid) as ps:
        for _, ino, s in ps.sockets:
            if ino != inode:
                continue
            state = None
            if s.family in (socket.AF_INET, socket.AF_INET6):
                state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            inq = struct.unpack("i", fcntl.ioctl(s.fileno(), SIOCINQ, b"\0" * 4))[0]
            return state, inq
    return None


def set_send_buffer(pid, inode, size):
    """Sets SO_SNDBUF on the daemon's socket `inode` (through a duplicate of its
    descriptor: the same socket). A fixed, small send buffer toward a slow client
    makes the relay move bytes in small steps, as a host with a small
    net.ipv4.tcp_wmem would, instead of megabyte bursts that empty its upstream
    socket each time."""
    with ProcessSockets(pid) as ps:
        for _, ino, s in ps.sockets:
            if ino == inode:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
                return s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    raise AssertionError(f"pid {pid} has no socket {inode}")
