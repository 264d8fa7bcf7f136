//! Unpacks one request from an io_uring entry's buffers, calls its handler (`ops.rs`) and
//! leaves the reply in the buffers for the commit.
//!
//! Invariant: whatever the buffers hold, the entry gets a reply (EINVAL for a request it cannot
//! read, ENOSYS for an operation plyfs does not serve) and the daemon does not panic.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::abi::{self, Fields, InHeader};
use super::reply::{Out, Ring};
use crate::inode::SetAttr;
use crate::killpriv::Who;
use crate::ops::Ops;
use crate::reply::Reply;
use fuser::Errno;
use fuser::TimeOrNow;

/// The first NUL-terminated name of `b`, and what follows it.
fn name(b: &[u8]) -> Option<(&OsStr, &[u8])> {
    let end = b.iter().position(|&c| c == 0)?;
    Some((OsStr::from_bytes(&b[..end]), &b[end + 1..]))
}

/// Handles the request in `headers` and `payload`, writes the reply into them, and returns the
/// id to commit it under.
pub fn handle(ops: &Ops, headers: &mut [u8], payload: &mut [u8], out: &mut Out) -> u64 {
    out.reset();
    let fields = Fields(headers);
    let commit_id = fields.u64(abi::COMMIT_ID).unwrap_or(0);
    let size = (fields.u32(abi::PAYLOAD_SZ).unwrap_or(0) as usize).min(payload.len());
    let header = InHeader::parse(headers);
    let unique = header.as_ref().map_or(commit_id, |h| h.unique);
    match &header {
        Some(h) => {
            let op = &headers[abi::OP_IN..abi::OP_IN + abi::OP_IN_LEN];
            dispatch(ops, h, Fields(op), payload, size, out);
        }
        None => Ring::new(out, None, 0).error(Errno::EINVAL),
    }
    if out.error == 0 && !out.in_payload {
        payload[..out.len].copy_from_slice(&out.small[..out.len]);
    }
    let len = if out.error == 0 { out.len } else { 0 };
    // struct fuse_out_header: len, error, unique.
    headers[0..4].copy_from_slice(&((16 + len) as u32).to_ne_bytes());
    headers[4..8].copy_from_slice(&out.error.to_ne_bytes());
    headers[8..16].copy_from_slice(&unique.to_ne_bytes());
    headers[abi::PAYLOAD_SZ..abi::PAYLOAD_SZ + 4].copy_from_slice(&(len as u32).to_ne_bytes());
    commit_id
}

