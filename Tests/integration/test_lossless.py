"""A graceful close is never a reap and never loses a byte (SPEC §5).

After a half-close, whatever the other side still sends is delivered until it
closes too, however slowly the reader reads; half_close_timeout counts only
time with no byte moving. The payloads are larger than every buffer on the
path (socket buffers, reaperd's 256 KiB pipes), so the sender finishes and
closes while most of its bytes still wait inside the relay: the kernel then
reports the socket whose both FINs are exchanged as TCP_CLOSE (and epoll as
EPOLLHUP), which is the happy ending, not a death (STYLE 19).

Every wait is bounded; each test takes a few seconds.
"""
import socket
import threading
import time

import pytest

from conftest import Upstream, connect, listener_section, wait_for
from helpers_core import MiB, pattern, read_until_closed, send_in_thread, sha256, wait_counter
from helpers_lossless import (
    TCP_CLOSE, PacedReader, connect_small, make_upstream, paced_upstream_read, read_request, set_send_buffer,
    socket_inode, socket_queue,
)
from helpers_reaper import reap_records

KiB = 1024
REASONS = ("keepalive", "user-timeout", "idle-timeout", "half-close-timeout", "upstream-dead", "admin", "crash-loss")
SLACK = 1.5  # scheduling slack on every deadline (reaperctl round trips, a loaded 2-core machine)


def relay_daemon(daemon_factory, upstream, poll, defaults=None, **keys):
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", upstream, **keys)],
                       daemon_keys={"poll_interval": poll}, defaults=defaults)
    return d.start()


def small_send_buffer_toward(d, client, size=64 * KiB):
    """Fixes SO_SNDBUF of reaperd's socket toward `client` small: bytes then
    leave the relay in small steps (not multi-megabyte bursts that empty its
    upstream socket each time), so the upstream's FIN lands while plenty still
    waits inside reaperd, as on a host with a small tcp_wmem."""
    set_send_buffer(d.proc.pid, socket_inode(d.proc.pid, peer_port=client.getsockname()[1]), size)


def upstream_socket_inode(d, up, kind):
    """The inode of reaperd's socket toward upstream `up`, waited for while it
    is connected (a closed socket has no peer name)."""
    def find():
        try:
            if kind == "tcp":
                return socket_inode(d.proc.pid, peer_port=up.port)
            return socket_inode(d.proc.pid, peer_path=up.path)
        except AssertionError:
            return None
    return wait_for(find, timeout=5, what="reaperd's upstream socket")


def answering_handler(answer, seen):
    """An upstream that reads the request to its FIN and writes all of `answer`
    at once; the harness then closes the socket: FIN after the last byte."""

    def handler(conn):
        seen["request"] = read_request(conn)
        conn.settimeout(30)
        conn.sendall(answer)
        seen["sent"] = True

    return handler


def assert_closed_not_reaped(d):
    """The connection ended as an ordinary close: counted as closed, no reap
    counted, no reap record in the log."""
    entry = wait_counter(d, "r", ("closed",), 1)
    assert sum(entry["reaped"].values()) == 0, f"a graceful close was counted as a reap: {entry['reaped']}"
    records = reap_records(d.log())
    assert records == [], f"a graceful close was logged as a reap: {[r['_line'] for r in records]}"
    assert entry["open"] == 0


# ---------------------------------------------------------------- 1. no truncation after a half-close

