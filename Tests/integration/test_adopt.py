"""Adopt mode: reaperd beside an unmodified server, reaping its dead connections
without standing in front of it (SPEC §9).

The server is a small Python process started inside a cgroup the test creates;
reaperd adopts that cgroup. Clients vanish as a pulled cable would (an nft drop
on loopback). The server reports how each of its connections ended, so the test
sees what the service itself saw: ETIMEDOUT from the kernel's probes or user
timeout, ECONNABORTED from SOCK_DESTROY. Needs root (BPF, cgroups, nft).
"""
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="adopt mode needs root: BPF, cgroups and nft")

SERVER = textwrap.dedent("""
    import os, socket, sys, threading
    mode = sys.argv[2]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    print("port", server.getsockname()[1], flush=True)
    def serve(conn, peer):
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    if mode == "hold":
                        threading.Event().wait()  # never closes: a CLOSE_WAIT leak
                    print("eof", peer, flush=True)
                    return
                if data.startswith(b"STREAM"):
                    conn.settimeout(60)
                    while True:
                        conn.sendall(b"s" * 65536)
                conn.sendall(data)
        except OSError as error:
            print("error", peer, error.errno, flush=True)
        finally:
            conn.close()
    while True:
        conn, peer = server.accept()
        threading.Thread(target=serve, args=(conn, peer[1]), daemon=True).start()
""")


def cgroup_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == "cgroup2":
                return fields[4]
    pytest.fail("no cgroup v2 hierarchy mounted")


