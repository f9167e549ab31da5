"""The systemd conversation over a real NOTIFY_SOCKET, and socket activation
with real inherited descriptors (SPEC §7)."""
import os
import signal
import socket
import struct
import subprocess
import threading
import time

from conftest import REAPERD, Upstream, echo_handler, free_port, listener_section, round_trip, wait_for


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket. With
    `reading=False` nothing is read until `start_reading()`: the kernel queues
    10 datagrams (net.unix.max_dgram_qlen) and then refuses the sender more."""

    def __init__(self, path, reading=True):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (monotonic time, {key: value})
        self.lock = threading.Lock()
        self.running = True
        if reading:
            self.start_reading()

    def start_reading(self):
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        self.sock.settimeout(0.2)
        while self.running:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def having(self, key, value=None):
        with self.lock:
            return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def wait(self, key, value=None, count=1, timeout=10):
        return wait_for(lambda: len(self.having(key, value)) >= count and self.having(key, value),
                        timeout=timeout, what=f"{key}={value} x{count} on NOTIFY_SOCKET")

    def close(self):
        self.running = False
        self.sock.close()


def test_ready_status_reload_and_stopping(daemon_factory, tmp_path):
    up = Upstream(echo_handler)
    notify = NotifySocket(tmp_path / "notify.sock")
    port = free_port()
    d = daemon_factory([listener_section("pg", f"127.0.0.1:{port}", upstream=up.address)],
                       env={"NOTIFY_SOCKET": notify.path})
    d.start(wait=False)
    _, ready = notify.wait("READY", "1")[0]
    # READY=1 only once every listener is bound: a client connects at once.
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert round_trip(s)
    assert "connections" in ready.get("STATUS", "")

    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    for s in clients:
        assert round_trip(s)

    d.signal(signal.SIGHUP)
    _, reloading = notify.wait("RELOADING", "1")[0]
    assert int(reloading["MONOTONIC_USEC"]) > 0
    notify.wait("READY", "1", count=2)
    for s in clients:
        assert round_trip(s), "a reload dropped an established connection"

    # A broken file: nothing changes, and STATUS= says why with FILE:LINE.
    d.config.write_text(d.config.read_text() + "\n[listener:bad]\nmode = sideways\n")
    d.signal(signal.SIGHUP)
    notify.wait("RELOADING", "1", count=2)
    notify.wait("READY", "1", count=3)
    failed = wait_for(lambda: [m for _, m in notify.having("STATUS") if "reload failed" in m["STATUS"]],
                      what="STATUS= with the reload failure")
    assert f"{d.config}:" in failed[-1]["STATUS"]
    for s in clients:
        assert round_trip(s), "a refused reload dropped a connection"
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert round_trip(s)

    d.signal(signal.SIGTERM)
    notify.wait("STOPPING", "1")
    for s in clients:
        s.close()
    assert d.proc.wait(15) == 0
    notify.close()
    up.close()


def test_a_notify_socket_nobody_reads_never_stalls_the_loop(daemon_factory, tmp_path):
    """Every notify message goes through one non-blocking, ordered queue. While
    the service manager reads nothing (its socket queue full after 10 datagrams)
    the daemon keeps serving and reloading; once it reads, it gets everything,
    in order, READY=1 first, down to STOPPING=1 sent just before exit."""
    notify = NotifySocket(tmp_path / "notify.sock", reading=False)
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={"poll_interval": "10ms"},
                       env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "20000"})
    d.start()  # answers reaperctl although READY=1 may still be queued
    reloads = 5
    delays = []
    for i in range(reloads):
        started = time.monotonic()
        result = d.ctl("reload", timeout=5)
        assert result.returncode == 0, result.stderr
        for _ in range(4):
            with socket.create_connection(d.address("e"), timeout=2) as s:
                assert round_trip(s, f"reload {i}\n".encode(), timeout=2)
        delays.append(time.monotonic() - started)
        time.sleep(0.1)  # watchdog pings and STATUS= changes pile up meanwhile
    assert max(delays) < 1.0, f"the loop stalled behind a full notify socket: {delays}"

    notify.start_reading()
    wait_for(lambda: len(notify.having("READY", "1")) == reloads + 1, timeout=5, what="every READY=1")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0, d.log()
    notify.wait("STOPPING", "1", timeout=5)
    with notify.lock:
        messages = [m for _, m in notify.messages]
    assert messages[0].get("READY") == "1", messages[:3]
    events = [key for m in messages for key in ("READY", "RELOADING", "STOPPING") if key in m]
    assert events == ["READY"] + ["RELOADING", "READY"] * reloads + ["STOPPING"], events
    assert "STOPPING" in messages[-1], messages[-3:]
    assert notify.having("WATCHDOG", "1"), "no watchdog ping got through"
    notify.close()


def test_descriptor_store_messages_share_the_ordered_notify_queue(daemon_factory, tmp_path):
    """FDSTORE=1 and FDSTOREREMOVE=1 travel in the same queue as READY=1: in
    order, each store with its one descriptor, and a store still waiting when its
    connection closes is withdrawn instead of being followed by a removal."""
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={"fd_store": "yes", "fd_store_min_age": "0"}, env={"NOTIFY_SOCKET": path})
    d.start()
    clients = [socket.create_connection(d.address("e"), timeout=2) for _ in range(15)]
    for i, s in enumerate(clients):
        assert round_trip(s, f"stored {i}\n".encode(), timeout=2)
    for s in clients[:3] + clients[-3:]:
        s.close()
    wait_for(lambda: d.status()["connections"] == 9, timeout=5, what="6 connections to close")

    received = []  # ({key: value}, descriptors)
    receiver.settimeout(2)
    try:
        while True:
            data, ancillary, _, _ = receiver.recvmsg(65536, socket.CMSG_SPACE(16 * 4))
            fds = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds += list(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
            for fd in fds:
                os.close(fd)
            received.append((dict(line.split("=", 1) for line in data.decode().splitlines()), len(fds)))
            if received[-1][0].get("READY") == "1":
                receiver.settimeout(0.5)  # the rest follows quickly
    except socket.timeout:
        pass
    d.stop()
    receiver.close()

    ready = next(i for i, (m, _) in enumerate(received) if m.get("READY") == "1")
    listener_stores = [m["FDNAME"] for m, _ in received[:ready] if "FDSTORE" in m]
    assert len(listener_stores) == 1 and listener_stores[0].startswith("l@e@"), received[:ready]
    stores = [(i, m["FDNAME"]) for i, (m, n) in enumerate(received) if m.get("FDSTORE") == "1"]
    assert all(n == 1 for m, n in received if m.get("FDSTORE") == "1"), "a store without its descriptor"
    assert all(n == 0 for m, n in received if "FDSTORE" not in m)
    removals = {m["FDNAME"]: i for i, (m, _) in enumerate(received) if m.get("FDSTOREREMOVE") == "1"}
    stored = {name: i for i, name in stores}
    for name, index in removals.items():
        assert name in stored and stored[name] < index, f"{name} removed before (or without) being stored"
    connection_stores = [name for _, name in stores if name.startswith("@")]
    assert len(connection_stores) == len(set(connection_stores)) >= 9, connection_stores
    closed = len([n for n in connection_stores if n in removals])
    assert closed + (15 - len(connection_stores)) == 6, (connection_stores, removals)
    for s in clients:
        s.close()


def test_watchdog_pings_from_the_loop(daemon_factory, tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    d.start(wait=False)
    notify.wait("READY", "1")
    time.sleep(2.1)
    pings = notify.having("WATCHDOG", "1")
    # Half of WATCHDOG_USEC: one ping per 200 ms, about 10 in 2 s.
    assert 7 <= len(pings) <= 14, len(pings)
    intervals = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
    assert max(intervals) < 0.4, intervals

    # A frozen loop stops pinging, which is what lets systemd restart it.
    d.signal(signal.SIGSTOP)
    time.sleep(0.1)
    before = len(notify.having("WATCHDOG", "1"))
    time.sleep(1.0)
    assert len(notify.having("WATCHDOG", "1")) == before
    d.signal(signal.SIGCONT)
    notify.wait("WATCHDOG", "1", count=before + 2, timeout=3)
    notify.close()


def test_watchdog_usec_too_small_to_halve_does_not_stall_the_loop(daemon_factory, tmp_path):
    """WATCHDOG_USEC=1 halves to a 0 µs ping interval: a timer due again the moment
    it fired, so the loop never reached epoll_wait. The interval has a floor now."""
    notify = NotifySocket(tmp_path / "notify.sock")
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")])
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="1")
    env.pop("WATCHDOG_PID", None)
    d.stderr = open(d.stderr_path, "ab")
    # sd_watchdog_enabled honours the variables only when WATCHDOG_PID is our pid.
    d.proc = subprocess.Popen(
        ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" --config "$1"', str(REAPERD), str(d.config)],
        stdin=subprocess.DEVNULL, stdout=d.stderr, stderr=d.stderr, env=env)
    d.stderr.close()
    notify.wait("READY", "1")
    notify.wait("WATCHDOG", "1", timeout=5)
    started = time.monotonic()
    assert d.ctl("status", timeout=5).returncode == 0, d.log()
    with socket.create_connection(d.address("e"), timeout=2) as s:
        assert round_trip(s, timeout=2)
    assert time.monotonic() - started < 3.0
    # At most one ping per millisecond (the floor), however fast the reader is.
    before = len(notify.having("WATCHDOG", "1"))
    time.sleep(1.0)
    assert len(notify.having("WATCHDOG", "1")) - before <= 1100
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    notify.close()


def test_startup_failure_sends_errno(daemon_factory, tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemon_factory([listener_section("pg", f"127.0.0.1:{port}", mode="echo")],
                           env={"NOTIFY_SOCKET": notify.path})
        d.start(wait=False)
        assert d.proc.wait(10) != 0
    _, message = notify.wait("ERRNO")[0]
    assert message["ERRNO"] == str(98)  # EADDRINUSE
    assert f"listener pg" in message.get("STATUS", "")
    assert not notify.having("READY")
    assert f"listener pg: bind 127.0.0.1:{port}" in d.log()
    notify.close()


def activated_daemon(daemon_factory, tmp_path, names, listeners, sockets=None, env=None, daemon_keys=None):
    """Starts reaperd with listening sockets (or the given `sockets`) at fd 3.. and
    LISTEN_FDS/LISTEN_FDNAMES, as systemd does for a socket unit."""
    if sockets is None:
        sockets = [listening_socket() for _ in names]
    d = daemon_factory(listeners, daemon_keys=daemon_keys or {})
    fds = [s.fileno() for s in sockets]

    def place_fds():
        # Move the listeners to 3, 4, ... in the child before exec.
        staged = [os.dup(fd) for fd in fds]
        for index, fd in enumerate(staged):
            os.dup2(fd, 3 + index)

    environment = dict(os.environ)
    environment.pop("NOTIFY_SOCKET", None)
    environment.update({"LISTEN_FDS": str(len(fds)), "LISTEN_FDNAMES": ":".join(names)})
    environment.update(env or {})
    d.stderr = open(d.stderr_path, "ab")
    d.proc = subprocess.Popen(
        ["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" --config "$1"', str(REAPERD), str(d.config)],
        stdin=subprocess.DEVNULL, stdout=d.stderr, stderr=d.stderr, env=environment, preexec_fn=place_fds,
        close_fds=False)
    d.stderr.close()
    return d, sockets


def listening_socket():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def accepted_socket():
    """A connected TCP socket, as a socket unit with Accept=yes passes; returns
    (it, its peer, the listener it came from)."""
    listener = listening_socket()
    peer = socket.create_connection(listener.getsockname(), timeout=5)
    conn, _ = listener.accept()
    return conn, peer, listener


def test_socket_activation_refuses_sockets_that_are_not_listening_streams(daemon_factory, tmp_path):
    """ListenDatagram= passes a datagram socket and Accept=yes a connected one:
    accept4 fails with EINVAL on both. Refused at start, exit 78, ERRNO= sent."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    conn, peer, origin = accepted_socket()
    good = listening_socket()
    cases = [
        (["pg"], [udp], "FileDescriptorName=pg is not a listening stream socket (datagram)"),
        (["pg"], [conn], "FileDescriptorName=pg is not a listening stream socket (a stream socket that is not "
                         "listening"),
        # A healthy listener beside a bad one does not make the bad one acceptable.
        (["good", "pg"], [good, udp], "FileDescriptorName=pg is not a listening stream socket"),
    ]
    try:
        for index, (names, sockets, message) in enumerate(cases):
            notify = NotifySocket(tmp_path / f"notify{index}.sock")
            listeners = [listener_section(name, None, mode="echo") for name in names if "@" not in name]
            if not listeners:
                listeners = [listener_section("pg", "127.0.0.1:0", mode="echo")]
            d, _ = activated_daemon(daemon_factory, tmp_path, names, listeners, sockets=sockets,
                                    env={"NOTIFY_SOCKET": notify.path})
            try:
                assert d.proc.wait(10) == 78, d.log()
            except subprocess.TimeoutExpired:
                raise AssertionError(f"reaperd kept running with {names}: {d.log()}")
            assert message in d.log(), d.log()
            _, failed = notify.wait("ERRNO")[0]
            assert failed["ERRNO"] == "22" and message in failed.get("STATUS", ""), failed
            assert not notify.having("READY")
            notify.close()
    finally:
        for s in (udp, conn, peer, origin, good):
            s.close()


