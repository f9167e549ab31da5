"""Reload, restart after kill -9, SIGTERM drain, connection limits."""
import os
import resource
import re
import signal
import socket
import subprocess
import time
import warnings

from conftest import Upstream, connect, free_port, listener_section, recv_exactly, round_trip, wait_for
from helpers_core import (
    TCP_FIN_WAIT2, TCP_TIME_WAIT, ProcessSockets, close_all, closed_by_peer, connect_refused, pattern, raise_nofile,
    read_until_closed, recv_hash, sha256, tcp_states_on_port, wait_counter, wait_open,
)


def all_relay(sockets, tag):
    bad = [i for i, s in enumerate(sockets) if not round_trip(s, f"{tag} {i}\n".encode(), timeout=5)]
    assert bad == [], f"{len(bad)} of {len(sockets)} connections no longer relay: {bad[:10]}"


def open_clients(address, count):
    sockets = []
    try:
        for _ in range(count):
            sockets.append(connect(address))
    except BaseException:
        close_all(sockets)
        raise
    return sockets


# ---------------------------------------------------------------- reload

def test_reload_adds_and_removes_listeners_without_dropping_connections(daemon_factory, echo_upstream):
    raise_nofile(1024)
    up = echo_upstream.address
    # Three loopback addresses, so each listener's `listen =` text is distinct
    # (the same-text case is test_reload_adds_listener_with_same_listen_text).
    keep = listener_section("keep", "127.0.0.1:0", "relay", up)
    gone = listener_section("gone", "127.0.0.2:0", "relay", up)
    d = daemon_factory([keep, gone]).start()
    keep_address, gone_address = d.address("keep"), d.address("gone")
    sockets = []
    try:
        kept = open_clients(keep_address, 50)
        sockets += kept
        on_gone = open_clients(gone_address, 10)
        sockets += on_gone
        all_relay(sockets, "before")
        assert d.status()["connections"] == 60

        # `keep` stays as it is, `gone` goes, `fresh` comes.
        d.write_config([keep, listener_section("fresh", "127.0.0.3:0", "echo")])
        result = d.ctl("reload")
        assert result.returncode == 0, result.stderr

        assert connect_refused(gone_address), "the removed listener still accepts"
        fresh = connect(d.address("fresh"))
        sockets.append(fresh)
        assert round_trip(fresh, b"new listener\n")
        all_relay(kept + on_gone, "after")
        assert d.address("keep") == keep_address
        newcomer = connect(keep_address)
        sockets.append(newcomer)
        assert round_trip(newcomer, b"keep still accepts\n")

        status = d.status()
        assert status["connections"] == 62
        by_name = {l["name"]: l for l in status["listeners"]}
        assert by_name["gone"]["configured"] is False and by_name["gone"]["addresses"] == []
        assert by_name["gone"]["open"] == 10
        assert by_name["keep"]["open"] == 51 and by_name["fresh"]["open"] == 1
        for entry in by_name.values():
            assert entry["closed"] == 0 and sum(entry["reaped"].values()) == 0, entry
    finally:
        close_all(sockets)
    wait_counter(d, "gone", ("closed",), 10)
    wait_counter(d, "keep", ("closed",), 51)


def test_reload_adds_listener_with_same_listen_text(daemon_factory, echo_upstream):
    """Two listeners may both say `listen = 127.0.0.1:0` (each gets its own port).
    A reload that adds the second one must bind it, and must leave the first one's
    socket with the first listener."""
    first = listener_section("first", "127.0.0.1:0", "relay", echo_upstream.address)
    d = daemon_factory([first]).start()
    first_address = d.address("first")
    s = connect(first_address)
    try:
        assert round_trip(s, b"first\n")
        d.write_config([first, listener_section("second", "127.0.0.1:0", "echo")])
        result = d.ctl("reload")
        assert result.returncode == 0, result.stderr
        by_name = {l["name"]: l for l in d.status()["listeners"]}
        assert len(by_name["second"]["addresses"]) == 1, f"listener second was not bound: {by_name}"
        assert d.address("first") == first_address
        second_address = d.address("second")
        assert second_address != first_address
        t = connect(second_address)
        try:
            assert round_trip(t, b"second\n")
        finally:
            t.close()
        u = connect(first_address)
        try:
            assert round_trip(u, b"first again\n")
        finally:
            u.close()
        assert round_trip(s, b"first still\n")
    finally:
        s.close()