@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_download_after_client_half_close_reaches_a_slow_reader(daemon_factory, tmp_path, kind):
    """The client sends a request and half-closes (nc -N); the upstream answers
    16 MiB and closes; the client reads at 4 MiB/s: every byte, then EOF."""
    size = 16 * MiB
    answer = pattern(11, size)
    seen = {}
    up = make_upstream(kind, answering_handler(answer, seen), tmp_path)
    try:
        d = relay_daemon(daemon_factory, up.address, poll="100ms")
        s = connect_small(d.address("r"), rcvbuf=64 * KiB)
        try:
            wait_for(lambda: d.connections("r"), timeout=5, what="the connection to be tracked")
            small_send_buffer_toward(d, s)
            s.sendall(b"GET /big\n")
            s.shutdown(socket.SHUT_WR)
            reader = PacedReader(s, rate=4 * MiB)
            how = reader.run(timeout=20)
        finally:
            s.close()
        assert seen.get("request") == b"GET /big\n"
        assert seen.get("sent"), "the upstream could not write its whole answer"
        assert (reader.got, reader.hexdigest) == (size, sha256(answer)), (
            f"client received {reader.got} of {size} bytes, then {how}: the answer was cut")
        assert how == "eof"
        assert_closed_not_reaped(d)
    finally:
        up.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_upload_after_upstream_half_close_reaches_a_slow_upstream(daemon_factory, tmp_path, kind):
    """The upstream greets and half-closes; the client sends 8 MiB and
    half-closes; the upstream reads at 3 MiB/s: every byte, then EOF."""
    size = 8 * MiB
    body = pattern(12, size)
    seen = {}
    done = threading.Event()

    def handler(conn):
        conn.sendall(b"GREETING\n")
        conn.shutdown(socket.SHUT_WR)
        seen["how"], seen["got"], seen["hash"] = paced_upstream_read(conn, rate=3 * MiB, timeout=20)
        done.set()

    up = make_upstream(kind, handler, tmp_path, rcvbuf=64 * KiB)
    try:
        d = relay_daemon(daemon_factory, up.address, poll="100ms")
        s = connect(d.address("r"))
        try:
            how, data, _ = read_until_closed(s, timeout=5)
            assert (how, data) == ("eof", b"GREETING\n")
            # Toward the slow upstream, too, the relay moves bytes in small steps.
            set_send_buffer(d.proc.pid, upstream_socket_inode(d, up, kind), 64 * KiB)
            thread, result = send_in_thread(s, body, timeout=20)
            thread.join(25)
            assert result["done"], f"client could not send its body: {result['error']}"
            s.shutdown(socket.SHUT_WR)
            assert done.wait(25), "the upstream did not finish reading"
            assert (seen["got"], seen["hash"]) == (size, sha256(body)), (
                f"upstream received {seen['got']} of {size} bytes, then {seen['how']}: the upload was cut")
            assert seen["how"] == "eof"
        finally:
            s.close()
        assert_closed_not_reaped(d)
    finally:
        up.close()


# ---------------------------------------------------------------- 2. no busy loop on EPOLLHUP

