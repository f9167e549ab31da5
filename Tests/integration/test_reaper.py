"""The reaper (issue 3, SPEC §2, §5, §6): half-open peers made real with nft
(Vanish), reaped within the SPEC §5 deadlines with the right reason, both sides
closed, one log record per reap; ordinary closes are not reaps; reaperctl and
the metrics page tell the truth and survive garbage.

Timing: keepalive 1 s / 1 s / 2 and poll_interval 200 ms, so the SPEC §5
deadlines are 1 + 1*2 + 0.2 = 3.2 s (idle vanish) and user_timeout (auto =
3 s) + 0.2 = 3.2 s (data in flight). Every deadline assertion adds SLACK =
1.5 s for scheduling (reaperctl round trips, Python threads, a loaded CI
machine); a reaper that only noticed on some later, unrelated event would
still miss it.
"""
import random
import socket
import struct
import threading
import time

import pytest

from conftest import Upstream, echo_handler, listener_section, round_trip, recv_exactly, free_port, wait_for
from helpers_reaper import (
    Metrics, Recorder, check_reap_record, control_exchange, drop_flow, get_metrics, http_exchange, read_all, read_tag,
    reap_records, tagged_client, tagged_echo, wait_closed_by_peer,
)

POLL = 0.2
KEEPALIVE = {"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": 2}
IDLE_DEADLINE = 1 + 1 * 2 + POLL  # keepalive_idle + interval * count + poll_interval
USER_TIMEOUT_DEADLINE = 3.0 + POLL  # user_timeout (auto = 1 + 1*2 s) + poll_interval
SLACK = 1.5  # scheduling slack on every deadline, see the module docstring
REASONS = ("keepalive", "user-timeout", "idle-timeout", "half-close-timeout", "upstream-dead", "admin", "crash-loss")


@pytest.fixture
def upstreams():
    made = []

    def make(handler):
        up = Upstream(handler)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close()


@pytest.fixture
def sockets():
    """Client sockets to close at the end, whatever happened."""
    held = []
    yield held
    for s in held:
        try:
            s.close()
        except OSError:
            pass


def start_daemon(factory, listeners, defaults=None, metrics_port=None):
    keys = {"poll_interval": "200ms"}
    if metrics_port:
        keys["metrics"] = f"127.0.0.1:{metrics_port}"
    d = factory(listeners, daemon_keys=keys, defaults=dict(KEEPALIVE if defaults is None else defaults))
    d.start()
    return d


def relay(name, upstream, **keys):
    return listener_section(name, "127.0.0.1:0", upstream=upstream.address, **keys)


def settle_acks(s):
    """Makes sure the client has acknowledged everything it received, so that a
    vanish right after leaves nothing in flight toward it: TCP_QUICKACK sends a
    pending delayed ACK at once, and the pause outlasts the delayed-ACK timer
    (200 ms at most) anyway. Without this the daemon may retransmit the last echo
    to a vanished client, and the kernel kills it by user timeout, not keepalive."""
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def rows_by_port(d):
    return {int(row["peer"].rsplit(":", 1)[1]): row for row in d.connections()}


def reaped(d, name):
    return d.listener(name)["reaped"]


def expect_reaped_only(d, name, **counts):
    """The listener's reaped{} counters: exactly these, every other reason 0."""
    got = reaped(d, name)
    want = {reason: counts.get(reason.replace("-", "_"), 0) for reason in REASONS}
    assert got == want, f"reaped counters {got}, expected {want}"


def records_for(d, peer_port):
    return [r for r in reap_records(d.log()) if r["peer"] == f"127.0.0.1:{peer_port}"]


def watch_until_gone(d, ids, timeout):
    """Polls `connections --json` until every id is gone; returns id -> monotonic
    time it was first seen missing."""
    gone_at = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(gone_at) < len(ids):
        present = {row["id"] for row in d.connections()}
        now = time.monotonic()
        for i in ids:
            if i not in present and i not in gone_at:
                gone_at[i] = now
        time.sleep(0.05)
    return gone_at


# ---------------------------------------------------------------- keepalive


