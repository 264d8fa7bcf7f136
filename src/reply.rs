//! The replies a request handler (`ops.rs`) gives, whatever carries them to the kernel: fuser's
//! reply objects over /dev/fuse reads (`fs.rs`) or plyfs's own over io_uring (`uring/`).
//!
//! Invariant: every reply value is consumed exactly once, by an answer or by `error`; a
//! directory reply's `add` says when the kernel's buffer is full, and an entry it refused is
//! not sent (the handler must undo the lookup count it took for it).

use fuser::{Errno, FileAttr, FileType, FopenFlags};
use std::ffi::OsStr;
use std::time::Duration;

use crate::sys::backing::BackingId;

pub trait Reply: Sized {
    fn error(self, err: Errno);
}

pub trait Empty: Reply {
    fn ok(self);
}

pub trait Entry: Reply {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: u64);
}

pub trait Attr: Reply {
    fn attr(self, ttl: &Duration, attr: &FileAttr);
}

pub trait Data: Reply {
    fn data(self, data: &[u8]);

    /// Replies with up to `size` bytes that `fill` writes into the buffer it is given (the
    /// reply's own where the transport has one), returning how many it wrote.
    fn fill(self, size: usize, fill: impl FnOnce(&mut [u8]) -> Result<usize, Errno>) {
        let mut buf = vec![0u8; size];
        match fill(&mut buf) {
            Ok(n) => self.data(&buf[..n]),
            Err(e) => self.error(e),
        }
    }
}

pub trait Open: Reply {
    fn opened(self, fh: u64, flags: FopenFlags, backing: Option<&BackingId>);
}

pub trait Create: Reply {
    fn created(self, ttl: &Duration, attr: &FileAttr, generation: u64, open: Opened);
}

/// What an open gives besides the attributes of a create.
pub struct Opened<'a> {
    pub fh: u64,
    pub flags: FopenFlags,
    pub backing: Option<&'a BackingId>,
}

pub trait Write: Reply {
    fn written(self, size: u32);
}

/// A filesystem's counts, as statfs(2) gives them.
pub struct StatfsOut {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub trait Statfs: Reply {
    fn statfs(self, st: &StatfsOut);
}

pub trait Xattr: Reply {
    /// The size of the value, for a caller that asked with size 0.
    fn size(self, size: u32);
    fn value(self, value: &[u8]);
}

pub trait Lseek: Reply {
    fn offset(self, offset: i64);
}

pub trait Dir: Reply {
    /// Adds an entry; true when it did not fit (and was not added).
    fn add(&mut self, ino: u64, offset: u64, kind: FileType, name: &OsStr) -> bool;
    fn ok(self);
}

pub trait DirPlus: Reply {
    /// Adds an entry with its attributes; true when it did not fit (and was not added).
    fn add(
        &mut self,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: u64,
    ) -> bool;

    /// Adds an entry by its name alone (no attributes, no lookup count: the kernel makes no
    /// inode for it); `Some(true)` when it did not fit, None where the transport cannot.
    fn add_name(
        &mut self,
        _ino: u64,
        _offset: u64,
        _kind: FileType,
        _name: &OsStr,
    ) -> Option<bool> {
        None
    }

    fn ok(self);
}
