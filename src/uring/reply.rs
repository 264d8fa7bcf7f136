//! Replies through an io_uring entry: the handlers' answers (`reply.rs`) encoded as the kernel
//! reads them back. Small fixed replies are built in `Out` and copied to the payload once the
//! request's own arguments, which live in the same buffer, are no longer read; data replies
//! (read, readlink, xattr values, listings) are written straight into the payload.
//!
//! Invariant: after a handler returns, `Out` holds the error or the reply's length, and where
//! its bytes are (`in_payload`); the length never exceeds the size the request allowed.

use fuser::{Errno, FileAttr, FileType, FopenFlags};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use super::abi::{self, Put};
use crate::inode::type_bits;
use crate::reply::{self, Opened, StatfsOut};
use crate::sys::backing::BackingId;

/// The largest fixed reply: `fuse_entry_out` and `fuse_open_out` of a create.
const SMALL: usize = abi::ENTRY_OUT + abi::OPEN_OUT;

/// One request's outcome.
pub struct Out {
    /// Negative errno, or 0.
    pub error: i32,
    pub len: usize,
    /// The reply's bytes are already in the payload (else in `small`).
    pub in_payload: bool,
    pub small: [u8; SMALL],
}

impl Default for Out {
    fn default() -> Self {
        Out {
            error: 0,
            len: 0,
            in_payload: false,
            small: [0; SMALL],
        }
    }
}

impl Out {
    pub fn reset(&mut self) {
        (self.error, self.len, self.in_payload) = (0, 0, false);
    }
}

/// A reply to one request: `payload` is the entry's payload buffer for replies of data, when
/// the request's arguments no longer need it; `max` the size the request allows.
pub struct Ring<'a> {
    pub out: &'a mut Out,
    pub payload: Option<&'a mut [u8]>,
    pub max: usize,
}

impl<'a> Ring<'a> {
    pub fn new(out: &'a mut Out, payload: Option<&'a mut [u8]>, max: usize) -> Self {
        Ring { out, payload, max }
    }

    /// Builds a fixed reply with `f`.
    fn small(self, f: impl FnOnce(&mut Put)) {
        let mut p = Put {
            buf: &mut self.out.small,
            pos: 0,
        };
        f(&mut p);
        self.out.len = p.pos;
    }

    /// The payload, limited to what the request allows.
    fn room(&mut self) -> Option<&mut [u8]> {
        let max = self.max;
        self.payload.as_deref_mut().map(|p| {
            let n = p.len().min(max);
            &mut p[..n]
        })
    }

    fn put_data(mut self, data: &[u8]) {
        match self.room() {
            Some(room) if data.len() <= room.len() => {
                room[..data.len()].copy_from_slice(data);
                self.out.len = data.len();
                self.out.in_payload = true;
            }
            _ => reply::Reply::error(self, Errno::ERANGE),
        }
    }
}

impl reply::Reply for Ring<'_> {
    fn error(self, err: Errno) {
        self.out.error = -err.code();
        self.out.len = 0;
        self.out.in_payload = false;
    }
}

impl reply::Empty for Ring<'_> {
    fn ok(self) {
        self.out.len = 0;
    }
}

impl reply::Entry for Ring<'_> {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: u64) {
        self.small(|p| abi::put_entry(p, attr.ino.0, generation, ttl, attr));
    }
}

impl reply::Attr for Ring<'_> {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        self.small(|p| {
            p.u64(ttl.as_secs()).u32(ttl.subsec_nanos()).u32(0);
            abi::put_attr(p, attr);
        });
    }
}

fn put_open(p: &mut Put, fh: u64, flags: FopenFlags, backing: Option<&BackingId>) {
    let (flags, id) = match backing {
        Some(b) => ((flags | FopenFlags::FOPEN_PASSTHROUGH).bits(), b.raw()),
        None => (flags.bits(), 0),
    };
    p.u64(fh).u32(flags).u32(id);
}

impl reply::Open for Ring<'_> {
    fn opened(self, fh: u64, flags: FopenFlags, backing: Option<&BackingId>) {
        self.small(|p| put_open(p, fh, flags, backing));
    }
}

impl reply::Create for Ring<'_> {
    fn created(self, ttl: &Duration, attr: &FileAttr, generation: u64, open: Opened) {
        self.small(|p| {
            abi::put_entry(p, attr.ino.0, generation, ttl, attr);
            put_open(p, open.fh, open.flags, open.backing);
        });
    }
}

impl reply::Write for Ring<'_> {
    fn written(self, size: u32) {
        self.small(|p| {
            p.u32(size).u32(0);
        });
    }
}