def test_five_of_ten_idle_clients_vanish_and_are_reaped_by_keepalive(daemon_factory, vanish, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec))
    d = start_daemon(daemon_factory, [relay("pg", up)])
    address = d.address("pg")
    tags = [f"c{i}" for i in range(10)]
    clients = {}
    connected_at = {}
    for tag in tags:
        clients[tag] = tagged_client(address, tag)
        sockets.append(clients[tag])
        connected_at[tag] = time.monotonic()
    ports = {tag: s.getsockname()[1] for tag, s in clients.items()}
    wait_for(lambda: len(rec.daemon_ports) == 10, timeout=5, what="10 upstream connections")
    rows = rows_by_port(d)
    ids = {tag: rows[ports[tag]]["id"] for tag in tags}
    assert all(rows[ports[tag]]["health"] in ("idle", "active") for tag in tags), rows

    vanishing = tags[0::2]
    survivors = tags[1::2]
    last_packet = {}
    for tag in vanishing:
        # The client's last packets: a round trip and its ACK; then the cable is pulled.
        assert round_trip(clients[tag], b"last\n")
        settle_acks(clients[tag])
        last_packet[tag] = time.monotonic()
    time.sleep(0.25)
    for tag in vanishing:
        drop_flow(vanish, ports[tag], address[1])

    gone_at = watch_until_gone(d, [ids[t] for t in vanishing], IDLE_DEADLINE + SLACK + 1)
    wait_for(lambda: rec.ended_tags() >= set(vanishing), timeout=SLACK, what="upstream sides of the vanished clients")

    timings = {}
    for tag in vanishing:
        assert ids[tag] in gone_at, f"{tag} (port {ports[tag]}) was never reaped"
        after = gone_at[ids[tag]] - last_packet[tag]
        upstream_after = rec.ended[tag][0] - last_packet[tag]
        timings[tag] = (round(after, 2), round(upstream_after, 2))
        # Not before the kernel can know (idle 1 s + at least one unanswered probe) ...
        assert after >= 2.0, f"{tag} reaped {after:.2f}s after its last packet: too early to be keepalive"
        # ... and within the SPEC §5 deadline (+ slack), upstream side included.
        assert after <= IDLE_DEADLINE + SLACK, f"{tag} reaped {after:.2f}s after its last packet"
        assert upstream_after <= IDLE_DEADLINE + SLACK, f"{tag}'s upstream closed {upstream_after:.2f}s after"
    print(f"vanish -> reaped (reaperctl), -> upstream EOF/RST seconds: {timings}")

    # The survivors still relay, and their upstream sockets were left alone.
    for tag in survivors:
        ok = round_trip(clients[tag], f"still {tag}\n".encode())
        assert ok, (f"survivor {tag} (port {ports[tag]}, upstream side {rec.daemon_ports[tag]}) no longer relays; "
                    f"dropped {[ports[t] for t in vanishing]}; upstream ends {rec.ended}; log:\n{d.log()[-3000:]}")
    assert rec.ended_tags() == set(vanishing), f"upstream sides closed: {rec.ended}"
    rows = rows_by_port(d)
    assert sorted(rows) == sorted(ports[t] for t in survivors), rows
    assert all(rows[ports[t]]["health"] in ("idle", "active") for t in survivors), rows

    listener = d.listener("pg")
    expect_reaped_only(d, "pg", keepalive=5)
    assert listener["accepted"] == 10 and listener["closed"] == 0, listener
    assert d.status()["reaped_since_start"] == 5

    records = reap_records(d.log())
    assert len(records) == 5, "\n".join(r["_line"] for r in records)
    for tag in vanishing:
        mine = [r for r in records if r["peer"] == f"127.0.0.1:{ports[tag]}"]
        assert len(mine) == 1, f"{tag}: {len(mine)} reap records"
        record = mine[0]
        sent = len(f"{tag}\n") + len(b"last\n")
        check_reap_record(record, listener="pg", peer_port=ports[tag], upstream=up.address, reason="keepalive",
                          bytes_in=sent, bytes_out=sent)
        assert int(record["connection_id"]) == ids[tag]
        assert 1 <= int(record["probes"]) <= 2, record["_line"]
        age = gone_at[ids[tag]] - connected_at[tag]
        idle = gone_at[ids[tag]] - last_packet[tag]
        assert abs(int(record["age_sec"]) - age) <= 1.5, (record["_line"], age)
        assert abs(int(record["idle_sec"]) - idle) <= 1.5, (record["_line"], idle)


