#!/usr/bin/env bash
# Build (once) and cache a Debian 12 (bookworm) root file system for the e2e tests.
#
#   Tests/e2e/rootfs.sh            print the cached rootfs path, building it first if missing
#   Tests/e2e/rootfs.sh --rebuild  throw the cache away and build it again
#
# The cache lives outside the repository, in ${REAPERD_E2E_CACHE:-/var/cache/reaperd-e2e}.
# It is built in a temporary directory beside the final one and renamed into place only
# when debootstrap and the configuration below have succeeded, so an interrupted build
# never leaves a half-made cache behind. A stamp file inside the rootfs records the recipe
# version; a cache with another stamp is rebuilt. Progress goes to stderr; the only thing
# on stdout is the rootfs path.
set -euo pipefail

# Bump when the recipe below changes: caches with an older stamp are rebuilt.
readonly ROOTFS_VERSION="reaperd-e2e-rootfs v2"
readonly SUITE=bookworm
readonly INCLUDE=systemd,systemd-sysv,dbus,iproute2,procps,netcat-openbsd,python3

CACHE_DIR=${REAPERD_E2E_CACHE:-/var/cache/reaperd-e2e}
ROOTFS=$CACHE_DIR/rootfs-$SUITE
STAMP_PATH=etc/reaperd-e2e-rootfs

log() { printf 'rootfs: %s\n' "$*" >&2; }
die() { printf 'rootfs: error: %s\n' "$*" >&2; exit 1; }

# The Debian mirror this machine's apt uses (the network may reach no other), unless
# REAPERD_E2E_MIRROR says otherwise. deb822 .sources files first, then one-line lists.
mirror() {
    if [[ -n ${REAPERD_E2E_MIRROR:-} ]]; then
        printf '%s\n' "$REAPERD_E2E_MIRROR"
        return
    fi
    local uri
    uri=$(
        {
            awk 'tolower($1) == "uris:" { for (i = 2; i <= NF; i++) print $i }' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null || true
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; break } }' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
        } | grep -E '^https?://[^ ]*/debian/?$' | head -n 1
    ) || true
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

is_current() {
    [[ -f $ROOTFS/$STAMP_PATH ]] && [[ $(head -n 1 "$ROOTFS/$STAMP_PATH") == "$ROOTFS_VERSION" ]]
}

# Unmount anything left mounted below $1 (an interrupted debootstrap leaves /proc and
# /sys mounted in its target), deepest first, then remove it without leaving its device.
remove_tree() {
    local dir=$1 mnt
    [[ -e $dir ]] || return 0
    while read -r mnt; do
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r)
    rm -rf --one-file-system -- "$dir"
}

# Configure the fresh tree for booting under systemd-nspawn on a host that shares its
# network with the container.
configure() {
    local root=$1 unit

    echo reaperd-e2e >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\treaperd-e2e\n::1\tlocalhost ip6-localhost ip6-loopback\n' \
        >"$root/etc/hosts"

    # A fixed machine-id: an empty one would make every boot a "first boot" (presets,
    # systemd-firstboot prompting on a console that is a pipe). Copies share it; with
    # --register=no nothing on the host cares.
    if [[ ! -s $root/etc/machine-id ]]; then
        systemd-machine-id-setup --root="$root" >&2
    fi

    # Password-less root on the console, for `machinectl login`-free debugging with
    # `systemd-nspawn -D COPY -b` by hand.
    sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"

    # Units that fail, hang or only waste time in a container that shares the host's
    # network and whose console is a pipe.
    for unit in \
        systemd-firstboot.service systemd-networkd-wait-online.service \
        systemd-networkd.service systemd-networkd.socket \
        console-getty.service getty@.service serial-getty@.service getty.target \
        apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
        dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
        systemd-timesyncd.service \
        systemd-hwdb-update.service systemd-journal-catalog-update.service \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service \
        remote-fs.target cryptsetup.target; do
        ln -sfn /dev/null "$root/etc/systemd/system/$unit"
    done

    # The journal lives in /run: it is only read during a test run and the copy is thrown
    # away afterwards, so persistence would only cost fsyncs.
    mkdir -p "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' \
        >"$root/etc/systemd/journald.conf.d/reaperd-e2e.conf"

    # Quicker, bounded shutdown so a test run never waits out the 90 s defaults.
    mkdir -p "$root/etc/systemd/system.conf.d"
    printf '[Manager]\nDefaultTimeoutStopSec=15s\nDefaultTimeoutStartSec=30s\n' \
        >"$root/etc/systemd/system.conf.d/reaperd-e2e.conf"

    # Nothing in the test needs package lists or downloaded .debs; smaller is faster to copy.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

    printf '%s\nsuite=%s\ninclude=%s\nbuilt=%s\n' "$ROOTFS_VERSION" "$SUITE" "$INCLUDE" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$root/$STAMP_PATH"
}

