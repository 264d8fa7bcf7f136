#!/usr/bin/env python3
"""Runs a fixed list of file operations under ROOT as whatever user runs it, and prints one
line per operation: what it did and `OK` (with a result) or the errno's name. Then prints
the whole tree (type, mode, owner, size, user.* and security.capability presence).

tests/permissions.rs runs it as an unprivileged uid on plyfs and on the kernel's overlay over
identical layers and compares the output line by line.

Usage: ops.py ROOT
"""
import ctypes
import errno
import os
import stat
import struct
import sys

ROOT = sys.argv[1]
UID = os.getuid()

FILES = [
    "pub/r", "pub/w", "pub/x", "pub/suidw", "pub/sgidw", "pub/capw", "pub/capr",
    "open/rootfile", "open/userfile", "sticky/rootfile", "sticky/userfile",
    "priv/f", "noexec/f", "mine/f", "mine/rootf", "ro/f", "grp/f", "acl/f",
]
DIRS = ["pub", "open", "sticky", "priv", "noexec", "mine", "mine/sub", "ro", "grp", "acl"]


def p(rel):
    return os.path.join(ROOT, rel)


def run(name, f):
    try:
        r = f()
        out = "OK" if r is None else "OK %s" % (r,)
    except OSError as e:
        out = errno.errorcode.get(e.errno, str(e.errno))
    print("%s: %s" % (name, out))


def read(rel):
    with open(p(rel), "rb") as f:
        return len(f.read())


def append(rel):
    fd = os.open(p(rel), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"u")
    finally:
        os.close(fd)


def create(rel):
    os.close(os.open(p(rel), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))


LIBC = ctypes.CDLL(None, use_errno=True)


def fallocate(rel, mode):
    """fallocate(2) of the first 4 KiB with `mode`; then the file's mode."""
    fd = os.open(p(rel), os.O_WRONLY)
    try:
        if LIBC.fallocate(fd, mode, ctypes.c_long(0), ctypes.c_long(4096)) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    finally:
        os.close(fd)
    return oct(os.lstat(p(rel)).st_mode)


# u::rwx,g::rwx,o::rwx as system.posix_acl_access holds it.
MINIMAL_ACL = struct.pack("<I", 2) + b"".join(
    struct.pack("<HHI", tag, 7, 0xFFFFFFFF) for tag in (1, 4, 0x20))


def setfacl(rel):
    os.setxattr(p(rel), "system.posix_acl_access", MINIMAL_ACL)
    return oct(os.lstat(p(rel)).st_mode)


def access(rel):
    return "".join(c if os.access(p(rel), m) else "-"
                   for c, m in (("r", os.R_OK), ("w", os.W_OK), ("x", os.X_OK)))


for d in DIRS:
    run("list " + d, lambda: " ".join(sorted(os.listdir(p(d)))))
    run("access " + d, lambda: access(d))
for f in FILES:
    run("stat " + f, lambda: oct(os.lstat(p(f)).st_mode))
    run("access " + f, lambda: access(f))
    run("read " + f, lambda: read(f))
    run("append " + f, lambda: append(f))
# setuid/setgid after fallocate (allocate, punch a hole, zero a range) and after an ACL set
# by a caller outside the file's group (xfstests generic/375, 683-685).
for f, mode in (("pub/falloc", 0), ("pub/punch", 3), ("pub/zero", 0x10), ("pub/sgidgrp", 0)):
    run("fallocate-%d %s" % (mode, f), lambda: fallocate(f, mode))
run("append pub/sgidwr", lambda: append("pub/sgidwr") or oct(os.lstat(p("pub/sgidwr")).st_mode))
run("truncate pub/sgidtr", lambda: os.truncate(p("pub/sgidtr"), 1)
    or oct(os.lstat(p("pub/sgidtr")).st_mode))
for f in ("mine/sgidacl", "mine/sgiddir", "mine/sgidgrp"):
    run("setfacl " + f, lambda: setfacl(f))
for d in DIRS:
    run("create " + d, lambda: create(d + "/new-u"))
    run("mkdir " + d, lambda: os.mkdir(p(d + "/dir-u"), 0o755))
    run("symlink " + d, lambda: os.symlink("target", p(d + "/sl-u")))
    run("mkfifo " + d, lambda: os.mkfifo(p(d + "/fifo-u"), 0o644))
for f in FILES:
    run("chmod " + f, lambda: os.chmod(p(f), 0o640))
    run("chown-self " + f, lambda: os.chown(p(f), UID, -1))
    run("chown-root " + f, lambda: os.chown(p(f), 0, -1))
    run("chgrp-own " + f, lambda: os.chown(p(f), -1, os.getgid()))
    run("chgrp-root " + f, lambda: os.chown(p(f), -1, 0))
    run("touch-now " + f, lambda: os.utime(p(f), None))
    run("touch-set " + f, lambda: os.utime(p(f), (1, 1)))
    run("truncate " + f, lambda: os.truncate(p(f), 1))
    run("setxattr-user " + f, lambda: os.setxattr(p(f), "user.u", b"v"))
    run("setxattr-trusted " + f, lambda: os.setxattr(p(f), "trusted.u", b"v"))
    run("getxattr-user " + f, lambda: os.getxattr(p(f), "user.u"))
    run("link " + f, lambda: os.link(p(f), p(f + "-ln")))
    run("link-to-open " + f, lambda: os.link(p(f), p("open/ln-" + f.replace("/", "-"))))
for f in FILES:
    run("rename " + f, lambda: os.rename(p(f), p(f + "-mv")))
    run("rename-to-open " + f, lambda: os.rename(p(f + "-mv"), p("open/mv-" + f.replace("/", "-"))))
for d in DIRS:
    run("rmdir-new " + d, lambda: os.rmdir(p(d + "/dir-u")))
run("rmdir mine/sub", lambda: os.rmdir(p("mine/sub")))
run("rmdir pub", lambda: os.rmdir(p("pub")))
run("rename-dir ro", lambda: os.rename(p("ro"), p("open/ro")))
run("rename-dir-in-mine", lambda: os.mkdir(p("mine/d2")) or os.rename(p("mine/d2"), p("mine/d3")))
for d in ["open", "sticky", "mine"]:
    for e in sorted(os.listdir(p(d))):
        run("unlink %s/%s" % (d, e), lambda: os.unlink(p(d + "/" + e)))

print("--- tree")
for top, dirs, files in os.walk(ROOT):
    dirs.sort()
    for n in sorted(dirs + files):
        full = os.path.join(top, n)
        try:
            st = os.lstat(full)
        except OSError as e:
            print("%s: lstat %s" % (os.path.relpath(full, ROOT), errno.errorcode[e.errno]))
            continue
        size = st.st_size if stat.S_ISREG(st.st_mode) else "-"
        xs = []
        for x in ("user.u", "security.capability"):
            try:
                os.getxattr(full, x, follow_symlinks=False)
                xs.append(x)
            except OSError:
                pass
        print("%s %o %d:%d %s %s" % (os.path.relpath(full, ROOT), st.st_mode, st.st_uid,
                                     st.st_gid, size, ",".join(xs)))