def test_unchanged_reload_keeps_each_listener_on_its_own_socket(daemon_factory, echo_upstream):
    """Two listeners both written `listen = 127.0.0.1:0`: a reload of the same
    file must leave each listener with the port it had."""
    tagger = Upstream(lambda conn: conn.sendall(b"relayed\n") or conn.recv(1))
    try:
        d = daemon_factory([listener_section("a", "127.0.0.1:0", "relay", tagger.address),
                            listener_section("b", "127.0.0.1:0", "echo")]).start()
        a, b = d.address("a"), d.address("b")
        result = d.ctl("reload")
        assert result.returncode == 0, result.stderr
        by_name = {l["name"]: [x["address"] for x in l["addresses"]] for l in d.status()["listeners"]}
        assert by_name == {"a": [f"127.0.0.1:{a[1]}"], "b": [f"127.0.0.1:{b[1]}"]}, by_name
        s = connect(b)
        try:
            assert round_trip(s, b"b still echoes\n"), "b's port no longer serves listener b"
        finally:
            s.close()
    finally:
        tagger.close()


def test_reload_changing_upstream_moves_new_connections_only(daemon_factory):
    def tagged(tag):
        def handler(conn):
            conn.settimeout(10)
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(tag + data)
        return handler

    old_up, new_up = Upstream(tagged(b"old:")), Upstream(tagged(b"new:"))
    try:
        d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", old_up.address)]).start()
        address = d.address("r")
        before = connect(address)
        try:
            before.sendall(b"x\n")
            assert recv_exactly(before, 6) == b"old:x\n"
            d.write_config([listener_section("r", "127.0.0.1:0", "relay", new_up.address,
                                             keepalive_idle="9s")])
            assert d.ctl("reload").returncode == 0
            assert d.address("r") == address
            assert d.listener("r")["upstream"] == new_up.address
            after = connect(address)
            try:
                after.sendall(b"y\n")
                assert recv_exactly(after, 6) == b"new:y\n"
            finally:
                after.close()
            # The established connection stays with the upstream it was relayed to.
            before.sendall(b"z\n")
            assert recv_exactly(before, 6) == b"old:z\n"
        finally:
            before.close()
    finally:
        old_up.close()
        new_up.close()


def test_invalid_reload_changes_nothing(daemon_factory, echo_upstream):
    d = daemon_factory([listener_section("a", "127.0.0.1:0", "relay", echo_upstream.address)]).start()
    address = d.address("a")
    s = connect(address)
    try:
        assert round_trip(s, b"before\n")
        good_config = d.config.read_text()
        # A valid new listener and a changed upstream, and one bad line: none of it may apply.
        lines = good_config.rstrip("\n").split("\n")
        lines += ["", "[listener:b]", "listen = 127.0.0.1:0", "mode = echo", "keepalive_idle = banana"]
        bad_line = len(lines)
        lines = [l.replace(f"upstream = {echo_upstream.address}", "upstream = 127.0.0.1:1") for l in lines]
        d.write_config("\n".join(lines) + "\n")

        # 1. reaperctl reload: refused, with FILE:LINE, exit non-zero.
        result = d.ctl("reload")
        assert result.returncode != 0
        assert f"{d.config}:{bad_line}:" in result.stderr, result.stderr
        status = d.status()
        assert [l["name"] for l in status["listeners"]] == ["a"]
        assert status["listeners"][0]["upstream"] == echo_upstream.address
        assert f"{d.config}:{bad_line}:" in status.get("last_reload_error", ""), status

        # 2. SIGHUP: the same refusal, logged with FILE:LINE; the daemon keeps running.
        log_size = len(d.log())
        d.signal(signal.SIGHUP)
        wait_for(lambda: f"{d.config}:{bad_line}:" in d.log()[log_size:], timeout=5,
                 what="the refused SIGHUP reload to be logged with FILE:LINE")
        assert d.proc.poll() is None
        assert [l["name"] for l in d.status()["listeners"]] == ["a"]

        # Nothing changed: the old connection relays to the old upstream, the port accepts.
        assert round_trip(s, b"after bad reloads\n")
        t = connect(address)
        try:
            assert round_trip(t, b"new client, old config\n")
        finally:
            t.close()
        entry = d.listener("a")
        assert entry["refused"]["upstream"] == 0

        # A good file is applied afterwards (so the refusals above were about the file).
        d.config.write_text(good_config + "\n" + listener_section("b", "127.0.0.2:0", "echo"))
        assert d.ctl("reload").returncode == 0
        b = connect(d.address("b"))
        try:
            assert round_trip(b, b"b\n")
        finally:
            b.close()
    finally:
        s.close()


