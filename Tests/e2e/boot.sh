#!/usr/bin/env bash
# Boot a throw-away copy of the cached Debian 12 rootfs under systemd-nspawn and reach
# its systemd from the host.
#
# As a library (what run.sh does):
#     source Tests/e2e/boot.sh
#     ct_prepare "$rootfs"          # fresh overlay (or copy) of the cache -> $CT_ROOT
#     ct_install "$repo"            # make install DESTDIR=$CT_ROOT (release, static stdlib)
#     ct_boot                       # start nspawn, wait for systemd -> $CT_PID
#     in_ct systemctl is-active reaperd
#     ct_cleanup                    # power off, kill if need be, unmount, delete (idempotent)
#
# By hand, for debugging:
#     Tests/e2e/boot.sh shell       # boot, install reaperd, open a shell inside, clean up on exit
#
# How the container is run (and why):
# - systemd-nspawn -D ROOT -b --register=no --keep-unit --console=pipe -M NAME
#   --register=no: no machined to register with (PID 1 here may not be systemd);
#   --keep-unit: do not ask a host systemd for a scope, use the cgroup we are in;
#   --console=pipe: no tty in CI; the container's console goes to $CT_WORK/console.log.
#   --system-call-filter and --capability: what adopt mode (reaperd-adopt.service)
#   needs inside; nothing else in the container uses them.
#   No --private-network: the container shares the host's network namespace, so a
#   client on the host reaches a daemon listening on 127.0.0.1 inside.
# - With --keep-unit nspawn makes "payload" and "supervisor" sub-cgroups of the cgroup
#   it was started in. So that this never litters the host's root cgroup (and two runs
#   never share one), nspawn is started in a cgroup of its own: a transient scope from
#   `systemd-run --scope -p Delegate=yes` when the host runs systemd, otherwise a
#   directory we create (and remove) in the cgroup2 and name=systemd hierarchies.
# - The rootfs copy is an overlayfs over the read-only cache (a few ms) with a `cp -a`
#   fallback (1.3 to 2.7 s measured for the 200 MB tree) where overlayfs cannot be mounted.

# Library: no `set -e` of its own; callers decide. Everything here is bounded in time.

# The container gets a pure cgroup v2 hierarchy, as on a stock Debian 12 host, even when
# the host is hybrid (this sandbox mounts cgroup v1 controllers plus a bare cgroup2 at
# /sys/fs/cgroup/unified; left to itself nspawn would give the container the same mix,
# and its systemd would run "tainted: cgroupsv1"). Both modes boot here.
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=${SYSTEMD_NSPAWN_UNIFIED_HIERARCHY:-1}

CT_WORK=""          # scratch directory of this run (overlay layers, logs)
CT_ROOT=""          # the container's root directory
CT_NAME=""          # machine name (also names the cgroup and nspawn's /run state)
CT_NSPAWN_PID=""    # systemd-nspawn on the host
CT_PID=""           # the container's PID 1 (systemd), as seen from the host
CT_CGROUPS=()       # cgroup directories we created for nspawn
CT_BOOT_TIMEOUT=${CT_BOOT_TIMEOUT:-60}
CT_STOP_TIMEOUT=${CT_STOP_TIMEOUT:-30}

ct_log() { printf '# %s\n' "$*" >&2; }

# Monotonic seconds with milliseconds, for the timings the harness reports.
ct_now() { awk '{ printf "%.3f\n", $1 }' /proc/uptime; }

# ct_prepare ROOTFS: make a fresh, writable root for one run from the cached ROOTFS.
ct_prepare() {
    local rootfs=$1
    [[ -f $rootfs/usr/lib/os-release ]] || { ct_log "no rootfs at $rootfs"; return 1; }
    CT_WORK=$(mktemp -d "${REAPERD_E2E_WORK:-/var/tmp}/reaperd-e2e.XXXXXX") || return 1
    CT_NAME="reaperd-e2e-${CT_WORK##*.}"
    CT_ROOT=$CT_WORK/root
    mkdir -p "$CT_ROOT" "$CT_WORK/upper" "$CT_WORK/ovlwork"
    if ! mount -t overlay overlay \
        -o "lowerdir=$rootfs,upperdir=$CT_WORK/upper,workdir=$CT_WORK/ovlwork" "$CT_ROOT" 2>/dev/null; then
        ct_log "overlayfs not available here; copying the rootfs instead"
        cp -a "$rootfs/." "$CT_ROOT/" || return 1
        chmod 0755 "$CT_ROOT"
    fi
}

# ct_install REPO: install reaperd (release build, static Swift stdlib) into the copy.
# PREFIX stays /usr/local, matching ExecStart= in systemd/reaperd.service.
ct_install() {
    local repo=$1
    [[ -n $CT_ROOT ]] || { ct_log "ct_prepare first"; return 1; }
    make -C "$repo" --no-print-directory install DESTDIR="$CT_ROOT"
}

