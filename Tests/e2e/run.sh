#!/usr/bin/env bash
# End-to-end tests of reaperd under a real systemd 252 (Debian 12) in systemd-nspawn.
# `make e2e` runs this, as root. Each check prints `ok - NAME` or `not ok - NAME`
# (with the evidence indented under `#`); the last line is `N passed, M failed`, and the
# exit status is non-zero when any check failed.
#
# Environment:
#   REAPERD_E2E_CACHE   where the rootfs cache lives (default /var/cache/reaperd-e2e)
#   REAPERD_E2E_KEEP=1  leave the container running at the end and print how to enter it
#   REAPERD_E2E_ONLY=a,b  run only the scenarios scenario_a and scenario_b
#                       (clean up with: kill NSPAWN_PID; umount/rm the printed directory)
#   CT_BOOT_TIMEOUT     seconds to wait for the container's systemd (default 60)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
E2E=$REPO/Tests/e2e
# shellcheck source=Tests/e2e/boot.sh
source "$E2E/boot.sh"

ECHO_PORT=17070     # reaperd's [listener:e2e]
PROBE_PORT=17071    # the stand-in daemon of the hardening check

PASSED=0
FAILED=0
ROOTFS=""
INSTALLED=no
TIMINGS=()
LOG=$(mktemp /tmp/reaperd-e2e-check.XXXXXX)

# check NAME FUNCTION [ARGS...]: run one check (in this shell, so it may set state for
# later checks); its output is kept as the evidence printed when it fails.
check() {
    local name=$1 rc
    shift
    "$@" >"$LOG" 2>&1 </dev/null
    rc=$?
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        printf 'ok - %s\n' "$name"
        # Scenarios print what they measured; keep it in the log as comments.
        [[ $name == scenario-* ]] && sed 's/^/#   /' "$LOG"
    else
        FAILED=$((FAILED + 1))
        printf 'not ok - %s\n' "$name"
        tail -n 25 "$LOG" | sed 's/^/#   /'
    fi
    return 0
}

