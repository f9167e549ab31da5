"""The descriptor store from reaperd's side: what reaches PID 1, and when.

A datagram socket the test binds stands in for systemd's NOTIFY_SOCKET and keeps
every descriptor it is handed, so a second reaperd can be started on them as
systemd would after a restart (LISTEN_FDS, LISTEN_FDNAMES).
"""
import os
import socket
import struct
import threading
import time

from conftest import listener_section, round_trip, wait_for
from test_systemd import activated_daemon


class Held:
    """A descriptor the store holds: a socket, or the ledger's memfd."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class StoreSocket:
    """Collects NOTIFY_SOCKET messages with their descriptors, as PID 1 would."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.lock = threading.RLock()
        self.stored = {}  # FDNAME -> ([sockets], monotonic time they arrived)
        self.stores = []  # every FDNAME stored, in order
        self.removals = []
        self.messages = []
        self.running = True
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        self.sock.settimeout(0.1)
        while self.running:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            except socket.timeout:
                continue
            except OSError:
                return
            fds = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += list(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
            for fd in fds:
                # Received descriptors are inheritable: a reaperd started later
                # would hold stray copies (close_fds=False) and no close would end them.
                os.set_inheritable(fd, False)
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.lock:
                self.messages.append(message)
                name = message.get("FDNAME")
                if message.get("FDSTORE") == "1" and fds:
                    self.stores.append(name)
                    # A connection's sockets come in one message, under one name.
                    self.stored[name] = ([Held(fd) for fd in fds], time.monotonic())
                elif message.get("FDSTOREREMOVE") == "1":
                    self.removals.append(name)
                    old = self.stored.pop(name, None)
                    for s in old[0] if old else []:
                        s.close()

    def connection_names(self):
        with self.lock:
            return [n for n in self.stored if n.startswith(("@", "c@", "u@"))]

    def snapshot(self, only=None):
        """What systemd would pass after a restart: each name once per descriptor
        it holds (LISTEN_FDNAMES repeats it), with the descriptors."""
        with self.lock:
            names, sockets = [], []
            for name, (held, _) in self.stored.items():
                if only is None or name.startswith(only):
                    names += [name] * len(held)
                    sockets += held
            return names, sockets

    def close(self):
        self.running = False
        self.sock.close()
        with self.lock:
            for held, _ in self.stored.values():
                for s in held:
                    s.close()


def wait_started(d):
    """A reaperd started on stored sockets answers, or the test fails with its log."""
    wait_for(lambda: d.proc.poll() is not None or d.ctl("status").returncode == 0, what="the second reaperd to start")
    assert d.proc.poll() is None, d.log()


def store_daemon(daemon_factory, tmp_path, min_age, **daemon_keys):
    store = StoreSocket(tmp_path / "notify.sock")
    keys = {"fd_store": "yes", "fd_store_min_age": min_age, "poll_interval": "100ms"}
    keys.update(daemon_keys)
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")], daemon_keys=keys,
                       env={"NOTIFY_SOCKET": store.path})
    d.start()
    return d, store


def test_short_connections_never_reach_the_store(daemon_factory, tmp_path):
    """Connect, one echo, close, 300 times in a row: with fd_store_min_age = 2s no
    connection is ever stored or removed, so churn costs PID 1 nothing. One that
    stays is stored once it has lived that long, and not before."""
    d, store = store_daemon(daemon_factory, tmp_path, "2s")
    try:
        for i in range(300):
            with socket.create_connection(d.address("e"), timeout=2) as s:
                assert round_trip(s, f"short {i}\n".encode(), timeout=2)
        wait_for(lambda: d.status()["connections"] == 0, timeout=5, what="the short connections to close")
        time.sleep(0.5)
        with store.lock:
            assert [n for n in store.stores if n.startswith("@")] == [], store.stores
            assert store.removals == [], store.removals

        opened = time.monotonic()
        keeper = socket.create_connection(d.address("e"), timeout=2)
        assert round_trip(keeper, b"long\n", timeout=2)
        wait_for(lambda: store.connection_names(), timeout=5, what="the long connection to be stored")
        with store.lock:
            (name,) = store.connection_names()
            arrived = store.stored[name][1]
        waited = arrived - opened
        assert 2.0 <= waited <= 2.0 + 0.1 + 1.0, f"stored {waited:.2f}s after it opened (min age 2s, sweep 100ms)"
        keeper.close()
        wait_for(lambda: store.connection_names() == [], timeout=5, what="the closed connection to leave the store")
    finally:
        d.stop()
        store.close()


