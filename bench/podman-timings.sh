#!/usr/bin/env bash
# bench/podman-timings.sh: how long podman takes with plyfs as containers-storage's overlay
# `mount_program`, next to fuse-overlayfs and to the kernel's overlay.
#
# What it measures: wall-clock milliseconds of whole `podman run --rm` commands (container
# setup, the mount program's mount, the workload, the unmount and the removal), the median of N
# runs, for three storage setups, each a private containers-storage of its own:
#     kernel overlay   driver "overlay", no mount_program (the kernel's overlayfs)
#     plyfs            driver "overlay", mount_program = plyfs
#     fuse-overlayfs   driver "overlay", mount_program = fuse-overlayfs (Debian's 1.10 by default)
# and four workloads:
#     run-true   podman run --rm IMG true
#     find-xdev  podman run --rm IMG sh -c 'find / -xdev | wc -l'     (a walk of the whole tree)
#     cp-usr     podman run --rm IMG cp -a /usr /usr2                  (reads lower, writes upper)
#     read-usr   podman run --rm IMG sh -c 'find /usr -type f -exec cat {} + >/dev/null'
# The setups take turns (workload by workload, run by run), so that load from elsewhere on the
# machine falls on all of them alike; each workload is run once per setup first, not counted
# (warm page cache); `sync` before every run, so one run's dirty data is not the next one's to
# write back. The run-true time is part of every other row (podman's own cost). podman mounts a
# `run --rm` container `volatile` (no syncs of the upper layer) with every setup. cp-usr creates
# and (with the container) deletes some 40k files per run: on ext4 without a journal (as on some
# VMs) inode allocation then slows down for a while (ext4's recently_deleted() check), which
# weighs on every setup's cp-usr, on the kernel's overlay most (relative to its time).
#
# The image: a realistic /usr, imported from a tar (no registry is ever contacted):
#   - with --image PATH: a rootfs dir or tar you made, e.g. with
#         debootstrap --variant=minbase bookworm /var/tmp/rootfs http://deb.debian.org/debian
#   - else, if `debootstrap` is installed, a minbase Debian made with it now (this needs a Debian
#     mirror: DEBOOTSTRAP_MIRROR, DEBOOTSTRAP_SUITE); if that fails (offline) the next one:
#   - else (the default offline choice) one made from the host's own /usr: real binaries,
#     shared libraries, Python and Perl modules, man pages, zoneinfo - the mix of many small and
#     some large files a distribution image has - but no file over 2 MiB and at most
#     TIMINGS_IMAGE_MB (400) MiB of files in all (the trees of HOST_TREES below, in this order,
#     until the budget is spent, the later ones as directories and links only; the libraries
#     the workloads' commands need always go in), plus a minimal
#     /etc (never the host's, which holds secrets) and merged-/usr links. A few hundred MiB and
#     some 40k entries keep a run of the whole script to minutes while cp-usr and read-usr move
#     enough data for the mount program to matter; a copy of the whole host /usr (GBs) would
#     only measure the disk.
# Reusing tests/e2e/podman.sh's setup (that script is not made to be sourced, so the minimum is
# copied): a private storage per setup (graphroot/runroot under the work dir, selected with
# CONTAINERS_STORAGE_CONF/CONTAINERS_CONF/CONTAINERS_REGISTRIES_CONF), `[storage.options.overlay]
# mount_program` and mountopt "nodev", cgroupfs manager, the file events logger, runc, nofile
# ulimit <= 20000, netns none, and a private mount namespace with throwaway overlays on /var/lib
# and /run (podman 4.3's import writes /var/lib/containers/cache, runc /run/runc): nothing
# reaches the system's container storage.
#
# Requirements: root, Linux with /dev/fuse, podman (4.x), runc, conmon, fuse-overlayfs, plyfs
# (cargo build --release), util-linux unshare, coreutils, GNU tar, findutils, ldd; some 2 GB free
# under the base dir.
#
# Usage (as root):
#     bench/podman-timings.sh [-n N] [--base DIR] [--image PATH|host|debootstrap]
#                             [--plyfs PATH] [--fuse-overlayfs PATH] [--plyfs-opts OPTS]
#                             [--setups "kernel plyfs fuse-overlayfs"] [--workloads "..."]
#     -n N                runs per workload and setup, the median is shown (default 5; TIMINGS_N)
#     --base DIR          where the storages go (default /var/tmp/podman-timings; TIMINGS_BASE);
#                         a fresh work dir inside it, removed at the end, and the base dir too
#                         when the script made it and it is empty. Short: podman wants its
#                         runroot paths under 50 characters.
#     --image SRC         host (the default offline choice), debootstrap, or a rootfs dir or tar
#                         (TIMINGS_IMAGE; the default, auto, is debootstrap if installed, else host)
#     --plyfs PATH        plyfs binary (PLYFS; default <repo>/target/release/plyfs, else on PATH)
#     --fuse-overlayfs PATH   fuse-overlayfs binary (FUSE_OVERLAYFS; default /usr/bin/fuse-overlayfs,
#                         Debian's 1.10, even when another one comes first on PATH)
#     --plyfs-opts OPTS   extra mount options for plyfs only, appended to mountopt (e.g.
#                         watch=off or timeout=0; TIMINGS_PLYFS_OPTS)
#     --setups LIST       which setups, in this order (TIMINGS_SETUPS; default all three)
#     --workloads LIST    which workloads (TIMINGS_WORKLOADS; default run-true find-xdev cp-usr read-usr)
# Environment: TIMINGS_WARMUP=1 (uncounted runs per workload and setup), TIMINGS_TIMEOUT=1200
# (seconds allowed for one podman command), TIMINGS_IMAGE_MB=400, TIMINGS_KEEP_LOGS=1 (keep the
# podman outputs: the work dir is then left with only them in it), PLYFS_LOG (passed on to plyfs
# with PLYFS_LOG_FILE=<work>/plyfs.log, kept with TIMINGS_KEEP_LOGS=1).
# The table goes to stdout (also to TIMINGS_OUT if set); progress goes to stderr.
# shellcheck disable=SC2317  # (the cleanup functions run from traps)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ALL_SETUPS="kernel plyfs fuse-overlayfs"
ALL_WORKLOADS="run-true find-xdev cp-usr read-usr"

