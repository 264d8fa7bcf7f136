//! Open files: open, read, write, release, and FUSE passthrough backing ids.
//!
//! The kernel lets a FUSE inode have one passthrough backing file at a time, and refuses any
//! other kind of open while it has one (and a passthrough open while it has cached opens). A
//! lower file can be copied up while it is open, which would need a second backing file, so:
//! passthrough is used only for files that can no longer be copied up (upper files, and
//! everything on a read-only mount), and only while the node has no cached (non-passthrough)
//! opens. A lower file is read through the daemon and page-cached; a read-only open whose file
//! was copied up since reads the upper copy from then on, as with the kernel's overlay.
//!
//! Invariants: every passthrough open of a node shares one backing id (the node keeps a weak
//! reference, the open files keep it alive); the node's backing mutex covers that choice and the
//! count of cached opens, and is a leaf, held only around the backing-id ioctl on /dev/fuse,
//! which never waits on this mount.
//!
//! A writer's open of a setgid file without group execute goes through the daemon, not
//! passthrough, unless the node already has a passthrough backing: the kernel does not clear that
//! bit for a writer outside the file's group, so plyfs does at the first write (`killpriv.rs`).

use fuser::{Errno, FopenFlags};
use nix::fcntl::OFlag;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::copy_up::copy_up;
use crate::node::Node;
use crate::ovl::{errno, OResult, Ovl};
use crate::realops;
use crate::reply;
use crate::sys::backing::BackingId;

pub struct OpenFile {
    fd: RwLock<Arc<OwnedFd>>,
    /// The real inode `fd` was opened on.
    ino: AtomicU64,
    node: Arc<Node>,
    read_only: bool,
    /// A writer's open of a setgid file without group execute, not written yet: the first write
    /// checks whether the writer takes the bit (`killpriv.rs`).
    sgid_watch: AtomicBool,
    /// Keeps the node's shared backing id alive while this file is open.
    pub backing: Option<Arc<BackingId>>,
}

impl OpenFile {
    pub fn fd(&self) -> Arc<OwnedFd> {
        self.fd.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if self.backing.is_none() {
            let mut slot = self
                .node
                .backing()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            slot.cached_opens = slot.cached_opens.saturating_sub(1);
        }
    }
}

/// A node's passthrough state: the backing id shared by its passthrough opens (keyed by the
/// real inode number) and how many cached opens it has.
#[derive(Default)]
pub struct Backing(Mutex<BackingSlot>);

#[derive(Default)]
pub struct BackingSlot {
    ino: u64,
    id: Weak<BackingId>,
    cached_opens: usize,
}

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
pub fn open(ovl: &Ovl, node: &Arc<Node>, flags: i32, reply: impl reply::Open) {
    let fd = match open_real(ovl, node, flags) {
        Ok(fd) => fd,
        Err(e) => return reply.error(e),
    };
    let (fh, fopen, backing) = register(ovl, node, fd, flags);
    reply.opened(fh, fopen, backing.as_deref());
}

/// Registers an open real file: its handle number, open flags and shared backing id.
pub fn register(
    ovl: &Ovl,
    node: &Arc<Node>,
    fd: OwnedFd,
    flags: i32,
) -> (u64, FopenFlags, Option<Arc<BackingId>>) {
    if ovl.noatime {
        // A `noatime` mount: the kernel leaves atime to plyfs, so I/O through this fd must not
        // touch the real file's (for opens and creates alike; where O_NOATIME is not allowed,
        // not the owner and no CAP_FOWNER, the fd stays as it is).
        if let Ok(fl) = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL) {
            let fl = OFlag::from_bits_truncate(fl) | OFlag::O_NOATIME;
            let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl));
        }
    }
    let real = node.reals()[0].clone();
    // The kernel opens its own backing file for passthrough, with the caller's flags: on a
    // `noatime` mount a reader's would update the real atime, so I/O goes through plyfs there
    // (for writers too: a reader would have to share a writer's backing file).
    let final_copy = (ovl.layers.is_upper(real.layer()) || ovl.read_only) && !ovl.noatime;
    let sgid_watch = wants_write(flags) && setgid_without_group_exec(fd.as_fd());
    let backing = {
        let mut slot = node.backing().0.lock().unwrap_or_else(|e| e.into_inner());
        let alive = slot.id.upgrade();
        let backing = match alive {
            Some(b) if slot.ino == real.ino => Some(b),
            Some(_) => None,
            None if final_copy
                && !sgid_watch
                && slot.cached_opens == 0
                && ovl.passthrough.load(Ordering::Relaxed) =>
            {
                match ovl.open_backing(fd.as_fd()) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        (slot.ino, slot.id) = (real.ino, Arc::downgrade(&b));
                        Some(b)
                    }
                    Err(e) => {
                        tracing::warn!("FUSE passthrough unavailable, I/O through the daemon: {e}");
                        ovl.passthrough.store(false, Ordering::Relaxed);
                        None
                    }
                }
            }
            None => None,
        };
        if backing.is_none() {
            slot.cached_opens += 1;
        }
        backing
    };
    // The real fd was opened with the caller's O_DIRECT: no F_GETFL needed to know.
    if backing.is_none() && flags & libc::O_DIRECT != 0 {
        buffered_io(&fd);
    }
    // No FLUSH on close: plyfs writes through at once. The kernel accepts no cache flags with
    // passthrough (it uses the backing file's cache); lower files never change while mounted,
    // so their page cache may be kept across opens.
    let fopen = if backing.is_none() && !ovl.layers.is_upper(real.layer()) {
        FopenFlags::FOPEN_NOFLUSH | FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::FOPEN_NOFLUSH
    };
    let fh = ovl.files.insert(OpenFile {
        fd: RwLock::new(Arc::new(fd)),
        ino: AtomicU64::new(real.ino),
        node: node.clone(),
        read_only: !wants_write(flags),
        sgid_watch: AtomicBool::new(sgid_watch && backing.is_none()),
        backing: backing.clone(),
    });
    (fh, fopen, backing)
}