def test_vanish_with_data_in_flight_is_reaped_as_user_timeout(daemon_factory, vanish, upstreams, sockets):
    rec = Recorder()
    stop = threading.Event()

    def streamer(conn):
        tag, _ = read_tag(conn)
        rec.register(tag, conn)
        conn.settimeout(20)
        chunk = b"z" * 65536
        try:
            conn.sendall(tag.encode() + b"\n")
            while not stop.is_set():
                conn.sendall(chunk)
            rec.end(tag, "stopped")
        except ConnectionResetError:
            rec.end(tag, "reset")
        except OSError as error:
            rec.end(tag, f"error {error!r}")

    up = upstreams(streamer)
    d = start_daemon(daemon_factory, [relay("pg", up)])
    try:
        client = tagged_client(d.address("pg"), "s1")
        sockets.append(client)
        port = client.getsockname()[1]
        received = [0]

        def reader():
            client.settimeout(0.3)
            while not stop.is_set():
                try:
                    data = client.recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    return
                if not data:
                    return
                received[0] += len(data)

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        wait_for(lambda: received[0] > 4 << 20, timeout=10, what="4 MiB streamed to the client")
        [row] = d.connections()
        drop_flow(vanish, port, d.address("pg")[1])
        dropped_at = time.monotonic()

        gone_at = watch_until_gone(d, [row["id"]], USER_TIMEOUT_DEADLINE + SLACK + 1)
        assert row["id"] in gone_at, "the client that vanished mid-stream was never reaped"
        after = gone_at[row["id"]] - dropped_at
        print(f"vanish with data in flight -> reaped after {after:.2f}s")
        # TCP_USER_TIMEOUT is 3 s: the kernel cannot give up much before that.
        assert after >= 2.5, f"reaped {after:.2f}s after the vanish: before the user timeout could fire"
        assert after <= USER_TIMEOUT_DEADLINE + SLACK, f"reaped {after:.2f}s after the vanish"
        wait_for(lambda: "s1" in rec.ended, timeout=SLACK, what="the upstream side to be closed")

        expect_reaped_only(d, "pg", user_timeout=1)
        [record] = records_for(d, port)
        check_reap_record(record, listener="pg", peer_port=port, upstream=up.address, reason="user-timeout",
                          bytes_in=3)
        assert int(record["bytes_out"]) >= received[0], (record["_line"], received[0])
    finally:
        stop.set()


def test_probing_shows_while_probes_go_unanswered(daemon_factory, vanish, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec))
    # 1 s / 1 s / 5: probes go out at 1, 2, 3, 4, 5 s of silence; the kernel gives
    # up at 6 s (user_timeout auto = 6 s), so `probing` lasts about 5 s.
    d = start_daemon(daemon_factory, [relay("pg", up)],
                     defaults={"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": 5})
    address = d.address("pg")
    lost = tagged_client(address, "lost")
    healthy = tagged_client(address, "healthy")
    sockets.extend([lost, healthy])
    lost_port, healthy_port = lost.getsockname()[1], healthy.getsockname()[1]
    rows = rows_by_port(d)
    assert rows[lost_port]["health"] in ("idle", "active") and rows[lost_port]["probes"] == 0, rows
    lost_id = rows[lost_port]["id"]

    assert round_trip(lost, b"bye\n")
    settle_acks(lost)
    last_packet = time.monotonic()
    time.sleep(0.25)
    drop_flow(vanish, lost_port, address[1])

    seen = []  # (seconds since last packet, health, probes)
    gone_after = None
    deadline = last_packet + 6.0 + POLL + SLACK + 1
    while time.monotonic() < deadline:
        rows = rows_by_port(d)
        now = time.monotonic() - last_packet
        assert healthy_port in rows, "the healthy connection disappeared"
        # Its probes are answered at once: never probing, never dead.
        assert rows[healthy_port]["health"] in ("idle", "active"), rows[healthy_port]
        if lost_port not in rows:
            gone_after = now
            break
        seen.append((round(now, 2), rows[lost_port]["health"], rows[lost_port]["probes"]))
        time.sleep(0.1)

    probing = [s for s in seen if s[1] == "probing"]
    print(f"probing rows (seconds, health, probes): {probing[:1]} ... {probing[-1:]}; reaped after {gone_after}")
    assert probing, f"never saw health 'probing' while probes went unanswered: {seen}"
    assert all(p >= 1 for _, _, p in probing), probing
    first = probing[0][0]
    assert first <= 1.0 + POLL + SLACK, f"'probing' first shown {first}s after the last packet"
    assert max(p for _, _, p in probing) >= 3, f"probe count did not climb: {probing}"
    counts = [p for _, _, p in seen]
    assert counts == sorted(counts), f"probe count went backwards: {seen}"
    assert all(h != "dead" for _, h, _ in seen[: len(seen) - 1]), seen

    assert gone_after is not None, "the vanished client was never reaped"
    # Probing is suspicion, not death: reaperd must wait for the kernel's verdict.
    assert gone_after >= 4.5, f"reaped {gone_after:.2f}s after the last packet, while still probing"
    assert gone_after <= 1 + 1 * 5 + POLL + SLACK
    expect_reaped_only(d, "pg", keepalive=1)
    [record] = records_for(d, lost_port)
    check_reap_record(record, listener="pg", peer_port=lost_port, upstream=up.address, reason="keepalive",
                      bytes_in=len(b"lost\nbye\n"), bytes_out=len(b"lost\nbye\n"))
    assert int(record["connection_id"]) == lost_id
    assert int(record["probes"]) >= 3, record["_line"]
    assert round_trip(healthy, b"still here\n")


