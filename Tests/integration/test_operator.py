"""What operators stumbled on (issue 13, item 4): each a behaviour an operator
saw, checked against the real binaries."""
import os
import re
import socket
import subprocess
import time
from datetime import datetime

from conftest import REAPERCTL, REAPERD, listener_section, round_trip, wait_for
from helpers_reaper import TIMESTAMP


def test_reaperctl_says_what_to_check_when_reaperd_is_not_there(tmp_path):
    """"Connection refused" or "No such file" alone did not say to look whether
    reaperd runs, or which path it uses."""
    missing = tmp_path / "nothing.sock"
    result = subprocess.run([str(REAPERCTL), "--socket", str(missing), "status"], capture_output=True, text=True,
                            timeout=10)
    assert result.returncode == 69, result
    assert "is reaperd running?" in result.stderr and "control_socket" in result.stderr, result.stderr
    # A socket file nobody listens on: connection refused.
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(dead))
    s.close()
    result = subprocess.run([str(REAPERCTL), "--socket", str(dead), "status"], capture_output=True, text=True,
                            timeout=10)
    assert result.returncode == 69 and "is reaperd running?" in result.stderr, result.stderr


def test_start_up_says_where_the_control_socket_and_metrics_are(daemon_factory):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")],
                       daemon_keys={"metrics": f"127.0.0.1:{port}"})
    d.start()
    line = next(line for line in d.log().splitlines() if "reaperd started" in line)
    assert f"control socket {d.control}" in line and f"metrics http://127.0.0.1:{port}/metrics" in line, line
    d.stop()


def test_console_lines_carry_the_local_time_unless_stderr_is_the_journal(daemon_factory):
    # Foreground: every line starts with an RFC 3339 time (milliseconds, UTC offset)
    # that is the wall clock of its writing.
    before = time.time()
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")])
    d.start()
    d.stop()
    after = time.time()
    lines = d.log().splitlines()
    assert lines, "reaperd wrote nothing"
    for line in lines:
        match = re.match(rf"^({TIMESTAMP}) (debug|info|notice|warning|err): ", line)
        assert match, line
        stamp = datetime.fromisoformat(match.group(1)).timestamp()
        assert before - 1 <= stamp <= after + 1, (line, before, after)

    # stderr connected to the journal (JOURNAL_STREAM names it): journald stamps each
    # line itself, so the text carries none.
    quiet = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")])
    quiet.stderr_path.touch()
    st = os.stat(quiet.stderr_path)
    quiet.env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    quiet.start()
    quiet.stop()
    lines = quiet.log().splitlines()
    assert lines and all(re.match(r"^(debug|info|notice|warning|err): ", line) for line in lines), lines


def test_a_fatal_start_up_error_reaches_stderr_with_the_journal_as_target(daemon_factory, tmp_path):
    """log_target = journal where no journald listens: start-up failed with exit 1
    and not a word anywhere."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        d = daemon_factory([listener_section("e", f"127.0.0.1:{port}", mode="echo")],
                           daemon_keys={"log_target": "journal"})
        result = subprocess.run([str(REAPERD), "--config", str(d.config)], capture_output=True, text=True,
                                timeout=15, env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 1, result
        assert "start-up failed" in result.stderr and f"127.0.0.1:{port}" in result.stderr, result.stderr
    finally:
        taken.close()


def test_refusals_at_max_connections_are_logged_and_each_listener_warns_for_itself(daemon_factory):
    """Clients refused at max_connections were counted but never logged; the
    "upstream unreachable" warning was rate-limited across listeners, so one
    listener's failure hid another's."""
    dead = []
    for _ in range(2):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead.append(s.getsockname()[1])  # bound, never listening: connections are refused
        s.close()
    d = daemon_factory([
        listener_section("small", "127.0.0.1:0", mode="echo", max_connections=1),
        listener_section("a", "127.0.0.1:0", mode="relay", upstream=f"127.0.0.1:{dead[0]}"),
        listener_section("b", "127.0.0.1:0", mode="relay", upstream=f"127.0.0.1:{dead[1]}"),
    ])
    d.start()
    held = socket.create_connection(d.address("small"), timeout=2)
    try:
        assert round_trip(held, b"hi\n", timeout=2)
        for _ in range(5):
            with socket.create_connection(d.address("small"), timeout=2) as extra:
                extra.settimeout(2)
                assert extra.recv(1) == b""
        for name in ("a", "b"):
            with socket.create_connection(d.address(name), timeout=2) as s:
                s.settimeout(5)
                try:
                    s.recv(1)
                except ConnectionResetError:
                    pass
        wait_for(lambda: "listener=b" in "".join(l for l in d.log().splitlines() if "upstream unreachable" in l),
                 timeout=5, what="listener b's own warning")
        log = d.log().splitlines()
        refused = [line for line in log if "client refused: the listener's max_connections is reached" in line]
        assert len(refused) == 1 and "listener=small" in refused[0], refused  # one line per 10 s, not five
        unreachable = [line for line in log if "upstream unreachable" in line]
        assert {next(f for f in line.split() if f.startswith("listener=")) for line in unreachable} == \
            {"listener=a", "listener=b"}, unreachable
    finally:
        held.close()
        d.stop()


def test_check_config_warns_of_a_short_automatic_user_timeout(tmp_path):
    config = tmp_path / "short.conf"
    config.write_text("[defaults]\nkeepalive_idle = 1s\nkeepalive_interval = 1s\nkeepalive_count = 2\n"
                      "[listener:t]\nlisten = 127.0.0.1:0\nmode = echo\n")
    result = subprocess.run([str(REAPERD), "--check-config", "--config", str(config)], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result
    assert "user_timeout = auto  # 3s" in result.stdout
    assert f"{config}:5: warning: listener t: user_timeout = auto comes to 3s" in result.stderr, result.stderr


def complete(script, line):
    """What bash completion offers for `line` (the cursor at its end)."""
    from pathlib import Path
    words = line.split(" ")
    program = f"""