def test_reload_of_a_fifo_is_refused_without_blocking_the_loop(daemon_factory):
    """The configuration path replaced by a FIFO: opening it would block the event
    loop until a writer appeared. The reload is refused at once instead."""
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    s = connect(d.address("e"))
    try:
        assert round_trip(s, b"before\n")
        d.config.unlink()
        os.mkfifo(d.config)
        started = time.monotonic()
        try:
            result = d.ctl("reload", timeout=10)
        except subprocess.TimeoutExpired:
            raise AssertionError("reaperctl reload blocked: the daemon is stuck opening the FIFO")
        assert time.monotonic() - started < 5.0
        assert result.returncode != 0
        assert f"{d.config}: not a regular file" in result.stderr, result.stderr
        assert d.proc.poll() is None
        assert round_trip(s, b"after\n")
        assert [l["name"] for l in d.status()["listeners"]] == ["e"]
    finally:
        s.close()


def test_reload_that_cannot_bind_changes_nothing(daemon_factory, echo_upstream):
    up = echo_upstream.address
    d = daemon_factory([listener_section("a", "127.0.0.1:0", "relay", up),
                        listener_section("b", "127.0.0.2:0", "echo")]).start()
    a_address, b_address = d.address("a"), d.address("b")
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = squatter.getsockname()[1]
    s = connect(b_address)
    try:
        # Removes `b` and adds `c` on a port that is taken: the whole reload is refused.
        d.write_config([listener_section("a", "127.0.0.1:0", "relay", up),
                        listener_section("c", f"127.0.0.1:{taken}", "echo")])
        result = d.ctl("reload")
        assert result.returncode != 0
        assert f"127.0.0.1:{taken}" in result.stderr, result.stderr
        names = [l["name"] for l in d.status()["listeners"]]
        assert names == ["a", "b"]
        assert d.listener("b")["configured"] is True
        assert d.address("b") == b_address
        assert round_trip(s, b"b survives\n")
        t = connect(b_address)
        try:
            assert round_trip(t, b"b still accepts\n")
        finally:
            t.close()
    finally:
        s.close()
        squatter.close()


# ---------------------------------------------------------------- kill -9 and restart

def test_kill9_then_immediate_restart_on_the_same_port(daemon_factory, echo_upstream):
    port = free_port()
    section = listener_section("r", f"127.0.0.1:{port}", "relay", echo_upstream.address)
    first = daemon_factory([section]).start()
    assert first.address("r") == ("127.0.0.1", port)
    with ProcessSockets(first.proc.pid) as ps:
        _, _, listening = ps.listening(port)
        assert listening.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
    sockets = open_clients(("127.0.0.1", port), 20)
    try:
        all_relay(sockets, "first life")
        wait_open(first, "r", 20)
        first.kill9()
        # The kernel closed the daemon's side first: each client reads EOF and
        # closes, and the daemon's old sockets on `port` wait in TIME_WAIT.
        for s in sockets:
            assert closed_by_peer(s, timeout=5)
    finally:
        close_all(sockets)
    # Under heavy load elsewhere the kernel may skip TIME_WAIT when its table is
    # full, and then any bind would succeed; SO_REUSEADDR is checked directly above.
    deadline = time.monotonic() + 2
    lingering = set()
    while not lingering and time.monotonic() < deadline:
        lingering = set(tcp_states_on_port(port)) & {TCP_TIME_WAIT, TCP_FIN_WAIT2}
        time.sleep(0.02)
    if not lingering:
        warnings.warn(f"no TIME_WAIT/FIN_WAIT2 sockets on port {port}: the restart proves less this time")

    started = time.monotonic()
    second = daemon_factory([section]).start()
    assert time.monotonic() - started < 5
    assert second.address("r") == ("127.0.0.1", port)
    again = open_clients(("127.0.0.1", port), 5)
    try:
        all_relay(again, "second life")
    finally:
        close_all(again)


# ---------------------------------------------------------------- SIGTERM

