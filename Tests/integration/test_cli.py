"""reaperd's command line: version, help, usage errors, --check-config, start-up failures."""
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REAPERD, listener_section
from helpers_core import run_reaperd


def test_version_and_help():
    version = run_reaperd("--version")
    assert version.returncode == 0, version.stderr
    assert re.search(r"reaperd \d+\.\d+", version.stdout), version.stdout
    helped = run_reaperd("--help")
    assert helped.returncode == 0, helped.stderr
    assert "usage: reaperd" in helped.stdout
    for flag in ("--config", "--check-config", "--version", "--help"):
        assert flag in helped.stdout


@pytest.mark.parametrize("args", [["--frobnicate"], ["--config"], ["extra-operand"]])
def test_usage_errors_exit_64(args):
    result = run_reaperd(*args)
    assert result.returncode == 64, (result.returncode, result.stderr)
    assert "usage: reaperd" in result.stderr, result.stderr
    assert result.stdout == ""


FULL_CONFIG = """\
# every section, comments of both kinds, odd spacing
[daemon]
control_socket = {dir}/control.sock
metrics = off
log_level = notice
log_target = console
poll_interval = 250ms
shutdown_grace = 2s
max_connections = 1234

; the defaults every listener inherits
[defaults]
keepalive_idle = 7
keepalive_interval = 3s
keepalive_count = 4
user_timeout = auto
half_close_timeout = 2min
connect_timeout = 1500ms
max_connections = 99

[listener:alpha]
listen = 127.0.0.1:0, [::1]:0
mode = relay
upstream = 127.0.0.1:5432
   keepalive_idle   =   11s
user_timeout = 2500ms
upstream_keepalive = off

[listener:beta-2]
listen = 127.0.0.1:0
mode = echo
reuse_port = yes
backlog = 16
"""


def test_check_config_prints_a_configuration_that_checks_identically(tmp_path):
    source = tmp_path / "in.conf"
    source.write_text(FULL_CONFIG.format(dir=tmp_path))
    first = run_reaperd("--check-config", "--config", str(source))
    assert first.returncode == 0, first.stderr
    out = first.stdout
    # The effective configuration carries what the file said and the defaults it left out.
    for section in ("[daemon]", "[defaults]", "[listener:alpha]", "[listener:beta-2]"):
        assert section in out
    alpha = out.split("[listener:alpha]", 1)[1].split("[listener:beta-2]", 1)[0]
    beta = out.split("[listener:beta-2]", 1)[1]
    assert re.search(r"^keepalive_idle = 11s?$", alpha, re.M), alpha
    assert re.search(r"^keepalive_count = 4$", alpha, re.M), alpha
    assert re.search(r"^upstream_keepalive = (no|off|false)$", alpha, re.M), alpha
    assert re.search(r"^upstream = 127\.0\.0\.1:5432$", alpha, re.M), alpha
    assert re.search(r"^keepalive_idle = 7s?$", beta, re.M), beta
    assert re.search(r"^idle_timeout = ", beta, re.M), "a key the file left out is not filled in"
    assert re.search(r"^max_connections = 99$", beta, re.M), beta
    assert re.search(r"^max_connections = 1234$", out, re.M)

    again = tmp_path / "again.conf"
    again.write_text(out)
    second = run_reaperd("--check-config", "--config", str(again))
    assert second.returncode == 0, second.stderr
    assert second.stdout == out, "--check-config output does not re-check identically"
    # Only advice on stderr, the same both times: beta-2's user_timeout = auto is 19 s.
    def advice(result, path):
        return [line.replace(str(path), "FILE") for line in result.stderr.splitlines()]
    assert advice(second, again) and all(": warning: " in line for line in advice(second, again)), second.stderr
    assert [line.split(": warning: ")[1] for line in advice(second, again)] == \
        [line.split(": warning: ")[1] for line in advice(first, source)]