# The cgroup directories nspawn gets on a host without systemd: NAME below our own
# cgroup in the cgroup2 hierarchy and in the name=systemd one, where mounted. A pure
# function of NAME, so the parent can record what the child will create.
_ct_cgroup_dirs() {
    local name=$1 mnt type opts cur
    while read -r _ mnt type opts _; do
        if [[ $type == cgroup2 ]]; then
            cur=$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
        elif [[ $type == cgroup && ,$opts, == *,name=systemd,* ]]; then
            cur=$(awk -F: '$2 == "name=systemd" { print $3 }' /proc/self/cgroup)
        else
            continue
        fi
        printf '%s\n' "$mnt${cur%/}/$name"
    done </proc/self/mounts
}

# Move process PID into each of the given cgroup directories, creating them.
_ct_enter_cgroups() {
    local pid=$1 dir
    shift
    for dir in "$@"; do
        if ! { mkdir -p "$dir" 2>/dev/null && echo "$pid" >"$dir/cgroup.procs" 2>/dev/null; }; then
            ct_log "could not use cgroup $dir; nspawn will make its sub-cgroups beside us"
        fi
    done
}

# Remove a cgroup directory and everything nspawn left below it, deepest first.
_ct_remove_cgroup() {
    local dir=$1 sub
    [[ -d $dir ]] || return 0
    while read -r sub; do
        rmdir "$sub" 2>/dev/null || true
    done < <(find "$dir" -depth -type d 2>/dev/null)
}

# ct_boot: boot the copy and wait (bounded) until its systemd says running or degraded.
ct_boot() {
    local deadline state child comm
    [[ -n $CT_ROOT ]] || { ct_log "ct_prepare first"; return 1; }
    # bpf(2) and the capabilities of reaperd-adopt.service: nspawn's own seccomp
    # filter leaves bpf out on purpose, and its default capability set lacks these.
    local nspawn=(systemd-nspawn --quiet -D "$CT_ROOT" -M "$CT_NAME" -b
        --register=no --keep-unit --console=pipe
        --system-call-filter="bpf pidfd_open pidfd_getfd" --capability=CAP_BPF,CAP_NET_ADMIN,CAP_SYS_PTRACE)

    if [[ -d /run/systemd/system ]]; then
        # A systemd host: a delegated transient scope is nspawn's own cgroup.
        systemd-run --quiet --scope --collect -p Delegate=yes --unit="$CT_NAME" -- "${nspawn[@]}" \
            </dev/null >"$CT_WORK/console.log" 2>&1 &
        CT_NSPAWN_PID=$!
    else
        # Not systemd (a sandbox or plain container as PID 1): make the cgroups ourselves.
        # The subshell moves itself into them and then becomes nspawn.
        mapfile -t CT_CGROUPS < <(_ct_cgroup_dirs "$CT_NAME")
        (
            _ct_enter_cgroups "$BASHPID" "${CT_CGROUPS[@]}"
            exec "${nspawn[@]}"
        ) </dev/null >"$CT_WORK/console.log" 2>&1 &
        CT_NSPAWN_PID=$!
    fi

    # The container's PID 1 is nspawn's child once it has exec'd systemd (with
    # systemd-run in front, a grandchild: look one level further down).
    deadline=$((SECONDS + CT_BOOT_TIMEOUT))
    CT_PID=""
    while ((SECONDS < deadline)); do
        kill -0 "$CT_NSPAWN_PID" 2>/dev/null || { ct_log "systemd-nspawn exited during boot"; break; }
        for child in $(_ct_descendants "$CT_NSPAWN_PID"); do
            comm=$(cat "/proc/$child/comm" 2>/dev/null) || continue
            if [[ $comm == systemd ]]; then
                CT_PID=$child
                break 2
            fi
        done
        sleep 0.05
    done
    if [[ -z $CT_PID ]]; then
        ct_log "container did not start; console:"
        sed 's/^/#   /' "$CT_WORK/console.log" >&2
        return 1
    fi

    # systemctl fails until the container's manager has its private socket; retry
    # until the deadline, then let --wait block for the rest of the boot.
    while ((SECONDS < deadline)); do
        state=$(in_ct_t $((deadline - SECONDS + 1)) systemctl is-system-running --wait 2>/dev/null)
        case $state in
            running | degraded)
                [[ $state == degraded ]] && ct_log "container is degraded: $(in_ct systemctl --failed --plain --no-legend | tr '\n' ' ')"
                return 0 ;;
        esac
        kill -0 "$CT_NSPAWN_PID" 2>/dev/null || break
        sleep 0.1
    done
    ct_log "container's systemd did not reach running within ${CT_BOOT_TIMEOUT}s (state: ${state:-unknown}); console:"
    sed 's/^/#   /' "$CT_WORK/console.log" >&2
    return 1
}

