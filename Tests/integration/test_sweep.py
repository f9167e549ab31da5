"""The sweep reads an idle socket only when a keepalive probe could be out."""
import time

from conftest import connect, listener_section, round_trip, wait_for


def quiet(d, seconds=0.4):
    """No connection looked at for `seconds`: every one is queued for later."""
    looks = d.status()["sweep"]["looks"]
    time.sleep(seconds)
    return d.status()["sweep"]["looks"] == looks


def test_idle_connections_wake_nothing_until_due(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={"poll_interval": "50ms"},
                       defaults={"keepalive_idle": "3s", "keepalive_interval": "1s", "keepalive_count": 2}).start()
    clients = [connect(d.address("e")) for _ in range(50)]
    for s in clients:
        assert round_trip(s)
    # Once each connection was looked at after its last bytes it is queued a
    # keepalive_idle of silence ahead, and the loop sleeps until then: no sweep
    # at all, where a fixed tick would run twenty a second.
    wait_for(lambda: d.status()["sweep"]["last_sockets"] == 0, timeout=3, what="sweeps that read no idle socket")
    before = d.status()["sweep"]
    time.sleep(1.0)
    after = d.status()["sweep"]
    assert after["count"] - before["count"] <= 1, f"{after['count'] - before['count']} sweeps in 1 s of idle"
    assert after["looks"] == before["looks"], "idle connections were looked at before they were due"
    # Bytes on one connection bring it to the next sweep, and only it.
    assert round_trip(clients[0])
    wait_for(lambda: d.status()["sweep"]["looks"] > after["looks"], timeout=2, what="a look at the busy connection")
    time.sleep(0.3)
    assert d.status()["sweep"]["looks"] - after["looks"] <= 8, "a busy connection brought the idle ones with it"
    # After keepalive_idle of silence they are read again (the kernel probes then),
    # and a probe that is answered pushes the next read a keepalive_idle further.
    looks = d.status()["sweep"]["looks"]
    wait_for(lambda: d.status()["sweep"]["looks"] >= looks + 50, timeout=5, what="sweeps reading the sockets again")
    wait_for(lambda: quiet(d), timeout=5, what="answered probes to quiet the sweep")
    assert all(c["health"] == "idle" for c in d.connections())
    for s in clients:
        assert round_trip(s)
        s.close()
