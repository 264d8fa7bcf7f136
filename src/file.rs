//! Open files: open, read, release, and FUSE passthrough backing ids.
//!
//! Invariants: an open file holds its own fd of the real object (opened through the node's
//! `O_PATH` fd). With passthrough, every open of the same node shares one backing id (the node
//! keeps a weak reference; the open files keep it alive), so the kernel sees one backing file per
//! real inode. The node's backing mutex is a leaf: held only around the backing-id ioctl on
//! /dev/fuse, which never waits on this mount.

use fuser::{BackingId, Errno, FopenFlags, ReplyOpen};
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::node::Node;
use crate::ovl::{errno, OResult, Ovl};

pub struct OpenFile {
    pub fd: OwnedFd,
    /// Keeps the node's shared backing id alive while this file is open.
    pub backing: Option<Arc<BackingId>>,
}

/// The backing id shared by all opens of one real inode.
#[derive(Default)]
pub struct Backing(Mutex<Weak<BackingId>>);

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Opens `node` and replies, through passthrough when the kernel granted it.
pub fn open(ovl: &Ovl, node: &Node, flags: i32, reply: ReplyOpen) {
    let fd = match open_real(ovl, node, flags) {
        Ok(fd) => fd,
        Err(e) => return reply.error(e),
    };
    let lower = !ovl.layers.is_upper(node.reals()[0].layer);
    // No FLUSH on close: plyfs has nothing to write back. Lower files never change while
    // mounted: keep their page cache across opens.
    let fopen = if lower {
        FopenFlags::FOPEN_NOFLUSH | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_NOFLUSH
    };
    let backing = if ovl.passthrough.load(Ordering::Relaxed) {
        shared_backing(ovl, node, &fd, &reply)
    } else {
        None
    };
    let fh = ovl.files.insert(OpenFile {
        fd,
        backing: backing.clone(),
    });
    match backing {
        // The kernel accepts no cache flags with passthrough (it uses the backing file's cache).
        Some(b) => reply.opened_passthrough(fuser::FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, &b),
        None => reply.opened(fuser::FileHandle(fh), fopen),
    }
}

fn open_real(ovl: &Ovl, node: &Node, flags: i32) -> OResult<OwnedFd> {
    if wants_write(flags) {
        // Writing (and the copy-up it needs) is not implemented yet.
        return Err(if ovl.read_only {
            Errno::EROFS
        } else {
            Errno::ENOSYS
        });
    }
    let keep = OFlag::from_bits_truncate(flags) & (OFlag::O_NONBLOCK | OFlag::O_DIRECT);
    let reals = node.reals();
    let (dir, name) = reals[0].at();
    if name.is_empty() {
        return Err(Errno::EISDIR);
    }
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | keep,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(errno)
}

fn shared_backing(
    ovl: &Ovl,
    node: &Node,
    fd: &OwnedFd,
    reply: &ReplyOpen,
) -> Option<Arc<BackingId>> {
    let mut weak = node.backing.0.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = weak.upgrade() {
        return Some(b);
    }
    match reply.open_backing(fd.as_fd()) {
        Ok(b) => {
            let b = Arc::new(b);
            *weak = Arc::downgrade(&b);
            Some(b)
        }
        Err(e) => {
            tracing::warn!("FUSE passthrough unavailable, reading through the daemon: {e}");
            ovl.passthrough.store(false, Ordering::Relaxed);
            None
        }
    }
}

/// Reads up to `size` bytes at `offset` of an open file.
pub fn read(ovl: &Ovl, fh: u64, offset: u64, size: u32) -> OResult<Vec<u8>> {
    let file = ovl.files.get(fh)?;
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = nix::sys::uio::pread(
            file.fd.as_fd(),
            &mut buf[done..],
            (offset + done as u64) as i64,
        )
        .map_err(errno)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    Ok(buf)
}

pub fn release(ovl: &Ovl, fh: u64) {
    ovl.files.remove(fh);
}