def slow_answer_handler(conn):
    """Answers each `SIZE DELAY\\n` request with SIZE pattern bytes after DELAY
    seconds: a database running a query. Any other line is echoed at once."""
    buffered = b""
    while True:
        data = conn.recv(65536)
        if not data:
            conn.shutdown(socket.SHUT_WR)
            return
        buffered += data
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            words = line.split()
            if len(words) == 2 and words[0].isdigit():
                time.sleep(float(words[1]))
                conn.sendall(pattern(int(words[0]), int(words[0])))
            else:
                conn.sendall(line + b"\n")


def test_sigterm_closes_idle_connections_at_once_and_waits_for_answers_under_way(daemon_factory):
    """An idle stop does not sit out shutdown_grace (it took 11.4 s with 10 s): every
    connection between exchanges is closed at once. A connection whose request is
    still being answered keeps relaying, receives every byte of an answer larger
    than every buffer on the way, and is closed as soon as the answer is through;
    reaperd exits then, long before the grace runs out."""
    up = Upstream(slow_answer_handler)
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", up.address),
                        listener_section("e", "127.0.0.1:0", "echo")],
                       daemon_keys={"shutdown_grace": "20s"}).start()
    idle = open_clients(d.address("r"), 5) + open_clients(d.address("e"), 3)
    busy = connect(d.address("r"))
    try:
        all_relay(idle, "before")
        assert round_trip(busy, b"warm-up\n")
        size, delay = 8 << 20, 1.5
        busy.sendall(f"{size} {delay}\n".encode())
        time.sleep(0.3)  # the request has reached the upstream, which is "running" it
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        for s in idle:
            how, data, seconds = read_until_closed(s, timeout=3)
            assert how == "eof" and data == b"", (how, data[:40])
            assert seconds < 1.0, f"an idle connection was closed {seconds:.2f}s after SIGTERM"
        got, digest = recv_hash(busy, size, timeout=15)
        assert (got, digest) == (size, sha256(pattern(size, size))), f"the answer lost bytes: {got} of {size}"
        how, data, _ = read_until_closed(busy, timeout=3)
        assert how == "eof" and data == b"", how
        d.proc.wait(10)
        elapsed = time.monotonic() - started
        assert d.proc.returncode == 0, d.log()[-2000:]
        assert elapsed < 6, f"exited {elapsed:.2f}s after SIGTERM, with the last answer through after ~{delay}s"
        # One line per worker, each counting its own connections.
        drained = re.findall(r"closed=(\d+) waiting=(\d+) grace=20s", d.log())
        assert drained and [sum(int(c) for c, _ in drained), sum(int(w) for _, w in drained)] == [8, 1], d.log()[-2000:]
    finally:
        close_all(idle + [busy])
        up.close()


def test_sigterm_waits_out_the_grace_for_an_unanswered_request(daemon_factory):
    """A request still unanswered at the deadline is cut off there: the grace bounds
    the stop. Meanwhile new clients are refused and the waiting one still relays."""
    up = Upstream(slow_answer_handler)
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", up.address)],
                       daemon_keys={"shutdown_grace": "1s"}).start()
    address = d.address("r")
    sockets = open_clients(address, 2)
    try:
        all_relay(sockets, "before")
        sockets[0].sendall(b"16 60\n")  # answered in a minute: never, here
        time.sleep(0.3)
        started = time.monotonic()
        d.signal(signal.SIGTERM)
        wait_for(lambda: connect_refused(address, timeout=1), timeout=1, what="the listener to close on SIGTERM")
        assert closed_by_peer(sockets[1], timeout=0.5), "the idle connection was not closed at once"
        d.proc.wait(5)
        elapsed = time.monotonic() - started
        assert d.proc.returncode == 0, d.log()[-2000:]
        assert 0.8 <= elapsed <= 3.0, f"exited {elapsed:.2f}s after SIGTERM with shutdown_grace = 1s"
        how, data, _ = read_until_closed(sockets[0], timeout=2)
        assert how in ("eof", "reset") and data == b"", how
    finally:
        close_all(sockets)
        up.close()


def test_sigterm_without_connections_exits_promptly(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")],
                       daemon_keys={"shutdown_grace": "10s"}).start()
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    d.proc.wait(5)
    elapsed = time.monotonic() - started
    assert d.proc.returncode == 0
    assert elapsed < 1.0, f"exited {elapsed:.2f}s after SIGTERM with nothing to drain"