@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_no_busy_loop_while_a_closed_upstream_waits_for_a_paused_client(daemon_factory, tmp_path, kind):
    """Both FINs are exchanged on reaperd's upstream socket while bytes are still
    queued on it for a client that has paused reading: epoll reports EPOLLHUP on
    that socket at every wait, and reaperd must not spin on it. The sweep is 30 s
    and every timeout long, so nothing else ends the connection meanwhile."""
    size = 8 * MiB
    answer = pattern(13, size)

    def handler(conn):
        read_request(conn)
        # A Unix upstream's unread bytes wait in reaperd's receive queue, counted
        # against this send buffer: make room for plenty.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 * MiB)
        conn.settimeout(30)
        conn.sendall(answer)  # then closed by the harness

    up = make_upstream(kind, handler, tmp_path)
    try:
        d = relay_daemon(daemon_factory, up.address, poll="30s", half_close_timeout="10min")
        pid = d.proc.pid
        s = connect_small(d.address("r"), rcvbuf=64 * KiB)
        try:
            s.sendall(b"GET /big\n")

            inode = upstream_socket_inode(d, up, kind)
            small_send_buffer_toward(d, s)
            s.shutdown(socket.SHUT_WR)

            def upstream_closed_with_bytes_queued():
                if up.closed_count < 1:
                    return False
                queue = socket_queue(pid, inode)
                if queue is None:
                    return False  # reaperd closed it: the reader will see where it ends
                state, inq = queue
                return inq > 0 and (state is None or state == TCP_CLOSE)

            # Read slowly until the upstream has written everything and closed
            # while bytes still wait on reaperd's side of it; then pause. The
            # FIN arrives only once the rest fits reaperd's receive queue, which
            # then empties at the reader's pace: at 4 MiB/s that window was
            # about one check long and the reader sometimes read on to EOF
            # (3 of 8 runs on a quiet machine); at 1 MiB/s it is several.
            reader = PacedReader(s, rate=1 * MiB)
            how = reader.run(timeout=20, stop_when=upstream_closed_with_bytes_queued, check_every=0.05)
            assert how == "stopped", (
                f"precondition: the upstream never closed with bytes queued in reaperd "
                f"(client read {reader.got} bytes, then {how})")
            before = socket_queue(pid, inode)
            cpu_before = d.cpu_seconds()
            paused_at = time.monotonic()
            time.sleep(3.0)
            cpu = d.cpu_seconds() - cpu_before
            paused = time.monotonic() - paused_at
            after = socket_queue(pid, inode)
            print(f"{kind}: paused after {reader.got} bytes; reaperd's upstream socket (state, queued) "
                  f"{before} -> {after}; reaperd used {cpu:.2f}s CPU in {paused:.2f}s")
            # Resume: every byte still arrives.
            how = reader.run(timeout=20, rate=64 * MiB)
        finally:
            s.close()
        assert cpu < 0.05 * paused, (
            f"reaperd used {cpu:.2f}s CPU in {paused:.2f}s while the client paused and the upstream "
            f"had closed (busy loop on EPOLLHUP); the client then got {reader.got} of {size} bytes, {how}")
        assert (reader.got, reader.hexdigest) == (size, sha256(answer)), (
            f"client received {reader.got} of {size} bytes, then {how}")
        assert how == "eof"
        assert_closed_not_reaped(d)
    finally:
        up.close()


# ---------------------------------------------------------------- 3. half_close_timeout counts silence only

HALF_CLOSE = 2.0
POLL = 0.2
CHUNK = 64 * KiB


def streaming_handler(answer, seen, hold=None):
    """An upstream that reads the request to its FIN, then writes `answer`
    64 KiB every 100 ms; then closes, or with `hold` (an Event) stays open and
    silent until it is set."""

    def handler(conn):
        seen["request"] = read_request(conn)
        conn.settimeout(10)
        for offset in range(0, len(answer), CHUNK):
            conn.sendall(answer[offset:offset + CHUNK])
            time.sleep(0.1)
        seen["streamed"] = True
        if hold is not None:
            hold.wait(20)

    return handler


def test_half_close_timeout_spares_a_download_that_keeps_moving(daemon_factory):
    """half_close_timeout = 2 s; after the client's FIN the upstream streams for
    about 6 s, then closes: every byte arrives, then EOF, and nothing is reaped."""
    answer = pattern(14, 60 * CHUNK)  # 60 chunks, one per 100 ms
    seen = {}
    up = Upstream(streaming_handler(answer, seen))
    try:
        d = relay_daemon(daemon_factory, up.address, poll="200ms", half_close_timeout="2s")
        s = connect(d.address("r"))
        try:
            s.sendall(b"stream please\n")
            s.shutdown(socket.SHUT_WR)
            shut_at = time.monotonic()
            reader = PacedReader(s, rate=1 << 40)  # as fast as it comes
            how = reader.run(timeout=20)
            elapsed = time.monotonic() - shut_at
        finally:
            s.close()
        assert (reader.got, reader.hexdigest) == (len(answer), sha256(answer)), (
            f"client received {reader.got} of {len(answer)} bytes, then {how} {elapsed:.1f}s after its FIN, "
            f"although bytes kept moving (half_close_timeout = 2s); reaped: {d.listener('r')['reaped']}")
        assert how == "eof"
        assert_closed_not_reaped(d)
    finally:
        up.close()


