"""Relay and echo: bytes, half-close, upstream failures, Unix upstreams, backpressure."""
import socket
import threading
import time

import pytest

from conftest import Upstream, connect, echo_handler, free_port, listener_section, recv_exactly, round_trip, wait_for
from helpers_core import (
    MiB, UnixUpstream, close_all, pack_linger_rst, pattern, raise_nofile, read_until_closed, recv_hash, send_in_thread, sha256,
    wait_counter, wait_open,
)


def relay_daemon(daemon_factory, upstream, name="r", **keys):
    d = daemon_factory([listener_section(name, "127.0.0.1:0", "relay", upstream, **keys)])
    return d.start()


# ---------------------------------------------------------------- echo

def test_echo_round_trip(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    address = d.address("e")
    s = connect(address)
    try:
        assert round_trip(s, b"hello reaperd\n")
        big = pattern(1, 1 * MiB)
        thread, result = send_in_thread(s, big, timeout=20)
        got, digest = recv_hash(s, len(big), timeout=20)
        thread.join(20)
        assert result["done"], result["error"]
        assert got == len(big) and digest == sha256(big)
        rows = d.connections("e")
        assert len(rows) == 1 and rows[0]["upstream"] == "echo"
        assert rows[0]["peer"].endswith(f":{s.getsockname()[1]}")
        # Half-close on echo: whatever was sent before the FIN still comes back, then EOF.
        s.sendall(b"last words")
        s.shutdown(socket.SHUT_WR)
        how, data, _ = read_until_closed(s, timeout=5)
        assert (how, data) == ("eof", b"last words")
    finally:
        s.close()
    entry = wait_counter(d, "e", ("closed",), 1)
    assert entry["accepted"] == 1 and entry["open"] == 0
    expected = len(b"hello reaperd\n") + MiB + len(b"last words")
    assert entry["bytes"] == {"in": expected, "out": expected}
    assert d.connections() == []


# ---------------------------------------------------------------- 16 MiB each way

def test_relay_16_mib_each_way_concurrently(daemon_factory):
    size = 16 * MiB
    up_data = pattern(2, size)
    client_data = pattern(3, size)
    seen = {}
    done = threading.Event()

    def handler(conn):
        thread, result = send_in_thread(conn, up_data, timeout=60)
        seen["got"], seen["hash"] = recv_hash(conn, size, timeout=60)
        thread.join(60)
        seen["send"] = result
        done.set()
        # Hold the connection until the client has read everything.
        conn.settimeout(30)
        while conn.recv(65536):
            pass

    up = Upstream(handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        s = connect(d.address("r"))
        try:
            thread, result = send_in_thread(s, client_data, timeout=60)
            got, digest = recv_hash(s, size, timeout=60)
            thread.join(60)
            assert result["done"], result["error"]
            assert done.wait(60), "upstream did not finish"
            assert seen["send"]["done"], seen["send"]["error"]
            # Both ends compare what arrived with what the other side sent.
            assert (got, digest) == (size, sha256(up_data)), "upstream->client bytes differ"
            assert (seen["got"], seen["hash"]) == (size, sha256(client_data)), "client->upstream bytes differ"
            entry = d.listener("r")
            assert entry["bytes"] == {"in": size, "out": size}
        finally:
            s.close()
        wait_counter(d, "r", ("closed",), 1)
    finally:
        up.close()


# ---------------------------------------------------------------- 300 clients

def test_300_concurrent_clients(daemon_factory, echo_upstream):
    clients = 300
    limit = raise_nofile(4 * clients + 512)
    assert limit >= 2 * clients + 256, f"RLIMIT_NOFILE {limit} is too low for {clients} relayed clients"
    d = relay_daemon(daemon_factory, echo_upstream.address)
    address = d.address("r")
    sockets = [None] * clients
    errors = []
    barrier = threading.Barrier(10)

    def worker(index):
        try:
            mine = range(index, clients, 10)
            for i in mine:
                sockets[i] = connect(address, timeout=10)
            barrier.wait(30)  # every client is connected before any talks
            for i in mine:
                payload = f"client {i} says hello\n".encode() * 8
                if not round_trip(sockets[i], payload, timeout=10):
                    errors.append(f"client {i}: wrong echo")
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(f"worker {index}: {error!r}")
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads), "workers hung"
        assert errors == []
        status = d.status()
        assert status["connections"] == clients
        entry = d.listener("r")
        assert entry["accepted"] == clients and entry["open"] == clients
        assert entry["refused"] == {"limit": 0, "upstream": 0, "proxy_header": 0}
        assert len(d.connections("r")) == clients
    finally:
        close_all([s for s in sockets if s is not None])
    wait_counter(d, "r", ("closed",), clients, timeout=10)
    wait_open(d, "r", 0)


# ---------------------------------------------------------------- half-close

def test_half_close_client_first(daemon_factory):
    events = {}
    upstream_got_eof = threading.Event()

    def handler(conn):
        conn.settimeout(10)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        events["request"] = data
        upstream_got_eof.set()
        # The client's FIN arrived; this direction must still flow.
        time.sleep(0.2)
        conn.sendall(b"reply after your FIN\n" * 100)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    up = Upstream(handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        s = connect(d.address("r"))
        try:
            s.sendall(b"request\n")
            s.shutdown(socket.SHUT_WR)
            assert upstream_got_eof.wait(5), "the client's FIN did not reach the upstream"
            assert events["request"] == b"request\n"
            how, data, _ = read_until_closed(s, timeout=5)
            assert data == b"reply after your FIN\n" * 100
            assert how == "eof"
        finally:
            s.close()
        entry = wait_counter(d, "r", ("closed",), 1)
        assert sum(entry["reaped"].values()) == 0
    finally:
        up.close()


def test_half_close_upstream_first(daemon_factory):
    received = {}
    finished = threading.Event()

    def handler(conn):
        conn.sendall(b"banner then FIN\n")
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(10)
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        received["data"] = data
        finished.set()

    up = Upstream(handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        s = connect(d.address("r"))
        try:
            how, data, _ = read_until_closed(s, timeout=5)
            assert (how, data) == ("eof", b"banner then FIN\n")
            # The upstream's FIN reached us; the other direction still flows.
            payload = pattern(4, 256 * 1024)
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            assert finished.wait(10), "the upstream did not see the client's bytes and FIN"
            assert received["data"] == payload
        finally:
            s.close()
        wait_counter(d, "r", ("closed",), 1)
    finally:
        up.close()


# ---------------------------------------------------------------- upstream failures

@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_upstream_refused(daemon_factory, tmp_path, kind):
    # Nothing listens there.
    target = f"127.0.0.1:{free_port()}" if kind == "tcp" else f"unix:{tmp_path}/nobody.sock"
    d = relay_daemon(daemon_factory, target)
    s = connect(d.address("r"))
    try:
        how, data, seconds = read_until_closed(s, timeout=5)
        assert how in ("eof", "reset") and data == b"", how
        assert seconds < 2.0, f"client closed only after {seconds:.2f}s"
    finally:
        s.close()
    entry = wait_counter(d, "r", ("refused", "upstream"), 1)
    assert entry["open"] == 0 and entry["closed"] == 0
    assert sum(entry["reaped"].values()) == 0
    assert d.connections() == []
    # The daemon keeps serving.
    assert d.proc.poll() is None


def test_upstream_never_answers_connect_timeout(daemon_factory, vanish):
    silent = Upstream(echo_handler)  # listening, but its SYNs are dropped
    try:
        vanish.drop(silent.port)
        d = relay_daemon(daemon_factory, silent.address, connect_timeout="1s")
        started = time.monotonic()
        s = connect(d.address("r"))
        try:
            rows = wait_for(lambda: d.connections("r"), timeout=1, what="the connection to be tracked")
            assert len(rows) == 1 and rows[0]["health"] == "connecting", rows
            how, data, _ = read_until_closed(s, timeout=6)
            seconds = time.monotonic() - started
            assert how in ("eof", "reset") and data == b"", how
            assert 0.8 <= seconds <= 3.0, f"client closed after {seconds:.2f}s with connect_timeout = 1s"
        finally:
            s.close()
        entry = wait_counter(d, "r", ("refused", "upstream"), 1)
        assert entry["open"] == 0
        assert len(silent.accepted) == 0
        assert d.connections() == []
    finally:
        silent.close()


# ---------------------------------------------------------------- unix upstream

def test_unix_socket_upstream(daemon_factory, tmp_path):
    size = 2 * MiB
    down = pattern(5, size)
    seen = {}
    done = threading.Event()

    def handler(conn):
        conn.sendall(b"HELLO FROM UNIX\n")
        thread, result = send_in_thread(conn, down, timeout=30)
        seen["got"], seen["hash"] = recv_hash(conn, size, timeout=30)
        thread.join(30)
        seen["sent"] = result["done"]
        done.set()
        conn.settimeout(10)
        while conn.recv(65536):
            pass

    up = UnixUpstream(tmp_path / "up.sock", handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        assert d.listener("r")["upstream"] == up.address
        s = connect(d.address("r"))
        try:
            assert recv_exactly(s, 16, timeout=5) == b"HELLO FROM UNIX\n"
            upward = pattern(6, size)
            thread, result = send_in_thread(s, upward, timeout=30)
            got, digest = recv_hash(s, size, timeout=30)
            thread.join(30)
            assert result["done"], result["error"]
            assert (got, digest) == (size, sha256(down))
            assert done.wait(30) and seen["sent"]
            assert (seen["got"], seen["hash"]) == (size, sha256(upward))
            rows = d.connections("r")
            assert len(rows) == 1 and rows[0]["upstream"] == up.address
        finally:
            s.close()
        entry = wait_counter(d, "r", ("closed",), 1)
        assert entry["bytes"] == {"in": size, "out": size + 16}
        assert len(up.accepted) == 1
    finally:
        up.close()


# ---------------------------------------------------------------- resets

@pytest.mark.parametrize("who", ["upstream", "client"])
def test_reset_is_passed_on(daemon_factory, who):
    """A reset by one peer reaches the other as a reset, and is a close, not a reap."""
    conns = []
    upstream_saw = {}
    upstream_done = threading.Event()

    def handler(conn):
        conns.append(conn)
        conn.sendall(b"ready\n")
        if who == "upstream":
            time.sleep(0.1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, pack_linger_rst())
            return  # closed by the harness: RST
        how, _, seconds = read_until_closed(conn, timeout=5)
        upstream_saw["how"] = how
        upstream_done.set()

    up = Upstream(handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        s = connect(d.address("r"))
        try:
            assert recv_exactly(s, 6) == b"ready\n"
            if who == "upstream":
                how, _, seconds = read_until_closed(s, timeout=5)
                assert how == "reset", f"the upstream's RST reached the client as {how}"
                assert seconds < 1.0
            else:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, pack_linger_rst())
                s.close()
                assert upstream_done.wait(5), "the upstream never saw the client go"
                assert upstream_saw["how"] == "reset", f"the client's RST reached the upstream as {upstream_saw['how']}"
        finally:
            s.close()
        entry = wait_counter(d, "r", ("closed",), 1)
        assert sum(entry["reaped"].values()) == 0 and entry["open"] == 0
    finally:
        up.close()


# ---------------------------------------------------------------- IPv6, several addresses

def test_ipv6_listener_and_upstream_and_several_addresses(daemon_factory):
    up = Upstream(echo_handler, host="::1")
    try:
        d = daemon_factory([listener_section("r", "127.0.0.1:0, [::1]:0", "relay", f"[::1]:{up.port}")]).start()
        addresses = [a["address"] for a in d.listener("r")["addresses"]]
        assert len(addresses) == 2, addresses
        v4 = next(a for a in addresses if a.startswith("127.0.0.1:"))
        v6 = next(a for a in addresses if a.startswith("[::1]:"))
        s4 = socket.create_connection(("127.0.0.1", int(v4.rsplit(":", 1)[1])), timeout=5)
        s6 = socket.create_connection(("::1", int(v6.rsplit(":", 1)[1])), timeout=5)
        try:
            assert round_trip(s4, b"over IPv4 to IPv6\n")
            assert round_trip(s6, b"over IPv6 to IPv6\n")
            rows = d.connections("r")
            assert sorted(r["peer"].startswith("[") for r in rows) == [False, True], rows
            assert all(r["upstream"] == f"[::1]:{up.port}" for r in rows), rows
        finally:
            s4.close()
            s6.close()
        wait_counter(d, "r", ("closed",), 2)
    finally:
        up.close()


# ---------------------------------------------------------------- backpressure

def push_until_blocked(sock, data, rss_sample, stall=1.0, limit=30.0):
    """Sends `data` from this thread until a send finds no room for `stall`
    seconds; meanwhile calls rss_sample() every 50 ms. Returns bytes sent and
    whether the sender was pushed back."""
    view = memoryview(data)
    progress = {"sent": 0, "blocked": False, "error": None}

    def sender():
        sock.settimeout(stall)
        try:
            while progress["sent"] < len(data):
                progress["sent"] += sock.send(view[progress["sent"]:progress["sent"] + MiB])
        except socket.timeout:
            progress["blocked"] = True
        except OSError as error:
            progress["error"] = error

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    deadline = time.monotonic() + limit
    while thread.is_alive() and time.monotonic() < deadline:
        rss_sample()
        thread.join(0.05)
    rss_sample()
    assert not thread.is_alive(), f"sender neither finished nor was pushed back in {limit}s"
    assert progress["error"] is None, progress["error"]
    return progress["sent"], progress["blocked"]


@pytest.mark.parametrize("direction", ["client-to-upstream", "upstream-to-client"])
def test_backpressure_bounds_memory(daemon_factory, direction):
    """One side writes 64 MiB, the other does not read: the writer is pushed
    back, reaperd's memory stays bounded, and once the reader reads every byte
    arrives intact."""
    data = pattern(7, 64 * MiB)
    release = threading.Event()
    state = {}

    def handler(conn):
        state["conn"] = conn
        state["accepted"] = True
        if direction == "client-to-upstream":
            release.wait(60)
            state["got"], state["hash"] = recv_hash(conn, len(data), timeout=30)
        else:
            state["sent"], state["blocked"] = push_until_blocked(conn, data, state["sample"])
            state["pushed"] = True
            release.wait(60)
            conn.settimeout(10)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)

    up = Upstream(handler)
    try:
        d = relay_daemon(daemon_factory, up.address)
        rss_before = d.rss_kib()
        peak = [rss_before]

        def sample():
            peak[0] = max(peak[0], d.rss_kib())

        state["sample"] = sample
        s = connect(d.address("r"))
        try:
            if direction == "client-to-upstream":
                wait_for(lambda: state.get("accepted"), timeout=5, what="the upstream connection")
                sent, blocked = push_until_blocked(s, data, sample)
            else:
                wait_for(lambda: state.get("pushed"), timeout=40, what="the upstream to be pushed back")
                sent, blocked = state["sent"], state["blocked"]
            assert blocked, f"all {sent} bytes were taken although nobody read: no backpressure"
            assert sent < len(data)
            growth = (peak[0] - rss_before) / 1024
            assert growth < 20, f"reaperd's RSS grew {growth:.1f} MiB while the reader did not read"
            # The loop still turns while the relay is stalled.
            assert d.status()["connections"] == 1
            # Now read: every byte the writer managed to send arrives, in order.
            if direction == "client-to-upstream":
                s.shutdown(socket.SHUT_WR)
                release.set()
                wait_for(lambda: "hash" in state, timeout=30, what="the upstream to drain the relay")
                got, digest = state["got"], state["hash"]
            else:
                release.set()
                got, digest = recv_hash(s, len(data), timeout=30)
            assert got == sent
            assert digest == sha256(data[:sent])
        finally:
            release.set()
            s.close()
    finally:
        up.close()


def test_bytes_sent_just_before_an_upstream_reset_reach_the_client(daemon_factory):
    """An upstream that writes and then resets: the bytes it wrote still arrive."""
    import struct

    def greet_and_reset(conn):
        conn.recv(16)
        conn.sendall(b"bye-now\n")
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    up = Upstream(greet_and_reset)
    try:
        d = daemon_factory([listener_section("r", "127.0.0.1:0", upstream=up.address)]).start()
        for _ in range(10):
            with connect(d.address("r")) as s:
                s.sendall(b"hi\n")
                got = b""
                s.settimeout(5)
                try:
                    while len(got) < 8:
                        chunk = s.recv(64)
                        if not chunk:
                            break
                        got += chunk
                except ConnectionResetError:
                    pass
                assert got == b"bye-now\n"
    finally:
        up.close()
