"""workers = N: several loops accept from the same sockets; the operator sees one daemon."""
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

from conftest import connect, listener_section, recv_exactly, round_trip, wait_for, free_port

WORKERS = {"workers": 2}


def metric(d, name, **labels):
    page = urllib.request.urlopen(f"http://{d.daemon_keys['metrics']}/metrics", timeout=10).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in page.splitlines():
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    raise AssertionError(f"{name} {labels} not on the metrics page")


def spread_clients(d, count):
    """`count` echo clients and their connection ids, in the same order (ids
    are numbered k, k + n, ... by worker k of n: with two, odd and even)."""
    clients = [connect(d.address("e")) for _ in range(count)]
    for s in clients:
        assert round_trip(s)
    wait_for(lambda: len(d.connections()) == count, timeout=5, what=f"{count} connections listed")
    by_port = {int(c["peer"].rsplit(":", 1)[1]): c["id"] for c in d.connections()}
    ids = [by_port[s.getsockname()[1]] for s in clients]
    assert len(set(ids)) == count, "connection ids are not unique across workers"
    return clients, ids


def test_two_workers_share_clients_and_answer_as_one_daemon(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={**WORKERS, "metrics": f"127.0.0.1:{free_port()}"}).start()
    assert d.status()["workers"] == 2
    clients, ids = spread_clients(d, 40)
    # Each worker takes a fair share, not the first registered all of them.
    odd = sum(i % 2 for i in ids)
    assert 10 <= odd <= 30, f"{odd} of 40 connections on one worker"
    threads = [line for line in os.listdir(f"/proc/{d.proc.pid}/task")]
    assert len(threads) >= 2

    # Every worker's connections are counted everywhere an operator looks.
    wait_for(lambda: d.status()["connections"] == 40, timeout=5, what="STATUS of every worker")
    assert d.listener("e")["open"] == 40
    assert d.listener("e")["accepted"] == 40
    assert sum(metric(d, "reaperd_connections", listener="e", health=h)
               for h in ("active", "idle", "probing", "dead")) == 40
    assert metric(d, "reaperd_workers") == 2
    assert metric(d, "reaperd_bytes_total", listener="e", direction="in") == 40 * len(b"ping\n")

    # reaperctl reap finds a connection on whichever worker holds it.
    by_id = dict(zip(ids, clients))
    for victim in (min(i for i in ids if i % 2), min(i for i in ids if i % 2 == 0)):
        result = d.ctl("reap", str(victim))
        assert result.returncode == 0, result.stderr
        by_id[victim].settimeout(5)
        assert by_id[victim].recv(1) == b""
    assert d.ctl("reap", "999999").returncode != 0
    wait_for(lambda: d.listener("e")["reaped"]["admin"] == 2, timeout=5, what="two admin reaps counted")
    assert metric(d, "reaperd_reaped_total", listener="e", reason="admin") == 2
    assert d.log().count("reason=admin") == 2
    for s in clients:
        s.close()
    wait_for(lambda: d.listener("e")["open"] == 0, timeout=5, what="every close counted")
    assert d.stop() == 0


def test_max_connections_holds_across_workers(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo", max_connections=15)],
                       daemon_keys={**WORKERS, "max_connections": 10}).start()
    clients = []
    for _ in range(30):
        s = connect(d.address("e"))
        s.sendall(b"x")
        clients.append(s)
    served = 0
    for s in clients:
        s.settimeout(5)
        try:
            served += s.recv(1) == b"x"
        except (ConnectionResetError, socket.timeout):
            pass
    assert served == 10, f"{served} served with max_connections = 10 across two workers"
    assert d.status()["connections"] <= 10
    assert d.listener("e")["refused"]["limit"] == 20
    for s in clients:
        s.close()
    # The places come back: ten more are served.
    wait_for(lambda: d.listener("e")["open"] == 0, timeout=5, what="places given back")
    again = [connect(d.address("e")) for _ in range(10)]
    assert all(round_trip(s) for s in again)
    assert d.stop() == 0