# Print why a check failed; `COND || fail "why" || return 1` stops the check there.
fail() { printf '%s\n' "$*"; return 1; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# A line sent to 127.0.0.1:PORT from the host must come back unchanged.
echo_roundtrip() {
    python3 - "$1" <<'PY'
import socket, sys, uuid
line = f"reaperd-e2e {uuid.uuid4()}\n".encode()
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
    s.settimeout(5)
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
if got != line:
    sys.exit(f"sent {line!r}, got {got!r}")
PY
}

# Poll CMD (in the container) until it succeeds, at most SECONDS.
wait_in_ct() {
    local limit=$1 deadline
    shift
    deadline=$((SECONDS + limit))
    until in_ct "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# ---------------------------------------------------------------- container checks

check_rootfs() {
    local t0 t1
    t0=$(ct_now)
    ROOTFS=$("$E2E/rootfs.sh") || return 1
    t1=$(ct_now)
    if grep -q '^rootfs: built ' "$LOG"; then
        TIMINGS+=("rootfs built by debootstrap in $(elapsed "$t0" "$t1") s")
    else
        TIMINGS+=("rootfs taken from the cache in $(elapsed "$t0" "$t1") s")
    fi
}

check_install() {
    ct_install "$REPO" || return 1
    [[ -x $CT_ROOT/usr/local/bin/reaperd && -x $CT_ROOT/usr/local/bin/reaperctl ]] \
        || fail "binaries missing after make install" || return 1
    [[ -f $CT_ROOT/etc/systemd/system/reaperd.service ]] || fail "unit missing after make install" || return 1
    INSTALLED=yes
}

check_boot() {
    local t0 t1
    t0=$(ct_now)
    ct_boot || return 1
    t1=$(ct_now)
    TIMINGS+=("boot to running in $(elapsed "$t0" "$t1") s")
}

check_systemctl() {
    local version
    version=$(in_ct systemctl show -p Version --value) || return 1
    [[ $version == 252* ]] || fail "container runs systemd '$version', expected 252" || return 1
    in_ct systemctl is-active --quiet dbus.service systemd-journald.service \
        || fail "dbus/journald not active" || return 1
}

check_journal() {
    local marker="reaperd-e2e-marker-$RANDOM$RANDOM"
    in_ct systemd-cat -t reaperd-e2e echo "$marker" || return 1
    local deadline=$((SECONDS + 10))
    until in_ct journalctl -q --no-pager -t reaperd-e2e -o cat | grep -qx "$marker"; do
        ((SECONDS < deadline)) || fail "marker line never reached the journal" || return 1
        sleep 0.2
    done
}

# A trivial oneshot unit of our own: start, journal output, Result=success.
check_trivial_unit() {
    cat >"$CT_ROOT/etc/systemd/system/e2e-hello.service" <<'EOF'
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/echo hello from e2e-hello
EOF
    in_ct systemctl daemon-reload || return 1
    in_ct systemctl start e2e-hello.service || return 1
    in_ct systemctl is-active --quiet e2e-hello.service || fail "e2e-hello not active" || return 1
    in_ct journalctl -q --no-pager -u e2e-hello.service -o cat | grep -qx 'hello from e2e-hello' \
        || fail "no journal line from e2e-hello" || return 1
    in_ct systemctl stop e2e-hello.service || return 1
    [[ $(in_ct systemctl show -p Result --value e2e-hello.service) == success ]] || fail "Result is not success" || return 1
}

# The shipped systemd/reaperd.service, hardening and all, with its ExecStart pointed at
# a stand-in echo daemon (python3, Type=notify): proves the unit's sandbox lets a
# notify-type network daemon start, bind, signal readiness and be reached from the host.
check_unit_hardening() {
    local unit=$CT_ROOT/etc/systemd/system/e2e-hardened.service
    mkdir -p "$CT_ROOT/usr/local/lib/reaperd-e2e"
    cat >"$CT_ROOT/usr/local/lib/reaperd-e2e/echo.py" <<'PY'
import os, socket, socketserver, sys

class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)

socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer(("127.0.0.1", int(sys.argv[1])), Echo)
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.sendto(b"READY=1\nSTATUS=echoing", addr)
print("stand-in echo daemon ready", flush=True)
server.serve_forever()
PY
    sed -e "s#^ExecStart=.*#ExecStart=/usr/bin/python3 /usr/local/lib/reaperd-e2e/echo.py $PROBE_PORT#" \
        -e '/^ExecReload=/d' -e '/^WatchdogSec=/d' \
        "$REPO/systemd/reaperd.service" >"$unit"
    in_ct systemctl daemon-reload || return 1
    in_ct systemctl start e2e-hardened.service || {
        in_ct journalctl -q --no-pager -u e2e-hardened.service
        return 1
    }
    echo_roundtrip "$PROBE_PORT" || return 1
    in_ct systemctl stop e2e-hardened.service || return 1
    [[ $(in_ct systemctl show -p Result --value e2e-hardened.service) == success ]] \
        || fail "Result is not success" || return 1
}

# ------------------------------------------------------------------ reaperd checks

need_reaperd() {
    [[ $INSTALLED == yes ]] || fail "reaperd is not installed in the container (see install)" || return 1
    [[ -n $CT_PID ]] || fail "container is not running" || return 1
}

check_reaperd_runs() {
    need_reaperd || return 1
    in_ct /usr/local/bin/reaperd --version || fail "reaperd --version failed (missing shared library?)" || return 1
    in_ct /usr/local/bin/reaperctl --help >/dev/null || fail "reaperctl --help failed" || return 1
}

# The installed units, checked by the container's own systemd 252 (no man pages in the
# minimal rootfs, hence --man=no), and the service's exposure rating (at most 2.0).
check_unit_verify() {
    local out
    need_reaperd || return 1
    out=$(in_ct systemd-analyze verify --man=no \
        /etc/systemd/system/reaperd.service /etc/systemd/system/reaperd.socket 2>&1) || {
        echo "$out"
        return 1
    }
    [[ -z $out ]] || fail "systemd-analyze verify: $out" || return 1
    in_ct systemd-analyze security --no-pager --threshold=20 reaperd.service | tail -n 1
}

check_reaperd_config() {
    need_reaperd || return 1
    mkdir -p "$CT_ROOT/etc/reaperd"
    cat >"$CT_ROOT/etc/reaperd/reaperd.conf" <<EOF
# Written by Tests/e2e/run.sh
[daemon]
log_level = debug

[listener:e2e]
listen = 127.0.0.1:$ECHO_PORT
mode = echo
EOF
    in_ct /usr/local/bin/reaperd --check-config --config /etc/reaperd/reaperd.conf >/dev/null
}

check_reaperd_start() {
    need_reaperd || return 1
    in_ct systemctl daemon-reload || return 1
    in_ct systemctl start reaperd.service || {
        in_ct systemctl status --no-pager reaperd.service
        in_ct journalctl -q --no-pager -u reaperd.service
        return 1
    }
    [[ $(in_ct systemctl is-active reaperd.service) == active ]] || fail "reaperd is not active" || return 1
}

check_reaperd_echo() {
    need_reaperd || return 1
    echo_roundtrip "$ECHO_PORT" && return 0
    echo "listening sockets:"
    in_ct ss -ltnp
    echo "reaperd's journal:"
    in_ct journalctl -q --no-pager -u reaperd.service | tail -n 15
    return 1
}

check_reaperd_journal() {
    local lines
    need_reaperd || return 1
    lines=$(in_ct journalctl -q --no-pager -u reaperd.service -o cat | wc -l)
    ((lines > 0)) || fail "journalctl -u reaperd has no lines" || return 1
}

check_reaperd_stop() {
    local result
    need_reaperd || return 1
    in_ct systemctl stop reaperd.service || return 1
    result=$(in_ct systemctl show -p Result reaperd.service) || return 1
    [[ $result == Result=success ]] || {
        in_ct journalctl -q --no-pager -u reaperd.service | tail -n 10
        fail "got $result"
    }
}

# ------------------------------------------------------------------------ scenarios

# Each `def scenario_NAME` in Tests/e2e/scenarios.py is one more check, run on the host
# as `scenarios.py NAME` with CT_PID (the container's PID 1) and CT_ROOT exported, and
# bounded to $SCENARIO_TIMEOUT seconds (default 180).
check_scenario() {
    need_reaperd || return 1
    CT_PID=$CT_PID CT_ROOT=$CT_ROOT timeout -k 10 "${SCENARIO_TIMEOUT:-180}" \
        python3 "$E2E/scenarios.py" "$1"
}

run_scenarios() {
    local name names
    [[ -f $E2E/scenarios.py ]] || return 0
    mapfile -t names < <(sed -n 's/^def scenario_\([A-Za-z0-9_]*\)(.*/\1/p' "$E2E/scenarios.py")
    for name in "${names[@]}"; do
        # REAPERD_E2E_ONLY=restart_many,store_churn runs only those (a measurement).
        [[ -n ${REAPERD_E2E_ONLY:-} && ",$REAPERD_E2E_ONLY," != *",$name,"* ]] && continue
        check "scenario-${name//_/-}" check_scenario "$name"
    done
}

# ------------------------------------------------------------------------------ main

finish() {
    local t0 t1
    trap - EXIT INT TERM
    if [[ ${REAPERD_E2E_KEEP:-0} == 1 && -n $CT_PID ]]; then
        echo "# kept: container PID 1 is $CT_PID (nsenter -t $CT_PID -a bash), nspawn $CT_NSPAWN_PID, root $CT_ROOT"
    else
        if [[ -n $CT_NSPAWN_PID ]]; then
            t0=$(ct_now)
            ct_poweroff
            t1=$(ct_now)
            TIMINGS+=("poweroff in $(elapsed "$t0" "$t1") s")
        fi
        ct_cleanup
    fi
    rm -f "$LOG"
    local t
    for t in "${TIMINGS[@]}"; do echo "# timing: $t"; done
    echo "$PASSED passed, $FAILED failed"
    exit $((FAILED > 0 ? 1 : 0))
}

main() {
    [[ $(id -u) -eq 0 ]] || { echo "run.sh: must run as root (systemd-nspawn, nsenter)" >&2; exit 1; }
    trap finish EXIT
    trap 'exit 130' INT TERM

    check rootfs check_rootfs
    if [[ -z $ROOTFS ]] || ! ct_prepare "$ROOTFS"; then
        FAILED=$((FAILED + 1))
        echo "not ok - prepare container root"
        exit 1
    fi
    check install check_install
    check boot check_boot
    check systemctl check_systemctl
    check journal check_journal
    check trivial-unit check_trivial_unit
    check unit-hardening check_unit_hardening

    check reaperd-runs check_reaperd_runs
    check unit-verify check_unit_verify
    check reaperd-config check_reaperd_config
    check reaperd-start check_reaperd_start
    check reaperd-echo check_reaperd_echo
    check reaperd-journal check_reaperd_journal
    check reaperd-stop check_reaperd_stop

    run_scenarios
}

main "$@"