# ---------------------------------------------------------------- other reasons


def test_idle_timeout_reaps_idle_but_not_active(daemon_factory, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec))
    d = start_daemon(daemon_factory, [relay("pg", up, idle_timeout="1s")])
    address = d.address("pg")
    active = tagged_client(address, "active")
    idle = tagged_client(address, "idle")
    sockets.extend([active, idle])
    last_packet = time.monotonic()
    idle_port = idle.getsockname()[1]

    results = []

    def chatter():
        for i in range(10):  # one round trip every 300 ms for 3 s
            results.append(round_trip(active, f"tick {i}\n".encode(), timeout=2))
            time.sleep(0.3)

    thread = threading.Thread(target=chatter, daemon=True)
    thread.start()
    how = wait_closed_by_peer(idle, 1 + POLL + SLACK + 1)
    closed_after = time.monotonic() - last_packet
    thread.join(10)
    print(f"idle-timeout 1s: idle client closed after {closed_after:.2f}s")
    assert how == "eof", f"idle client: {how} after {closed_after:.2f}s"
    assert closed_after >= 0.9, f"reaped {closed_after:.2f}s after its last byte, before idle_timeout"
    assert closed_after <= 1 + POLL + SLACK
    assert not thread.is_alive() and results == [True] * 10, f"active connection round trips: {results}"
    wait_for(lambda: "idle" in rec.ended, timeout=2, what="the idle connection's upstream side to close")
    assert "active" not in rec.ended
    assert list(rows_by_port(d)) == [active.getsockname()[1]]

    expect_reaped_only(d, "pg", idle_timeout=1)
    [record] = records_for(d, idle_port)
    check_reap_record(record, listener="pg", peer_port=idle_port, upstream=up.address, reason="idle-timeout",
                      bytes_in=len(b"idle\n"), bytes_out=len(b"idle\n"))
    assert int(record["idle_sec"]) >= 1, record["_line"]