fn dispatch(ops: &Ops, h: &InHeader, op: Fields, payload: &mut [u8], size: usize, out: &mut Out) {
    let ino = h.nodeid;
    // Replies of data go straight into the payload, once the request's names are copied out.
    match h.opcode {
        abi::READ => {
            let (Some(fh), Some(offset), Some(len)) = (op.u64(0), op.u64(8), op.u32(16)) else {
                return Ring::new(out, None, 0).error(Errno::EINVAL);
            };
            let max = len as usize;
            return ops.read(fh, offset, len, Ring::new(out, Some(payload), max));
        }
        abi::READLINK => {
            let max = payload.len();
            return ops.readlink(ino, Ring::new(out, Some(payload), max));
        }
        abi::READDIR | abi::READDIRPLUS => {
            let (Some(fh), Some(offset), Some(len)) = (op.u64(0), op.u64(8), op.u32(16)) else {
                return Ring::new(out, None, 0).error(Errno::EINVAL);
            };
            let reply = Ring::new(out, Some(payload), len as usize);
            return if h.opcode == abi::READDIR {
                ops.readdir(ino, fh, offset, reply)
            } else {
                ops.readdirplus(ino, fh, offset, reply)
            };
        }
        abi::GETXATTR | abi::LISTXATTR => {
            let Some(len) = op.u32(0) else {
                return Ring::new(out, None, 0).error(Errno::EINVAL);
            };
            let max = len as usize;
            if h.opcode == abi::LISTXATTR {
                return ops.listxattr(ino, len, Ring::new(out, Some(payload), max));
            }
            let Some((n, _)) = name(&payload[..size]) else {
                return Ring::new(out, None, 0).error(Errno::EINVAL);
            };
            let n = n.to_owned();
            return ops.getxattr(ino, &n, len, Ring::new(out, Some(payload), max));
        }
        _ => {}
    }
    let input = &payload[..size];
    let who = Who {
        uid: h.uid,
        gid: h.gid,
        pid: h.pid,
    };
    let r = Ring::new(out, None, 0);
    let einval = |r: Ring| r.error(Errno::EINVAL);
    match h.opcode {
        abi::LOOKUP => match name(input) {
            Some((n, _)) => ops.lookup(ino, n, r),
            None => einval(r),
        },
        abi::GETATTR => {
            let flags = op.u32(0).unwrap_or(0);
            let fh = (flags & abi::FUSE_GETATTR_FH != 0).then(|| op.u64(8).unwrap_or(0));
            ops.getattr(ino, fh, r)
        }
        abi::SETATTR => match setattr_in(&op) {
            Some(a) => ops.setattr(&who, ino, &a, r),
            None => einval(r),
        },
        abi::SYMLINK => match name(input).and_then(|(n, rest)| Some((n, name(rest)?.0))) {
            Some((n, target)) => ops.symlink(&who, ino, n, target.as_bytes(), r),
            None => einval(r),
        },
        abi::MKNOD => match (op.u32(0), op.u32(4), op.u32(8), name(input)) {
            (Some(mode), Some(rdev), Some(umask), Some((n, _))) => {
                ops.mknod(&who, ino, n, mode, umask, rdev, r)
            }
            _ => einval(r),
        },
        abi::MKDIR => match (op.u32(0), op.u32(4), name(input)) {
            (Some(mode), Some(umask), Some((n, _))) => ops.mkdir(&who, ino, n, mode, umask, r),
            _ => einval(r),
        },
        abi::UNLINK | abi::RMDIR => match name(input) {
            Some((n, _)) => ops.remove(ino, n, h.opcode == abi::RMDIR, r),
            None => einval(r),
        },
        abi::RENAME | abi::RENAME2 => {
            let flags = if h.opcode == abi::RENAME2 {
                op.u32(8)
            } else {
                Some(0)
            };
            let names = name(input).and_then(|(a, rest)| Some((a, name(rest)?.0)));
            match (op.u64(0), flags, names) {
                (Some(newdir), Some(flags), Some((from, to))) => {
                    ops.rename(ino, from, newdir, to, flags, r)
                }
                _ => einval(r),
            }
        }
        abi::LINK => match (op.u64(0), name(input)) {
            (Some(old), Some((n, _))) => ops.link(&who, old, ino, n, r),
            _ => einval(r),
        },
        abi::OPEN => match op.u32(0) {
            Some(flags) => ops.open(ino, flags as i32, r),
            None => einval(r),
        },
        abi::WRITE => match (op.u64(0), op.u64(8), op.u32(16), op.u32(20)) {
            (Some(fh), Some(offset), Some(len), Some(wflags)) if len as usize <= input.len() => {
                let kill = wflags & abi::FUSE_WRITE_KILL_SUIDGID != 0;
                let data = &input[..len as usize];
                ops.write(&who, ino, fh, offset, data, kill, r)
            }
            _ => einval(r),
        },
        abi::STATFS => ops.statfs(r),
        abi::RELEASE => match op.u64(0) {
            Some(fh) => ops.release(fh, r),
            None => einval(r),
        },
        abi::FSYNC => match (op.u64(0), op.u32(8)) {
            (Some(fh), Some(fl)) => ops.fsync(fh, fl & abi::FUSE_FSYNC_FDATASYNC != 0, r),
            _ => einval(r),
        },
        abi::SETXATTR => {
            // The 8-byte `fuse_setxattr_in` (no FUSE_SETXATTR_EXT): size, flags.
            let value = name(input).and_then(|(n, rest)| {
                let len = op.u32(0)? as usize;
                Some((n, rest.get(..len)?))
            });
            match (value, op.u32(4)) {
                (Some((n, v)), Some(flags)) => ops.setxattr(&who, ino, n, v, flags as i32, r),
                _ => einval(r),
            }
        }
        abi::REMOVEXATTR => match name(input) {
            Some((n, _)) => ops.removexattr(&who, ino, n, r),
            None => einval(r),
        },
        abi::FLUSH | abi::DESTROY => crate::reply::Empty::ok(r),
        abi::OPENDIR => ops.opendir(ino, r),
        abi::RELEASEDIR => match op.u64(0) {
            Some(fh) => ops.releasedir(fh, r),
            None => einval(r),
        },
        abi::FSYNCDIR => ops.fsyncdir(ino, r),
        abi::ACCESS => match op.u32(0) {
            Some(mask) => ops.access(&who, ino, mask as i32, r),
            None => einval(r),
        },
        abi::CREATE => match (op.u32(0), op.u32(4), op.u32(8), name(input)) {
            (Some(flags), Some(mode), Some(umask), Some((n, _))) => {
                ops.create(&who, ino, n, mode, umask, flags as i32, r)
            }
            _ => einval(r),
        },
        // As `fs.rs`: no ioctl reaches the real files.
        abi::IOCTL => r.error(Errno::ENOTTY),
        abi::FALLOCATE => match (op.u64(0), op.u64(8), op.u64(16), op.u32(24)) {
            (Some(fh), Some(offset), Some(len), Some(mode)) => {
                ops.fallocate(&who, ino, fh, offset, len, mode as i32, r)
            }
            _ => einval(r),
        },
        abi::LSEEK => match (op.u64(0), op.u64(8), op.u32(16)) {
            (Some(fh), Some(offset), Some(whence)) => {
                ops.lseek(fh, offset as i64, whence as i32, r)
            }
            _ => einval(r),
        },
        opcode => {
            tracing::debug!(opcode, "io_uring: operation not served");
            r.error(Errno::ENOSYS)
        }
    }
}