@pytest.mark.parametrize("stream_seconds", [0, 3])
def test_half_close_timeout_reaps_once_the_open_direction_is_silent(daemon_factory, stream_seconds):
    """After the client's FIN the upstream streams for `stream_seconds` (or not
    at all), then holds its side open and silent: reaped with reason
    half-close-timeout 2 s after the last byte, within poll_interval + slack."""
    answer = pattern(15, stream_seconds * 10 * CHUNK)
    seen = {}
    hold = threading.Event()
    up = Upstream(streaming_handler(answer, seen, hold))
    try:
        d = relay_daemon(daemon_factory, up.address, poll="200ms", half_close_timeout="2s")
        s = connect(d.address("r"))
        try:
            s.sendall(b"stream then wait\n")
            s.shutdown(socket.SHUT_WR)
            shut_at = time.monotonic()
            reader = PacedReader(s, rate=1 << 40)
            how = reader.run(timeout=stream_seconds + 2 + HALF_CLOSE + POLL + SLACK + 3)
            closed_at = time.monotonic()
            port = s.getsockname()[1]
        finally:
            s.close()
            hold.set()
        silent_for = closed_at - (reader.last_byte_at or shut_at)
        print(f"stream {stream_seconds}s: closed {closed_at - shut_at:.2f}s after the FIN, "
              f"{silent_for:.2f}s after the last byte")
        assert (reader.got, reader.hexdigest) == (len(answer), sha256(answer)), (
            f"client received {reader.got} of {len(answer)} bytes, then {how} {closed_at - shut_at:.1f}s after "
            f"its FIN: reaped while bytes were moving; reaped: {d.listener('r')['reaped']}")
        assert how == "eof", f"client: {how} {closed_at - shut_at:.1f}s after its FIN"
        assert silent_for >= HALF_CLOSE - 0.2, (
            f"reaped {silent_for:.2f}s after the last byte, before half_close_timeout")
        assert silent_for <= HALF_CLOSE + POLL + SLACK, f"reaped only {silent_for:.2f}s after the last byte"
        entry = wait_counter(d, "r", ("reaped", "half-close-timeout"), 1)
        assert entry["reaped"] == {r: int(r == "half-close-timeout") for r in REASONS}, entry["reaped"]
        records = reap_records(d.log())
        assert [(r["reason"], r["peer"]) for r in records] == [("half-close-timeout", f"127.0.0.1:{port}")], records
    finally:
        up.close()


# ---------------------------------------------------------------- 4. a slow reader outlives every deadline

def test_slow_reader_outlives_every_deadline(daemon_factory):
    """Keepalive 1 s / 1 s / 2 (user_timeout auto = 3 s), half_close_timeout 2 s,
    sweeps every 200 ms; the client half-closes and reads a 5 MiB answer at
    640 KiB/s (about 8 s): a slow but living reader is never reaped."""
    size = 5 * MiB
    answer = pattern(16, size)
    seen = {}
    up = Upstream(answering_handler(answer, seen))
    try:
        keepalive = {"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": 2}
        d = relay_daemon(daemon_factory, up.address, poll="200ms", defaults=keepalive, half_close_timeout="2s")
        s = connect_small(d.address("r"), rcvbuf=32 * KiB)
        try:
            wait_for(lambda: d.connections("r"), timeout=5, what="the connection to be tracked")
            small_send_buffer_toward(d, s)
            s.sendall(b"GET /slowly\n")
            s.shutdown(socket.SHUT_WR)
            shut_at = time.monotonic()
            reader = PacedReader(s, rate=640 * KiB)
            how = reader.run(timeout=25)
            elapsed = time.monotonic() - shut_at
        finally:
            s.close()
        assert (reader.got, reader.hexdigest) == (size, sha256(answer)), (
            f"client received {reader.got} of {size} bytes, then {how} {elapsed:.1f}s after its FIN; "
            f"reaped: {d.listener('r')['reaped']}")
        assert how == "eof"
        assert_closed_not_reaped(d)
    finally:
        up.close()