log() { printf '%s\n' "$*" >&2; }
die() { printf 'podman-timings.sh: %s\n' "$*" >&2; exit 2; }
usage() {
    sed -n '/^# Usage/,/^# The table/p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# our_mounts DIR: mount points under DIR, deepest first
our_mounts() {
    awk -v d="$1/" '{ gsub(/\\040/, " ", $5); if (index($5 "/", d) == 1) print $5 }' \
        /proc/self/mountinfo | sort -r
}
# our_fuse_mounts DIR: "MAJ:MIN FSTYPE MOUNTPOINT" of the FUSE mounts under DIR
our_fuse_mounts() {
    awk -v d="$1/" '{ for (i = 7; $i != "-"; i++); if (index($5 "/", d) == 1 &&
        $(i+1) ~ /^fuse/) print $3, $(i+1), $5 }' /proc/self/mountinfo
}
# our_procs DIR [env]: pids (not this shell's) whose command line names something under DIR
# (mount program daemons, conmon, podman's cleanup), or in a cgroup of a container of the
# storages there; with `env` also those started with WORK=DIR (the inner part's podmans)
our_procs() {
    local p cmd id ids=()
    for id in "$1"/*/graphroot/overlay-containers/*/; do
        id=${id%/} id=${id##*/}
        [ ${#id} = 64 ] && ids+=("$id")
    done
    for p in /proc/[0-9]*; do
        case ${p#/proc/} in "$$" | "$BASHPID") continue ;; esac
        cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
        if [[ $cmd == *"$1/"* ]] ||
            { [ "${2:-}" = env ] && tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF "WORK=$1"; }; then
            echo "${p#/proc/}"
            continue
        fi
        for id in "${ids[@]}"; do
            grep -qF "$id" 2>/dev/null <"$p/cgroup" && { echo "${p#/proc/}"; break; }
        done
    done
}

# ================================================================ outer part
# Checks, makes the work dir, runs the measurements (the inner part, below) in a private mount
# namespace, and removes everything afterwards, whatever happened.
if [ -z "${TIMINGS_INNER:-}" ]; then
    N=${TIMINGS_N:-5}
    BASE=${TIMINGS_BASE:-/var/tmp/podman-timings}
    IMAGE=${TIMINGS_IMAGE:-auto}
    PLYFS_OPTS=${TIMINGS_PLYFS_OPTS:-}
    SETUPS=${TIMINGS_SETUPS:-$ALL_SETUPS}
    WORKLOADS=${TIMINGS_WORKLOADS:-$ALL_WORKLOADS}
    while [ $# -gt 0 ]; do
        case $1 in
            -n) N=${2:?}; shift ;;
            --base) BASE=${2:?}; shift ;;
            --image) IMAGE=${2:?}; shift ;;
            --plyfs) PLYFS=${2:?}; shift ;;
            --fuse-overlayfs) FUSE_OVERLAYFS=${2:?}; shift ;;
            --plyfs-opts) PLYFS_OPTS=${2:?}; shift ;;
            --setups) SETUPS=${2:?}; shift ;;
            --workloads) WORKLOADS=${2:?}; shift ;;
            -h | --help) usage 0 ;;
            *) log "unknown argument: $1"; usage ;;
        esac
        shift
    done
    case $N in '' | *[!0-9]* | 0) die "-n wants a positive number" ;; esac
    for s in $SETUPS; do case " $ALL_SETUPS " in *" $s "*) ;; *) die "unknown setup $s" ;; esac; done
    for w in $WORKLOADS; do case " $ALL_WORKLOADS " in *" $w "*) ;; *) die "unknown workload $w" ;; esac; done
    [ "$(id -u)" = 0 ] || die "run as root (rootful podman)"
    [ -c /dev/fuse ] || die "no /dev/fuse"
    for c in podman runc conmon unshare tar find ldd sync timeout awk; do
        command -v "$c" >/dev/null 2>&1 || die "missing command: $c"
    done
    case " $SETUPS " in *" plyfs "*)
        if [ -z "${PLYFS:-}" ]; then
            PLYFS=$REPO/target/release/plyfs
            [ -x "$PLYFS" ] || PLYFS=$(command -v plyfs) ||
                die "no plyfs: cargo build --release, or --plyfs PATH"
        fi
        [ -x "$PLYFS" ] || die "plyfs binary $PLYFS is not executable"
        PLYFS=$(realpath "$PLYFS") ;;
    esac
    case " $SETUPS " in *" fuse-overlayfs "*)
        if [ -z "${FUSE_OVERLAYFS:-}" ]; then
            FUSE_OVERLAYFS=/usr/bin/fuse-overlayfs
            [ -x "$FUSE_OVERLAYFS" ] || FUSE_OVERLAYFS=$(command -v fuse-overlayfs) ||
                die "no fuse-overlayfs: apt-get install fuse-overlayfs, or --fuse-overlayfs PATH"
        fi
        [ -x "$FUSE_OVERLAYFS" ] || die "fuse-overlayfs binary $FUSE_OVERLAYFS is not executable"
        FUSE_OVERLAYFS=$(realpath "$FUSE_OVERLAYFS") ;;
    esac

    MADE_BASE=0
    [ -d "$BASE" ] || { mkdir -p "$BASE" && MADE_BASE=1; } || die "cannot make $BASE"
    BASE=$(realpath "$BASE")
    WORK=$(mktemp -d "$BASE/t.XXXX") || die "mktemp in $BASE failed"
    # the longest runroot: WORK/fuse-overlayfs/run
    [ $((${#WORK} + 19)) -le 50 ] ||
        { rmdir "$WORK"; die "--base $BASE is too long: podman needs runroot paths under 50 characters"; }
    outer_cleanup() {
        local rc=$? pid left
        trap - EXIT INT TERM
        # after a kill of the inner part: its daemons, conmons and podmans (the mounts are in
        # its namespace, which goes away with its last process)
        for pid in $(our_procs "$WORK" env); do kill "$pid" 2>/dev/null; done
        sleep 0.5
        for pid in $(our_procs "$WORK" env); do kill -9 "$pid" 2>/dev/null; done
        left=$(our_mounts "$WORK")
        if [ -n "$left" ]; then
            log "mounts left under $WORK, not removing it:" "$left"
            rc=1
        elif [ "${TIMINGS_KEEP_LOGS:-0}" = 1 ]; then
            find "$WORK" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf --one-file-system {} +
            log "podman outputs kept in $WORK/logs"
        else
            rm -rf --one-file-system "$WORK"
            [ "$MADE_BASE" = 1 ] && rmdir "$BASE" 2>/dev/null
        fi
        exit "$rc"
    }
    # On Ctrl-C or a TERM: the inner part gets a TERM (it ignores SIGINT, as a background job)
    # and cleans up, then this one removes the work dir. (A signal would wait for a foreground
    # child; a `wait` is interrupted by it.)
    INNER_PID=
    on_signal() {
        trap '' INT TERM
        if [ -n "$INNER_PID" ]; then
            log "interrupted: cleaning up"
            kill -TERM "$INNER_PID" 2>/dev/null
            wait "$INNER_PID"
        fi
        exit 130
    }
    trap outer_cleanup EXIT
    trap on_signal INT TERM
    export TIMINGS_INNER=1 WORK N IMAGE PLYFS_OPTS SETUPS WORKLOADS PLYFS FUSE_OVERLAYFS
    unshare --mount --propagation private bash "$0" &
    INNER_PID=$!
    wait "$INNER_PID"
    exit
fi

# ================================================================ inner part
# (in a private mount namespace: every mount made from here on is gone with it)
WARMUP=${TIMINGS_WARMUP:-1}
TMO=${TIMINGS_TIMEOUT:-1200}
IMG=localhost/podman-timings:latest
LOGS=$WORK/logs
mkdir -p "$LOGS"
for d in varlib:/var/lib run:/run; do
    mkdir -p "$WORK/sys/${d%%:*}" "$WORK/sys/${d%%:*}.work"
    mount -t overlay timings-sys \
        -o "lowerdir=${d#*:},upperdir=$WORK/sys/${d%%:*},workdir=$WORK/sys/${d%%:*}.work" "${d#*:}" ||
        log "warning: no overlay on ${d#*:}: podman's writes there reach the host"
done

# now_us: the time in microseconds (bash 5's EPOCHREALTIME saves a fork)
now_us() { if [ -n "${EPOCHREALTIME:-}" ]; then echo "${EPOCHREALTIME//[!0-9]/}"; else echo $(($(date +%s%N) / 1000)); fi; }
label() { case $1 in kernel) echo "kernel overlay" ;; *) echo "$1" ;; esac; }

# ---------------------------------------------------------------- per-setup storage
NOFILE=$(ulimit -Hn)
{ [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 20000 ]; } && NOFILE=20000
NPROC=$(ulimit -Hu)
{ [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 16384 ]; } && NPROC=16384
# use_setup SETUP: selects SETUP's private storage for pm (podman) below
use_setup() {
    S=$1 SW=$WORK/$1
    export CONTAINERS_CONF=$SW/containers.conf
    export CONTAINERS_STORAGE_CONF=$SW/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$SW/registries.conf
    if [ "$S" = plyfs ] && [ -n "${PLYFS_LOG:-}" ]; then
        export PLYFS_LOG_FILE=$LOGS/plyfs.log
    else
        unset PLYFS_LOG_FILE
    fi
}
pm() { timeout -k 10 "$TMO" podman "$@"; }

make_setup() {
    use_setup "$1"
    mkdir -p "$SW"/{graphroot,run,tmp,volumes,net}
    local prog='' opts=nodev
    case $S in
        plyfs) prog=$PLYFS opts="nodev${PLYFS_OPTS:+,$PLYFS_OPTS}" ;;
        fuse-overlayfs) prog=$FUSE_OVERLAYFS ;;
    esac
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$SW/graphroot\""
        echo "runroot = \"$SW/run\""
        echo '[storage.options]'
        echo '[storage.options.overlay]'
        [ -n "$prog" ] && echo "mount_program = \"$prog\""
        echo "mountopt = \"$opts\""
    } >"$CONTAINERS_STORAGE_CONF"
    cat >"$CONTAINERS_CONF" <<EOF