BUILD_TMP=""
DEBOOTSTRAP_PID=""

# On any exit during a build: stop debootstrap's process group, then remove the
# partial tree (and whatever it left mounted).
on_exit() {
    local rc=$? i
    set +e # cleanup goes on whatever fails (kill of a group already gone, say)
    if [[ -n $DEBOOTSTRAP_PID ]]; then
        kill -TERM -- "-$DEBOOTSTRAP_PID" 2>/dev/null
        for ((i = 0; i < 50; i++)); do
            kill -0 -- "-$DEBOOTSTRAP_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$DEBOOTSTRAP_PID" 2>/dev/null
        wait "$DEBOOTSTRAP_PID" 2>/dev/null
    fi
    if [[ -n $BUILD_TMP ]]; then
        log "build interrupted; removing $BUILD_TMP"
        remove_tree "$BUILD_TMP"
    fi
    exit "$rc"
}

build() {
    local tmp start
    command -v debootstrap >/dev/null || die "debootstrap is not installed (make deps-e2e)"
    mkdir -p "$CACHE_DIR"

    # Leftovers of builds that were killed too hard for their trap to run.
    for tmp in "$CACHE_DIR"/rootfs-"$SUITE".tmp.*; do
        [[ -e $tmp ]] || continue
        log "removing stale partial build $tmp"
        remove_tree "$tmp"
    done

    tmp=$(mktemp -d "$CACHE_DIR/rootfs-$SUITE.tmp.XXXXXX")
    # mktemp makes it 0700; as the container's / it must be 0755 (daemons that drop
    # root, dbus among them, cannot resolve any path otherwise).
    chmod 0755 "$tmp"
    BUILD_TMP=$tmp
    trap on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    start=$SECONDS
    log "debootstrap $SUITE from $(mirror) into $tmp (a minute or two)"
    # In its own process group, in the background: bash runs a trap only between
    # commands, and `wait` is interruptible where a foreground debootstrap is not; on a
    # signal the whole group (dpkg in the chroot included) is stopped before cleanup.
    setsid debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" "$(mirror)" >&2 &
    DEBOOTSTRAP_PID=$!
    if ! wait "$DEBOOTSTRAP_PID"; then
        DEBOOTSTRAP_PID=""
        tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2 2>/dev/null
        die "debootstrap failed (the end of its log is above)"
    fi
    DEBOOTSTRAP_PID=""
    configure "$tmp"

    remove_tree "$ROOTFS"
    mv -T "$tmp" "$ROOTFS"
    BUILD_TMP=""
    log "built $ROOTFS in $((SECONDS - start)) s ($(du -sh "$ROOTFS" | cut -f1))"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
    if [[ ${1:-} == --rebuild ]]; then
        remove_tree "$ROOTFS"
    elif [[ $# -gt 0 ]]; then
        die "usage: $0 [--rebuild]"
    fi

    mkdir -p "$CACHE_DIR"
    # One builder at a time; a second caller waits and then finds the cache ready.
    exec 9>"$CACHE_DIR/.lock"
    flock -w 1800 9 || die "timed out waiting for another rootfs build"

    if is_current; then
        log "using cached $ROOTFS ($(sed -n 4p "$ROOTFS/$STAMP_PATH"))"
    else
        [[ -e $ROOTFS ]] && log "cache $ROOTFS has another version stamp; rebuilding"
        build
    fi
    printf '%s\n' "$ROOTFS"
}

main "$@"