source /usr/share/bash-completion/bash_completion
source {script}
COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}
COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}
{Path(script).name == "reaperctl" and "_reaperctl" or "_reaperd"}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=10).stdout.split()


def test_bash_completion_offers_the_commands_and_options():
    from pathlib import Path
    contrib = Path(__file__).resolve().parents[2] / "contrib" / "bash-completion"
    assert complete(contrib / "reaperctl", "reaperctl con") == ["connections"]
    assert set(complete(contrib / "reaperctl", "reaperctl connections --")) == {"--listener", "--json"}
    assert "--check-config" in complete(contrib / "reaperd", "reaperd --che")


def test_metrics_carry_the_process_and_reload_conventions(daemon_factory):
    """process_* as the client libraries' collector names them, the build, and
    whether the last reload applied: what dashboards and alerts expect."""
    from helpers_reaper import Metrics, get_metrics
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    listeners = [listener_section("e", "127.0.0.1:0", mode="echo")]
    d = daemon_factory(listeners, daemon_keys={"metrics": f"127.0.0.1:{port}"})
    d.start()
    try:
        m = Metrics(get_metrics(("127.0.0.1", port)))
        for family, kind in (("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
                             ("process_open_fds", "gauge"), ("process_max_fds", "gauge"),
                             ("process_start_time_seconds", "gauge"), ("reaperd_build_info", "gauge"),
                             ("reaperd_config_last_reload_successful", "gauge"),
                             ("reaperd_config_last_reload_success_timestamp_seconds", "gauge")):
            assert m.types.get(family) == kind, (family, m.types.get(family))
        assert m.get("process_open_fds") >= 5 and m.get("process_max_fds") >= m.get("process_open_fds")
        assert m.get("process_resident_memory_bytes") > 1 << 20
        assert abs(m.get("process_start_time_seconds") - time.time()) < 60
        assert m.get("reaperd_config_last_reload_successful") == 1
        loaded = m.get("reaperd_config_last_reload_success_timestamp_seconds")
        d.write_config("[listener:broken]\nmode = sideways\n")
        assert d.ctl("reload").returncode != 0
        m = Metrics(get_metrics(("127.0.0.1", port)))
        assert m.get("reaperd_config_last_reload_successful") == 0
        assert m.get("reaperd_config_last_reload_success_timestamp_seconds") == loaded
        time.sleep(0.05)
        d.write_config(listeners)
        assert d.ctl("reload").returncode == 0, d.log()
        m = Metrics(get_metrics(("127.0.0.1", port)))
        assert m.get("reaperd_config_last_reload_successful") == 1
        assert m.get("reaperd_config_last_reload_success_timestamp_seconds") > loaded
    finally:
        d.stop()


def test_shipped_alerting_rules_check_and_pass_their_tests_against_the_real_page(daemon_factory):
    """contrib/prometheus/reaperd.rules.yml: promtool accepts the rules and their
    unit tests pass, and every metric the rules use is on reaperd's page, which
    promtool also accepts."""
    import re
    from pathlib import Path
    from helpers_reaper import get_metrics
    contrib = Path(__file__).resolve().parents[2] / "contrib" / "prometheus"
    for args in (["check", "rules", "reaperd.rules.yml"], ["test", "rules", "reaperd.rules.test.yml"]):
        result = subprocess.run(["promtool", *args], cwd=contrib, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    d = daemon_factory([listener_section("e", "127.0.0.1:0", mode="echo")], daemon_keys={"metrics": f"127.0.0.1:{port}"})
    d.start()
    try:
        page = get_metrics(("127.0.0.1", port))
    finally:
        d.stop()
    checked = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    used = set(re.findall(r"\b((?:reaperd|process)_[a-z_]+)\b", (contrib / "reaperd.rules.yml").read_text()))
    on_page = {line.split()[2] for line in page.splitlines() if line.startswith("# TYPE")}
    assert used <= on_page, f"the rules use metrics the page lacks: {used - on_page}"


def test_the_upstream_side_port_matches_what_the_service_sees(daemon_factory, vanish):
    """An operator matches a reaperd connection to the service's own view of its
    client (pg_stat_activity.client_port, Redis CLIENT LIST addr) by the upstream
    socket's local address: reaperctl connections shows it as upstream_local, and
    a reap's journal entry as REAPERD_UPSTREAM_LOCAL."""
    from conftest import Upstream
    seen = []

    def handler(conn):
        seen.append(conn.getpeername())
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)

    up = Upstream(handler)
    d = daemon_factory([listener_section("r", "127.0.0.1:0", mode="relay", upstream=up.address,
                                         keepalive_idle="1s", keepalive_interval="1s", keepalive_count="2")],
                       daemon_keys={"poll_interval": "200ms"})
    d.start()
    c = socket.create_connection(d.address("r"), timeout=5)
    try:
        assert round_trip(c, b"hello\n", timeout=5)
        wait_for(lambda: seen, timeout=5, what="the upstream to see the connection")
        (row,) = d.connections()
        assert row["upstream_local"] == f"{seen[0][0]}:{seen[0][1]}", (row, seen)
        vanish.drop(c.getsockname()[1])
        wait_for(lambda: "reason=keepalive" in d.log(), timeout=10, what="the keepalive reap")
        reap = next(line for line in d.log().splitlines() if "reason=keepalive" in line)
        assert f"upstream_local={seen[0][0]}:{seen[0][1]}" in reap, reap
    finally:
        c.close()
        d.stop()
        up.close()