[containers]
netns = "none"
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$SW/events.log"
runtime = "runc"
tmp_dir = "$SW/tmp"
volume_path = "$SW/volumes"
[network]
network_backend = "cni"
network_config_dir = "$SW/net"
EOF
    echo 'unqualified-search-registries = []' >"$CONTAINERS_REGISTRIES_CONF"
}

reset_setup() {
    use_setup "$1"
    [ -f "$CONTAINERS_STORAGE_CONF" ] || return 0
    pm rm -af -t 0 >/dev/null 2>&1
    pm system reset -f >/dev/null 2>&1
}

RUN_PID=
inner_cleanup() {
    local rc=$? s dev _typ mp pid
    trap - EXIT INT TERM
    [ -n "$RUN_PID" ] && kill "$RUN_PID" 2>/dev/null
    for s in $SETUPS; do reset_setup "$s"; done
    # whatever is still mounted: abort hung FUSE connections, then detach
    while read -r dev _typ mp; do
        [ -n "$dev" ] || continue
        echo 1 >"/sys/fs/fuse/connections/${dev#*:}/abort" 2>/dev/null
        umount -l "$mp" 2>/dev/null
    done < <(our_fuse_mounts "$WORK")
    for mp in $(our_mounts "$WORK"); do umount -l "$mp" 2>/dev/null || umount "$mp" 2>/dev/null; done
    for pid in $(our_procs "$WORK"); do kill "$pid" 2>/dev/null; done
    if [ -n "$(our_mounts "$WORK")" ]; then
        log "mounts still there after the cleanup:" "$(our_mounts "$WORK")"
        rc=1
    fi
    exit "$rc"
}
trap inner_cleanup EXIT
trap 'exit 130' INT TERM

