#!/usr/bin/env bash
# tests/e2e/podman.sh: plyfs as containers-storage's overlay `mount_program`, end to end with
# podman and buildah, compared step by step with fuse-overlayfs (the reference) and, for
# information, with the kernel's overlay (containers-storage's native overlay driver).
#
# Run as root on Debian/Ubuntu with /dev/fuse:
#     cargo build --release && tests/e2e/podman.sh
#     tests/e2e/podman.sh --install-deps     # only the apt-get step (done automatically when a
#                                            # needed command is missing, unless E2E_NO_INSTALL=1)
# Environment:
#     PLYFS=path             plyfs binary (default: <repo>/target/release/plyfs)
#     FUSE_OVERLAYFS=path    fuse-overlayfs binary (default: /usr/bin/fuse-overlayfs, Debian's)
#     E2E_MODES="plyfs fuse-overlayfs native"   which storages to run (in this order)
#     E2E_BENCH=0            skip the timings;  E2E_BENCH_REPS=3  runs per timing (median)
#     E2E_TMPDIR=/var/tmp    where the private storages go (one temp dir, removed at the end)
#     E2E_KEEP=1             keep the step outputs (the storages are always removed)
#     E2E_MOUNTOPT=nodev     the storage's overlay mountopt
#     E2E_PLYFS_LOG=debug    plyfs daemons log (PLYFS_LOG) to <outputs>/plyfs/plyfs.log
#     E2E_TIMEOUT=300        seconds allowed for any one podman/buildah command
#     E2E_STEPS="01-import 02-load"   run only these steps (they depend on the ones before)
#
#     E2E_NO_NS=1            no private mount namespace (see below; podman then writes
#                            /var/lib/containers/cache and /run/runc, which the last check flags)
#
# Everything lives in a private containers-storage per mode (graphroot/runroot in the temp dir,
# selected with CONTAINERS_STORAGE_CONF/CONTAINERS_CONF/CONTAINERS_REGISTRIES_CONF files written
# here): the system's /var/lib/containers is never used. The test runs in a private mount
# namespace with throwaway overlays on /var/lib and /run, which catch what podman writes there
# regardless of its config (podman 4.3's `import` writes /var/lib/containers/cache, runc
# /run/runc), so nothing of it reaches the host. Images are built locally from busybox-static
# (no registry is contacted).
#
# Per mode (plyfs, fuse-overlayfs, native kernel overlay), in a fresh storage:
#   01-import  podman import of the base rootfs tar; a container's view of it
#   02-load    podman load of a docker-archive (base + a top layer with .wh. whiteouts and an
#              opaque dir); podman save, the top layer's entries
#   03-view-top  a container's view of the two-layer image (whiteouts and opaque dir applied)
#   04-actions a container adds, deletes, chmods, chowns, symlinks, hard-links, mkfifos, writes
#              16 MiB, replaces lower dirs, renames a lower dir, creates and deletes 300 files
#   05-diff .. 14-readonly  podman diff, podman mount (seen from the host), podman export,
#              podman commit (the new layer; a run of the image), podman start of the same
#              container, podman build (RUN rm ...), buildah from/run/commit, podman cp,
#              podman run --read-only
# Each step's normalized output (names, types, modes, owners, sizes, link counts, sha256 of
# contents, mtimes as base/top/new) is checked for the expected changes, then compared:
# plyfs against fuse-overlayfs (counted; a short list of known fuse-overlayfs deviations from the
# kernel is allowed and shown), both against the kernel's overlay (shown, not counted). Then
# timings (median of E2E_BENCH_REPS) of four podman runs per mode, and checks that no mount and
# no mount-program daemon is left. Prints "N passed, N failed" last; exits non-zero on failure.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." 2>/dev/null && pwd)
PLYFS=${PLYFS:-$REPO/target/release/plyfs}
MODES=${E2E_MODES:-plyfs fuse-overlayfs native}
BENCH=${E2E_BENCH:-1}
REPS=${E2E_BENCH_REPS:-3}
MOUNTOPT=${E2E_MOUNTOPT:-nodev}
TMO=${E2E_TIMEOUT:-300}
APT_PKGS="podman buildah runc conmon fuse-overlayfs fuse3 busybox-static python3 uidmap
          golang-github-containers-common containernetworking-plugins catatonit"

log() { printf '%s\n' "$*"; }
die() { printf 'podman.sh: %s\n' "$*" >&2; exit 2; }

install_deps() {
    log "== apt-get install $APT_PKGS"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq $APT_PKGS >/dev/null ||
        die "apt-get install failed"
}

# ---------------------------------------------------------------- results
PASSED=0 FAILED=0 FAILURES=()
pass() { PASSED=$((PASSED + 1)); log "  PASS $1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); log "  FAIL $1${2:+: $2}"; }

# ---------------------------------------------------------------- mounts and daemons
# our_mounts [DIR]: mount points under DIR (default: the work dir), deepest first
our_mounts() {
    awk -v d="${1:-$WORK}/" '{ gsub(/\\040/, " ", $5); if (index($5 "/", d) == 1) print $5 }' \
        /proc/self/mountinfo | sort -r
}
our_fuse_mounts() {
    awk -v d="${1:-$WORK}/" '{ for (i = 7; $i != "-"; i++); if (index($5 "/", d) == 1 &&
        $(i+1) ~ /^fuse/) print $3, $(i+1), $5 }' /proc/self/mountinfo
}
# daemons [DIR]: pids of mount programs (plyfs, fuse-overlayfs) working on DIR
daemons() {
    local p exe
    for p in /proc/[0-9]*; do
        exe=$(readlink "$p/exe" 2>/dev/null) || continue
        case $exe in "$PLYFS" | "$FUSE_OVERLAYFS") ;; *) continue ;; esac
        tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "${1:-$WORK}/" && echo "${p#/proc/}"
    done
}

# wait_daemons_gone [DIR]: a daemon may take a moment to exit after its unmount (up to 15 s)
wait_daemons_gone() {
    local i
    for ((i = 0; i < 75; i++)); do
        [ -z "$(daemons "$@")" ] && return 0
        sleep 0.2
    done
    return 1
}

