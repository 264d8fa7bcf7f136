#!/usr/bin/env python3
"""A minimal NFSv3 client over TCP (ONC RPC, AUTH_SYS as root), for the NFS re-export test:
it gives raw NFS file handles, which the libnfs tools do not show, and reads by handle.

  nfs3.py handle HOST EXPORT PATH     prints the hex file handle of EXPORT/PATH
  nfs3.py read HOST HANDLE            prints the file's content, or "NFS3ERR <status>" (exit 3)

Ports are fixed by the test's ganesha config: NFS 2049, MOUNT 20048.
"""
import os
import socket
import struct
import sys

NFS_PORT, MOUNT_PORT = 2049, 20048
NFS_PROG, MOUNT_PROG = 100003, 100005


class Xdr:
    def __init__(self, data=b""):
        self.buf, self.pos = bytearray(data), 0

    def u32(self, v):
        self.buf += struct.pack(">I", v)
        return self

    def u64(self, v):
        self.buf += struct.pack(">Q", v)
        return self

    def opaque(self, b):
        self.u32(len(b))
        self.buf += b + b"\0" * ((4 - len(b) % 4) % 4)
        return self

    def get_u32(self):
        (v,) = struct.unpack_from(">I", self.buf, self.pos)
        self.pos += 4
        return v

    def get_u64(self):
        (v,) = struct.unpack_from(">Q", self.buf, self.pos)
        self.pos += 8
        return v

    def get_opaque(self):
        n = self.get_u32()
        b = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n + (4 - n % 4) % 4
        return b

    def skip_post_op_attr(self):
        if self.get_u32():
            self.pos += 84  # fattr3


def call(port, prog, vers, proc, args):
    xid = int.from_bytes(os.urandom(4), "big")
    cred = Xdr().u32(0).opaque(b"plyfs-test").u32(0).u32(0).u32(0)  # stamp, host, uid, gid, gids
    msg = (Xdr().u32(xid).u32(0).u32(2).u32(prog).u32(vers).u32(proc)
           .u32(1).opaque(bytes(cred.buf)).u32(0).u32(0))
    msg.buf += args.buf
    with socket.create_connection((HOST, port), timeout=20) as s:
        s.sendall(struct.pack(">I", 0x80000000 | len(msg.buf)) + msg.buf)
        data = b""
        while True:
            hdr = recv_all(s, 4)
            (mark,) = struct.unpack(">I", hdr)
            data += recv_all(s, mark & 0x7FFFFFFF)
            if mark & 0x80000000:
                break
    r = Xdr(data)
    if r.get_u32() != xid or r.get_u32() != 1:
        sys.exit("bad RPC reply")
    if r.get_u32() != 0:
        sys.exit("RPC call denied")
    r.get_u32()  # verifier flavor
    r.get_opaque()
    accept = r.get_u32()
    if accept != 0:
        sys.exit(f"RPC not accepted: {accept}")
    return r


def recv_all(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            sys.exit("connection closed")
        b += chunk
    return b


def handle(export, path):
    r = call(MOUNT_PORT, MOUNT_PROG, 3, 1, Xdr().opaque(export.encode()))
    status = r.get_u32()
    if status != 0:
        sys.exit(f"MNT {export}: status {status}")
    fh = r.get_opaque()
    for name in [p for p in path.split("/") if p]:
        r = call(NFS_PORT, NFS_PROG, 3, 3, Xdr().opaque(fh).opaque(name.encode()))
        status = r.get_u32()
        if status != 0:
            sys.exit(f"LOOKUP {name}: NFS3ERR {status}")
        fh = r.get_opaque()
    return fh


def read(fh):
    out = b""
    while True:
        r = call(NFS_PORT, NFS_PROG, 3, 6, Xdr().opaque(fh).u64(len(out)).u32(65536))
        status = r.get_u32()
        if status != 0:
            print(f"NFS3ERR {status}")
            sys.exit(3)
        r.skip_post_op_attr()
        r.get_u32()  # count
        eof = r.get_u32()
        out += r.get_opaque()
        if eof:
            return out


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    cmd, HOST = sys.argv[1], sys.argv[2]
    if cmd == "handle" and len(sys.argv) == 5:
        print(handle(sys.argv[3], sys.argv[4]).hex())
    elif cmd == "read":
        sys.stdout.write(read(bytes.fromhex(sys.argv[3])).decode(errors="replace"))
    else:
        sys.exit(__doc__)