# The machine's own load, before the image build below adds to it.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the image
# The host image's trees, most needed first; files over 2 MiB are left out, and the trees that
# come after the budget is spent.
HOST_TREES="usr/bin usr/sbin usr/lib64 usr/lib/python3 usr/share/perl usr/share/perl5
usr/share/zoneinfo usr/share/man usr/lib/$(uname -m)-linux-gnu usr/lib/python3.* usr/share/i18n
usr/share/vim usr/share/doc usr/share/locale usr/libexec usr/include"
# the commands the workloads run, whose libraries always go in
TOOLS="sh dash bash true find wc cp cat xargs ls"

host_image() { # OUT.tar
    local out=$1 stage=$WORK/stage list=$WORK/image.list budget t p l
    budget=$((${TIMINGS_IMAGE_MB:-400} << 20))
    rm -rf "$stage" && mkdir -p "$stage"/{etc,tmp,proc,sys,dev,run,root,var/tmp,home,usr} || return 1
    chmod 1777 "$stage/tmp" "$stage/var/tmp" && chmod 700 "$stage/root"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$stage/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$stage/etc/group"
    : >"$stage/etc/hosts" && : >"$stage/etc/resolv.conf" && echo podman-timings >"$stage/etc/hostname"
    # merged /usr (as Debian 12 and most current distributions): /bin -> usr/bin and so on; a host
    # without it gets its /bin, /sbin, /lib* trees copied instead
    for l in bin sbin lib lib64; do
        if [ -L "/$l" ]; then
            ln -s "$(readlink "/$l")" "$stage/$l"
        elif [ -d "/$l" ]; then
            HOST_TREES="$l $HOST_TREES"
        fi
    done
    tar -C "$stage" --numeric-owner -cf "$out" etc tmp proc sys dev run root var home usr bin sbin lib lib64 \
        2>/dev/null || tar -C "$stage" --numeric-owner -cf "$out" . || return 1
    {
        cd / || exit 1
        # the workloads' commands and their libraries (each as named and as resolved)
        for t in $TOOLS; do
            p=$(type -P "$t") || continue
            for l in "$p" $(ldd "$p" 2>/dev/null | grep -oE '/[^ ]+'); do
                [ -e "$l" ] || continue
                echo "0 $(realpath -s "$(realpath "$(dirname "$l")")/$(basename "$l")")"
                echo "0 $(realpath "$l")"
            done
        done
        # then the trees, their directories and links always, files until the budget is spent
        for t in $HOST_TREES; do
            [ -d "/$t" ] && [ ! -L "/$t" ] || continue
            find "/$t" -xdev \( -type d -o -type l -o -type f -size -2049k \) -printf '%y %s %p\n' |
                LC_ALL=C sort -k3
        done
    } | awk -v budget="$budget" '
        $1 == "0" { sub(/^\//, "", $2); must[$2] = 1; next }
        { p = substr($0, length($1) + length($2) + 4) }
        $1 == "f" && !(p in must) { if (full || used + $2 > budget) { full = 1; next }; used += $2 }
        { print p; seen[p] = 1 }
        END { for (m in must) if (!(m in seen)) print m }' >"$list.raw" || return 1
    # parents first; each path once
    LC_ALL=C sort -u "$list.raw" >"$list" || return 1
    # the parents of everything listed (a tree's own parent, e.g. usr/lib for usr/lib/python3)
    awk -F/ '{ p = ""; for (i = 1; i < NF; i++) { p = p (i > 1 ? "/" : "") $i; print p } }' "$list" |
        LC_ALL=C sort -u | grep -vxE 'usr|bin|sbin|lib|lib64' | LC_ALL=C sort -u - "$list" >"$list.all"
    # (status 1: a file changed while it was read, harmless here)
    tar -C / --numeric-owner --no-recursion -rf "$out" -T "$list.all"
    [ $? -le 1 ] || return 1
    rm -rf "$stage" "$list.raw"
}

debootstrap_image() { # OUT.tar
    local dir=$WORK/debootstrap
    log "   debootstrap --variant=minbase ${DEBOOTSTRAP_SUITE:-stable} ${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}"
    timeout 900 debootstrap --variant=minbase "${DEBOOTSTRAP_SUITE:-stable}" "$dir" \
        "${DEBOOTSTRAP_MIRROR:-http://deb.debian.org/debian}" >"$LOGS/debootstrap.log" 2>&1 || {
        log "   debootstrap failed (offline? see $LOGS/debootstrap.log)"
        rm -rf --one-file-system "$dir"
        return 1
    }
    tar -C "$dir" --numeric-owner -cf "$1" . && rm -rf --one-file-system "$dir"
}

IMAGE_TAR=$WORK/image.tar
case $IMAGE in
    auto)
        if command -v debootstrap >/dev/null && debootstrap_image "$IMAGE_TAR"; then
            IMAGE_DESC="Debian minbase from debootstrap"
        else
            IMAGE=host
        fi ;;
    debootstrap)
        command -v debootstrap >/dev/null || die "no debootstrap"
        debootstrap_image "$IMAGE_TAR" || die "debootstrap failed"
        IMAGE_DESC="Debian minbase from debootstrap" ;;
    host) ;;
    *)
        if [ -d "$IMAGE" ]; then
            tar -C "$IMAGE" --numeric-owner -cf "$IMAGE_TAR" . || die "tar of $IMAGE failed"
        elif [ -f "$IMAGE" ]; then
            IMAGE_TAR=$(realpath "$IMAGE")
        else
            die "--image $IMAGE: not host, debootstrap, a directory or a tar"
        fi
        IMAGE_DESC="from $IMAGE" ;;