/// `struct fuse_setattr_in`: valid, padding, fh, size, lock_owner, atime, mtime, ctime,
/// atimensec, mtimensec, ctimensec, mode, unused, uid, gid.
fn setattr_in(op: &Fields) -> Option<SetAttr> {
    let valid = op.u32(0)?;
    let has = |bit: u32| valid & bit != 0;
    let time = |bit: u32, now: u32, secs: usize, nsecs: usize| {
        when(has(bit) || has(now), || {
            Some(if has(now) {
                TimeOrNow::Now
            } else {
                let (secs, nsecs) = (op.u64(secs)? as i64, op.u32(nsecs)?);
                TimeOrNow::SpecificTime(crate::inode::time(secs, i64::from(nsecs)))
            })
        })
    };
    Some(SetAttr {
        mode: when(has(abi::FATTR_MODE), || op.u32(68))?,
        uid: when(has(abi::FATTR_UID), || op.u32(76))?,
        gid: when(has(abi::FATTR_GID), || op.u32(80))?,
        size: when(has(abi::FATTR_SIZE), || op.u64(16))?,
        atime: time(abi::FATTR_ATIME, abi::FATTR_ATIME_NOW, 32, 56)?,
        mtime: time(abi::FATTR_MTIME, abi::FATTR_MTIME_NOW, 40, 60)?,
        fh: when(has(abi::FATTR_FH), || op.u64(8))?,
    })
}

/// A field a request may set: `Some(read())` when `set`, `Some(None)` when not, and None when
/// it is set but cannot be read.
fn when<T>(set: bool, read: impl FnOnce() -> Option<T>) -> Option<Option<T>> {
    if set {
        read().map(Some)
    } else {
        Some(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_nul() {
        let (a, rest) = name(b"old\0new\0").unwrap();
        assert_eq!(a, "old");
        assert_eq!(name(rest).unwrap().0, "new");
        assert!(name(b"no nul").is_none());
    }

    #[test]
    fn setattr_fields() {
        let mut op = [0u8; 128];
        let valid = abi::FATTR_MODE | abi::FATTR_SIZE | abi::FATTR_MTIME_NOW;
        op[0..4].copy_from_slice(&valid.to_ne_bytes());
        op[16..24].copy_from_slice(&42u64.to_ne_bytes());
        op[68..72].copy_from_slice(&0o644u32.to_ne_bytes());
        let a = setattr_in(&Fields(&op)).unwrap();
        assert_eq!(a.mode, Some(0o644));
        assert_eq!(a.size, Some(42));
        assert!(matches!(a.mtime, Some(fuser::TimeOrNow::Now)));
        assert!(a.atime.is_none() && a.uid.is_none() && a.fh.is_none());
    }
}