class Server:
    """The unmodified service, in a cgroup of its own (or none: `cgroup=None`)."""

    def __init__(self, cgroup, mode="echo"):
        def enter():
            if cgroup:
                with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, "server", mode], stdout=subprocess.PIPE,
                                     text=True, preexec_fn=enter)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "port", line
        self.port = int(line[1])
        self.lines = []
        import threading
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.split())

    def ended(self, client):
        """How the server's side of `client` ended: ("error", errno), ("eof",), or None."""
        port = str(client.getsockname()[1])
        for line in self.lines:
            if len(line) >= 2 and line[1] == port:
                return (line[0], int(line[2])) if line[0] == "error" else (line[0],)
        return None

    def close(self):
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def cgroup():
    path = os.path.join(cgroup_mount(), f"reaperd-test-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path)
    yield path
    with open(os.path.join(path, "cgroup.procs")) as f:
        for pid in f.read().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
    wait_for(lambda: open(os.path.join(path, "cgroup.procs")).read().strip() == "", timeout=5,
             what="the test cgroup to empty")
    os.rmdir(path)


def service_section(name, cgroup_path, **keys):
    relative = "/" + os.path.relpath(cgroup_path, cgroup_mount())
    lines = [f"[service:{name}]", f"cgroup = {relative}"] + [f"{k} = {v}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


def adopting_daemon(daemon_factory, cgroup_path, daemon_keys=None, **keys):
    settings = {"keepalive_idle": "1s", "keepalive_interval": "1s", "keepalive_count": "2", "user_timeout": "3s"}
    settings.update(keys)
    d = daemon_factory([service_section("py", cgroup_path, **settings)],
                       daemon_keys={"poll_interval": "200ms", **(daemon_keys or {})})
    d.start()
    wait_for(lambda: "adopting cgroup" in d.log(), timeout=5, what="reaperd to attach to the cgroup")
    return d


def reaps(d, reason):
    return [line for line in d.log().splitlines() if "reaped adopted connection" in line and f"reason={reason}" in line]


def echo(s, payload=b"ping\n"):
    s.settimeout(5)
    s.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = s.recv(64)
        if not chunk:
            return False
        got += chunk
    return got == payload


def test_vanished_peers_of_an_unmodified_server_are_reaped_by_its_own_kernel(daemon_factory, cgroup, vanish):
    """Idle: keepalive probes (1 s + 2 x 1 s); busy: the user timeout (3 s). The
    server itself gets ETIMEDOUT and closes; a living client and a server outside
    the cgroup are untouched."""
    server = Server(cgroup)
    outside = Server(None)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    metrics_port = probe.getsockname()[1]
    probe.close()
    d = adopting_daemon(daemon_factory, cgroup, daemon_keys={"metrics": f"127.0.0.1:{metrics_port}"})
    idle = socket.create_connection(("127.0.0.1", server.port))
    busy = socket.create_connection(("127.0.0.1", server.port))
    alive = socket.create_connection(("127.0.0.1", server.port))
    stranger = socket.create_connection(("127.0.0.1", outside.port))
    try:
        for s in (idle, busy, alive, stranger):
            assert echo(s)
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        busy.sendall(b"STREAM\n")
        time.sleep(0.5)  # the server's send queue fills: data in flight when the cable goes
        listed = d.connections()
        assert len([c for c in listed if c.get("adopted")]) == 3, listed
        for s in (idle, busy, stranger):
            vanish.drop(s.getsockname()[1])
        gone = time.monotonic()
        wait_for(lambda: server.ended(idle) and server.ended(busy), timeout=12,
                 what="the server to see both vanished clients end")
        assert server.ended(idle) == ("error", 110), server.lines  # ETIMEDOUT
        assert server.ended(busy) == ("error", 110), server.lines
        wait_for(lambda: reaps(d, "keepalive") and reaps(d, "user-timeout"), timeout=3,
                 what="reaperd's reap entries")
        elapsed = time.monotonic() - gone
        # user_timeout 3 s + poll 0.2 s, plus the test's own polling.
        assert elapsed < 3 + 0.2 + 2.5, f"reaped {elapsed:.1f}s after the clients vanished"
        keepalive = reaps(d, "keepalive")
        assert len(keepalive) == 1 and f"peer=127.0.0.1:{idle.getsockname()[1]}" in keepalive[0], keepalive
        assert "pid=" in keepalive[0] and "comm=python" in keepalive[0], keepalive
        assert len(reaps(d, "user-timeout")) == 1
        assert echo(alive), "a living client of the adopted server stopped working"
        assert server.ended(alive) is None
        assert outside.ended(stranger) is None, "a server outside the cgroup was touched"
        listed = [c for c in d.connections() if c.get("adopted")]
        assert [c["peer"] for c in listed] == [f"127.0.0.1:{alive.getsockname()[1]}"], listed
        # The same metrics as a listener's, under the service's name.
        from helpers_reaper import Metrics, get_metrics
        m = Metrics(get_metrics(("127.0.0.1", metrics_port)))
        assert m.get("reaperd_reaped_total", listener="py", reason="keepalive") == 1
        assert m.get("reaperd_reaped_total", listener="py", reason="user-timeout") == 1
        assert m.get("reaperd_accepted_total", listener="py") == 3
        assert sum(m.get("reaperd_connections", listener="py", health=h) for h in ("active", "idle", "probing",
                                                                                  "dead")) == 1
    finally:
        for s in (idle, busy, alive, stranger):
            s.close()
        d.stop()
        server.close()
        outside.close()


def test_connections_from_before_reaperd_started_are_covered(daemon_factory, cgroup, vanish):
    """A connection the server accepted before reaperd attached gets keepalive
    through pidfd_getfd, so its vanished peer is reaped like any other."""
    server = Server(cgroup)
    early = socket.create_connection(("127.0.0.1", server.port))
    try:
        assert echo(early)
        d = adopting_daemon(daemon_factory, cgroup)
        assert "1 of 1 existing ones retrofitted" in d.log(), d.log()
        vanish.drop(early.getsockname()[1])
        wait_for(lambda: server.ended(early), timeout=10, what="the server to see the early client end")
        assert server.ended(early) == ("error", 110), server.lines
        wait_for(lambda: reaps(d, "keepalive"), timeout=3, what="the keepalive reap")
        d.stop()
    finally:
        early.close()
        server.close()


def test_idle_timeout_and_a_half_close_leak_are_destroyed(daemon_factory, cgroup):
    """What the kernel's timers do not cover, reaperd ends with SOCK_DESTROY: the
    server sees ECONNABORTED, the client an RST. A server that never closes after
    its client's FIN (CLOSE_WAIT forever) is a leak half_close_timeout ends."""
    server = Server(cgroup, mode="hold")
    d = adopting_daemon(daemon_factory, cgroup, idle_timeout="2s", half_close_timeout="1s",
                        keepalive_idle="60s")
    quiet = socket.create_connection(("127.0.0.1", server.port))
    leaked = socket.create_connection(("127.0.0.1", server.port))
    try:
        assert echo(leaked)
        leaked.shutdown(socket.SHUT_WR)
        wait_for(lambda: server.ended(quiet), timeout=5, what="the idle connection to be destroyed")
        assert server.ended(quiet) == ("error", 103), server.lines  # ECONNABORTED
        quiet.settimeout(2)
        with pytest.raises(ConnectionResetError):
            quiet.recv(1)
        wait_for(lambda: reaps(d, "idle-timeout"), timeout=3, what="the idle-timeout reap")
        # The held connection: the server's thread waits forever; the socket
        # goes, and the client sees the reset.
        wait_for(lambda: reaps(d, "half-close-timeout"), timeout=5, what="the half-close leak to be reaped")
        leaked.settimeout(2)
        with pytest.raises(ConnectionResetError):
            leaked.recv(1)
        assert not [c for c in d.connections() if c.get("adopted")]
        d.stop()
    finally:
        quiet.close()
        leaked.close()
        server.close()


def test_adopt_mode_without_its_capabilities_is_a_clear_start_up_error(daemon_factory, cgroup):
    """Under the unprivileged unit (no CAP_BPF, no CAP_NET_ADMIN) a [service:]
    section stops start-up with the missing capabilities named, instead of a
    bare EPERM from the kernel or a daemon that silently adopts nothing."""
    from conftest import REAPERD
    d = daemon_factory([service_section("py", cgroup)])
    result = subprocess.run(["setpriv", "--bounding-set=-bpf,-net_admin", str(REAPERD), "--config", str(d.config)],
                            capture_output=True, text=True, timeout=15)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "needs CAP_BPF and CAP_NET_ADMIN" in result.stderr and "reaperd-adopt.service" in result.stderr, \
        result.stderr


def keepalive_armed(server_port, client):
    """Whether the server's side of `client` has a keepalive timer (ss -tino)."""
    out = subprocess.run(["ss", "-tinoH", "state", "established", f"( sport = :{server_port} and dport = :"
                          f"{client.getsockname()[1]} )"], capture_output=True, text=True, timeout=10).stdout
    assert out.strip(), f"ss does not show the server's side of {client.getsockname()}"
    return "timer:(keepalive" in out


def test_reload_adds_and_removes_services_and_nothing_stays_attached(daemon_factory, cgroup):
    """A reload adopts a new service and lets go of a removed one; when reaperd
    stops, the kernel detaches its program: connections made afterwards get no
    keepalive from it."""
    from conftest import listener_section
    server = Server(cgroup)
    echo_only = [listener_section("e", "127.0.0.1:0", mode="echo")]
    d = daemon_factory(echo_only, daemon_keys={"poll_interval": "200ms"})
    d.start()
    clients = []
    try:
        before = socket.create_connection(("127.0.0.1", server.port))
        clients.append(before)
        assert echo(before) and not keepalive_armed(server.port, before)
        d.write_config(echo_only + [service_section("py", cgroup, keepalive_idle="30s")])
        assert d.ctl("reload").returncode == 0, d.log()
        wait_for(lambda: "adopting cgroup" in d.log(), timeout=5, what="the reload to adopt the service")
        assert "1 of 1 existing ones retrofitted" in d.log(), d.log()
        assert keepalive_armed(server.port, before), "the connection from before the reload was not retrofitted"
        during = socket.create_connection(("127.0.0.1", server.port))
        clients.append(during)
        assert echo(during) and keepalive_armed(server.port, during)
        wait_for(lambda: len([c for c in d.connections() if c.get("adopted")]) == 2, timeout=3,
                 what="both connections listed")

        d.write_config(echo_only)
        assert d.ctl("reload").returncode == 0, d.log()
        assert "service no longer adopted" in d.log()
        after_removal = socket.create_connection(("127.0.0.1", server.port))
        clients.append(after_removal)
        assert echo(after_removal) and not keepalive_armed(server.port, after_removal)
        assert not [c for c in d.connections() if c.get("adopted")]

        d.write_config(echo_only + [service_section("py", cgroup, keepalive_idle="30s")])
        assert d.ctl("reload").returncode == 0, d.log()
        wait_for(lambda: d.log().count("adopting cgroup") == 2, timeout=5, what="the service adopted again")
        d.stop()
        after_stop = socket.create_connection(("127.0.0.1", server.port))
        clients.append(after_stop)
        assert echo(after_stop) and not keepalive_armed(server.port, after_stop), \
            "reaperd's program stayed attached after it stopped"
    finally:
        for s in clients:
            s.close()
        server.close()


class Redis:
    """Debian's redis-server, unmodified, in the test's cgroup."""

    def __init__(self, cgroup):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()

        def enter():
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no", "--tcp-keepalive", "0", "--timeout", "0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=enter)
        wait_for(lambda: self._ping(), timeout=10, what="redis-server to answer")

    def _ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                return command(s, "PING") == b"+PONG\r\n"
        except OSError:
            return False

    def client(self, name):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        assert command(s, "CLIENT", "SETNAME", name) == b"+OK\r\n"
        return s

    def close(self):
        self.proc.kill()
        self.proc.wait(5)


def command(s, *words, read=True):
    s.sendall(f"*{len(words)}\r\n".encode() + b"".join(f"${len(w)}\r\n{w}\r\n".encode() for w in words))
    if not read:
        return None
    s.settimeout(5)
    data = s.recv(65536)
    # A bulk reply may come in pieces: read until its announced length is there.
    if data.startswith(b"$"):
        length = int(data[1:data.index(b"\r\n")])
        while len(data) < data.index(b"\r\n") + 2 + length + 2:
            data += s.recv(65536)
    return data


def client_names(s):
    reply = command(s, "CLIENT", "LIST").decode()
    return {field.split("=", 1)[1] for line in reply.splitlines() for field in line.split() if field.startswith("name=")}


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by make test (TEST_PKGS)")
def test_redis_drops_the_clients_that_vanished_and_keeps_the_rest(daemon_factory, cgroup, vanish):
    """Redis with its own keepalive off (tcp-keepalive 0), adopted: an idle client
    that vanished and one that vanished in the middle of a 16 MiB reply leave
    CLIENT LIST (the kernel's probes and the user timeout end them, Redis frees
    them); a living client is untouched."""
    redis = Redis(cgroup)
    d = adopting_daemon(daemon_factory, cgroup, ports=str(redis.port))
    clients = {}
    try:
        for name in ("idle", "busy", "alive"):
            clients[name] = redis.client(name)
        assert command(clients["alive"], "SET", "big", "x" * (16 << 20)) == b"+OK\r\n"
        clients["busy"].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        command(clients["busy"], "GET", "big", read=False)
        time.sleep(0.5)
        assert client_names(clients["alive"]) == {"idle", "busy", "alive"}
        for name in ("idle", "busy"):
            vanish.drop(clients[name].getsockname()[1])
        wait_for(lambda: client_names(clients["alive"]) == {"alive"}, timeout=12,
                 what="Redis to drop the two vanished clients")
        wait_for(lambda: reaps(d, "keepalive") and reaps(d, "user-timeout"), timeout=3, what="both reaps logged")
        assert "comm=redis-server" in reaps(d, "keepalive")[0], reaps(d, "keepalive")
        assert command(clients["alive"], "PING") == b"+PONG\r\n"
        d.stop()
    finally:
        for s in clients.values():
            s.close()
        redis.close()


def test_a_service_that_starts_later_is_covered_once_its_cgroup_appears(daemon_factory, cgroup, vanish):
    """Not running yet is no start-up failure: reaperd says so, and attaches as
    soon as the cgroup exists; status shows which."""
    later = cgroup + "-later"
    d = adopting_daemon_waiting(daemon_factory, later)
    server = None
    try:
        status = d.status()["services"][0]
        assert status["attached"] is False and "has no cgroup yet" in status["problem"], status
        assert "not running (no cgroup yet)" in d.ctl("status").stdout
        os.mkdir(later)
        wait_for(lambda: d.status()["services"][0]["attached"], timeout=3, what="reaperd to attach to the new cgroup")
        assert d.status()["services"][0]["cgroup"] == later
        server = Server(later)
        s = socket.create_connection(("127.0.0.1", server.port))
        assert echo(s)
        vanish.drop(s.getsockname()[1])
        wait_for(lambda: server.ended(s), timeout=10, what="the server to see its vanished client end")
        assert server.ended(s) == ("error", 110), server.lines
        s.close()
        d.stop()
    finally:
        if server:
            server.close()
        if os.path.isdir(later):
            wait_for(lambda: open(os.path.join(later, "cgroup.procs")).read().strip() == "", timeout=5,
                     what="the later cgroup to empty")
            os.rmdir(later)


def adopting_daemon_waiting(daemon_factory, cgroup_path):
    d = daemon_factory([service_section("py", cgroup_path, keepalive_idle="1s", keepalive_interval="1s",
                                        keepalive_count="2")], daemon_keys={"poll_interval": "200ms"})
    d.start()
    wait_for(lambda: "has no cgroup yet" in d.log(), timeout=5, what="reaperd to say the service is not running")
    return d