impl reply::Statfs for Ring<'_> {
    fn statfs(self, s: &StatfsOut) {
        self.small(|p| {
            p.u64(s.blocks)
                .u64(s.bfree)
                .u64(s.bavail)
                .u64(s.files)
                .u64(s.ffree);
            p.u32(s.bsize).u32(s.namelen).u32(s.frsize).u32(0);
            p.bytes(&[0; 24]);
        });
    }
}

impl reply::Lseek for Ring<'_> {
    fn offset(self, offset: i64) {
        self.small(|p| {
            p.u64(offset as u64);
        });
    }
}

impl reply::Data for Ring<'_> {
    fn data(self, data: &[u8]) {
        self.put_data(data);
    }

    fn fill(mut self, size: usize, fill: impl FnOnce(&mut [u8]) -> Result<usize, Errno>) {
        let res = match self.room() {
            Some(room) => {
                let n = size.min(room.len());
                fill(&mut room[..n])
            }
            None => Err(Errno::EIO),
        };
        match res {
            Ok(n) => {
                self.out.len = n;
                self.out.in_payload = true;
            }
            Err(e) => reply::Reply::error(self, e),
        }
    }
}

impl reply::Xattr for Ring<'_> {
    fn size(self, size: u32) {
        // struct fuse_getxattr_out
        self.small(|p| {
            p.u32(size).u32(0);
        });
    }
    fn value(self, value: &[u8]) {
        self.put_data(value);
    }
}

impl Ring<'_> {
    /// Appends a `fuse_dirent` (or `fuse_direntplus` with `entry`) for `name` after the entries
    /// already in the payload; true when it did not fit.
    fn add_dirent(
        &mut self,
        ino: u64,
        offset: u64,
        type_bits: u32,
        name: &OsStr,
        entry: Option<(&Duration, &FileAttr, u64)>,
    ) -> bool {
        let name = name.as_bytes();
        let len = abi::dirent_len(name.len(), entry.is_some());
        let used = self.out.len;
        let Some(room) = self.room().filter(|room| used + len <= room.len()) else {
            return true;
        };
        let mut p = Put {
            buf: &mut room[used..used + len],
            pos: 0,
        };
        if let Some((ttl, attr, generation)) = entry {
            abi::put_entry(&mut p, attr.ino.0, generation, ttl, attr);
        }
        p.u64(ino)
            .u64(offset)
            .u32(name.len() as u32)
            .u32(type_bits >> 12);
        p.bytes(name);
        let pad = len - p.pos;
        p.bytes(&[0; 8][..pad]);
        self.out.len = used + len;
        false
    }
}

impl reply::Dir for Ring<'_> {
    fn add(&mut self, ino: u64, offset: u64, kind: FileType, name: &OsStr) -> bool {
        self.add_dirent(ino, offset, type_bits(kind), name, None)
    }
    fn ok(self) {
        self.out.in_payload = true;
    }
}

impl reply::DirPlus for Ring<'_> {
    fn add(
        &mut self,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: u64,
    ) -> bool {
        let entry = Some((ttl, attr, generation));
        self.add_dirent(attr.ino.0, offset, type_bits(attr.kind), name, entry)
    }
    fn add_name(&mut self, ino: u64, offset: u64, kind: FileType, name: &OsStr) -> Option<bool> {
        // A `fuse_direntplus` whose entry is all zero: node id 0 tells the kernel "no inode".
        let zero = crate::ops::negative_attr();
        let entry = Some((&Duration::ZERO, &zero, 0));
        Some(self.add_dirent(ino, offset, type_bits(kind), name, entry))
    }
    fn ok(self) {
        self.out.in_payload = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::{Dir, Reply};

    #[test]
    fn listing_stops_at_the_requested_size() {
        let mut out = Out::default();
        let mut payload = vec![0u8; 4096];
        let mut r = Ring::new(&mut out, Some(&mut payload), 64);
        assert!(!r.add(1, 1, FileType::Directory, OsStr::new(".")));
        assert!(!r.add(2, 2, FileType::RegularFile, OsStr::new("abcdefgh")));
        assert!(r.add(3, 3, FileType::RegularFile, OsStr::new("c")));
        r.ok();
        assert_eq!((out.len, out.in_payload, out.error), (64, true, 0));
        let f = abi::Fields(&payload);
        assert_eq!(f.u64(32), Some(2));
        assert_eq!(f.u32(48), Some(8));
        assert_eq!(f.u32(52), Some(libc::S_IFREG >> 12));
        assert_eq!(&payload[56..64], b"abcdefgh");
    }

    #[test]
    fn an_error_leaves_no_reply() {
        let mut out = Out::default();
        let r = Ring::new(&mut out, None, 0);
        reply::Write::written(r, 5);
        assert_eq!(out.len, 8);
        let r = Ring::new(&mut out, None, 0);
        r.error(Errno::ENOSPC);
        assert_eq!((out.error, out.len), (-libc::ENOSPC, 0));
    }
}
