//! Open files: open, read, release, and FUSE passthrough backing ids.
//!
//! Invariants: an open file holds its own fd of the real object (opened through the node's
//! `O_PATH` fd). With passthrough, every open of the same node shares one backing id (the node
//! keeps a weak reference; the open files keep it alive), so the kernel sees one backing file per
//! real inode. The node's backing mutex is a leaf: held only around the backing-id ioctl on
//! /dev/fuse, which never waits on this mount.

use fuser::{BackingId, Errno, FopenFlags, ReplyOpen};
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

use crate::copy_up::copy_up;
use crate::node::Node;
use crate::ovl::{errno, OResult, Ovl};
use crate::realops;

pub struct OpenFile {
    pub fd: OwnedFd,
    /// Keeps the node's shared backing id alive while this file is open.
    pub backing: Option<Arc<BackingId>>,
}

/// The backing id shared by all opens of one real inode (keyed by its inode number, so a
/// copy-up switches later opens to the upper file).
#[derive(Default)]
pub struct Backing(Mutex<(u64, Weak<BackingId>)>);

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// The flags an open passes on to the real file.
fn real_flags(flags: i32) -> OFlag {
    OFlag::from_bits_truncate(flags)
        & (OFlag::O_ACCMODE
            | OFlag::O_APPEND
            | OFlag::O_TRUNC
            | OFlag::O_NONBLOCK
            | OFlag::O_DIRECT
            | OFlag::O_SYNC
            | OFlag::O_DSYNC
            | OFlag::O_NOATIME)
}

/// Opens `node` and replies, through passthrough when the kernel granted it.
pub fn open(ovl: &Ovl, node: &Arc<Node>, flags: i32, reply: ReplyOpen) {
    let fd = match open_real(ovl, node, flags) {
        Ok(fd) => fd,
        Err(e) => return reply.error(e),
    };
    let (fh, fopen, backing) = register(ovl, node, fd, |fd| reply.open_backing(fd));
    match backing {
        Some(b) => reply.opened_passthrough(fuser::FileHandle(fh), fopen, &b),
        None => reply.opened(fuser::FileHandle(fh), fopen),
    }
}

/// Registers an open real file: its handle number, open flags and shared backing id.
pub fn register(
    ovl: &Ovl,
    node: &Node,
    fd: OwnedFd,
    open_backing: impl FnOnce(BorrowedFd) -> std::io::Result<BackingId>,
) -> (u64, FopenFlags, Option<Arc<BackingId>>) {
    let real = node.reals()[0].clone();
    let backing = if ovl.passthrough.load(Ordering::Relaxed) {
        shared_backing(ovl, node, real.ino, &fd, open_backing)
    } else {
        None
    };
    // No FLUSH on close: plyfs writes through at once. The kernel accepts no cache flags with
    // passthrough (it uses the backing file's cache); lower files never change while mounted,
    // so their page cache may be kept across opens.
    let fopen = if backing.is_none() && !ovl.layers.is_upper(real.layer) {
        FopenFlags::FOPEN_NOFLUSH | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_NOFLUSH
    };
    let fh = ovl.files.insert(OpenFile {
        fd,
        backing: backing.clone(),
    });
    (fh, fopen, backing)
}

fn open_real(ovl: &Ovl, node: &Arc<Node>, flags: i32) -> OResult<OwnedFd> {
    if wants_write(flags) {
        copy_up(ovl, node)?;
    }
    let reals = node.reals();
    if reals[0].dir_fd().is_some() {
        return Err(Errno::EISDIR);
    }
    let (dir, name) = reals[0].at();
    realops::open(dir, name, real_flags(flags)).map_err(errno)
}

fn shared_backing(
    ovl: &Ovl,
    node: &Node,
    ino: u64,
    fd: &OwnedFd,
    open_backing: impl FnOnce(BorrowedFd) -> std::io::Result<BackingId>,
) -> Option<Arc<BackingId>> {
    let mut slot = node.backing.0.lock().unwrap_or_else(|e| e.into_inner());
    if slot.0 == ino {
        if let Some(b) = slot.1.upgrade() {
            return Some(b);
        }
    }
    match open_backing(fd.as_fd()) {
        Ok(b) => {
            let b = Arc::new(b);
            *slot = (ino, Arc::downgrade(&b));
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

/// Writes `data` at `offset` of an open file.
pub fn write(ovl: &Ovl, fh: u64, offset: u64, data: &[u8]) -> OResult<u32> {
    let file = ovl.files.get(fh)?;
    let mut done = 0;
    while done < data.len() {
        done += nix::sys::uio::pwrite(
            file.fd.as_fd(),
            &data[done..],
            (offset + done as u64) as i64,
        )
        .map_err(errno)?;
    }
    Ok(done as u32)
}

pub fn fsync(ovl: &Ovl, fh: u64, datasync: bool) -> OResult<()> {
    if !ovl.fsync {
        return Ok(());
    }
    let file = ovl.files.get(fh)?;
    if datasync {
        nix::unistd::fdatasync(file.fd.as_fd()).map_err(errno)
    } else {
        nix::unistd::fsync(file.fd.as_fd()).map_err(errno)
    }
}

pub fn fallocate(ovl: &Ovl, fh: u64, offset: u64, length: u64, mode: i32) -> OResult<()> {
    let file = ovl.files.get(fh)?;
    nix::fcntl::fallocate(
        file.fd.as_fd(),
        nix::fcntl::FallocateFlags::from_bits_truncate(mode),
        offset as i64,
        length as i64,
    )
    .map_err(errno)
}

pub fn lseek(ovl: &Ovl, fh: u64, offset: i64, whence: i32) -> OResult<i64> {
    let file = ovl.files.get(fh)?;
    let whence = match whence {
        libc::SEEK_SET => nix::unistd::Whence::SeekSet,
        libc::SEEK_CUR => nix::unistd::Whence::SeekCur,
        libc::SEEK_END => nix::unistd::Whence::SeekEnd,
        libc::SEEK_DATA => nix::unistd::Whence::SeekData,
        libc::SEEK_HOLE => nix::unistd::Whence::SeekHole,
        _ => return Err(Errno::EINVAL),
    };
    nix::unistd::lseek(file.fd.as_fd(), offset, whence).map_err(errno)
}

/// The attributes of an open file, from its fd (works after unlink).
pub fn fstat(ovl: &Ovl, fh: u64) -> OResult<nix::sys::stat::FileStat> {
    let file = ovl.files.get(fh)?;
    nix::sys::stat::fstat(file.fd.as_fd()).map_err(errno)
}

pub fn release(ovl: &Ovl, fh: u64) {
    ovl.files.remove(fh);
}