def test_sigterm_stores_young_connections_and_their_age_survives_a_restart(daemon_factory, tmp_path):
    """SIGTERM (systemctl restart) stores the connections younger than
    fd_store_min_age before exit, so a restart keeps every one; the accept time
    travels in the stored name, so the next reaperd reports the real age."""
    d, store = store_daemon(daemon_factory, tmp_path, "1h")
    clients = [socket.create_connection(d.address("e"), timeout=2) for _ in range(20)]
    try:
        for s in clients:
            assert round_trip(s, b"before\n", timeout=2)
        time.sleep(1.5)
        assert store.connection_names() == [], "stored before fd_store_min_age"
        d.proc.terminate()
        assert d.proc.wait(15) == 0, d.log()
        names = store.connection_names()
        assert len(names) == 20, (len(names), d.log())
        passed, sockets = store.snapshot()

        second, _ = activated_daemon(daemon_factory, tmp_path, passed,
                                     [listener_section("e", "127.0.0.1:0", mode="echo")], sockets=sockets)
        wait_started(second)
        listed = wait_for(lambda: second.connections() if len(second.connections()) == 20 else None, timeout=5,
                          what="20 recovered connections")
        ages = sorted(c["age_seconds"] for c in listed)
        assert ages[0] >= 1.5, f"ages restarted at zero after the restart: {ages[:3]}"
        for s in clients:
            assert round_trip(s, b"after the restart\n", timeout=2)
        second.stop()
    finally:
        for s in clients:
            s.close()
        store.close()


def test_a_stored_name_reaperd_cannot_read_is_dropped_not_a_crash(daemon_factory, tmp_path):
    """An id of UInt64.max made `id + 1` trap at start (a crash loop under
    systemd); one past UInt64 failed start as an unknown socket unit name. Both
    come from the store, not the operator: logged, closed, and reaperd serves."""
    pairs = [socket.socketpair() for _ in range(2)]
    names = ["c@18446744073709551615@e", "c@18446744073709551616@e"]
    try:
        d, _ = activated_daemon(daemon_factory, tmp_path, names, [listener_section("e", "127.0.0.1:0", mode="echo")],
                                sockets=[a for a, _ in pairs])
        wait_for(lambda: d.proc.poll() is not None or d.ctl("status").returncode == 0, what="reaperd to start")
        assert d.proc.poll() is None, d.log()
        for name in names:
            assert f"stored socket {name} has a name this reaperd cannot read" in d.log(), d.log()
        with socket.create_connection(d.address("e"), timeout=2) as s:
            assert round_trip(s)
        # reaperd closed its copies (ours are closed too): the other ends read EOF.
        for a, b in pairs:
            a.close()
            b.settimeout(2)
            assert b.recv(1) == b""
        d.stop()
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_half_closed_connection_streaming_to_a_slow_reader_survives_a_restart(daemon_factory, tmp_path):
    """The client asks and half-closes; the upstream streams 8 MiB; the client
    reads slowly; reaperd restarts in the middle. Its upstream socket has sent
    its FIN (FIN_WAIT2) and was dropped as "died meanwhile": the client got EOF
    mid-answer. Every byte must arrive, then EOF."""
    from conftest import Upstream
    from helpers_core import pattern, sha256
    import hashlib

    size = 8 * 1024 * 1024
    answer = pattern(21, size)

    def handler(conn):
        request = b""
        while not request.endswith(b"\n"):
            chunk = conn.recv(64)
            if not chunk:
                break
            request += chunk
        assert conn.recv(64) == b"", "the client's FIN did not pass"
        conn.settimeout(30)
        for offset in range(0, size, 256 * 1024):
            conn.sendall(answer[offset:offset + 256 * 1024])
            time.sleep(0.1)

    up = Upstream(handler)
    store = StoreSocket(tmp_path / "notify.sock")
    d = daemon_factory([listener_section("r", "127.0.0.1:0", mode="relay", upstream=up.address)],
                       daemon_keys={"fd_store": "yes", "fd_store_min_age": "0", "poll_interval": "100ms"},
                       env={"NOTIFY_SOCKET": store.path})
    d.start()
    s = socket.create_connection(d.address("r"), timeout=5)
    digest = hashlib.sha256()
    got = 0
    try:
        s.sendall(b"GET /stream\n")
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)

        def read_for(seconds):
            nonlocal got
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                chunk = s.recv(64 * 1024)
                if not chunk:
                    return True
                digest.update(chunk)
                got += len(chunk)
                time.sleep(0.05)
            return False

        assert not read_for(1.0), f"EOF after {got} bytes, before the restart"
        d.proc.terminate()
        assert d.proc.wait(15) == 0, d.log()
        names, sockets = store.snapshot()
        pairs = [n for n in set(names) if n.startswith("@")]
        assert len(pairs) == 1 and names.count(pairs[0]) == 2, f"client and upstream not in one message: {names}"
        second, _ = activated_daemon(daemon_factory, tmp_path, names,
                                     [listener_section("r", "127.0.0.1:0", mode="relay", upstream=up.address)],
                                     sockets=sockets)
        wait_started(second)
        assert "dropped 0 that had died, reset 0 that lost bytes" in second.log(), second.log()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not read_for(0.5):
            pass
        assert (got, digest.hexdigest()) == (size, sha256(answer)), f"{got} of {size} bytes arrived, then EOF"
        second.stop()
    finally:
        s.close()
        store.close()
        up.close()


