"""The sweep reads an idle socket only when a keepalive probe could be out."""
import time

from conftest import connect, listener_section, round_trip, wait_for


def test_idle_sockets_are_not_read_every_sweep(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={"poll_interval": "50ms"},
                       defaults={"keepalive_idle": "3s", "keepalive_interval": "1s", "keepalive_count": 2}).start()
    clients = [connect(d.address("e")) for _ in range(50)]
    for s in clients:
        assert round_trip(s)
    # Once each socket was read after its last bytes, sweeps skip it until
    # keepalive_idle of silence has passed.
    wait_for(lambda: d.status()["sweep"]["last_sockets"] == 0, timeout=3, what="sweeps that read no idle socket")
    skipped_sweeps = d.status()["sweep"]["count"]
    time.sleep(1.0)
    status = d.status()
    assert status["sweep"]["count"] - skipped_sweeps >= 10, "sweeps stopped running"
    assert status["sweep"]["last_sockets"] == 0
    # After keepalive_idle of silence they are read again (the kernel probes then),
    # and a probe that is answered pushes the next read a keepalive_idle further.
    wait_for(lambda: d.status()["sweep"]["last_sockets"] > 0, timeout=5, what="sweeps reading the sockets again")
    wait_for(lambda: d.status()["sweep"]["last_sockets"] == 0, timeout=5, what="answered probes to quiet the sweep")
    assert all(c["health"] == "idle" for c in d.connections())
    for s in clients:
        assert round_trip(s)
        s.close()