def test_clean_stop_removes_the_control_socket_it_made(daemon_factory, tmp_path):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    assert os.path.exists(d.control)
    assert d.stop() == 0
    assert not os.path.exists(d.control), "the control socket was left behind after SIGTERM"

    # A socket someone else has put at the path since is not ours to remove.
    d2 = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    os.rename(d2.control, d2.control + ".moved")
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(d2.control)
        assert d2.stop() == 0
        assert os.path.exists(d2.control), "reaperd removed a control socket that was not its own"
    finally:
        other.close()

    # A start that fails after the control socket was made removes it too.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d3 = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")],
                            daemon_keys={"metrics": f"127.0.0.1:{port}"})
        d3.start(wait=False)
        assert d3.proc.wait(10) != 0
    assert "metrics" in d3.log(), d3.log()
    assert not os.path.exists(d3.control), "a failed start left its control socket behind"


def test_sigint_stops_too(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    d.signal(signal.SIGINT)
    d.proc.wait(5)
    assert d.proc.returncode == 0


# ---------------------------------------------------------------- limits

def test_max_connections_per_listener(daemon_factory, echo_upstream):
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", echo_upstream.address,
                                         max_connections=5)]).start()
    address = d.address("r")
    served = open_clients(address, 5)
    extra = []
    try:
        wait_open(d, "r", 5)
        all_relay(served, "served")
        extra = open_clients(address, 5)
        for s in extra:
            how, data, seconds = read_until_closed(s, timeout=3)
            assert how in ("eof", "reset") and data == b"", how
            assert seconds < 1.0, f"refused client closed only after {seconds:.2f}s"
        entry = wait_counter(d, "r", ("refused", "limit"), 5)
        assert entry["accepted"] == 5 and entry["open"] == 5
        assert len(echo_upstream.accepted) == 5
        all_relay(served, "still served")
        # A slot freed is a slot available.
        served[0].close()
        wait_open(d, "r", 4)
        late = connect(address)
        served[0] = late
        assert round_trip(late, b"a freed slot\n")
        assert d.listener("r")["refused"]["limit"] == 5
    finally:
        close_all(served + extra)


def test_max_connections_global(daemon_factory, echo_upstream):
    up = echo_upstream.address
    d = daemon_factory([listener_section("a", "127.0.0.1:0", "relay", up),
                        listener_section("b", "127.0.0.1:0", "echo")],
                       daemon_keys={"max_connections": 4}).start()
    a, b = d.address("a"), d.address("b")
    served = []
    extra = []
    try:
        served += open_clients(a, 3)
        served += open_clients(b, 1)
        wait_for(lambda: d.status()["connections"] == 4, timeout=5, what="4 connections")
        extra += open_clients(b, 2)
        extra += open_clients(a, 1)
        for s in extra:
            how, data, seconds = read_until_closed(s, timeout=3)
            assert how in ("eof", "reset") and data == b"", how
            assert seconds < 1.0
        wait_counter(d, "b", ("refused", "limit"), 2)
        wait_counter(d, "a", ("refused", "limit"), 1)
        assert d.status()["connections"] == 4
        all_relay(served, "served")
    finally:
        close_all(served + extra)


def test_descriptor_exhaustion_pauses_accepting_without_spinning(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo")]).start()
    address = d.address("e")
    pid = d.proc.pid
    base = d.fd_count()
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (base + 5, hard))
    sockets = []
    try:
        # The kernel completes the handshake of all 8; reaperd can only take 5.
        sockets = open_clients(address, 8)
        wait_for(lambda: d.fd_count() >= base + 5, timeout=5, what="reaperd to run out of descriptors")
        wait_for(lambda: "out of file descriptors" in d.log(), timeout=5, what="the exhaustion warning")
        cpu_before = d.cpu_seconds()
        time.sleep(2.0)
        burnt = d.cpu_seconds() - cpu_before
        assert burnt < 0.3, f"reaperd burnt {burnt:.2f}s of CPU in 2s while out of descriptors"
        assert d.proc.poll() is None
        # Descriptors come back: the queued clients are served.
        close_all(sockets[:5])
        for i, s in enumerate(sockets[5:]):
            assert round_trip(s, f"queued {i}\n".encode(), timeout=5), f"queued client {i} was never served"
    finally:
        close_all(sockets)
        if d.proc.poll() is None:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: d.ctl("status").returncode == 0, timeout=5, what="the control socket to answer again")
    assert d.listener("e")["accepted"] == 8
