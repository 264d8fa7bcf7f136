//! The FUSE wire format as io_uring carries it (<linux/fuse.h>): opcodes, where the fields of
//! a request's headers sit, and the structs of the replies. Through io_uring a request is split:
//! `fuse_in_header` in the first 128 bytes of the header buffer, the operation's own header
//! (its first argument, `op`) in the next 128, and its other arguments (names, data) in the
//! payload; a reply's arguments all go to the payload, its `fuse_out_header` to the first.
//!
//! Invariant: every read of a request is bounds-checked (a short payload is EINVAL, never a
//! panic); native byte order, as the kernel writes it.

use fuser::FileAttr;
use std::time::Duration;

use crate::inode::{epoch_parts, type_bits};

pub const LOOKUP: u32 = 1;
pub const GETATTR: u32 = 3;
pub const SETATTR: u32 = 4;
pub const READLINK: u32 = 5;
pub const SYMLINK: u32 = 6;
pub const MKNOD: u32 = 8;
pub const MKDIR: u32 = 9;
pub const UNLINK: u32 = 10;
pub const RMDIR: u32 = 11;
pub const RENAME: u32 = 12;
pub const LINK: u32 = 13;
pub const OPEN: u32 = 14;
pub const READ: u32 = 15;
pub const WRITE: u32 = 16;
pub const STATFS: u32 = 17;
pub const RELEASE: u32 = 18;
pub const FSYNC: u32 = 20;
pub const SETXATTR: u32 = 21;
pub const GETXATTR: u32 = 22;
pub const LISTXATTR: u32 = 23;
pub const REMOVEXATTR: u32 = 24;
pub const FLUSH: u32 = 25;
pub const OPENDIR: u32 = 27;
pub const READDIR: u32 = 28;
pub const RELEASEDIR: u32 = 29;
pub const FSYNCDIR: u32 = 30;
pub const ACCESS: u32 = 34;
pub const CREATE: u32 = 35;
pub const DESTROY: u32 = 38;
pub const IOCTL: u32 = 39;
pub const FALLOCATE: u32 = 43;
pub const READDIRPLUS: u32 = 44;
pub const RENAME2: u32 = 45;
pub const LSEEK: u32 = 46;

/// `fuse_setattr_in.valid` bits.
pub const FATTR_MODE: u32 = 1 << 0;
pub const FATTR_UID: u32 = 1 << 1;
pub const FATTR_GID: u32 = 1 << 2;
pub const FATTR_SIZE: u32 = 1 << 3;
pub const FATTR_ATIME: u32 = 1 << 4;
pub const FATTR_MTIME: u32 = 1 << 5;
pub const FATTR_FH: u32 = 1 << 6;
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
pub const FATTR_MTIME_NOW: u32 = 1 << 8;

pub const FUSE_GETATTR_FH: u32 = 1;
pub const FUSE_WRITE_KILL_SUIDGID: u32 = 1 << 2;
pub const FUSE_FSYNC_FDATASYNC: u32 = 1;

/// Offsets in the header buffer.
pub const OP_IN: usize = 128;
pub const OP_IN_LEN: usize = 128;
/// `fuse_uring_ent_in_out`: `commit_id` and `payload_sz`.
pub const COMMIT_ID: usize = 256 + 8;
pub const PAYLOAD_SZ: usize = 256 + 16;

/// `sizeof(struct fuse_entry_out)`, `fuse_open_out`, `fuse_dirent`.
pub const ENTRY_OUT: usize = 128;
pub const OPEN_OUT: usize = 16;
pub const DIRENT: usize = 24;

/// A request's fields read from a buffer; out-of-range reads give None.
pub struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    pub fn u32(&self, at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(self.0.get(at..at + 4)?.try_into().ok()?))
    }
    pub fn u64(&self, at: usize) -> Option<u64> {
        Some(u64::from_ne_bytes(self.0.get(at..at + 8)?.try_into().ok()?))
    }
}

