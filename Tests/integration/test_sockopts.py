"""Keepalive and user timeout as the kernel holds them on reaperd's own sockets.

The daemon's descriptors are duplicated into the test with pidfd_getfd(2), so
getsockopt reads the very sockets reaperd accepted and connected.
"""
import signal

from conftest import connect, listener_section, round_trip, wait_for
from helpers_core import ProcessSockets, keepalive_options


def relayed_pair(d, upstream, listener="r"):
    """Opens a relayed connection; returns (client socket, listener port)."""
    s = connect(d.address(listener))
    assert round_trip(s, b"make sure the upstream is connected\n")
    return s, d.address(listener)[1]


def daemon_sockets(d, client, upstream_port, listener_port):
    """(accepted socket, upstream socket) of reaperd for `client`, each as (fd, inode, sock),
    inside an open ProcessSockets context the caller must close."""
    ps = ProcessSockets(d.proc.pid).__enter__()
    try:
        accepted = ps.find(local_port=listener_port, peer_port=client.getsockname()[1])
        upstream = ps.find(peer_port=upstream_port)
    except BaseException:
        ps.__exit__(None, None, None)
        raise
    return ps, accepted, upstream


def test_keepalive_from_defaults_on_accepted_and_upstream_sockets(daemon_factory, echo_upstream):
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", echo_upstream.address)],
                       defaults={"keepalive_idle": "7s", "keepalive_interval": "3s", "keepalive_count": 4}).start()
    s, port = relayed_pair(d, echo_upstream)
    try:
        ps, accepted, upstream = daemon_sockets(d, s, echo_upstream.port, port)
        with ps:
            expected = {"keepalive": 1, "idle": 7, "interval": 3, "count": 4, "user_timeout": (7 + 3 * 4) * 1000}
            assert keepalive_options(accepted[2]) == expected
            assert keepalive_options(upstream[2]) == expected
    finally:
        s.close()


def test_listener_overrides_and_explicit_user_timeout(daemon_factory, echo_upstream):
    d = daemon_factory(
        [listener_section("r", "127.0.0.1:0", "relay", echo_upstream.address,
                          keepalive_idle="7s", keepalive_interval="3s", keepalive_count=4, user_timeout="2500ms"),
         listener_section("other", "127.0.0.1:0", "relay", echo_upstream.address)],
        defaults={"keepalive_idle": "100s", "keepalive_interval": "20s", "keepalive_count": 9}).start()
    s, port = relayed_pair(d, echo_upstream)
    t, other_port = relayed_pair(d, echo_upstream, "other")
    try:
        with ProcessSockets(d.proc.pid) as ps:
            expected = {"keepalive": 1, "idle": 7, "interval": 3, "count": 4, "user_timeout": 2500}
            assert keepalive_options(ps.find(local_port=port, peer_port=s.getsockname()[1])[2]) == expected
            # The upstream socket of this connection: its local port is the peer the upstream saw.
            ups = [c for c in ps.tcp() if _peer_port(c[2]) == echo_upstream.port]
            assert len(ups) == 2
            values = sorted(keepalive_options(c[2])["idle"] for c in ups)
            assert values == [7, 100], "each upstream socket carries its own listener's settings"
            for c in ups:
                opts = keepalive_options(c[2])
                if opts["idle"] == 7:
                    assert opts == expected
                else:
                    assert opts == {"keepalive": 1, "idle": 100, "interval": 20, "count": 9,
                                    "user_timeout": (100 + 20 * 9) * 1000}
            # The listener that inherits: defaults on its accepted socket too.
            inherited = keepalive_options(ps.find(local_port=other_port, peer_port=t.getsockname()[1])[2])
            assert inherited == {"keepalive": 1, "idle": 100, "interval": 20, "count": 9,
                                 "user_timeout": (100 + 20 * 9) * 1000}
    finally:
        s.close()
        t.close()


def _peer_port(sock):
    try:
        return sock.getpeername()[1]
    except OSError:
        return None


def test_upstream_keepalive_off(daemon_factory, echo_upstream):
    d = daemon_factory([listener_section("r", "127.0.0.1:0", "relay", echo_upstream.address,
                                         keepalive_idle="7s", keepalive_interval="3s", keepalive_count=4,
                                         upstream_keepalive="no")]).start()
    s, port = relayed_pair(d, echo_upstream)
    try:
        ps, accepted, upstream = daemon_sockets(d, s, echo_upstream.port, port)
        with ps:
            assert keepalive_options(accepted[2])["keepalive"] == 1
            assert keepalive_options(accepted[2])["idle"] == 7
            assert keepalive_options(upstream[2])["keepalive"] == 0
    finally:
        s.close()


def test_keepalive_off_on_client(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", "echo", keepalive="no")]).start()
    s = connect(d.address("e"))
    try:
        assert round_trip(s, b"x\n")
        with ProcessSockets(d.proc.pid) as ps:
            _, _, accepted = ps.find(local_port=d.address("e")[1], peer_port=s.getsockname()[1])
            assert keepalive_options(accepted)["keepalive"] == 0
    finally:
        s.close()


def test_reload_applies_new_keepalive_to_live_sockets(daemon_factory, echo_upstream):
    def section(idle, interval, count):
        return listener_section("r", "127.0.0.1:0", "relay", echo_upstream.address,
                                keepalive_idle=f"{idle}s", keepalive_interval=f"{interval}s", keepalive_count=count)

    d = daemon_factory([section(7, 3, 4)]).start()
    port = d.address("r")[1]
    s, _ = relayed_pair(d, echo_upstream)
    try:
        ps, accepted, upstream = daemon_sockets(d, s, echo_upstream.port, port)
        with ps:
            before = {"keepalive": 1, "idle": 7, "interval": 3, "count": 4, "user_timeout": 19000}
            assert keepalive_options(accepted[2]) == before
            assert keepalive_options(upstream[2]) == before
            inodes = (accepted[1], upstream[1])

        d.write_config([section(11, 5, 2)])
        result = d.ctl("reload")
        assert result.returncode == 0, result.stderr

        ps, accepted, upstream = daemon_sockets(d, s, echo_upstream.port, port)
        with ps:
            assert (accepted[1], upstream[1]) == inodes, "not the same live sockets"
            after = {"keepalive": 1, "idle": 11, "interval": 5, "count": 2, "user_timeout": (11 + 5 * 2) * 1000}
            assert keepalive_options(accepted[2]) == after
            assert keepalive_options(upstream[2]) == after
        assert round_trip(s, b"still relaying\n")

        # And SIGHUP does the same.
        d.write_config([section(13, 2, 5)])
        log_size = len(d.log())
        d.signal(signal.SIGHUP)
        wait_for(lambda: "reload" in d.log()[log_size:], timeout=5, what="the SIGHUP reload")

        def applied():
            ps2, acc, ups = daemon_sockets(d, s, echo_upstream.port, port)
            with ps2:
                return keepalive_options(acc[2])["idle"] == 13 and keepalive_options(ups[2]) == {
                    "keepalive": 1, "idle": 13, "interval": 2, "count": 5, "user_timeout": 23000}
        wait_for(applied, timeout=5, what="SIGHUP to apply keepalive 13/2/5 to live sockets")
    finally:
        s.close()