def test_half_close_timeout(daemon_factory, upstreams, sockets):
    state = {}
    poke = threading.Event()

    def never_closes(conn):
        tag, rest = read_tag(conn)
        conn.sendall(tag.encode() + b"\n")
        got = rest
        while True:
            data = conn.recv(4096)
            if not data:
                break
            got += data
        state["read"] = got
        state["eof_at"] = time.monotonic()
        # Holds its side open; when poked, writes: a closed peer answers with RST.
        if not poke.wait(15):
            return
        # (recv would return the old EOF at once: keep writing until the RST shows.)
        try:
            for _ in range(30):
                conn.sendall(b"late")
                time.sleep(0.1)
            state["after_poke"] = "still open after 3 s of writes"
        except (ConnectionResetError, BrokenPipeError):
            state["after_poke"] = "reset"

    up = upstreams(never_closes)
    d = start_daemon(daemon_factory, [relay("pg", up, half_close_timeout="1s")])
    client = tagged_client(d.address("pg"), "h1")
    sockets.append(client)
    port = client.getsockname()[1]
    client.sendall(b"abc")
    cpu_before = d.cpu_seconds()
    client.shutdown(socket.SHUT_WR)
    shut_at = time.monotonic()
    how = wait_closed_by_peer(client, 1 + POLL + SLACK + 1)
    closed_after = time.monotonic() - shut_at
    cpu = d.cpu_seconds() - cpu_before
    print(f"half-close-timeout 1s: client closed after {closed_after:.2f}s, daemon cpu {cpu:.2f}s meanwhile")
    assert how == "eof", f"client: {how} after {closed_after:.2f}s"
    assert state.get("read") == b"abc" and state["eof_at"] - shut_at < 0.9, "the FIN was not passed on at once"
    assert closed_after >= 0.9, f"reaped {closed_after:.2f}s after the half-close, before half_close_timeout"
    assert closed_after <= 1 + POLL + SLACK
    # A half-closed connection must not spin the loop (SPEC §8).
    assert cpu < 0.5 * closed_after, f"daemon used {cpu:.2f}s CPU in {closed_after:.2f}s of half-close"

    expect_reaped_only(d, "pg", half_close_timeout=1)
    assert d.connections() == []
    poke.set()
    wait_for(lambda: "after_poke" in state, timeout=5, what="the upstream's write after the reap")
    assert state["after_poke"] == "reset", f"upstream side still open after the reap: {state['after_poke']}"
    [record] = records_for(d, port)
    check_reap_record(record, listener="pg", peer_port=port, upstream=up.address, reason="half-close-timeout",
                      bytes_in=len(b"h1\nabc"), bytes_out=len(b"h1\n"))


def test_upstream_vanishes_reaped_as_upstream_dead(daemon_factory, vanish, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec))
    d = start_daemon(daemon_factory, [relay("pg", up, upstream_keepalive="yes")])
    client = tagged_client(d.address("pg"), "u1")
    sockets.append(client)
    port = client.getsockname()[1]
    assert round_trip(client, b"ping\n")
    settle_acks(client)
    last_packet = time.monotonic()
    time.sleep(0.25)  # the upstream's delayed ACK, if any, gets through
    # The daemon's upstream-side ephemeral port, as the upstream sees it.
    daemon_port = rec.daemon_ports["u1"]
    drop_flow(vanish, daemon_port, up.port)

    how = wait_closed_by_peer(client, IDLE_DEADLINE + SLACK + 1)
    after = time.monotonic() - last_packet
    print(f"upstream vanished -> client closed after {after:.2f}s")
    assert how == "eof", f"client: {how} after {after:.2f}s"
    assert after >= 2.0, f"client closed {after:.2f}s after the upstream vanished: too early for keepalive"
    assert after <= IDLE_DEADLINE + SLACK
    expect_reaped_only(d, "pg", upstream_dead=1)
    assert d.connections() == []
    [record] = records_for(d, port)
    check_reap_record(record, listener="pg", peer_port=port, upstream=up.address, reason="upstream-dead",
                      bytes_in=len(b"u1\nping\n"), bytes_out=len(b"u1\nping\n"))
    assert int(record["probes"]) >= 1, record["_line"]


# ---------------------------------------------------------------- closes, admin reaps


def test_ordinary_closes_are_closes_not_reaps(daemon_factory, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec, actions={"upfin": "close", "uprst": "reset"}))
    d = start_daemon(daemon_factory, [relay("pg", up)])
    address = d.address("pg")

    fin = tagged_client(address, "fin")
    assert round_trip(fin, b"x" * 100)
    fin.close()

    rst = tagged_client(address, "rst")
    sockets.append(rst)
    assert round_trip(rst, b"y" * 100)
    rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rst.close()

    upfin = tagged_client(address, "upfin")
    sockets.append(upfin)
    assert wait_closed_by_peer(upfin, 5) == "eof", "upstream FIN not passed on to the client"
    upfin.close()

    # The upstream resets right after echoing the tag; the echo may be lost with
    # the reset, so this client only waits to be closed.
    uprst = socket.create_connection(address, timeout=5)
    sockets.append(uprst)
    uprst.sendall(b"uprst\n")
    assert wait_closed_by_peer(uprst, 5) in ("eof", "reset"), "upstream RST not passed on to the client"
    uprst.close()

    wait_for(lambda: d.listener("pg")["closed"] == 4, timeout=5, what="4 ordinary closes counted")
    time.sleep(3 * POLL)  # a few sweeps: nothing may turn into a reap later
    listener = d.listener("pg")
    assert listener["accepted"] == 4 and listener["closed"] == 4 and listener["open"] == 0, listener
    expect_reaped_only(d, "pg")
    assert d.status()["reaped_since_start"] == 0
    assert d.connections() == []
    log = d.log()
    assert reap_records(log) == [], "an ordinary close was logged as a reap"
    assert "reaped connection" not in log
    assert log.count("debug: connection closed") == 4, log