esac
if [ "$IMAGE" = host ]; then
    log "== building the image from the host's /usr (files up to 2 MiB, ${TIMINGS_IMAGE_MB:-400} MiB in all)"
    host_image "$IMAGE_TAR" || die "building the image from the host failed"
    IMAGE_DESC="from the host's /usr"
fi
log "   image tar: $(($(stat -c %s "$IMAGE_TAR") >> 20)) MiB, $(tar tf "$IMAGE_TAR" | wc -l) entries ($IMAGE_DESC)"

# ---------------------------------------------------------------- the setups
for s in $SETUPS; do
    log "== $(label "$s"): private storage in $WORK/$s"
    make_setup "$s"
    info=$(pm info --format '{{.Store.GraphRoot}} {{.Store.RunRoot}} {{.Store.GraphDriverName}}' 2>&1)
    [ "$info" = "$SW/graphroot $SW/run overlay" ] || die "$s: podman does not use the private storage: $info"
    t0=$(now_us)
    pm import --change CMD=/bin/sh "$IMAGE_TAR" "$IMG" >"$LOGS/$s-import.log" 2>&1 ||
        die "$s: podman import failed: $(tail -n 5 "$LOGS/$s-import.log")"
    log "   import: $((($(now_us) - t0) / 1000)) ms"
    out=$(pm run --rm --pull=never "$IMG" sh -c 'find /usr -xdev | wc -l' 2>&1) ||
        die "$s: the image does not run: $out"
    log "   /usr in the container: $out entries"
    # the mount program really serves the container's root
    if [ "$s" != kernel ]; then
        out=$(pm run --rm --pull=never "$IMG" sh -c 'grep " / " /proc/self/mounts' 2>&1)
        case $out in *fuse*) ;; *) die "$s: the container's / is not a FUSE mount: $out" ;; esac
    fi
