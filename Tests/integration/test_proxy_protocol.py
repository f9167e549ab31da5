"""The client's address reaches the upstream (issue 13, item 3): the PROXY protocol
(HAProxy's specification) sent to a real HAProxy that reports the client it saw, and
taken from a real HAProxy in front; malformed, late and split headers."""
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import Upstream, echo_handler, free_port, listener_section, wait_for
from helpers_core import (
    closed_by_peer, counters, pattern, read_until_closed, recv_hash, run_reaperd, sha256, wait_counter,
)
from helpers_hostile import cpu_over

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy (Debian: haproxy)")

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class HAProxy:
    """One haproxy process in the foreground with the given configuration."""

    def __init__(self, tmp_path, name, body):
        self.config = tmp_path / f"{name}.cfg"
        self.config.write_text("global\n    maxconn 200\n\ndefaults\n    timeout connect 5s\n"
                               "    timeout client 30s\n    timeout server 30s\n\n" + body)
        check = subprocess.run(["haproxy", "-c", "-f", str(self.config)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        self.log = tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.config)], stdin=subprocess.DEVNULL,
                                     stdout=open(self.log, "wb"), stderr=subprocess.STDOUT)

    def wait_listening(self, port, host="127.0.0.1"):
        def up():
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection((host, port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(up, timeout=10, what=f"haproxy on {host}:{port}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def reporting_haproxy(tmp_path, port):
    """An HTTP server that takes a PROXY header (v1 or v2) and answers with the
    source and destination it names: what PostgreSQL would log as the client."""
    h = HAProxy(tmp_path, f"report{port}", f"""frontend report
    mode http
    bind 127.0.0.1:{port} accept-proxy
    bind [::1]:{port} accept-proxy
    http-request return status 200 content-type text/plain lf-string "%[src]:%[src_port] %[dst]:%[dst_port]"
""")
    h.wait_listening(port)
    return h


def ask(address, family=socket.AF_INET, keep=False):
    """GET / over HTTP/1.1; the answer's body, and the socket when `keep`."""
    s = socket.socket(family)
    s.settimeout(5)
    s.connect(address)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"" if keep else b"Connection: close\r\n") + b"\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < content_length(data):
        chunk = s.recv(4096)
        assert chunk, f"closed before a whole answer: {data!r}"
        data += chunk
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    if keep:
        return body, s
    s.close()
    return body


def content_length(data):
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace").lower()
    for line in head.split("\r\n"):
        if line.startswith("content-length:"):
            return int(line.split(":", 1)[1])
    return 1 << 30


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_upstream_sees_the_client_through_the_relay(daemon_factory, tmp_path, version):
    """HAProxy with accept-proxy reports the client's own address and port and the
    address it connected to, over IPv4 and IPv6 listeners; without the header it
    refuses the connection (so the header really is what it read)."""
    port = free_port()
    report = reporting_haproxy(tmp_path, port)
    try:
        d = daemon_factory([
            listener_section("pg", "127.0.0.1:0", upstream=f"127.0.0.1:{port}", upstream_proxy_protocol=version),
            listener_section("pg6", "[::1]:0", upstream=f"127.0.0.1:{port}", upstream_proxy_protocol=version),
            listener_section("plain", "127.0.0.1:0", upstream=f"127.0.0.1:{port}"),
        ]).start()
        listen = d.address("pg")
        body, s = ask(listen, keep=True)
        try:
            client = s.getsockname()
            assert body == f"{client[0]}:{client[1]} {listen[0]}:{listen[1]}", body
        finally:
            s.close()

        listen6 = d.address("pg6")
        body, s = ask(listen6, family=socket.AF_INET6, keep=True)
        try:
            client = s.getsockname()
            assert body == f"{client[0]}:{client[1]} {listen6[0]}:{listen6[1]}", body
        finally:
            s.close()

        with socket.create_connection(d.address("plain"), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            how, data, _ = read_until_closed(s, timeout=5)
            assert b"200" not in data, "haproxy answered without a PROXY header: the test proves nothing"
    finally:
        report.stop()


def test_a_load_balancer_in_front_names_the_client_end_to_end(daemon_factory, tmp_path):
    """HAProxy in front (send-proxy-v2) -> reaperd (accept_proxy_protocol, sending v1)
    -> HAProxy reporting what it saw: the client's own port survives both hops, and
    reaperctl shows the client as the peer and the load balancer as `via`."""
    report_port = free_port()
    report = reporting_haproxy(tmp_path, report_port)
    front = None
    try:
        d = daemon_factory([listener_section(
            "lb", "127.0.0.1:0", upstream=f"127.0.0.1:{report_port}", accept_proxy_protocol="yes",
            upstream_proxy_protocol="v1")]).start()
        relay = d.address("lb")
        front_port = free_port()
        front = HAProxy(tmp_path, "front", f"""frontend front
    mode tcp
    bind 127.0.0.1:{front_port}
    default_backend relay
backend relay
    mode tcp
    server reaperd 127.0.0.1:{relay[1]} send-proxy-v2
""")
        front.wait_listening(front_port)
        wait_for(lambda: counters(d, "lb")["closed"] >= 1, timeout=5,
                 what="haproxy's own probe connection to close")  # wait_listening's probe, relayed through
        body, s = ask(("127.0.0.1", front_port), keep=True)
        try:
            client = s.getsockname()
            assert body == f"{client[0]}:{client[1]} 127.0.0.1:{front_port}", body
            rows = d.connections("lb")
            assert len(rows) == 1, rows
            assert rows[0]["peer"] == f"{client[0]}:{client[1]}", rows
            via_host, via_port = rows[0]["via"].rsplit(":", 1)
            assert via_host == "127.0.0.1" and int(via_port) not in (client[1], front_port), rows
        finally:
            s.close()
        assert counters(d, "lb")["refused"]["proxy_header"] == 0
    finally:
        if front:
            front.stop()
        report.stop()


def v2_header(source, destination):
    (src, sport), (dst, dport) = source, destination
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def test_header_split_byte_by_byte_then_data_larger_than_every_buffer(daemon_factory):
    """The header arrives one byte per segment, its last byte together with 4 MiB of
    data: every byte after the header reaches the upstream, none is taken with it,
    and the loop does not spin on a partial header."""
    up = Upstream(echo_handler)
    d = daemon_factory([listener_section("lb", "127.0.0.1:0", upstream=up.address,
                                         accept_proxy_protocol="yes", proxy_header_timeout="20s")]).start()
    try:
        for header in (v2_header(("192.0.2.10", 40000), ("198.18.0.1", 5432)),
                       b"PROXY TCP4 192.0.2.10 198.18.0.1 40000 5432\r\n"):
            payload = pattern(len(header), 4 << 20)
            with socket.create_connection(d.address("lb"), timeout=10) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for byte in header[:-1]:
                    s.sendall(bytes([byte]))
                    time.sleep(0.002)
                spent = cpu_over(d, 0.5)
                assert spent < 0.1, f"reaperd burned {spent:.2f}s of CPU in 0.5s waiting for a header"
                assert d.connections("lb")[0]["health"] == "awaiting-header"
                s.sendall(header[-1:] + payload[:65536])
                wait_for(lambda: d.connections("lb")[0]["peer"] == "192.0.2.10:40000", timeout=5,
                         what="the header's client as the peer")
                threading.Thread(target=s.sendall, args=(payload[65536:],), daemon=True).start()
                got, digest = recv_hash(s, len(payload), timeout=30)
                assert (got, digest) == (len(payload), sha256(payload)), f"{got} of {len(payload)} bytes came back"
    finally:
        up.close()


def test_a_bad_or_late_header_is_refused_counted_and_logged(daemon_factory):
    up = Upstream(echo_handler)
    d = daemon_factory([listener_section("lb", "127.0.0.1:0", upstream=up.address,
                                         accept_proxy_protocol="yes", proxy_header_timeout="300ms")]).start()
    try:
        # Not a PROXY header: refused at once, the upstream never dialled.
        with socket.create_connection(d.address("lb"), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert closed_by_peer(s, timeout=2)
        wait_counter(d, "lb", ("refused", "proxy_header"), 1)
        # Half a header, then silence: refused at the deadline.
        with socket.create_connection(d.address("lb"), timeout=5) as s:
            s.sendall(b"PROXY TCP4 192.0.2.1 ")
            started = time.monotonic()
            assert closed_by_peer(s, timeout=3)
            assert 0.2 <= time.monotonic() - started <= 2.0
        wait_counter(d, "lb", ("refused", "proxy_header"), 2)
        # Connect and leave without a word (a TCP health check): closed, not refused.
        socket.create_connection(d.address("lb"), timeout=5).close()
        wait_counter(d, "lb", ("closed",), 1)
        assert counters(d, "lb")["refused"]["proxy_header"] == 2
        assert len(up.accepted) == 0, "the upstream was dialled for a client without a valid header"
        log = d.log()
        assert "client refused: no valid PROXY protocol header" in log and "not a PROXY protocol header" in log, log
        assert "2 (proxy header)" in d.ctl("status").stdout, d.ctl("status").stdout
    finally:
        up.close()


def test_check_config_refuses_a_proxy_header_toward_no_upstream(tmp_path):
    config = tmp_path / "r.conf"
    config.write_text("[listener:e]\nlisten = 127.0.0.1:0\nmode = echo\nupstream_proxy_protocol = v2\n")
    result = run_reaperd("--check-config", "--config", str(config))
    assert result.returncode == 78 and f"{config}:4:" in result.stderr and "mode = echo" in result.stderr, \
        result.stderr
    config.write_text("[listener:r]\nlisten = 127.0.0.1:0\nupstream = 127.0.0.1:1\nupstream_proxy_protocol = v3\n")
    result = run_reaperd("--check-config", "--config", str(config))
    assert result.returncode == 78 and f"{config}:4:" in result.stderr and "off" in result.stderr, result.stderr
    # Inherited from [defaults], it simply does not apply to an echo listener; the
    # printed configuration checks identically.
    config.write_text("[defaults]\nupstream_proxy_protocol = v2\n[listener:e]\nlisten = 127.0.0.1:0\nmode = echo\n")
    result = run_reaperd("--check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "printed.conf"
    printed.write_text(result.stdout)
    again = run_reaperd("--check-config", "--config", str(printed))
    assert again.returncode == 0 and again.stdout == result.stdout, again.stderr