def test_reaperctl_reap_closes_both_sides(daemon_factory, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec))
    d = start_daemon(daemon_factory, [relay("pg", up)])
    address = d.address("pg")
    victim = tagged_client(address, "victim")
    bystander = tagged_client(address, "bystander")
    sockets.extend([victim, bystander])
    payload = bytes(range(256)) * 4
    assert round_trip(victim, payload)
    port = victim.getsockname()[1]
    sent = len(b"victim\n") + len(payload)

    row = rows_by_port(d)[port]
    assert set(row) >= {"id", "listener", "peer", "upstream", "age_seconds", "idle_seconds", "health", "probes",
                        "rtt_us", "bytes_in", "bytes_out"}, row
    assert row["listener"] == "pg" and row["peer"] == f"127.0.0.1:{port}" and row["upstream"] == up.address, row
    assert row["bytes_in"] == sent and row["bytes_out"] == sent, row
    assert row["health"] in ("idle", "active") and row["probes"] == 0, row
    assert 0 <= row["idle_seconds"] <= row["age_seconds"] < 30, row
    assert isinstance(row["rtt_us"], int) and row["rtt_us"] >= 0, row

    result = d.ctl("reap", str(row["id"]))
    assert result.returncode == 0, result
    reaped_at = time.monotonic()
    assert wait_closed_by_peer(victim, 2) == "eof", "client side not closed by reap"
    wait_for(lambda: "victim" in rec.ended, timeout=2, what="upstream side closed by reap")
    assert rec.ended["victim"][1] == "eof", rec.ended
    print(f"reaperctl reap: upstream closed {rec.ended['victim'][0] - reaped_at:.3f}s after the command returned")

    assert round_trip(bystander, b"unharmed\n")
    assert "bystander" not in rec.ended
    expect_reaped_only(d, "pg", admin=1)
    [record] = records_for(d, port)
    check_reap_record(record, listener="pg", peer_port=port, upstream=up.address, reason="admin",
                      bytes_in=sent, bytes_out=sent)

    for bad in ("999999", str(row["id"])):
        result = d.ctl("reap", bad)
        assert result.returncode != 0, f"reap {bad}: {result}"
        assert bad in result.stderr, result.stderr
    expect_reaped_only(d, "pg", admin=1)


# ---------------------------------------------------------------- garbage


def test_control_socket_garbage(daemon_factory, upstreams, sockets):
    up = upstreams(echo_handler)
    d = start_daemon(daemon_factory, [relay("pg", up)])
    client = socket.create_connection(d.address("pg"), timeout=5)
    sockets.append(client)

    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sockets.append(slow)
    slow.connect(d.control)
    slow_partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sockets.append(slow_partial)
    slow_partial.connect(d.control)
    slow_partial.sendall(b"stat")  # half a request, then nothing
    slow_since = time.monotonic()

    rng = random.Random(3)
    junk = bytes(b for b in rng.randbytes(600) if b != 0x0A)
    cases = {
        "random bytes": junk + b"\n",
        "random bytes, no newline, then EOF": junk[:300],
        "NULs and invalid UTF-8": b"status\x00\xff\xfe --json\n",
        "unknown command": b"frobnicate --now\n",
        "empty line": b"\n",
        "100 KB line": b"status " + b"A" * 100_000 + b"\n",
    }
    for what, payload in cases.items():
        answer, how = control_exchange(d.control, payload, timeout=5, shut_write=True)
        assert not answer.startswith(b"OK"), f"{what}: answered {answer[:80]!r}"
        if what == "100 KB line":
            assert answer.startswith(b"ERR ") or (answer == b"" and how in ("eof", "reset")), (what, answer, how)
        else:
            assert answer.startswith(b"ERR ") and answer.endswith(b"\n"), f"{what}: {answer[:200]!r} ({how})"
        assert how in ("eof", "reset"), f"{what}: the daemon kept the connection open"
    unknown, _ = control_exchange(d.control, cases["unknown command"], timeout=5)
    assert b"unknown command" in unknown, unknown

    # While the slow clients hold their connections, the loop still serves.
    started = time.monotonic()
    status = d.ctl("status", timeout=5)
    assert status.returncode == 0 and "pg" in status.stdout, status
    assert time.monotonic() - started < 2, "status stalled behind a slow control client"
    assert round_trip(client, b"through the relay\n", timeout=2)
    assert time.monotonic() - slow_since < 5, "the checks above took too long to prove anything"

    # Held for up to 6 s: the daemon must cut both off (optionally with an ERR).
    for s in (slow, slow_partial):
        answer, how = read_all(s, timeout=max(0.1, slow_since + 6 - time.monotonic()))
        assert how in ("eof", "reset"), f"slow control client not cut off within 6 s: {how}"
        assert answer == b"" or answer.startswith(b"ERR "), answer
    print(f"slow control clients cut off after {time.monotonic() - slow_since:.2f}s")

    assert d.proc.poll() is None
    assert d.status()["listeners"][0]["name"] == "pg"
    assert round_trip(client, b"after\n", timeout=2)