/// `struct fuse_in_header`.
pub struct InHeader {
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl InHeader {
    pub fn parse(b: &[u8]) -> Option<InHeader> {
        let f = Fields(b);
        Some(InHeader {
            opcode: f.u32(4)?,
            unique: f.u64(8)?,
            nodeid: f.u64(16)?,
            uid: f.u32(24)?,
            gid: f.u32(28)?,
            pid: f.u32(32)?,
        })
    }
}

/// Writes native-endian fields one after another.
pub struct Put<'a> {
    pub buf: &'a mut [u8],
    pub pos: usize,
}

impl Put<'_> {
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_ne_bytes())
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        self
    }
}

/// `struct fuse_attr` (88 bytes).
pub fn put_attr(p: &mut Put, a: &FileAttr) {
    let (at, atn) = epoch_parts(&a.atime);
    let (mt, mtn) = epoch_parts(&a.mtime);
    let (ct, ctn) = epoch_parts(&a.ctime);
    p.u64(a.ino.0).u64(a.size).u64(a.blocks);
    p.u64(at as u64).u64(mt as u64).u64(ct as u64);
    p.u32(atn).u32(mtn).u32(ctn);
    p.u32(type_bits(a.kind) | u32::from(a.perm));
    p.u32(a.nlink)
        .u32(a.uid)
        .u32(a.gid)
        .u32(a.rdev)
        .u32(a.blksize)
        .u32(0);
}

/// `struct fuse_entry_out` (128 bytes).
pub fn put_entry(p: &mut Put, nodeid: u64, generation: u64, ttl: &Duration, a: &FileAttr) {
    p.u64(nodeid).u64(generation);
    p.u64(ttl.as_secs()).u64(ttl.as_secs());
    p.u32(ttl.subsec_nanos()).u32(ttl.subsec_nanos());
    put_attr(p, a);
}

/// The length of a `fuse_dirent` (or, with `plus`, `fuse_direntplus`) for a name, padded to
/// 8 bytes.
pub fn dirent_len(name_len: usize, plus: bool) -> usize {
    let head = if plus { ENTRY_OUT + DIRENT } else { DIRENT };
    (head + name_len + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::FileType;
    use std::time::UNIX_EPOCH;

    fn attr() -> FileAttr {
        FileAttr {
            ino: fuser::INodeNo(7),
            size: 3,
            blocks: 1,
            atime: UNIX_EPOCH + Duration::new(5, 6),
            mtime: UNIX_EPOCH - Duration::new(1, 250_000_000),
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 1,
            gid: 2,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn entry_out_layout() {
        let mut buf = [0u8; ENTRY_OUT];
        let mut p = Put {
            buf: &mut buf,
            pos: 0,
        };
        put_entry(&mut p, 7, 9, &Duration::new(1, 500), &attr());
        assert_eq!(p.pos, ENTRY_OUT);
        let f = Fields(&buf);
        assert_eq!(f.u64(0), Some(7));
        assert_eq!(f.u64(8), Some(9));
        assert_eq!(f.u32(32), Some(500));
        // fuse_attr from byte 40: ino, size, blocks, atime, mtime, ctime, then the nsecs.
        assert_eq!(f.u64(40), Some(7));
        assert_eq!(f.u64(64), Some(5));
        assert_eq!(f.u64(72).map(|v| v as i64), Some(-2));
        assert_eq!(f.u32(88), Some(6));
        assert_eq!(f.u32(92), Some(750_000_000));
        assert_eq!(f.u32(100), Some(libc::S_IFDIR | 0o755));
        assert_eq!(f.u32(120), Some(4096));
    }

    #[test]
    fn dirents_pad_to_eight() {
        assert_eq!(dirent_len(1, false), 32);
        assert_eq!(dirent_len(8, false), 32);
        assert_eq!(dirent_len(9, false), 40);
        assert_eq!(dirent_len(1, true), 160);
    }

    #[test]
    fn short_fields_are_none() {
        let f = Fields(&[1, 0, 0]);
        assert_eq!(f.u32(0), None);
        assert_eq!(f.u64(0), None);
    }
}
