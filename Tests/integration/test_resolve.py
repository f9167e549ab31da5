"""Upstreams by name (issue 13, item 2), against a real resolver on loopback.

Each test runs its own dnsmasq (Debian's dnsmasq-base) on a loopback address
of its own, port 53, answering from a hosts file the test writes (SIGHUP
re-reads it, SIGSTOP makes it stop answering). reaperd runs in a mount
namespace of its own (unshare -m) where /etc/resolv.conf is bind-mounted
from a file naming that dnsmasq: glibc's getaddrinfo asks it, and nothing on
the host changes. Every wait is bounded.
"""
import os
import random
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import REAPERD, Upstream, listener_section, wait_for
from helpers_reaper import Metrics, get_metrics

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
# Every lookup waits at most this long for an answer (resolv.conf timeout, one attempt).
LOOKUP_TIMEOUT = 1

pytestmark = pytest.mark.skipif(not os.path.exists(DNSMASQ), reason="dnsmasq (Debian dnsmasq-base) is not installed")


def free_loopback(count):
    """`count` loopback addresses, random so tests running at once do not meet."""
    base = f"127.{random.randrange(60, 250)}.{random.randrange(0, 250)}"
    return [f"{base}.{index + 1}" for index in range(count)]


class Resolver:
    """dnsmasq on ADDRESS:53 answering the names in a hosts file, nothing else
    (`--local=/test/`: other names under .test are NXDOMAIN, not forwarded)."""

    def __init__(self, directory, address):
        self.address = address
        self.hosts = directory / "dns-hosts"
        self.hosts.write_text("")
        self.log_path = directory / "dnsmasq.log"
        self.resolv_conf = directory / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {address}\noptions timeout:{LOOKUP_TIMEOUT} attempts:1\n")
        self.stopped = False
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [DNSMASQ, "--no-daemon", "--port=53", f"--listen-address={address}", "--bind-interfaces",
             "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts}", "--local=/test/", "--user=root",
             "--pid-file", "--log-queries", "--log-facility=-"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        wait_for(self.answers, timeout=10, what=f"dnsmasq on {address}:53")

    def answers(self):
        """Whether dnsmasq answers a query (any answer) over UDP now."""
        assert self.proc.poll() is None, f"dnsmasq exited {self.proc.returncode}: {self.log()}"
        query = bytes.fromhex("abcd01000001000000000000") + b"\x05probe\x04test\x00" + b"\x00\x01\x00\x01"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            try:
                s.sendto(query, (self.address, 53))
                return s.recv(512)[:2] == b"\xab\xcd"
            except OSError:
                return False

    def set(self, names):
        """Replaces the hosts file with `names` ({name: [address, ...]}), in order, and reloads."""
        lines = [f"{address} {name}\n" for name, addresses in names.items() for address in addresses]
        tmp = self.hosts.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.replace(self.hosts)
        self.proc.send_signal(signal.SIGHUP)

    def stop_answering(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def answer_again(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self):
        if self.stopped:
            self.answer_again()
        self.proc.kill()
        self.proc.wait(5)

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wrapper(self):
        """Runs a command with this resolver as the only one glibc knows of."""
        return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                str(self.resolv_conf)]


@pytest.fixture
def dns(tmp_path):
    resolver = Resolver(tmp_path, free_loopback(1)[0])
    yield resolver
    if resolver.proc.poll() is None:
        resolver.kill()


class TaggedServer(Upstream):
    """A TCP server that greets each client with its tag, then echoes."""

    def __init__(self, tag, host, port):
        def handler(conn):
            conn.sendall(tag + b"\n")
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
        super().__init__(handler, port=port, host=host)


def shared_port(hosts):
    """A port free on every address in `hosts` a moment ago."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        ok = True
        for host in hosts[1:]:
            with socket.socket() as other:
                try:
                    other.bind((host, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise AssertionError("no port free on every address")


def greeting(address, timeout=5.0):
    """Connects to `address`, returns (socket, the tag the upstream greeted with)."""
    s = socket.create_connection(address, timeout=timeout)
    s.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(64)
        if not chunk:
            break
        data += chunk
    return s, data.strip()


def echoes(s, payload=b"still here\n"):
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got == payload


def start_daemon(daemon_factory, dns, upstream, metrics=False, **keys):
    daemon_keys = {}
    if metrics:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            daemon_keys["metrics"] = f"127.0.0.1:{probe.getsockname()[1]}"
    d = daemon_factory([listener_section("db", "127.0.0.1:0", upstream=upstream, **keys)],
                       daemon_keys=daemon_keys, wrapper=dns.wrapper())
    d.metrics_address = daemon_keys.get("metrics")
    return d.start()


def resolved(d, name="db"):
    return d.listener(name)["upstream_addresses"]


def tuple_address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def metrics(d):
    return Metrics(get_metrics(tuple_address(d.metrics_address)))


def test_a_name_resolves_and_relays(daemon_factory, dns):
    a, = free_loopback(1)
    port = shared_port([a])
    server = TaggedServer(b"A", a, port)
    dns.set({"db.reaperd.test": [a]})
    d = start_daemon(daemon_factory, dns, f"db.reaperd.test:{port}", metrics=True)
    wait_for(lambda: resolved(d) == [f"{a}:{port}"], timeout=10, what="the name to resolve")
    assert f"upstream db.reaperd.test:{port} resolved: {a}:{port}" in d.log()

    s, tag = greeting(d.address("db"))
    assert tag == b"A" and echoes(s)
    rows = d.connections()
    assert len(rows) == 1
    assert rows[0]["upstream"] == f"{a}:{port}" and rows[0]["upstream_name"] == f"db.reaperd.test:{port}", rows
    table = d.ctl("connections").stdout
    assert f"db.reaperd.test:{port} ({a}:{port})" in table, table
    status = d.listener("db")
    assert status["upstream"] == f"db.reaperd.test:{port}"
    assert status["resolve"]["resolved"] and not status["resolve"]["failing"], status
    text = d.ctl("status").stdout
    assert f"relay to db.reaperd.test:{port}" in text and f"resolved: {a}:{port} (looked up" in text, text
    m = metrics(d)
    assert m.get("reaperd_upstream_addresses", listener="db") == 1
    assert m.get("reaperd_upstream_resolve_failures_total", listener="db") == 0
    page = get_metrics(tuple_address(d.metrics_address))
    checked = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    s.close()
    server.close()
    assert d.stop() == 0


def test_a_numeric_upstream_starts_no_resolver_thread(daemon_factory, dns, echo_upstream):
    d = start_daemon(daemon_factory, dns, echo_upstream.address)
    threads = [open(f"/proc/{d.proc.pid}/task/{task}/comm").read().strip()
               for task in os.listdir(f"/proc/{d.proc.pid}/task")]
    assert "reaperd-resolve" not in threads, threads
    assert "resolve" not in d.listener("db"), d.listener("db")
    assert d.listener("db")["upstream_addresses"] == [echo_upstream.address]
    assert "resolved:" not in d.ctl("status").stdout
    assert d.stop() == 0


def test_a_changed_address_takes_new_connections_while_old_ones_keep_flowing(daemon_factory, dns):
    a, b = free_loopback(2)
    port = shared_port([a, b])
    server_a, server_b = TaggedServer(b"A", a, port), TaggedServer(b"B", b, port)
    dns.set({"db.reaperd.test": [a]})
    d = start_daemon(daemon_factory, dns, f"db.reaperd.test:{port}", resolve_interval="1s")
    wait_for(lambda: resolved(d) == [f"{a}:{port}"], timeout=10, what="the first answer")
    old, tag = greeting(d.address("db"))
    assert tag == b"A"

    dns.set({"db.reaperd.test": [b]})
    wait_for(lambda: resolved(d) == [f"{b}:{port}"], timeout=8, what="the new address after resolve_interval")
    assert f"upstream db.reaperd.test:{port} changed address: {b}:{port} (was {a}:{port})" in d.log()
    new, tag = greeting(d.address("db"))
    assert tag == b"B"
    assert echoes(old, b"old one\n") and echoes(new, b"new one\n")
    rows = {row["upstream"] for row in d.connections()}
    assert rows == {f"{a}:{port}", f"{b}:{port}"}, rows
    for s in (old, new):
        s.close()
    server_a.close()
    server_b.close()
    assert d.stop() == 0


def test_a_resolver_that_stops_answering_leaves_the_last_good_answer(daemon_factory, dns):
    a, = free_loopback(1)
    port = shared_port([a])
    server = TaggedServer(b"A", a, port)
    dns.set({"db.reaperd.test": [a]})
    d = start_daemon(daemon_factory, dns, f"db.reaperd.test:{port}", resolve_interval="1s", metrics=True)
    wait_for(lambda: resolved(d) == [f"{a}:{port}"], timeout=10, what="the first answer")

    dns.stop_answering()
    wait_for(lambda: d.listener("db")["resolve"]["failures"] >= 3, timeout=20, what="three failed lookups")
    status = d.listener("db")
    assert status["resolve"]["failing"] and status["upstream_addresses"] == [f"{a}:{port}"], status
    log = d.log()
    assert log.count("lookup failed") == 1, "one warning per run of failures, not one per lookup"
    assert f"keeping the last good addresses {a}:{port}" in log
    # The loop never waits for DNS: while lookups hang, the control socket
    # answers and clients relay at once.
    for _ in range(5):
        started = time.monotonic()
        s, tag = greeting(d.address("db"))
        assert tag == b"A" and echoes(s)
        s.close()
        assert d.ctl("status").returncode == 0
        assert time.monotonic() - started < 0.5 * LOOKUP_TIMEOUT, "a client or reaperctl waited for DNS"
        time.sleep(0.2)
    assert "lookups failing for" in d.ctl("status").stdout
    assert metrics(d).get("reaperd_upstream_resolve_failures_total", listener="db") >= 3

    dns.answer_again()
    wait_for(lambda: not d.listener("db")["resolve"]["failing"], timeout=10, what="lookups to succeed again")
    assert f"upstream db.reaperd.test:{port} resolves again: {a}:{port}" in d.log()

    # A resolver that is gone (ICMP port unreachable, a failure at once): the same.
    dns.kill()
    wait_for(lambda: d.listener("db")["resolve"]["failing"], timeout=10, what="the next failure")
    assert d.log().count("lookup failed") == 2, "a new run of failures is reported again"
    s, tag = greeting(d.address("db"))
    assert tag == b"A" and echoes(s)
    s.close()
    server.close()
    assert d.stop() == 0


def test_a_name_that_does_not_resolve_at_start_refuses_clients_until_it_does(daemon_factory, dns):
    a, = free_loopback(1)
    port = shared_port([a])
    server = TaggedServer(b"A", a, port)
    d = start_daemon(daemon_factory, dns, f"late.reaperd.test:{port}", resolve_interval="1s", metrics=True)
    wait_for(lambda: d.listener("db")["resolve"]["failures"] >= 1, timeout=10, what="the first lookup to fail")
    assert f"upstream late.reaperd.test:{port} does not resolve" in d.log()
    assert "clients are refused until it does" in d.log()
    assert "resolved: not yet" in d.ctl("status").stdout

    for _ in range(3):
        s = socket.create_connection(d.address("db"), timeout=5)
        s.settimeout(5)
        try:
            assert s.recv(64) == b"", "a refused client is closed at once"
        except ConnectionResetError:
            pass
        s.close()
    wait_for(lambda: d.listener("db")["refused"]["upstream"] == 3, timeout=5, what="three counted refusals")
    assert d.listener("db")["accepted"] == 0
    m = metrics(d)
    assert m.get("reaperd_refused_total", listener="db", reason="upstream") == 3
    assert m.get("reaperd_upstream_addresses", listener="db") == 0
    assert f"client refused: upstream late.reaperd.test:{port} has not resolved" in d.log()
    assert d.proc.poll() is None

    dns.set({"late.reaperd.test": [a]})
    wait_for(lambda: resolved(d) == [f"{a}:{port}"], timeout=10, what="the name to appear")
    s, tag = greeting(d.address("db"))
    assert tag == b"A" and echoes(s)
    s.close()
    server.close()
    assert d.stop() == 0


def test_the_first_address_refuses_and_the_second_relays(daemon_factory, dns):
    a, b = free_loopback(2)
    port = shared_port([a, b])
    dns.set({"two.reaperd.test": [a, b]})
    d = start_daemon(daemon_factory, dns, f"two.reaperd.test:{port}")
    wait_for(lambda: len(resolved(d)) == 2, timeout=10, what="both addresses")
    # getaddrinfo sorts the answer (RFC 6724): serve on whichever came second.
    first, second = resolved(d)
    server = TaggedServer(b"second", second.rsplit(":", 1)[0], port)
    for _ in range(3):
        s, tag = greeting(d.address("db"))
        assert tag == b"second" and echoes(s)
        assert d.connections()[0]["upstream"] == second
        s.close()
        wait_for(lambda: d.connections() == [], timeout=5, what="the connection to close")
    assert d.listener("db")["refused"]["upstream"] == 0
    server.close()

    # Neither answers: one refusal, whose line names both addresses.
    s = socket.create_connection(d.address("db"), timeout=5)
    s.settimeout(5)
    try:
        assert s.recv(64) == b""
    except ConnectionResetError:
        pass
    s.close()
    wait_for(lambda: d.listener("db")["refused"]["upstream"] == 1, timeout=5, what="the refusal")
    line = next(line for line in d.log().splitlines() if "upstream unreachable" in line)
    assert first in line and second in line, line
    assert d.stop() == 0


def test_reload_to_another_name_resolves_it_and_leaves_open_connections(daemon_factory, dns):
    a, b = free_loopback(2)
    port = shared_port([a, b])
    server_a, server_b = TaggedServer(b"A", a, port), TaggedServer(b"B", b, port)
    dns.set({"one.reaperd.test": [a], "two.reaperd.test": [b]})
    d = start_daemon(daemon_factory, dns, f"one.reaperd.test:{port}")
    wait_for(lambda: resolved(d) == [f"{a}:{port}"], timeout=10, what="the first name")
    old, tag = greeting(d.address("db"))
    assert tag == b"A"

    # The same listen = (127.0.0.1:0): the listening socket is kept, only the upstream changes.
    d.write_config(d.render([listener_section("db", "127.0.0.1:0", upstream=f"two.reaperd.test:{port}")]))
    result = d.ctl("reload")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: resolved(d) == [f"{b}:{port}"], timeout=10, what="the new name")
    new, tag = greeting(d.address("db"))
    assert tag == b"B"
    assert echoes(old) and echoes(new)
    assert d.listener("db")["resolve"]["name"] == f"two.reaperd.test:{port}"

    # A reload that changes nothing keeps the answer: no refusal, no new lookup needed.
    assert d.ctl("reload").returncode == 0
    s, tag = greeting(d.address("db"))
    assert tag == b"B"
    assert d.listener("db")["refused"]["upstream"] == 0
    for sock in (old, new, s):
        sock.close()
    server_a.close()
    server_b.close()
    assert d.stop() == 0


def test_check_config_checks_names_without_dns(tmp_path, dns):
    dns.set({"db.reaperd.test": ["127.0.0.1"]})
    dns.stop_answering()
    config = tmp_path / "check.conf"
    config.write_text("[listener:db]\nlisten = 127.0.0.1:6432\nupstream = db.reaperd.test:5432\n"
                      "resolve_interval = 10s\n")
    started = time.monotonic()
    result = subprocess.run([*dns.wrapper(), str(REAPERD), "--check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < LOOKUP_TIMEOUT, "--check-config waited for a resolver"
    assert "upstream = db.reaperd.test:5432  # a host name: looked up by reaperd, not by this check" in result.stdout
    assert "resolve_interval = 10s" in result.stdout

    config.write_text("[listener:db]\nlisten = 127.0.0.1:6432\nupstream = db_1.reaperd.test:5432\n"
                      "resolve_interval = 100ms\n")
    result = subprocess.run([str(REAPERD), "--check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 78
    assert f"{config}:3: upstream: db_1.reaperd.test:5432: db_1.reaperd.test is not a host name" in result.stderr
    assert f"{config}:4: resolve_interval: 100ms is out of range (1s ... 24h)" in result.stderr