def test_metrics_port_garbage(daemon_factory, upstreams, sockets):
    up = upstreams(echo_handler)
    port = free_port()
    d = start_daemon(daemon_factory, [relay("pg", up)], metrics_port=port)
    address = ("127.0.0.1", port)
    silent = socket.create_connection(address, timeout=5)  # never sends a byte
    sockets.append(silent)

    rng = random.Random(4)
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200)
    cases = [
        ("binary then EOF", tls_hello, True, {400}),
        ("not HTTP", b"HELLO THERE\r\n\r\n", False, {400}),
        ("invalid UTF-8 head", b"GET /metrics\xff HTTP/1.1\r\n\r\n", False, {400}),
        ("POST", b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", False, {405}),
        ("DELETE", b"DELETE /metrics HTTP/1.1\r\n\r\n", False, {405}),
        ("other path", b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n", False, {404}),
        ("20 KB header", b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", False, {431, None}),
    ]
    for what, payload, shut, statuses in cases:
        status, headers, body, how = http_exchange(address, payload, timeout=5, shut_write=shut)
        assert status in statuses, f"{what}: status {status} {body[:100]!r} ({how})"
        assert how in ("eof", "reset"), f"{what}: connection left open"
        if status is not None:
            assert int(headers["content-length"]) == len(body), (what, headers, body)

    text = get_metrics(address)
    Metrics(text)
    assert d.proc.poll() is None
    assert d.ctl("status").returncode == 0
    client = socket.create_connection(d.address("pg"), timeout=5)
    sockets.append(client)
    assert round_trip(client, b"metrics garbage did not hurt\n")


# ---------------------------------------------------------------- metrics page


def greeted_client(address, tag, body):
    """Client of the greeting upstream: reads HELLO\\n, sends TAG\\n + body, reads the echo."""
    s = socket.create_connection(address, timeout=5)
    assert recv_exactly(s, 6, 5) == b"HELLO\n"
    line = tag.encode() + b"\n" + body
    s.sendall(line)
    assert recv_exactly(s, len(line), 5) == line
    return s


def test_metrics_page_parses_and_counts_what_happened(daemon_factory, upstreams, sockets):
    rec = Recorder()
    up = upstreams(tagged_echo(rec, greeting=b"HELLO\n"))
    port = free_port()
    d = start_daemon(daemon_factory, [relay("pg", up), relay("quiet", up, idle_timeout="1s")], metrics_port=port)
    pg, quiet = d.address("pg"), d.address("quiet")

    a = greeted_client(pg, "A", b"a" * 1000)  # closed by the client
    a.close()
    b = greeted_client(pg, "B", b"b" * 500)  # stays open
    c = greeted_client(pg, "C", b"c" * 123)  # reaped by reaperctl
    q = greeted_client(quiet, "Q", b"q" * 10)  # reaped by idle_timeout
    sockets.extend([b, c, q])
    c_id = rows_by_port(d)[c.getsockname()[1]]["id"]
    assert d.ctl("reap", str(c_id)).returncode == 0
    assert wait_closed_by_peer(q, 1 + POLL + SLACK + 1) == "eof", "quiet connection not reaped by idle_timeout"
    wait_for(lambda: d.listener("pg")["closed"] == 1, timeout=5, what="A's close to be counted")
    time.sleep(2 * POLL)  # let a sweep see the final state

    text = get_metrics(("127.0.0.1", port))
    m = Metrics(text)
    expected_types = {
        "reaperd_connections": {"gauge"}, "reaperd_accepted_total": {"counter"}, "reaperd_refused_total": {"counter"},
        "reaperd_closed_total": {"counter"}, "reaperd_reaped_total": {"counter"}, "reaperd_bytes_total": {"counter"},
        "reaperd_sweep_seconds": {"histogram", "summary"}, "reaperd_sweep_connections": {"gauge"},
    }
    for family, types in expected_types.items():
        assert m.types.get(family) in types, f"{family}: TYPE {m.types.get(family)}"

    sent = {"A": 2 + 1000, "B": 2 + 500, "C": 2 + 123, "Q": 2 + 10}  # client -> upstream
    pg_in = sent["A"] + sent["B"] + sent["C"]
    assert m.get("reaperd_accepted_total", listener="pg") == 3
    assert m.get("reaperd_accepted_total", listener="quiet") == 1
    assert m.get("reaperd_closed_total", listener="pg") == 1
    assert m.get("reaperd_closed_total", listener="quiet") == 0
    for reason in REASONS:
        assert m.get("reaperd_reaped_total", listener="pg", reason=reason) == (reason == "admin"), reason
        assert m.get("reaperd_reaped_total", listener="quiet", reason=reason) == (reason == "idle-timeout"), reason
    for listener in ("pg", "quiet"):
        for reason in ("limit", "upstream"):
            assert m.get("reaperd_refused_total", listener=listener, reason=reason) == 0
    assert m.get("reaperd_bytes_total", listener="pg", direction="in") == pg_in
    assert m.get("reaperd_bytes_total", listener="pg", direction="out") == pg_in + 3 * 6
    assert m.get("reaperd_bytes_total", listener="quiet", direction="in") == sent["Q"]
    assert m.get("reaperd_bytes_total", listener="quiet", direction="out") == sent["Q"] + 6

    gauges = m.all("reaperd_connections")
    assert all(set(labels) == {"listener", "health"} for labels, _ in gauges), gauges
    assert sum(v for l, v in gauges if l["listener"] == "pg") == 1, gauges
    assert sum(v for l, v in gauges if l["listener"] == "quiet") == 0, gauges
    assert sum(v for l, v in gauges if l["health"] in ("idle", "active")) == 1, gauges
    # Sockets the last sweep read: B's two at most. A sweep reads an idle socket only
    # when a keepalive probe could be out (about once per keepalive_idle), so the
    # quiet B may well have been skipped.
    assert m.get("reaperd_sweep_connections") in (0, 1, 2)
    if m.types["reaperd_sweep_seconds"] == "histogram":
        assert m.get("reaperd_sweep_seconds_count") >= 3
        assert 0 < m.get("reaperd_sweep_seconds_sum") < m.get("reaperd_sweep_seconds_count")

    # reaperctl status --json carries the same counters.
    status = d.status()
    pg_status = d.listener("pg")
    assert pg_status["accepted"] == 3 and pg_status["closed"] == 1, pg_status
    assert pg_status["bytes"] == {"in": pg_in, "out": pg_in + 18}, pg_status
    assert pg_status["refused"] == {"limit": 0, "upstream": 0, "proxy_header": 0}, pg_status
    expect_reaped_only(d, "pg", admin=1)
    expect_reaped_only(d, "quiet", idle_timeout=1)
    assert status["reaped_since_start"] == 2

    # Counters only grow: B's further bytes show up exactly.
    assert round_trip(b, b"more" * 10)
    m2 = Metrics(get_metrics(("127.0.0.1", port)))
    assert m2.get("reaperd_bytes_total", listener="pg", direction="in") == pg_in + 40
    assert m2.get("reaperd_bytes_total", listener="pg", direction="out") == pg_in + 18 + 40
    assert m2.get("reaperd_sweep_seconds_count") >= m.get("reaperd_sweep_seconds_count")