# ================================================================ outer part
# Installs, makes the work dir, runs the test (the inner part, below) in a private mount
# namespace, then checks the host: no daemons left, the system's container paths untouched.
if [ -z "${E2E_INNER:-}" ]; then
    [ "$(id -u)" = 0 ] || die "run as root (the rootful podman flow needs it)"
    if [ "${1:-}" = --install-deps ]; then install_deps; exit 0; fi
    [ $# = 0 ] || die "usage: $0 [--install-deps]"
    missing=
    for c in podman buildah runc conmon fuse-overlayfs fusermount3 busybox python3 unshare; do
        command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
    done
    [ -e /etc/containers/policy.json ] || missing="$missing policy.json"
    if [ -n "$missing" ]; then
        [ "${E2E_NO_INSTALL:-0}" = 1 ] && die "missing:$missing (E2E_NO_INSTALL=1)"
        command -v apt-get >/dev/null || die "missing:$missing and no apt-get"
        install_deps
    fi
    [ -c /dev/fuse ] || die "no /dev/fuse"
    [ -x "$PLYFS" ] || die "no plyfs binary at $PLYFS (cargo build --release, or set PLYFS=)"
    PLYFS=$(realpath "$PLYFS")
    # the reference is Debian's fuse-overlayfs (/usr/bin) even when another one is first on PATH
    [ -z "${FUSE_OVERLAYFS:-}" ] && [ -x /usr/bin/fuse-overlayfs ] && FUSE_OVERLAYFS=/usr/bin/fuse-overlayfs
    FUSE_OVERLAYFS=$(realpath "${FUSE_OVERLAYFS:-$(command -v fuse-overlayfs)}")
    export PLYFS FUSE_OVERLAYFS

    # what the system had before: checked again at the end (the test must not touch it)
    SYS_PATHS="/var/lib/containers /run/containers /run/libpod /run/runc
               /etc/cni/net.d/87-podman-bridge.conflist"
    SYS_BEFORE=$(for p in $SYS_PATHS; do [ -e "$p" ] && echo "$p"; done)
    mkdir -p "${E2E_TMPDIR:-/var/tmp}"
    # short: podman refuses a runroot path longer than 50 characters (its exit command fails
    # "the specified runroot is longer than 50 characters", and every `podman run` then waits
    # 20 s for a cleanup that never comes)
    WORK=$(mktemp -d "${E2E_TMPDIR:-/var/tmp}/pe2e.XXXXXX") || die "mktemp failed"
    [ ${#WORK} -le 31 ] || die "E2E_TMPDIR is too long: podman needs runroot paths under 50 characters"
    OUT=$WORK/out
    mkdir -p "$OUT"
    outer_cleanup() {
        local rc=$? pid
        trap - EXIT INT TERM
        for pid in $(daemons); do kill "$pid" 2>/dev/null; done
        if [ -n "$(our_mounts)" ]; then
            log "mounts left under $WORK, not removing it:"
            our_mounts
        elif [ "${E2E_KEEP:-0}" = 1 ]; then
            find "$WORK" -mindepth 1 -maxdepth 1 ! -name out -exec rm -rf {} +
            log "outputs kept in $OUT"
        else
            rm -rf "$WORK"
        fi
        exit $rc
    }
    trap outer_cleanup EXIT
    trap 'exit 130' INT TERM
    log "plyfs e2e podman test: work dir $WORK"
    log "plyfs:          $PLYFS ($("$PLYFS" --version 2>&1 | head -1))"
    log "fuse-overlayfs: $FUSE_OVERLAYFS ($("$FUSE_OVERLAYFS" --version 2>&1 | grep -m1 'fuse-overlayfs: version'))"
    log "podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'),\
 runc $(runc --version | awk 'NR==1{print $3}'), kernel $(uname -r)"

    # The private mount namespace keeps every mount of the test away from the host, and the
    # overlays put on /var/lib and /run inside it catch what podman writes there whatever its
    # config says (podman 4.3's `import` writes /var/lib/containers/cache, runc uses /run/runc).
    if [ "${E2E_NO_NS:-0}" = 1 ]; then
        E2E_INNER=1 E2E_WORK=$WORK bash "$0"
    else
        E2E_INNER=1 E2E_WORK=$WORK unshare --mount --propagation private bash "$0"
    fi
    rc=$?
    if [ -f "$OUT/counts" ]; then
        . "$OUT/counts"
    else
        fail "the test ran to its end" "status $rc"
    fi
    log ""
    if wait_daemons_gone; then
        pass "host: no plyfs/fuse-overlayfs daemon of the test is left"
    else
        fail "host: no plyfs/fuse-overlayfs daemon of the test is left" "pids: $(daemons | tr '\n' ' ')"
    fi
    if [ -z "$(our_mounts)" ]; then
        pass "host: no mount under the work dir"
    else
        fail "host: no mount under the work dir" "$(our_mounts | tr '\n' ' ')"
    fi
    SYS_AFTER=$(for p in $SYS_PATHS; do [ -e "$p" ] && echo "$p"; done)
    if [ "$SYS_BEFORE" = "$SYS_AFTER" ]; then
        pass "host: the system's container paths are untouched"
    else
        fail "host: the system's container paths are untouched" \
            "before: $(echo $SYS_BEFORE); after: $(echo $SYS_AFTER)"
    fi
    for d in varlib:/var/lib run:/run; do
        [ -d "$WORK/sys/${d%%:*}" ] || continue
        w=$(cd "$WORK/sys/${d%%:*}" && find . -mindepth 1 | sed "s|^\.|${d#*:}|" | head -8)
        [ -z "$w" ] || log "note: written to ${d#*:} (kept in the namespace's overlay):" $w
    done
    log ""
    for f in "${FAILURES[@]}"; do log "failed: $f"; done
    log "$PASSED passed, $FAILED failed"
    [ "$FAILED" = 0 ]
    exit
fi

# ================================================================ inner part
WORK=$E2E_WORK
OUT=$WORK/out
BUSYBOX=$(command -v busybox)
if [ "${E2E_NO_NS:-0}" != 1 ]; then
    for d in varlib:/var/lib run:/run; do
        mkdir -p "$WORK/sys/${d%%:*}" "$WORK/sys/${d%%:*}.work"
        mount -t overlay e2e-sys -o "lowerdir=${d#*:},upperdir=$WORK/sys/${d%%:*},workdir=$WORK/sys/${d%%:*}.work" \
            "${d#*:}" || log "warning: no overlay on ${d#*:}: podman's writes there reach the host"
    done
fi

# ---------------------------------------------------------------- the helper (python3)
HELPER=$WORK/helper.py
cat >"$HELPER" <<'PYEOF'
#!/usr/bin/env python3
# Helper for tests/e2e/podman.sh: builds the test layers and the docker-archive, and turns tar
# streams, host trees and in-container listings into one normalized, sorted text format:
#   TYPE MODE UID:GID SIZE NLINK MTIME NAME [-> SYMLINK | => HARDLINK] [xattr=...] [sha256]
# MTIME is "base"/"top" for the fixed times the layers were built with, else "new".
import hashlib, io, json, os, platform, stat, subprocess, sys, tarfile

BASE_MTIME = 1577836800  # 2020-01-01T00:00:00Z: every base-layer entry
TOP_MTIME = 1609459200   # 2021-01-01T00:00:00Z: every top-layer entry
# paths the runtime creates or bind-mounts; not part of the comparison
VOLATILE = {"etc/hosts", "etc/hostname", "etc/resolv.conf", "run/.containerenv"}
DATA_DIRS, DATA_FILES, DATA_BIG = 30, 100, 4   # /data: 3000 small files + 4 x 4 MiB


def mclass(m):
    m = int(float(m))
    return "base" if m == BASE_MTIME else "top" if m == TOP_MTIME else "new"


def content(seed, size):
    out, h = bytearray(), hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        out += h
        h = hashlib.sha256(h).digest()
    return bytes(out[:size])


class Layer:
    def __init__(self, path, mtime):
        self.tf = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)
        self.mtime = mtime

    def add(self, name, kind="f", mode=0o644, data=b"", uid=0, gid=0, link="", xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, self.mtime
        ti.uname = ti.gname = ""
        if xattrs:
            ti.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
        if kind == "f":
            if isinstance(data, str):
                data = data.encode()
            ti.type, ti.size = tarfile.REGTYPE, len(data)
            self.tf.addfile(ti, io.BytesIO(data))
            return
        ti.type = {"d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE,
                   "p": tarfile.FIFOTYPE}[kind]
        ti.linkname = link
        self.tf.addfile(ti)

    def close(self):
        self.tf.close()


def is_static_elf(path):
    """True for an ELF executable without a PT_INTERP program header (no dynamic loader)."""
    import struct
    with open(path, "rb") as fh:
        hdr = fh.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            return False
        end = "<" if hdr[5] == 1 else ">"
        phoff, = struct.unpack(end + "Q", hdr[32:40])
        phentsize, phnum = struct.unpack(end + "HH", hdr[54:58])
        fh.seek(phoff)
        for _ in range(phnum):
            ph = fh.read(phentsize)
            if struct.unpack(end + "I", ph[:4])[0] == 3:  # PT_INTERP
                return False
    return True


def mkbase(out, busybox):
    if not is_static_elf(busybox):
        sys.exit("%s is not a static (64-bit ELF) binary: install busybox-static" % busybox)
    L = Layer(out, BASE_MTIME)
    d = lambda n, mode=0o755, **kw: L.add(n, "d", mode, **kw)
    f = lambda n, data, mode=0o644, **kw: L.add(n, "f", mode, data, **kw)
    for n in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/share", "etc", "var", "opt",
              "home", "proc", "sys", "dev", "run", "mnt", "var/churn"]:
        d(n)
    d("tmp", 0o1777)
    d("root", 0o700)
    d("home/e2e", 0o750, uid=1234, gid=5678)
    with open(busybox, "rb") as fh:
        f("bin/busybox", fh.read(), 0o755)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in sorted(set(applets)):
        a = a.strip("/")
        if a != "bin/busybox" and a.count("/") >= 1:
            L.add(a, "l", 0o777, link="/bin/busybox")
    f("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
      "e2e:x:1234:5678:e2e:/home/e2e:/bin/sh\n"
      "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    f("etc/group", "root:x:0:\ne2e:x:5678:\nnogroup:x:65534:\n")
    f("etc/motd", "base motd\n")
    for n in ["deleteme", "chmodme", "chownme", "hardlinkme", "appendme", "renameme",
              "truncme", "removed-by-top"]:
        f("etc/" + n, "lower file %s\n" % n)
    f("etc/xattrfile", "has a user xattr\n", xattrs={"user.e2e": "hello"})
    f("home/e2e/profile", "owned by e2e\n", 0o640, uid=1234, gid=5678)
    f("usr/bin/suidme", "#!/bin/sh\necho suid\n", 0o4755)
    L.add("usr/share/lowerlink", "l", 0o777, link="../../etc/motd")
    f("usr/share/hl-a", "two names, one inode\n")
    L.add("usr/share/hl-b", "h", 0o644, link="usr/share/hl-a")
    L.add("usr/share/fifo", "p", 0o600)
    d("usr/share/opaque")
    f("usr/share/opaque/a.txt", "a\n")
    f("usr/share/opaque/b.txt", "b\n")
    d("usr/share/opaque/sub")
    f("usr/share/opaque/sub/c.txt", "c\n")
    d("usr/share/gone")
    f("usr/share/gone/x", "x\n")
    f("usr/share/gone/y", "y\n")
    d("usr/share/renamedir")
    f("usr/share/renamedir/r1", "r1\n")
    d("usr/share/renamedir/sub")
    f("usr/share/renamedir/sub/r2", "r2\n")
    d("opt/replaceme")
    f("opt/replaceme/f1", "f1\n")
    f("opt/replaceme/f2", "f2\n")
    d("opt/replacedir")
    f("opt/replacedir/g1", "g1\n")
    d("opt/replacedir/sub")
    f("opt/replacedir/sub/g2", "g2\n")
    f("var/churn/keep", "keep\n")
    d("data")
    for i in range(DATA_DIRS):
        d("data/d%02d" % i)
        for j in range(DATA_FILES):
            n = "data/d%02d/f%03d" % (i, j)
            f(n, content(n, (i * DATA_FILES + j) * 2654435761 % 16384))
    d("data/big")
    for i in range(DATA_BIG):
        n = "data/big/b%d" % i
        f(n, content(n, 4 << 20))
    L.close()


def mktop(out):
    L = Layer(out, TOP_MTIME)
    L.add("etc", "d", 0o755)
    L.add("etc/.wh.removed-by-top")                 # a deleted file
    L.add("etc/added-by-top", data="added by the top layer\n")
    L.add("etc/motd", data="top motd\n")             # a replaced file
    L.add("usr", "d", 0o755)
    L.add("usr/share", "d", 0o755)
    L.add("usr/share/.wh.gone")                      # a deleted directory
    L.add("usr/share/opaque", "d", 0o755)
    L.add("usr/share/opaque/.wh..wh..opq")           # an opaque directory
    L.add("usr/share/opaque/new.txt", data="only this is left\n")
    L.close()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for b in iter(lambda: fh.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def mkarchive(out, tag, layers):
    """A docker-archive (what `docker save` writes) with the given uncompressed layer tars."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    diff_ids = ["sha256:" + sha256_file(p) for p in layers]
    cfg = {"architecture": arch, "os": "linux", "created": "2021-01-01T00:00:00Z",
           "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
           "rootfs": {"type": "layers", "diff_ids": diff_ids},
           "history": [{"created": "2021-01-01T00:00:00Z", "created_by": "e2e layer %d" % i}
                       for i in range(len(layers))]}
    cfgb = json.dumps(cfg, sort_keys=True).encode()
    cfgname = hashlib.sha256(cfgb).hexdigest() + ".json"
    names = ["%s/layer.tar" % d.split(":")[1] for d in diff_ids]
    man = json.dumps([{"Config": cfgname, "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(out, "w") as tf:
        def blob(name, data):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), TOP_MTIME, 0o644
            tf.addfile(ti, io.BytesIO(data))
        blob(cfgname, cfgb)
        for p, n in zip(layers, names):
            tf.add(p, arcname=n)
        blob("manifest.json", man)


def fmt(kind, mode, uid, gid, size, nlink, mtime, name, extra="", sha=""):
    if kind == "d":
        size = nlink = "-"
    line = "%s %04o %s:%s %s %s %s %s" % (kind, mode, uid, gid, size, nlink, mclass(mtime), name)
    if extra:
        line += " " + extra
    if sha:
        line += " " + sha[:16]
    return line


def norm_name(n):
    n = n.lstrip(".").lstrip("/") if n.startswith("./") or n.startswith("/") else n
    return n.rstrip("/") or "."


def list_tarfile(tf, out):
    lines = []
    for ti in tf:
        name = norm_name(ti.name)
        if name in VOLATILE:
            continue
        kind = ("d" if ti.isdir() else "l" if ti.issym() else "h" if ti.islnk() else
                "f" if ti.isreg() else "p" if ti.isfifo() else "c" if ti.ischr() else
                "b" if ti.isblk() else "?")
        extra, sha = "", ""
        if kind == "l":
            extra = "-> " + ti.linkname
        elif kind == "h":
            extra = "=> " + norm_name(ti.linkname)
        elif kind in "cb":
            extra = "dev=%d,%d" % (ti.devmajor, ti.devminor)
        xa = sorted((k[len("SCHILY.xattr."):], v) for k, v in ti.pax_headers.items()
                    if k.startswith("SCHILY.xattr."))
        if xa:
            extra = (extra + " " if extra else "") + " ".join("xattr:%s=%s" % kv for kv in xa)
        if kind == "f":
            sha = hashlib.sha256(tf.extractfile(ti).read()).hexdigest()
        lines.append(fmt(kind, ti.mode & 0o7777, ti.uid, ti.gid,
                         ti.size if kind == "f" else 0, "-", ti.mtime, name, extra, sha))
    out.extend(lines)


def listtar(path):
    lines = []
    if path == "-":
        with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tf:
            list_tarfile(tf, lines)
    else:
        with tarfile.open(path, "r:*") as tf:
            list_tarfile(tf, lines)
    print("\n".join(sorted(lines, key=lambda l: l.split(" ")[6])))


def layers_of_archive(path):
    with tarfile.open(path, "r") as tf:
        man = json.load(tf.extractfile("manifest.json"))
        return man[0]["Layers"]


def listlayer(path, index):
    """List layer INDEX (python index: -1 is the topmost) of a docker-archive."""
    with tarfile.open(path, "r") as tf:
        man = json.load(tf.extractfile("manifest.json"))
        layer = man[0]["Layers"][int(index)]
        lines = []
        with tarfile.open(fileobj=tf.extractfile(layer), mode="r|*") as lt:
            list_tarfile(lt, lines)
    print("# %d layers" % len(man[0]["Layers"]))
    print("\n".join(sorted(lines, key=lambda l: l.split(" ")[6])))


def listdir(root, skip):
    """The same format for a tree seen from the host (e.g. a `podman mount` mountpoint)."""
    lines, skip = [], set(skip)
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        for n in sorted(dns + fns):
            p = os.path.join(dp, n)
            name = os.path.normpath(os.path.join(rel, n))
            st = os.lstat(p)
            if name in skip and stat.S_ISDIR(st.st_mode):
                dns.remove(n)
            if name in VOLATILE:
                continue
            m = st.st_mode
            kind = ("d" if stat.S_ISDIR(m) else "l" if stat.S_ISLNK(m) else
                    "f" if stat.S_ISREG(m) else "p" if stat.S_ISFIFO(m) else
                    "c" if stat.S_ISCHR(m) else "b" if stat.S_ISBLK(m) else "?")
            extra, sha = "", ""
            if kind == "l":
                extra = "-> " + os.readlink(p)
            elif kind == "f":
                sha = sha256_file(p)
            elif kind in "cb":
                extra = "dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
            try:
                xa = sorted(x for x in os.listxattr(p, follow_symlinks=False)
                            if x.startswith("user."))
            except OSError:
                xa = []
            if xa:
                vals = ["xattr:%s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).decode())
                        for x in xa]
                extra = (extra + " " if extra else "") + " ".join(vals)
            lines.append(fmt(kind, stat.S_IMODE(m), st.st_uid, st.st_gid,
                             st.st_size if kind == "f" else 0, st.st_nlink, st.st_mtime,
                             name, extra, sha))
    print("\n".join(sorted(lines, key=lambda l: l.split(" ")[6])))


def view(path):
    """Normalize the raw listing the in-container VIEW script prints:
    S|name|hexmode|uid|gid|size|nlink|mtime|%N   H|sha  name   DATA|... and other lines."""
    ents, shas, other = {}, {}, []
    src = sys.stdin if path == "-" else open(path)
    for line in src:
        line = line.rstrip("\n")
        if line.startswith("S|"):
            _, name, hmode, uid, gid, size, nlink, mtime, qn = line.split("|", 8)
            ents[norm_name(name)] = (int(hmode, 16), uid, gid, size, nlink, mtime, qn)
        elif line.startswith("H|"):
            sha, name = line[2:].split(None, 1)
            shas[norm_name(name)] = sha
        elif line:
            other.append(line)
    lines = []
    for name, (m, uid, gid, size, nlink, mtime, qn) in ents.items():
        if name in VOLATILE or name == ".":
            continue
        kind = ("d" if stat.S_ISDIR(m) else "l" if stat.S_ISLNK(m) else
                "f" if stat.S_ISREG(m) else "p" if stat.S_ISFIFO(m) else
                "c" if stat.S_ISCHR(m) else "b" if stat.S_ISBLK(m) else "?")
        extra = ""
        if kind == "l":
            extra = "-> " + qn.split(" -> ", 1)[1].strip("'")
        lines.append(fmt(kind, stat.S_IMODE(m), uid, gid, size if kind == "f" else 0,
                         nlink, mtime, name, extra, shas.get(name, "")))
    for l in other:
        print(l)
    print("\n".join(sorted(lines, key=lambda l: l.split(" ")[6])))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "mkbase":
        mkbase(*args)
    elif cmd == "mktop":
        mktop(*args)
    elif cmd == "mkarchive":
        mkarchive(args[0], args[1], args[2:])
    elif cmd == "listtar":
        listtar(args[0])
    elif cmd == "listlayer":
        listlayer(args[0], args[1])
    elif cmd == "listdir":
        listdir(args[0], args[1:])
    elif cmd == "view":
        view(args[0])
    else:
        sys.exit("unknown helper command " + cmd)
PYEOF
hp() { python3 "$HELPER" "$@"; }

# ---------------------------------------------------------------- per-mode configuration
# container limits podman can set without CAP_SYS_RESOURCE (its defaults, 1048576 files and
# 4194304 processes, are more than many sandboxes allow)
NOFILE=$(ulimit -Hn)
{ [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 20000 ]; } && NOFILE=20000
NPROC=$(ulimit -Hu)
{ [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 16384 ]; } && NPROC=16384
# mode_env MODE: selects MODE's private storage for pm/bh (podman/buildah) below.
mode_env() {
    M=$1 MW=$WORK/$1 MO=$OUT/$1
    export CONTAINERS_CONF=$MW/containers.conf
    export CONTAINERS_STORAGE_CONF=$MW/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$MW/registries.conf
    unset PLYFS_LOG PLYFS_LOG_FILE
    if [ "$M" = plyfs ] && [ -n "${E2E_PLYFS_LOG:-}" ]; then
        export PLYFS_LOG=$E2E_PLYFS_LOG PLYFS_LOG_FILE=$MO/plyfs.log
    fi
}
pm() { timeout -k 10 "$TMO" podman "$@"; }
bh() { timeout -k 10 "$TMO" buildah "$@"; }

setup_mode() {
    mode_env "$1"
    mkdir -p "$MW"/{graphroot,run,tmp,volumes,net} "$MO"
    local prog=
    case $M in
        plyfs) prog=$PLYFS ;;
        fuse-overlayfs) prog=$FUSE_OVERLAYFS ;;
    esac
    {
        echo '[storage]'
        echo 'driver = "overlay"'
        echo "graphroot = \"$MW/graphroot\""
        echo "runroot = \"$MW/run\""
        echo '[storage.options]'
        echo '[storage.options.overlay]'
        [ -n "$prog" ] && echo "mount_program = \"$prog\""
        echo "mountopt = \"$MOUNTOPT\""
    } >"$CONTAINERS_STORAGE_CONF"
    cat >"$CONTAINERS_CONF" <<EOF
[containers]
netns = "none"
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$MW/events.log"
runtime = "runc"
tmp_dir = "$MW/tmp"
volume_path = "$MW/volumes"
[network]
network_backend = "cni"
network_config_dir = "$MW/net"
EOF
    echo 'unqualified-search-registries = []' >"$CONTAINERS_REGISTRIES_CONF"
}

reset_mode() {
    mode_env "$1"
    [ -f "$CONTAINERS_STORAGE_CONF" ] || return 0
    pm rm -af -t 0 >/dev/null 2>&1
    bh rm --all >/dev/null 2>&1
    pm system reset -f >/dev/null 2>&1
}

cleanup() {
    local rc=$? m dev _typ mp pid
    trap - EXIT INT TERM
    for m in $MODES; do reset_mode "$m"; done
    # whatever is still mounted: abort hung FUSE connections, then detach
    while read -r dev _typ mp; do
        [ -n "$dev" ] || continue
        echo 1 >"/sys/fs/fuse/connections/${dev#*:}/abort" 2>/dev/null
        umount -l "$mp" 2>/dev/null
    done < <(our_fuse_mounts)
    for mp in $(our_mounts); do umount -l "$mp" 2>/dev/null || umount "$mp" 2>/dev/null; done
    for pid in $(daemons); do kill "$pid" 2>/dev/null; done
    if [ -z "$(our_mounts)" ]; then
        pass "no mount left under the work dir after the cleanup (/proc/self/mountinfo)"
    else
        fail "no mount left under the work dir after the cleanup" "$(our_mounts | tr '\n' ' ')"
    fi
    {
        echo "PASSED=$PASSED FAILED=$FAILED"
        printf 'FAILURES=('
        [ ${#FAILURES[@]} = 0 ] || printf '%q ' "${FAILURES[@]}"
        echo ')'
    } >"$OUT/counts"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the test images
log "== building the layers from $BUSYBOX"
hp mkbase "$WORK/base.tar" "$BUSYBOX" || die "building the base layer failed"
hp mktop "$WORK/top.tar" || die "building the top layer failed"
hp mkarchive "$WORK/top-image.tar" localhost/e2e-top:latest "$WORK/base.tar" "$WORK/top.tar" ||
    die "building the docker-archive failed"
# the top layer really holds AUFS whiteouts and an opaque marker
tar tvf "$WORK/top.tar" >"$OUT/top-layer.tv"
if grep -q ' etc/.wh.removed-by-top$' "$OUT/top-layer.tv" &&
    grep -q ' usr/share/.wh.gone$' "$OUT/top-layer.tv" &&
    grep -q ' usr/share/opaque/.wh..wh..opq$' "$OUT/top-layer.tv"; then
    pass "top layer tar holds .wh. whiteouts and .wh..wh..opq"
else
    fail "top layer tar holds .wh. whiteouts and .wh..wh..opq" "$(cat "$OUT/top-layer.tv")"
fi
log "   base layer: $(tar tf "$WORK/base.tar" | wc -l) entries, $(($(stat -c %s "$WORK/base.tar") >> 20)) MiB"

# ---------------------------------------------------------------- in-container scripts
# VIEW lists the container's root (not /proc, /sys, /dev; /data as a count and one hash)
# as raw lines the helper's `view` normalizes.
PRUNE='\( -path /proc -o -path /sys -o -path /dev -o -path /data \) -prune -o'
VIEW="find / -xdev $PRUNE -exec stat -c 'S|%n|%f|%u|%g|%s|%h|%Y|%N' {} + &&
find / -xdev $PRUNE -type f -exec sha256sum {} + | sed 's/^/H|/' &&
echo \"DATA|\$(find /data | wc -l)|\$(find /data -type f | sort | xargs cat | sha256sum | cut -c1-16)\""
# ACT changes the root (on the first start only: a later start just prints VIEW again)
ACT='set -e
if [ -e /newfile ]; then echo "started again: /newfile is there"; else
echo hello > /newfile
mkdir -p /newdir/sub && echo nested > /newdir/sub/file
rm /etc/deleteme
chmod 0600 /etc/chmodme
chown 1234:5678 /etc/chownme
chown -h 1234:5678 /usr/share/lowerlink
ln -s ../etc/passwd /symlink
ln /etc/hardlinkme /hardlink
mkfifo -m 0640 /fifo
yes 0123456789abcdef | head -c 16777216 > /big16
rm -rf /opt/replaceme && echo "now a file" > /opt/replaceme
rm -rf /opt/replacedir && mkdir /opt/replacedir && echo new > /opt/replacedir/new
i=0; while [ $i -lt 300 ]; do echo $i > /var/churn/f$i; i=$((i + 1)); done
echo "churn: $(ls /var/churn | wc -l) files"
rm /var/churn/f*
echo "churn: $(ls /var/churn | wc -l) files"
echo appended >> /etc/appendme
mv /etc/renameme /etc/renamed
mv /usr/share/renamedir /usr/share/renameddir
: > /etc/truncme
echo more >> /usr/share/opaque/new.txt
echo inhome > /home/e2e/new && chown 1234:5678 /home/e2e/new
echo "actions done"
fi'
# the changes ACT makes, as they must show in a listing of the whole root
check_changes() { # FILE: a normalized listing (view, export, mount)
    local f=$1 bad=0 re
    for re in ' 0600 0:0 .* etc/chmodme( |$)' ' 1234:5678 .* etc/chownme( |$)' \
        ' 1234:5678 .* usr/share/lowerlink -> ../../etc/motd$' ' symlink -> ../etc/passwd$' \
        ' (hardlink|etc/hardlinkme)( |$)' '^p 0640 .* fifo$' '^f 0644 0:0 16777216 .* big16 ' \
        '^f .* opt/replaceme ' ' opt/replacedir/new ' ' usr/share/renameddir/sub/r2 ' \
        ' var/churn/keep ' ' newdir/sub/file ' ' etc/renamed ' '^f 0644 0:0 0 .* etc/truncme' \
        ' 1234:5678 .* home/e2e/new '; do
        grep -Eq -- "$re" "$f" || { echo "expected a line matching: $re" >&2; bad=1; }
    done
    for re in ' etc/deleteme( |$)' ' opt/replacedir/g1' ' opt/replaceme/' ' var/churn/f' \
        ' usr/share/renamedir(/| |$)' ' etc/renameme( |$)'; do
        grep -Eq -- "$re" "$f" && { echo "unexpected line matching: $re" >&2; bad=1; }
    done
    return $bad
}
check_top() { # FILE: the top image as a listing
    local f=$1 bad=0 re
    for re in ' etc/added-by-top ' '^f 0644 0:0 9 .* etc/motd ' ' usr/share/opaque/new.txt '; do
        grep -Eq -- "$re" "$f" || { echo "expected a line matching: $re" >&2; bad=1; }
    done
    for re in ' etc/removed-by-top' ' usr/share/gone' ' usr/share/opaque/[ab].txt' \
        ' usr/share/opaque/sub' '\.wh\.'; do
        grep -Eq -- "$re" "$f" && { echo "unexpected line matching: $re" >&2; bad=1; }
    done
    return $bad
}
expect() { grep -Eq -- "$2" "$1" || { echo "expected a line matching: $2" >&2; return 1; }; }
expect_not() { ! grep -Eq -- "$2" "$1" || { echo "unexpected line matching: $2" >&2; return 1; }; }
no_chr_whiteouts() { expect_not "$1" '^c .* dev=0,0'; }
# loose: no link counts, no directory mtimes (a layer containers-storage makes through a
# mount_program (its "naive diff") keeps neither hard links nor directory-only mtime changes)
loosen() { if [ "$1" = loose ]; then awk '{ $5 = "-"; if ($1 == "d") $6 = "-"; print }'; else cat; fi; }
# view_part FILE: the listing lines of a view output (drops the script's own messages)
view_part() { grep -E '^(DATA\||[dflphcb] [0-7]{4} )' "$1"; }

# ---------------------------------------------------------------- the steps
# Each step writes its normalized output to $MO/NAME.txt (compared across modes afterwards)
# and its log to $MO/NAME.err; a non-zero status fails it.
st_import() {
    pm import --change 'CMD ["/bin/sh"]' "$WORK/base.tar" localhost/e2e-base:latest >/dev/null &&
        pm run --name view-base localhost/e2e-base:latest sh -c "$VIEW" >"$MO/raw-base" &&
        pm rm view-base >/dev/null && hp view "$MO/raw-base" || return 1
}
st_import_check() {
    expect "$MO/01-import.txt" ' usr/share/gone/x ' && expect "$MO/01-import.txt" ' etc/removed-by-top ' &&
        expect "$MO/01-import.txt" '^f 0755 0:0 [0-9]+ 1 base bin/busybox ' &&
        expect "$MO/01-import.txt" '^f 0644 0:0 [0-9]+ 2 base usr/share/hl-b '
}
st_load() {
    pm load -i "$WORK/top-image.tar" >&2 &&
        pm image inspect --format 'id={{.Id}} layers={{len .RootFS.Layers}}' localhost/e2e-top:latest &&
        pm save --format docker-archive -o "$MW/top-saved.tar" localhost/e2e-top:latest >&2 &&
        hp listlayer "$MW/top-saved.tar" -1 && rm -f "$MW/top-saved.tar"
}
st_load_check() {
    local f=$MO/02-load.txt
    expect "$f" 'layers=2' && expect "$f" ' etc/\.wh\.removed-by-top ' &&
        expect "$f" ' usr/share/\.wh\.gone ' && expect "$f" ' usr/share/opaque/\.wh\.\.wh\.\.opq '
}
st_view_top() {
    pm run --rm localhost/e2e-top:latest sh -c "$VIEW" >"$MO/raw-top" && hp view "$MO/raw-top"
}
st_view_top_check() { check_top "$MO/03-view-top.txt"; }
st_actions() {
    pm run --name c1 localhost/e2e-top:latest sh -c "$ACT
$VIEW" >"$MO/raw-actions" && hp view "$MO/raw-actions"
}
st_actions_check() {
    local f=$MO/04-actions.txt
    check_changes "$f" && check_top "$f" && expect "$f" '^churn: 301 files$' &&
        expect "$f" '^churn: 1 files$' && expect "$f" '^f 0644 0:0 [0-9]+ 2 base (etc/hardlinkme|hardlink) ' &&
        expect "$f" '^actions done$'
}
# `podman container diff`, not `podman diff`: the latter looks NAME up as an image first, and
# "c1" is also a valid short image ID (hex), so whenever one of the images made here (with
# random IDs: e2e-base, e2e-commit, e2e-built, e2e-buildah) has an ID starting with "c1",
# `podman diff c1` diffs that image against its parent instead of the container
st_diff() { pm container diff c1 | LC_ALL=C sort; }
st_diff_check() {
    local f=$MO/05-diff.txt re
    for re in '^A /newfile$' '^D /etc/deleteme$' '^C /etc/chmodme$' '^C /etc/chownme$' \
        '^A /symlink$' '^A /hardlink$' '^A /fifo$' '^A /big16$' '^A /etc/renamed$' \
        '^D /etc/renameme$' '^A /usr/share/renameddir$' '^D /usr/share/renamedir$' \
        '^C /etc/truncme$' '^C /etc/appendme$'; do
        expect "$f" "$re" || return 1
    done
    expect_not "$f" '/var/churn/f'
}
st_mount() {
    local mp
    mp=$(pm mount c1) || return 1
    echo "mounted at $mp" >&2
    grep -F " $mp " /proc/self/mountinfo | awk '{for(i=7;$i!="-";i++); print "fstype:", $(i+1)}' |
        sed 's/^fstype: fuse\..*/fstype: fuse/'
    hp listdir "$mp" data
    pm umount c1 >&2
}
st_mount_check() { check_changes "$MO/06-mount.txt"; }
st_export() { pm export c1 | hp listtar -; }
st_export_check() {
    check_changes "$MO/07-export.txt" && check_top "$MO/07-export.txt" &&
        no_chr_whiteouts "$MO/07-export.txt" &&
        expect "$MO/07-export.txt" ' etc/xattrfile xattr:user.e2e=hello '
}
st_commit() {
    pm commit c1 localhost/e2e-commit:latest >&2 &&
        pm save --format docker-archive -o "$MW/commit.tar" localhost/e2e-commit:latest >&2 &&
        hp listlayer "$MW/commit.tar" -1 && rm -f "$MW/commit.tar"
}
st_commit_check() {
    local f=$MO/08-commit-layer.txt re
    no_chr_whiteouts "$f" || return 1
    for re in '^# 3 layers$' ' etc/\.wh\.deleteme ' ' etc/\.wh\.renameme ' ' opt/replacedir/\.wh\.(\.wh\.\.opq|g1) ' \
        ' usr/share/\.wh\.renamedir ' ' usr/share/renameddir/sub/r2 ' ' usr/share/renameddir/r1 ' \
        '^p 0640 .* fifo$' ' 1234:5678 .* etc/chownme ' ' 0600 0:0 .* etc/chmodme '; do
        expect "$f" "$re" || return 1
    done
    expect_not "$f" ' var/churn/f' && expect_not "$f" ' var/churn/keep'
}
st_commit_run() {
    pm run --rm localhost/e2e-commit:latest sh -c "$VIEW" >"$MO/raw-commit-run" && hp view "$MO/raw-commit-run"
}
st_commit_run_check() {
    check_changes "$MO/09-commit-run.txt" && check_top "$MO/09-commit-run.txt" &&
        same_view "$MO/04-actions.txt" "$MO/09-commit-run.txt" loose
}
# same_view A B: the listings agree (B is the same root seen again: restart, commit)
same_view() { # A B [loose]
    diff -u <(view_part "$1" | loosen "${3:-}") <(view_part "$2" | loosen "${3:-}") >&2 ||
        { echo "the root differs from the one after the actions (diff above)" >&2; return 1; }
}
st_restart() {
    pm start -a c1 >"$MO/raw-restart" && hp view "$MO/raw-restart"
}
st_restart_check() {
    expect "$MO/10-restart.txt" '^started again' && same_view "$MO/04-actions.txt" "$MO/10-restart.txt"
}
st_build() {
    mkdir -p "$MW/ctx"
    cat >"$MW/ctx/Containerfile" <<'EOF'
FROM localhost/e2e-top:latest
RUN rm /etc/appendme && rm -rf /opt/replacedir && mkdir /opt/replacedir && \
    echo built > /opt/replacedir/built && echo built > /built-file && chmod 0700 /etc/motd && \
    mv /usr/share/renamedir /usr/share/built-moved
EOF
    pm build --pull=never --network none -t localhost/e2e-built:latest "$MW/ctx" >&2 &&
        pm save --format docker-archive -o "$MW/built.tar" localhost/e2e-built:latest >&2 &&
        hp listlayer "$MW/built.tar" -1 && rm -f "$MW/built.tar" &&
        echo "--- run:" && pm run --rm localhost/e2e-built:latest sh -c "$VIEW" >"$MO/raw-built" &&
        hp view "$MO/raw-built"
}
st_build_check() {
    local f=$MO/11-build.txt re
    no_chr_whiteouts "$f" || return 1
    for re in ' etc/\.wh\.appendme ' ' opt/replacedir/\.wh\.(\.wh\.\.opq|g1) ' ' opt/replacedir/built ' \
        ' built-file ' '^f 0700 0:0 9 [-0-9]+ top etc/motd' ' usr/share/\.wh\.renamedir ' \
        ' usr/share/built-moved/sub/r2 '; do
        expect "$f" "$re" || return 1
    done
}
st_buildah() {
    local c
    c=$(bh from --pull=never localhost/e2e-top:latest) || return 1
    echo "working container $c" >&2
    bh run --network none "$c" -- sh -c 'rm /etc/motd && echo b > /buildah-added &&
        rm -rf /usr/share/opaque && mkdir /usr/share/opaque && echo x > /usr/share/opaque/bnew &&
        mv /usr/share/renamedir /usr/share/bmoved && ln /etc/hardlinkme /bhl && chown 1234:5678 /etc/chownme' >&2 &&
        bh commit "$c" localhost/e2e-buildah:latest >&2 && bh rm "$c" >&2 &&
        pm save --format docker-archive -o "$MW/buildah.tar" localhost/e2e-buildah:latest >&2 &&
        hp listlayer "$MW/buildah.tar" -1 && rm -f "$MW/buildah.tar" &&
        echo "--- run:" && pm run --rm localhost/e2e-buildah:latest sh -c "$VIEW" >"$MO/raw-buildah" &&
        hp view "$MO/raw-buildah"
}
st_buildah_check() {
    local f=$MO/12-buildah.txt re
    no_chr_whiteouts "$f" || return 1
    for re in ' etc/\.wh\.motd ' ' buildah-added ' ' usr/share/opaque/\.wh\.(\.wh\.\.opq|new\.txt) ' \
        ' usr/share/opaque/bnew ' ' usr/share/\.wh\.renamedir ' ' usr/share/bmoved/sub/r2 ' \
        ' 1234:5678 .* etc/chownme '; do
        expect "$f" "$re" || return 1
    done
}
st_cp() {
    printf 'copied in\n' >"$MW/cp-in"
    chmod 0640 "$MW/cp-in"
    pm cp "$MW/cp-in" c1:/etc/cp-in >&2 && pm cp c1:/etc - | hp listtar - | grep -E ' etc/(cp-in|motd|chmodme|deleteme|renamed|chownme) ' &&
        echo "--- diff:" && pm container diff c1 | grep -F /etc/cp-in
}
st_cp_check() {
    expect "$MO/13-cp.txt" '^f 0640 0:0 10 [-0-9]+ new etc/cp-in ' && expect "$MO/13-cp.txt" '^A /etc/cp-in$' &&
        expect "$MO/13-cp.txt" '^f 0600 0:0 .* etc/chmodme ' && expect_not "$MO/13-cp.txt" ' etc/deleteme '
}
st_readonly() {
    pm run --rm --read-only localhost/e2e-top:latest sh -c 'exec 2>&1; cat /etc/motd; echo x > /etc/motd; echo "write status $?"; mkdir /newdir; echo "mkdir status $?"' 2>&1
}
st_readonly_check() {
    expect "$MO/14-readonly.txt" '^top motd$' && expect "$MO/14-readonly.txt" '^write status 1$' &&
        expect "$MO/14-readonly.txt" 'Read-only file system' && expect "$MO/14-readonly.txt" '^mkdir status 1$'
}
# --uidmap as root: containers-storage mounts the lower layers idmapped (mapped/N/l/...) and also
# passes uidmapping=/gidmapping= to the mount program
LSN='ls -lnd "$@" | awk "{print \$1, \$3, \$4, \$NF}"'
st_userns() {
    local up
    pm run --name u1 --uidmap 0:200000:65536 --gidmap 0:200000:65536 localhost/e2e-top:latest sh -c "
        lsn() { $LSN; }
        id; lsn /etc/passwd /home/e2e /home/e2e/profile /etc/motd /usr/share/opaque/new.txt
        echo hi > /newf && mkdir /newd && chown 1234:5678 /etc/chownme && chmod 600 /etc/chmodme &&
        echo more >> /home/e2e/profile && lsn /newf /newd /etc/chownme /etc/chmodme /home/e2e/profile" &&
        up=$(pm inspect u1 --format '{{.GraphDriver.Data.UpperDir}}') && echo "--- upper dir, host ids:" &&
        hp listdir "$up" | grep -v -E ' (dev|proc|sys|run|etc/mtab)( |$)' | awk '{ if ($1 == "d") $6 = "-"; print }' &&
        pm commit u1 localhost/e2e-userns:latest >&2 && echo "--- the committed image:" &&
        pm run --rm localhost/e2e-userns:latest sh -c "lsn() { $LSN; }; lsn /newf /newd /etc/chownme /etc/chmodme /home/e2e/profile"
    # (removing it right away sometimes fails, shm still busy, with any driver)
    pm rm u1 >&2 || { sleep 2; pm rm -f u1 >&2; }
}
st_userns_check() {
    local f=$MO/15-userns.txt
    expect "$f" '^uid=0\(root\) gid=0\(root\)' && expect "$f" '^-rw-r--r-- 0 0 /etc/passwd$' &&
        expect "$f" '^-rw-r----- 1234 5678 /home/e2e/profile$' && expect "$f" '^-rw-r--r-- 1234 5678 /etc/chownme$' &&
        expect "$f" '^f 0644 200000:200000 3 1 new newf '
}
STEPS="01-import:st_import 02-load:st_load 03-view-top:st_view_top 04-actions:st_actions
05-diff:st_diff 06-mount:st_mount 07-export:st_export 08-commit-layer:st_commit
09-commit-run:st_commit_run 10-restart:st_restart 11-build:st_build 12-buildah:st_buildah
13-cp:st_cp 14-readonly:st_readonly 15-userns:st_userns"
# the step a reference other than fuse-overlayfs is compared with (Debian's fuse-overlayfs 1.10
# cannot start a --uidmap container here: it maps the idmapped lower layers a second time)
ref_of() { case $1 in 15-userns) echo native ;; *) echo fuse-overlayfs ;; esac; }

run_step() { # NAME FUNC
    local name=$1 fn=$2 t0 rc msg="" what=command
    t0=$(date +%s.%N)
    "$fn" >"$MO/$name.txt" 2>"$MO/$name.err"
    rc=$?
    if [ $rc = 0 ] && declare -F "${fn}_check" >/dev/null; then
        what=check
        "${fn}_check" 2>>"$MO/$name.err"
        rc=$?
    fi
    if [ $rc = 0 ]; then
        pass "$M: $name ($(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')s)"
        return
    fi
    [ $what = command ] && msg="command failed (status $rc)" || msg="check failed"
    if [ "$M" != plyfs ]; then
        # a reference's own expectation failing is a finding about the reference, not a failure
        log "  NOTE $M: $name: $msg (a reference, not counted); $MO/$name.err:"
    else
        fail "$M: $name" "$msg; $MO/$name.err:"
    fi
    grep -v -E '^(Getting image source|Copying (blob|config)|Writing manifest|Storing signatures)' \
        "$MO/$name.err" | tail -n 15 | sed 's/^/        /'
}

# ---------------------------------------------------------------- timings
BENCH_TESTS="run-true find-xdev cp-a-data read-all"
bench_cmd() { # TEST: the podman command a timing runs
    local img=localhost/e2e-top:latest
    case $1 in
        run-true) pm run --rm "$img" true ;;
        find-xdev) pm run --rm "$img" sh -c 'find / -xdev | wc -l' ;;
        cp-a-data) pm run --rm "$img" cp -a /data /data2 ;;
        read-all) pm run --rm "$img" sh -c 'find /data -type f -exec cat {} + | wc -c' ;;
    esac
}
# run_bench MODE...: every test REPS times, the modes taking turns (so that load from elsewhere
# on the machine falls on all of them alike); medians to $OUT/MODE/bench.txt
run_bench() {
    local t i m t0 t1 med
    for m in "$@"; do : >"$OUT/$m/bench.times"; done
    for t in $BENCH_TESTS; do
        for ((i = 0; i < REPS; i++)); do
            for m in "$@"; do
                mode_env "$m"
                sync # the previous run's dirty data is not this one's to write back
                t0=$(date +%s%3N)
                if bench_cmd "$t" >>"$MO/bench.log" 2>&1; then
                    t1=$(date +%s%3N)
                    echo "$t $((t1 - t0))" >>"$MO/bench.times"
                else
                    fail "$m: timing $t" "command failed (see $MO/bench.log)"
                    echo "$t ERR" >>"$MO/bench.times"
                fi
            done
        done
        for m in "$@"; do
            med=$(awk -v t="$t" '$1 == t {print $2}' "$OUT/$m/bench.times" | sort -n |
                awk '/ERR/ {e = 1} {a[NR] = $1} END {print e ? "ERR" : a[int((NR + 1) / 2)]}')
            echo "$t $med $(awk -v t="$t" '$1 == t {printf "%s ", $2}' "$OUT/$m/bench.times")" >>"$OUT/$m/bench.txt"
            log "   $m $t: median $med ms ($(awk -v t="$t" '$1 == t {printf "%s ", $2}' "$OUT/$m/bench.times"))"
        done
    done
}

# ---------------------------------------------------------------- run every mode
for m in $MODES; do
    case $m in plyfs | fuse-overlayfs | native) ;; *) die "unknown mode $m" ;; esac
done
OKMODES=
for m in $MODES; do
    log ""
    log "== $m: private storage in $WORK/$m"
    setup_mode "$m"
    gr=$(pm info --format '{{.Store.GraphRoot}} {{.Store.RunRoot}} {{.Store.GraphDriverName}}' 2>&1)
    if [ "$gr" = "$MW/graphroot $MW/run overlay" ]; then
        pass "$M: podman uses the private storage"
    else
        fail "$M: podman uses the private storage" "podman info says: $gr"
        continue
    fi
    pm info --format '{{json .Store.GraphOptions}}' >"$MO/graph-options.json" 2>&1
    t_mode=$(date +%s)
    for s in $STEPS; do
        case " ${E2E_STEPS:-${s%%:*}} " in *" ${s%%:*} "*) run_step "${s%%:*}" "${s#*:}" ;; esac
    done
    pm rm -af -t 0 >/dev/null 2>&1
    if [ -z "$(our_mounts "$MW/graphroot/overlay" | grep -v "^$MW/graphroot/overlay$")" ] &&
        [ -z "$(our_fuse_mounts "$MW")" ]; then
        pass "$M: no layer mounts left once every container is gone"
    else
        fail "$M: no layer mounts left once every container is gone" "$(our_mounts "$MW")"
    fi
    if wait_daemons_gone "$MW"; then
        pass "$M: no mount-program daemons left"
    else
        fail "$M: no mount-program daemons left" "pids $(daemons "$MW" | tr '\n' ' ')"
    fi
    log "   flow took $(($(date +%s) - t_mode)) s"
    OKMODES="$OKMODES $m"
done
if [ "$BENCH" = 1 ] && [ -n "$OKMODES" ]; then
    log ""
    log "== timings (median of $REPS, modes taking turns)"
    run_bench $OKMODES
fi
log ""
for m in $OKMODES; do
    mode_env "$m"
    cp "$MW/events.log" "$MO/events.log" 2>/dev/null
    reset_mode "$m"
    if [ -z "$(our_mounts "$MW")" ] && wait_daemons_gone "$MW"; then
        pass "$M: podman system reset leaves no mounts or daemons"
    else
        fail "$M: podman system reset leaves no mounts or daemons" "$(our_mounts "$MW"; daemons "$MW")"
    fi
done

# ---------------------------------------------------------------- compare the modes
# Known differences of the reference (Debian's fuse-overlayfs 1.10) where plyfs does what the
# kernel's overlay does: in the plyfs = fuse-overlayfs comparison, lines matching REGEX in step
# STEP (a glob) are left out, and shown with the reason. Anything else that differs fails.
KNOWN_STEP=() KNOWN_RE=() KNOWN_WHY=()
known() { KNOWN_STEP+=("$1"); KNOWN_RE+=("$2"); KNOWN_WHY+=("$3"); }
known '*' ' usr/share/lowerlink -> ' \
    "fuse-overlayfs does not keep a symlink's mtime when chown -h copies it up (plyfs and the kernel do)"
known 06-mount ' base hardlink ' \
    "on a fresh mount fuse-overlayfs gives st_nlink 1 for /hardlink (a link to a copied-up lower file) and 2 for /etc/hardlinkme (plyfs and the kernel: 2 for both)"
known 12-buildah ' usr/share/opaque/(new\.txt|\.wh\.new\.txt)( |$)' \
    "fuse-overlayfs: buildah run replaced /usr/share/opaque (opaque in the image's top layer) by a new dir; the layer buildah commits has no whiteout for the image's new.txt, so the committed image shows it again (plyfs: .wh.new.txt; the kernel: .wh..wh..opq)"

compare() { # A B: step outputs of mode B against mode A; counted for B = plyfs against the
    # step's reference (ref_of), shown for information otherwise
    local a=$1 b=$2 s name d rest re i why counted
    log ""
    log "== $b vs $a"
    for s in $STEPS; do
        name=${s%%:*}
        [ -f "$OUT/$a/$name.txt" ] && [ -f "$OUT/$b/$name.txt" ] || continue
        counted=0
        [ "$b" = plyfs ] && [ "$(ref_of "$name")" = "$a" ] && counted=1
        if [ "$b" = plyfs ] && [ "$a" = fuse-overlayfs ] && [ $counted = 0 ]; then
            log "  (not compared: $name is compared with $(ref_of "$name"))"
            continue
        fi
        d=$(diff -u --label "$a/$name" --label "$b/$name" "$OUT/$a/$name.txt" "$OUT/$b/$name.txt")
        if [ -z "$d" ]; then
            if [ $counted = 1 ]; then pass "$b = $a: $name"; else log "  same $name"; fi
            continue
        fi
        echo "$d" >"$OUT/$b-vs-$a.$name.diff"
        re='^$' why=
        if [ "$a" = fuse-overlayfs ]; then
            for i in "${!KNOWN_RE[@]}"; do
                # shellcheck disable=SC2053
                [[ $name == ${KNOWN_STEP[$i]} ]] || continue
                echo "$d" | grep -E '^[-+][^-+]' | grep -Eq -- "${KNOWN_RE[$i]}" || continue
                re="$re|${KNOWN_RE[$i]}" why="$why${why:+; }${KNOWN_WHY[$i]}"
            done
        fi
        if [ "$a" = fuse-overlayfs ]; then
            # fuse-overlayfs gives a directory the time of a copy-up into it; plyfs and the
            # kernel's overlay keep the directory's own (ovl_copy_up_one puts it back).
            norm() { sed -E 's/^(d [0-7]+ [0-9]+:[0-9]+ - - )(new|base|top) /\1* /'; }
            rest=$(diff <(grep -Ev -- "$re" "$OUT/$a/$name.txt" | norm) <(grep -Ev -- "$re" "$OUT/$b/$name.txt" | norm))
            if [ -n "$(diff <(grep -Ev -- "$re" "$OUT/$a/$name.txt") <(grep -Ev -- "$re" "$OUT/$b/$name.txt"))" ] && [ -z "$rest" ]; then
                why="$why${why:+; }fuse-overlayfs gives a directory the time of a copy-up into it (plyfs and the kernel keep it)"
            fi
        else
            rest=$(diff <(grep -Ev -- "$re" "$OUT/$a/$name.txt") <(grep -Ev -- "$re" "$OUT/$b/$name.txt"))
        fi
        if [ $counted = 0 ]; then
            log "  DIFFERS $name: $(echo "$d" | grep -c '^[-+][^-+]') lines ($OUT/$b-vs-$a.$name.diff)"
            echo "$d" | grep -E '^[-+][^-+]' | head -n 12 | sed 's/^/        /'
            continue
        elif [ -z "$rest" ]; then
            pass "$b = $a: $name (but for known fuse-overlayfs differences)"
            log "        known: $why"
        else
            fail "$b = $a: $name" "differs:"
        fi
        echo "$d" | head -n 60 | sed 's/^/        /'
        [ "$(echo "$d" | wc -l)" -le 60 ] || log "        ... ($OUT/$b-vs-$a.$name.diff)"
    done
}
has_mode() { case " $MODES " in *" $1 "*) return 0 ;; esac; return 1; }
has_mode plyfs && has_mode fuse-overlayfs && compare fuse-overlayfs plyfs
if has_mode native; then
    log ""
    log "(for information: the kernel's overlay, containers-storage's native driver, differs from both"
    log " mount programs where the storage itself works differently: with a mount_program it makes"
    log " layers and podman diff by comparing two mounted trees (hard links made in the container"
    log " become copies, a replaced dir becomes one whiteout per old entry instead of .wh..wh..opq);"
    log " and both plyfs and fuse-overlayfs give a directory the time of a copy-up into it, where the"
    log " kernel keeps the directory's mtime)"
fi
has_mode plyfs && has_mode native && compare native plyfs
has_mode fuse-overlayfs && has_mode native && compare native fuse-overlayfs

# ---------------------------------------------------------------- timings table
if [ "$BENCH" = 1 ]; then
    log ""
    log "== timings: median of $REPS wall-clock ms per podman command (warm page cache, sync before each)"
    {
        printf '%-12s' test
        for m in $MODES; do printf ' %15s' "$m"; done
        echo
        for t in $BENCH_TESTS; do
            printf '%-12s' "$t"
            for m in $MODES; do
                printf ' %15s' "$(awk -v t="$t" '$1 == t {print $2}' "$OUT/$m/bench.txt" 2>/dev/null)"
            done
            echo
        done
    } | tee "$OUT/timings.txt"
    log "run-true: podman run --rm IMG true; find-xdev: sh -c 'find / -xdev | wc -l';"
    log "cp-a-data: cp -a /data /data2 (3000 files + 4 x 4 MiB, 40 MiB); read-all: cat every /data file"
fi