/// Turns `O_DIRECT` off on a real fd plyfs reads and writes itself: FUSE hands plyfs the data in
/// buffers of its own, not aligned as direct I/O wants (EINVAL). Passthrough opens keep it.
fn buffered_io(fd: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_truncate(fl);
        if fl.contains(OFlag::O_DIRECT) {
            let _ = fcntl(fd, FcntlArg::F_SETFL(fl - OFlag::O_DIRECT));
        }
    }
}

/// Whether an open file is setgid without group execute: the kernel's FUSE client clears
/// setuid, and setgid with group execute, before a write itself, but not this.
fn setgid_without_group_exec(fd: BorrowedFd) -> bool {
    nix::sys::stat::fstat(fd)
        .is_ok_and(|st| st.st_mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID)
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

/// Reads at `offset` of an open file into `buf`, as much as the file has; how much it read.
pub fn read_into(ovl: &Ovl, fh: u64, offset: u64, buf: &mut [u8]) -> OResult<usize> {
    let file = ovl.files.get(fh)?;
    follow_copy_up(&file)?;
    let fd = file.fd();
    let mut done = 0;
    while done < buf.len() {
        let n = nix::sys::uio::pread(fd.as_fd(), &mut buf[done..], (offset + done as u64) as i64)
            .map_err(errno)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// A read-only open whose file was copied up since it was opened reads the upper copy.
fn follow_copy_up(file: &OpenFile) -> OResult<()> {
    if !file.read_only {
        return Ok(());
    }
    let real = file.node.reals()[0].clone();
    if real.ino == file.ino.load(Ordering::Relaxed) || real.dir_fd().is_some() {
        return Ok(());
    }
    let (dir, name) = real.at();
    let fd = realops::open(dir, name, OFlag::O_RDONLY).map_err(errno)?;
    *file.fd.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fd);
    file.ino.store(real.ino, Ordering::Relaxed);
    Ok(())
}

/// Writes `data` at `offset` of an open file; with whether it was the first write of an open
/// whose writer may take the file's setgid bit (see `sgid_watch`).
pub fn write(ovl: &Ovl, fh: u64, offset: u64, data: &[u8]) -> OResult<(u32, bool)> {
    let file = ovl.files.get(fh)?;
    let mut done = 0;
    while done < data.len() {
        done += nix::sys::uio::pwrite(
            file.fd().as_fd(),
            &data[done..],
            (offset + done as u64) as i64,
        )
        .map_err(errno)?;
    }
    Ok((done as u32, file.sgid_watch.swap(false, Ordering::Relaxed)))
}

pub fn fsync(ovl: &Ovl, fh: u64, datasync: bool) -> OResult<()> {
    if !ovl.fsync {
        return Ok(());
    }
    let file = ovl.files.get(fh)?;
    if datasync {
        nix::unistd::fdatasync(file.fd().as_fd()).map_err(errno)
    } else {
        nix::unistd::fsync(file.fd().as_fd()).map_err(errno)
    }
}

pub fn fallocate(ovl: &Ovl, fh: u64, offset: u64, length: u64, mode: i32) -> OResult<()> {
    let file = ovl.files.get(fh)?;
    nix::fcntl::fallocate(
        file.fd().as_fd(),
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
    nix::unistd::lseek(file.fd().as_fd(), offset, whence).map_err(errno)
}

/// The attributes of an open file, from its fd (works after unlink), with its owner override.
pub fn fstat(ovl: &Ovl, fh: u64) -> OResult<nix::sys::stat::FileStat> {
    let file = ovl.files.get(fh)?;
    let fd = file.fd();
    let mut st = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
    crate::override_stat::apply(ovl, fd.as_fd(), c"", &mut st);
    Ok(st)
}

pub fn release(ovl: &Ovl, fh: u64) {
    ovl.files.remove(fh);
}