def test_a_renamed_listener_and_its_connections_survive_reload_and_restart(daemon_factory, tmp_path):
    """A reload renames a listener but keeps its address. Its stored listening
    socket stayed under the old name, so the next start bound the address anew
    (EADDRINUSE under systemd: PID 1 still holds the old socket) and dropped the
    stored connections as belonging to no listener."""
    store = StoreSocket(tmp_path / "notify.sock")
    keys = {"fd_store": "yes", "fd_store_min_age": "0", "poll_interval": "100ms"}
    d = daemon_factory([listener_section("old", "127.0.0.1:0", mode="echo")], daemon_keys=keys,
                       env={"NOTIFY_SOCKET": store.path})
    d.start()
    clients = [socket.create_connection(d.address("old"), timeout=2) for _ in range(3)]
    try:
        for s in clients:
            assert round_trip(s, b"before\n", timeout=2)
        wait_for(lambda: len(store.connection_names()) == 3, timeout=5,
                 what="3 stored connections")
        d.write_config([listener_section("new", "127.0.0.1:0", mode="echo")])
        assert d.ctl("reload").returncode == 0, d.log()
        wait_for(lambda: any(n.startswith("l@new@") for n in store.stored), timeout=5,
                 what="the listening socket stored under its new name")
        with store.lock:
            assert not any(n.startswith("l@old@") for n in store.stored), list(store.stored)
        d.proc.terminate()
        assert d.proc.wait(15) == 0, d.log()
        names, sockets = store.snapshot()
        second, _ = activated_daemon(daemon_factory, tmp_path, names,
                                     [listener_section("new", "127.0.0.1:0", mode="echo")], sockets=sockets)
        wait_started(second)
        assert "recovered 3 connections" in second.log() and "reset 0 that lost bytes" in second.log(), second.log()
        for s in clients:
            assert round_trip(s, b"after\n", timeout=2)
        assert [c["listener"] for c in second.connections()] == ["new"] * 3
        with socket.create_connection(second.address("new"), timeout=2) as fresh:
            assert round_trip(fresh)
        second.stop()
    finally:
        for s in clients:
            s.close()
        store.close()


