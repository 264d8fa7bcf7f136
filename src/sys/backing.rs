//! FUSE passthrough backing ids: a real file registered with the kernel through ioctls on
//! /dev/fuse, so that reads and writes of a FUSE file go to it without the daemon.
//!
//! Invariant: a `BackingId` is open from `open` until it is dropped, and closed exactly once,
//! on the /dev/fuse connection it was opened on (kept alive by the id itself).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// `struct fuse_backing_map` of <linux/fuse.h>.
#[repr(C)]
pub struct FuseBackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

const FUSE_DEV_IOC_MAGIC: u8 = 229;
nix::ioctl_write_ptr!(ioc_backing_open, FUSE_DEV_IOC_MAGIC, 1, FuseBackingMap);
nix::ioctl_write_ptr!(ioc_backing_close, FUSE_DEV_IOC_MAGIC, 2, u32);

/// One backing id of the FUSE connection `dev`.
#[derive(Debug)]
pub struct BackingId {
    dev: Arc<OwnedFd>,
    id: u32,
}

impl BackingId {
    /// Registers `file` as a backing file with the connection of `dev` (a /dev/fuse fd).
    pub fn open(dev: &Arc<OwnedFd>, file: BorrowedFd) -> io::Result<BackingId> {
        let map = FuseBackingMap {
            fd: file.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: the ioctl reads `map`, which lives across the call; `dev` and `file` are
        // open fds borrowed for the call.
        let id = unsafe { ioc_backing_open(dev.as_raw_fd(), &map) }.map_err(io::Error::from)?;
        Ok(BackingId {
            dev: dev.clone(),
            id: id as u32,
        })
    }

    /// The id the kernel gave, for an open reply.
    pub fn raw(&self) -> u32 {
        self.id
    }
}

impl Drop for BackingId {
    fn drop(&mut self) {
        // SAFETY: the ioctl reads the u32 behind the pointer, which lives across the call;
        // `dev` is open while `self` holds it.
        if let Err(e) = unsafe { ioc_backing_close(self.dev.as_raw_fd(), &self.id) } {
            // ENOTCONN once the mount is gone: the kernel dropped its ids with it.
            tracing::debug!(id = self.id, "closing a backing id: {e}");
        }
    }
}

/// Replies to an open with passthrough to `backing`, through fuser's reply object.
pub fn fuser_opened(
    reply: fuser::ReplyOpen,
    fh: u64,
    flags: fuser::FopenFlags,
    backing: &BackingId,
) {
    // SAFETY: `backing` is open on this session's connection and stays open across the reply;
    // fuser's wrapper is turned back into a raw id (not closed) right after it.
    let id = unsafe { reply.wrap_backing(backing.raw()) };
    reply.opened_passthrough(fuser::FileHandle(fh), flags, &id);
    let _ = id.into_raw();
}

/// Replies to a create with passthrough to `backing`, through fuser's reply object.
pub fn fuser_created(
    reply: fuser::ReplyCreate,
    entry: (&std::time::Duration, &fuser::FileAttr, fuser::Generation),
    fh: u64,
    flags: fuser::FopenFlags,
    backing: &BackingId,
) {
    let (ttl, attr, generation) = entry;
    // SAFETY: as in `fuser_opened`.
    let id = unsafe { reply.wrap_backing(backing.raw()) };
    let fh = fuser::FileHandle(fh);
    reply.created_passthrough(ttl, attr, generation, fh, flags, &id);
    let _ = id.into_raw();
}