def test_a_reload_reaches_every_worker(daemon_factory):
    listeners = [listener_section("e", "127.0.0.1:0", mode="echo")]
    d = daemon_factory(listeners, daemon_keys={**WORKERS, "poll_interval": "100ms"}).start()
    clients, ids = spread_clients(d, 20)
    assert {i % 2 for i in ids} == {0, 1}
    # A new idle_timeout reaches the open connections of both workers.
    d.write_config(d.render([listener_section("e", "127.0.0.1:0", mode="echo", idle_timeout="1s")]))
    assert d.ctl("reload").returncode == 0
    for s in clients:
        s.settimeout(10)
        assert s.recv(1) == b""
    wait_for(lambda: d.listener("e")["reaped"]["idle-timeout"] == 20, timeout=5, what="20 idle-timeout reaps")
    # A new listener is accepted on by both workers too.
    d.write_config(d.render([listener_section("e", "127.0.0.1:0", mode="echo"),
                             listener_section("f", "127.0.0.1:0", mode="echo")]))
    assert d.ctl("reload").returncode == 0
    more = [connect(d.address("f")) for _ in range(20)]
    assert all(round_trip(s) for s in more)
    assert {c["id"] % 2 for c in d.connections("f")} == {0, 1}, "one worker never accepted on the new listener"
    assert d.stop() == 0


def test_sigterm_drains_every_worker(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={**WORKERS, "shutdown_grace": "10s"}).start()
    clients, ids = spread_clients(d, 20)
    # One client is mid-request on each worker: a partial line is held open.
    busy = {}
    for s, i in zip(clients, ids):
        busy.setdefault(i % 2, s)
    started = time.monotonic()
    d.signal(signal.SIGTERM)
    for s in clients:
        s.settimeout(15)
        assert s.recv(1) == b""
    assert d.proc.wait(15) == 0
    assert time.monotonic() - started < 12
    assert "did not finish" not in d.log()


def test_a_vanished_client_on_another_worker_is_reaped(daemon_factory, vanish):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={**WORKERS, "poll_interval": "200ms"},
                       defaults={"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": 2}).start()
    clients, ids = spread_clients(d, 10)
    # One client on each worker loses its cable.
    gone = {}
    for s, i in zip(clients, ids):
        gone.setdefault(i % 2, (s, i))
    for s, _ in gone.values():
        vanish.drop(s.getsockname()[1])
    wait_for(lambda: d.listener("e")["reaped"]["keepalive"] == 2, timeout=10, what="two keepalive reaps")
    left = {c["id"] for c in d.connections()}
    assert not left & {i for _, i in gone.values()}
    assert len(left) == 8
    assert d.stop() == 0


def test_auto_is_one_worker_per_usable_cpu(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")]).start()
    assert d.status()["workers"] == len(os.sched_getaffinity(0))
    assert d.stop() == 0
    # An affinity of one CPU (taskset, CPUAffinity=) is one worker.
    one = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                         wrapper=["taskset", "-c", str(min(os.sched_getaffinity(0)))]).start()
    assert one.status()["workers"] == 1
    assert len(os.listdir(f"/proc/{one.proc.pid}/task")) == 1
    assert one.stop() == 0


def test_bad_worker_counts_are_refused(tmp_path):
    from conftest import REAPERD
    for value, message in (("0", "out of range"), ("many", "whole number"), ("257", "out of range")):
        config = tmp_path / f"w{value}.conf"
        config.write_text(f"[daemon]\nworkers = {value}\n")
        result = subprocess.run([str(REAPERD), "--config", str(config), "--check-config"],
                                capture_output=True, text=True, timeout=10)
        assert result.returncode == 78, result
        assert f"{config}:2:" in result.stderr and message in result.stderr, result.stderr


def test_a_reload_keeps_the_worker_count_until_restart(daemon_factory):
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")], daemon_keys=WORKERS).start()
    d.daemon_keys["workers"] = 1
    d.write_config(d.render([listener_section("e", "127.0.0.1:0", mode="echo")]))
    assert d.ctl("reload").returncode == 0
    assert "workers changed; it takes effect when reaperd restarts" in d.log()
    assert d.status()["workers"] == 2
    clients, ids = spread_clients(d, 20)
    assert {i % 2 for i in ids} == {0, 1}, "a worker stopped accepting after the reload"
    assert d.stop() == 0