def test_check_config_without_a_file_shows_the_embedded_default():
    if Path("/etc/reaperd/reaperd.conf").exists():
        pytest.skip("/etc/reaperd/reaperd.conf exists on this machine; the embedded default is not in use")
    result = run_reaperd("--check-config")
    assert result.returncode == 0, result.stderr
    echo = result.stdout.split("[listener:echo]", 1)[1]
    assert re.search(r"^listen = 127\.0\.0\.1:7070$", echo, re.M), result.stdout
    assert re.search(r"^mode = echo$", echo, re.M)
    assert re.search(r"^keepalive_idle = (60s|1min)$", echo, re.M)
    assert re.search(r"^keepalive_interval = 10s$", echo, re.M)
    assert re.search(r"^keepalive_count = 3$", echo, re.M)


# (file text, the 1-based line the error must name)
MALFORMED = {
    "key outside a section": ("keepalive = yes\n[daemon]\n", 1),
    "unknown section": ("[daemon]\nlog_level = info\n\n[nonsense]\nx = 1\n", 4),
    "unknown key": ("[daemon]\nlog_level = info\nlog_colour = red\n", 3),
    "duplicate key": ("[defaults]\nkeepalive_idle = 5\nkeepalive_count = 3\nkeepalive_idle = 6\n", 4),
    "out of range": ("[defaults]\nkeepalive_count = 128\n", 2),
    "bad duration": ("[defaults]\n\n# comment\nconnect_timeout = soon\n", 4),
    "bad boolean": ("[defaults]\nkeepalive = maybe\n", 2),
    "bad listener name": ("[listener:no spaces]\nlisten = 127.0.0.1:0\nmode = echo\n", 1),
    "relay without upstream": ("[listener:x]\nlisten = 127.0.0.1:0\nmode = relay\n", 1),
    "bad address": ("[listener:x]\nlisten = 127.0.0.1\nmode = echo\n", 2),
    "line without =": ("[daemon]\nlog_level info\n", 2),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_exits_78_with_file_and_line(tmp_path, case):
    text, line = MALFORMED[case]
    path = tmp_path / "bad.conf"
    path.write_text(text)
    for args in (["--check-config", "--config", str(path)], ["--config", str(path)]):
        result = run_reaperd(*args, timeout=10)
        assert result.returncode == 78, (args, result.returncode, result.stderr)
        assert f"{path}:{line}:" in result.stderr, (case, result.stderr)
        assert result.stdout == ""


def test_missing_config_file_exits_78(tmp_path):
    missing = tmp_path / "no-such.conf"
    for args in (["--config", str(missing)], ["--check-config", "--config", str(missing)]):
        result = run_reaperd(*args, timeout=10)
        assert result.returncode == 78, (args, result.returncode, result.stderr)
        assert str(missing) in result.stderr


def test_fifo_as_config_file_exits_78_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until a writer appears; reaperd refuses
    anything but a regular file instead, at once."""
    fifo = tmp_path / "reaperd.conf"
    os.mkfifo(fifo)
    for args in (["--config", str(fifo)], ["--check-config", "--config", str(fifo)]):
        started = time.monotonic()
        try:
            result = run_reaperd(*args, timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"reaperd {' '.join(args)} blocked on a FIFO")
        assert time.monotonic() - started < 3.0
        assert result.returncode == 78, (args, result.returncode, result.stderr)
        assert f"{fifo}: not a regular file" in result.stderr, result.stderr
    directory = tmp_path / "a-directory"
    directory.mkdir()
    result = run_reaperd("--check-config", "--config", str(directory), timeout=5)
    assert result.returncode == 78 and f"{directory}: not a regular file" in result.stderr, result.stderr


def test_listener_port_in_use_fails_start_naming_listener_and_address(tmp_path):
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    try:
        config = tmp_path / "reaperd.conf"
        config.write_text(
            f"[daemon]\ncontrol_socket = {tmp_path}/control.sock\nlog_target = console\n\n"
            + listener_section("fine", "127.0.0.1:0", "echo") + "\n"
            + listener_section("clash", f"127.0.0.1:{port}", "echo"))
        try:
            result = subprocess.run([str(REAPERD), "--config", str(config)], capture_output=True, text=True,
                                    timeout=10, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            pytest.fail("reaperd kept running although a listener could not bind")
        assert result.returncode != 0
        assert "clash" in result.stderr and f"127.0.0.1:{port}" in result.stderr, result.stderr
        assert "in use" in result.stderr.lower(), result.stderr
    finally:
        squatter.close()