done

# ---------------------------------------------------------------- the runs
workload_cmd() { # WORKLOAD
    case $1 in
        run-true) pm run --rm --pull=never "$IMG" true ;;
        find-xdev) pm run --rm --pull=never "$IMG" sh -c 'find / -xdev | wc -l' ;;
        cp-usr) pm run --rm --pull=never "$IMG" cp -a /usr /usr2 ;;
        read-usr) pm run --rm --pull=never "$IMG" sh -c 'find /usr -type f -exec cat {} + >/dev/null' ;;
    esac
}
workload_desc() {
    case $1 in
        run-true) echo "run --rm IMAGE true" ;;
        find-xdev) echo "find / -xdev | wc -l" ;;
        cp-usr) echo "cp -a /usr /usr2" ;;
        read-usr) echo "cat every file under /usr" ;;
    esac
}
# one_run SETUP WORKLOAD: sets MS to the milliseconds, or ERR. (In the background and waited
# for, so that a TERM stops the script at once: podman rm then kills the container.)
one_run() {
    local t0 t1 rc
    use_setup "$1"
    sync
    t0=$(now_us)
    workload_cmd "$2" >>"$LOGS/$1-$2.out" 2>&1 &
    RUN_PID=$!
    wait "$RUN_PID"
    rc=$?
    t1=$(now_us)
    RUN_PID=
    if [ $rc = 0 ]; then MS=$(((t1 - t0) / 1000)); else MS=ERR; fi
}
median() { # values... (ERR if any is)
    printf '%s\n' "$@" | sort -n | awk '/ERR/ { e = 1 } { a[NR] = $1 }
        END { if (e || NR == 0) print "ERR"; else if (NR % 2) print a[(NR + 1) / 2];
              else printf "%d\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

declare -A MED ALL
for w in $WORKLOADS; do
    log "== $w: $(workload_desc "$w") (warm-up $WARMUP, then $N runs per setup, taking turns)"
    for ((i = 0; i < WARMUP; i++)); do
        for s in $SETUPS; do one_run "$s" "$w"; done
    done
    for s in $SETUPS; do ALL[$s.$w]=''; done
    for ((i = 1; i <= N; i++)); do
        for s in $SETUPS; do
            one_run "$s" "$w"
            ALL[$s.$w]="${ALL[$s.$w]} $MS"
            [ "$MS" = ERR ] && log "   $(label "$s") run $i FAILED: $(tail -n 3 "$LOGS/$s-$w.out")"
        done
    done
    for s in $SETUPS; do
        # shellcheck disable=SC2086
        MED[$s.$w]=$(median ${ALL[$s.$w]})
        log "   $(printf '%-15s' "$(label "$s")") median ${MED[$s.$w]} ms (${ALL[$s.$w]# } )"
    done
    # the same tree in every setup
    if [ "$w" = find-xdev ]; then
        log "   entries found: $(for s in $SETUPS; do printf '%s=%s ' "$s" "$(sort -u "$LOGS/$s-$w.out" | tr '\n' ' ')"; done)"
    fi
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the table
ratio() { # A B: A/B with two decimals
    case "$1$2" in *ERR* | '') echo - ;; *) awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' ;; esac
}
{
    echo "podman run timings: median of $N wall-clock ms per podman command (warm page cache, sync before each)"
    echo "image: $IMAGE_DESC, $(($(stat -c %s "$IMAGE_TAR") >> 20)) MiB tar; $(nproc) CPUs; kernel $(uname -r); podman $(podman --version | awk '{print $3}'), runc $(runc --version | awk 'NR == 1 {print $3}')"
    case " $SETUPS " in *" plyfs "*) echo "plyfs: $PLYFS ($("$PLYFS" --version 2>&1 | head -n 1))${PLYFS_OPTS:+, options $PLYFS_OPTS}" ;; esac
    case " $SETUPS " in *" fuse-overlayfs "*) echo "fuse-overlayfs: $FUSE_OVERLAYFS ($("$FUSE_OVERLAYFS" --version 2>&1 | grep -m1 'fuse-overlayfs: version' | awk '{print $3}'))" ;; esac
    echo "load average (1, 5, 15 min): $LOAD_START at the start, $LOAD_END at the end"
    echo
    printf '%-28s | %14s | %14s | %14s | %s\n' workload "kernel overlay" plyfs fuse-overlayfs plyfs/fuse-overlayfs
    printf '%s\n' "-----------------------------+----------------+----------------+----------------+---------------------"
    for w in $WORKLOADS; do
        printf '%-28s | %14s | %14s | %14s | %s\n' "$(workload_desc "$w")" "${MED[kernel.$w]:--}" \
            "${MED[plyfs.$w]:--}" "${MED[fuse-overlayfs.$w]:--}" "$(ratio "${MED[plyfs.$w]:-}" "${MED[fuse-overlayfs.$w]:-}")"
    done
} | tee ${TIMINGS_OUT:+"$TIMINGS_OUT"}
for w in $WORKLOADS; do
    for s in $SETUPS; do [ "${MED[$s.$w]}" != ERR ] || exit 1; done
done
exit 0