def test_a_crash_never_continues_a_stream_with_a_hole(daemon_factory, tmp_path):
    """kill -9 while reaperd's pipe holds part of an answer: the next reaperd
    sees from the kernel's counters that bytes died in the old process, resets
    both sides and reaps it as crash-loss with the byte count. It relayed on
    before, and the client read a stream with up to 256 KiB missing from its
    middle. An idle connection beside it relays on."""
    from conftest import Upstream
    import signal

    size = 4 * 1024 * 1024
    upstream_saw = {}

    def handler(conn):
        request = conn.recv(64)
        if request.startswith(b"GET"):
            conn.settimeout(20)
            try:
                conn.sendall(b"a" * size)
                time.sleep(10)
                conn.sendall(b"more")
                upstream_saw["error"] = None
            except OSError as error:
                upstream_saw["error"] = error
        else:
            while request:
                conn.sendall(request)
                request = conn.recv(64)

    up = Upstream(handler)
    store = StoreSocket(tmp_path / "notify.sock")
    listeners = [listener_section("r", "127.0.0.1:0", mode="relay", upstream=up.address)]
    d = daemon_factory(listeners, daemon_keys={"fd_store": "yes", "fd_store_min_age": "0", "poll_interval": "100ms"},
                       env={"NOTIFY_SOCKET": store.path})
    d.start()
    idle = socket.create_connection(d.address("r"), timeout=5)
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    busy.connect(d.address("r"))
    try:
        assert round_trip(idle, b"hello\n", timeout=5)
        busy.sendall(b"GET\n")
        # reaperd fills its pipe and its send queue toward the client, which reads nothing.
        wait_for(lambda: any(c["bytes_out"] > 0 for c in d.connections()), timeout=5, what="the answer to flow")
        time.sleep(1.0)
        wait_for(lambda: len(store.connection_names()) == 2, timeout=5, what="both connections stored")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait(5)
        names, sockets = store.snapshot()
        second, _ = activated_daemon(daemon_factory, tmp_path, names, listeners, sockets=sockets)
        wait_started(second)
        log = second.log()
        assert "recovered 1 connections" in log and "reset 1 that lost bytes in a crash" in log, log
        reap = [line for line in log.splitlines() if "reason=crash-loss" in line]
        assert len(reap) == 1, log
        lost = int(reap[0].split("lost_bytes=")[1].split()[0])
        assert lost > 0, reap
        # As PID 1 does on FDSTOREREMOVE (this second reaperd has no store to
        # tell): drop the copies, so the reset goes out.
        for s in sockets:
            s.close()
        # The client reads what reached it, then a reset: never the rest with a hole.
        busy.settimeout(5)
        got = 0
        try:
            while True:
                chunk = busy.recv(65536)
                if not chunk:
                    raise AssertionError(f"a clean EOF after {got} bytes: the broken stream looked complete")
                got += len(chunk)
        except ConnectionResetError:
            pass
        assert got + lost <= size, (got, lost)
        assert round_trip(idle, b"still here\n", timeout=5)
        second.stop()
    finally:
        idle.close()
        busy.close()
        store.close()
        up.close()


def test_a_listener_renamed_while_reaperd_was_down_keeps_its_stored_socket(daemon_factory, tmp_path):
    """The operator renames a listener in the file and restarts (no reload in
    between). The stored listening socket, under the old name, was released and
    the address bound afresh: EADDRINUSE under systemd, which still holds the
    stored socket, so the unit failed to start and looped."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    address = f"127.0.0.1:{probe.getsockname()[1]}"
    probe.close()
    store = StoreSocket(tmp_path / "notify.sock")
    keys = {"fd_store": "yes", "fd_store_min_age": "0", "poll_interval": "100ms"}
    d = daemon_factory([listener_section("old", address, mode="echo")], daemon_keys=keys,
                       env={"NOTIFY_SOCKET": store.path})
    d.start()
    clients = [socket.create_connection(d.address("old"), timeout=2) for _ in range(3)]
    try:
        for s in clients:
            assert round_trip(s, b"before\n", timeout=2)
        wait_for(lambda: len(store.connection_names()) == 3, timeout=5, what="3 stored connections")
        d.proc.terminate()
        assert d.proc.wait(15) == 0, d.log()
        names, sockets = store.snapshot()
        # The store (here: this test) still holds the listening socket.
        second, _ = activated_daemon(daemon_factory, tmp_path, names, [listener_section("new", address, mode="echo")],
                                     sockets=sockets, env={"NOTIFY_SOCKET": store.path}, daemon_keys=keys)
        wait_started(second)
        assert "recovered 3 connections" in second.log(), second.log()
        wait_for(lambda: any(n.startswith("l@new@") for n in store.stored), timeout=5,
                 what="the listening socket stored under its new name")
        with store.lock:
            assert not any(n.startswith("l@old@") for n in store.stored), list(store.stored)
        for s in clients:
            assert round_trip(s, b"after\n", timeout=2)
        with socket.create_connection(second.address("new"), timeout=2) as fresh:
            assert round_trip(fresh)
        second.stop()
    finally:
        for s in clients:
            s.close()
        store.close()