# Children and grandchildren of a PID (nspawn, or systemd-run then nspawn).
_ct_descendants() {
    local pid
    for pid in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$pid"
        ps -o pid= --ppid "$pid" 2>/dev/null
    done
}

# in_ct CMD...: run CMD inside the container, in all its namespaces, with a clean
# environment, bounded by $IN_CT_TIMEOUT seconds (default 30).
in_ct() { in_ct_t "${IN_CT_TIMEOUT:-30}" "$@"; }

# in_ct_t SECONDS CMD...: in_ct with an explicit bound; 0 means none (interactive use).
in_ct_t() {
    local limit=$1 bound=()
    shift
    [[ -n $CT_PID ]] || { ct_log "container is not running"; return 125; }
    # nsenter forks (a new PID namespace applies to children only) and waits; the
    # timeout runs inside, so an expiry kills the command itself, not just nsenter.
    # --foreground keeps timeout in our process group, so a signal to the harness's
    # group (Ctrl-C, a CI timeout) reaches the command too.
    ((limit > 0)) && bound=(timeout --foreground -k 5 "$limit")
    nsenter -t "$CT_PID" -a -- /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 TERM="${TERM:-dumb}" \
        "${bound[@]}" "$@"
}

# ct_poweroff: ask the container's systemd to power off and wait for nspawn to exit;
# then SIGTERM nspawn (which halts the container), and SIGKILL as a last resort.
ct_poweroff() {
    local deadline
    [[ -n $CT_NSPAWN_PID ]] || return 0
    if kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
        # --no-block answers in milliseconds; a manager already halting (nspawn got a
        # SIGTERM too) may not answer at all, hence the short bound.
        [[ -n $CT_PID ]] && in_ct_t 3 systemctl --no-block poweroff >/dev/null 2>&1
        deadline=$((SECONDS + CT_STOP_TIMEOUT))
        while kill -0 "$CT_NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        if kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
            ct_log "container did not power off in ${CT_STOP_TIMEOUT}s; terminating nspawn"
            kill -TERM "$CT_NSPAWN_PID" 2>/dev/null
            deadline=$((SECONDS + 10))
            while kill -0 "$CT_NSPAWN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        fi
        if kill -0 "$CT_NSPAWN_PID" 2>/dev/null; then
            ct_log "killing nspawn and the container"
            [[ -n $CT_PID ]] && kill -KILL "$CT_PID" 2>/dev/null
            kill -KILL "$CT_NSPAWN_PID" 2>/dev/null
        fi
    fi
    wait "$CT_NSPAWN_PID" 2>/dev/null
    CT_NSPAWN_PID=""
    CT_PID=""
}

# ct_cleanup: power off if running, unmount and delete the copy, remove our cgroups
# and what nspawn left in /run. Safe to call more than once (e.g. from a trap).
ct_cleanup() {
    local cg mnt
    ct_poweroff
    for cg in "${CT_CGROUPS[@]}"; do _ct_remove_cgroup "$cg"; done
    CT_CGROUPS=()
    if [[ -n $CT_NAME ]]; then
        # On a host whose /run is not tmpfs nspawn refuses to remove this itself.
        rm -rf --one-file-system "/run/systemd/nspawn/propagate/$CT_NAME" 2>/dev/null
    fi
    if [[ -n $CT_WORK && -d $CT_WORK ]]; then
        # Anything still mounted below the copy (the overlay itself, or leftovers of
        # a killed nspawn), deepest first.
        while read -r mnt; do
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
        done < <(awk -v d="$CT_WORK" 'index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
        rm -rf --one-file-system "$CT_WORK"
    fi
    CT_WORK="" CT_ROOT="" CT_NAME=""
}

# Debug entry point: Tests/e2e/boot.sh shell
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -uo pipefail
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    case ${1:-} in
        shell)
            rootfs=$("$repo/Tests/e2e/rootfs.sh") || exit 1
            trap ct_cleanup EXIT
            trap 'exit 130' INT TERM
            ct_prepare "$rootfs" || exit 1
            ct_install "$repo" || ct_log "make install failed; booting without reaperd"
            ct_boot || exit 1
            ct_log "container $CT_NAME is up: PID 1 is $CT_PID on the host; exit the shell to power it off"
            IN_CT_TIMEOUT=0 in_ct /bin/bash -l
            ;;
        *)
            echo "usage: $0 shell   (or source it: see the header)" >&2
            exit 64
            ;;
    esac
fi