def test_stored_connection_socket_of_the_wrong_kind_is_dropped_not_adopted(daemon_factory, tmp_path):
    """A `c@` descriptor must be a stream socket that is not listening. A connected
    UDP socket passed the old liveness check (it has a peer) and was adopted."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    udp.connect(other.getsockname())
    try:
        d, _ = activated_daemon(daemon_factory, tmp_path, ["c@7@e"],
                                [listener_section("e", "127.0.0.1:0", mode="echo")], sockets=[udp])
        wait_for(lambda: d.proc.poll() is not None or d.ctl("status").returncode == 0, what="reaperd to start")
        assert d.proc.poll() is None, d.log()
        assert "stored connection socket c@7@e is not a stream connection (datagram)" in d.log(), d.log()
        assert d.status()["connections"] == 0
        assert d.connections() == []
        with socket.create_connection(d.address("e"), timeout=2) as s:
            assert round_trip(s)
    finally:
        udp.close()
        other.close()


def test_stored_listening_socket_of_the_wrong_kind_is_dropped_and_the_listener_binds(daemon_factory, tmp_path):
    """An `l@` descriptor that is no listening stream socket came from the store,
    not from the operator: refusing to start would keep the service down, so it
    is dropped and the listener binds its address afresh."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        d, _ = activated_daemon(daemon_factory, tmp_path, ["l@e@127.0.0.1_0"],
                                [listener_section("e", "127.0.0.1:0", mode="echo")], sockets=[udp])
        wait_for(lambda: d.proc.poll() is not None or d.ctl("status").returncode == 0, what="reaperd to start")
        assert d.proc.poll() is None, d.log()
        assert "stored listening socket l@e@127.0.0.1_0 is not a listening stream socket (datagram)" in d.log(), \
            d.log()
        with socket.create_connection(d.address("e"), timeout=2) as s:
            assert round_trip(s)
    finally:
        udp.close()


def test_socket_activation_serves_the_named_listener(daemon_factory, tmp_path):
    d, sockets = activated_daemon(daemon_factory, tmp_path, ["pg"], [listener_section("pg", None, mode="echo")])
    wait_for(lambda: d.proc.poll() is not None or d.ctl("status").returncode == 0, what="activated reaperd")
    assert d.proc.poll() is None, d.log()
    port = sockets[0].getsockname()[1]
    sockets[0].close()  # the daemon holds its own copy
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert round_trip(s)
    listener = d.listener("pg")
    assert listener["addresses"][0]["activated"] is True
    # Activated listeners survive a reload.
    assert d.ctl("reload").returncode == 0
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        assert round_trip(s)


def test_socket_activation_with_unknown_name_is_an_error(daemon_factory, tmp_path):
    d, sockets = activated_daemon(daemon_factory, tmp_path, ["nosuch"],
                                  [listener_section("pg", "127.0.0.1:0", mode="echo")])
    assert d.proc.wait(10) == 78
    assert "FileDescriptorName=nosuch" in d.log()
    for s in sockets:
        s.close()
