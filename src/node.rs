//! The overlay node: one object of the merged view, with the real objects behind it.
//!
//! Invariants: `reals` is ordered topmost layer first. A directory's real object is held open as
//! an `O_PATH` fd (shared through an `Arc` with the children found in it); a non-directory is
//! named by its directory's fd and its name there, so the number of open fds follows the number
//! of directories the kernel holds, not files. A non-directory has exactly one real
//! object (the topmost); a directory has one per layer it merges, cut after the first opaque
//! one. The `reals` lock is only held to clone the `Arc` (never across a system call). Lock
//! order: node table, then a node's locks; a node's locks are leaves.

use fuser::FileType;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, FileStat};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// How a real object is reached.
pub enum Loc {
    /// A directory (or layer root), held open as `O_PATH`.
    Dir(Arc<OwnedFd>),
    /// A non-directory: a directory of the same layer and its name there.
    At(Arc<OwnedFd>, CString),
}

/// A real object in one layer.
pub struct Real {
    pub layer: usize,
    pub loc: Loc,
    pub ino: u64,
    /// A directory marked opaque: nothing below it merges.
    pub opaque: bool,
    /// A directory marked as holding xattr whiteouts (`overlay.opaque` = `x`).
    pub xwhiteouts: bool,
}

impl Real {
    /// The directory fd of a directory real object.
    pub fn dir_fd(&self) -> Option<&Arc<OwnedFd>> {
        match &self.loc {
            Loc::Dir(fd) => Some(fd),
            Loc::At(..) => None,
        }
    }

    /// The (directory fd, name) pair naming the object for `*at` calls; an empty name means the
    /// fd itself.
    pub fn at(&self) -> (BorrowedFd<'_>, &CStr) {
        match &self.loc {
            Loc::Dir(fd) => (fd.as_fd(), c""),
            Loc::At(dir, name) => (dir.as_fd(), name.as_c_str()),
        }
    }

    /// `lstat` of the object.
    pub fn stat(&self) -> nix::Result<FileStat> {
        match &self.loc {
            Loc::Dir(fd) => fstat(fd.as_fd()),
            Loc::At(dir, name) => {
                fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            }
        }
    }
}

pub struct Node {
    pub id: u64,
    pub kind: FileType,
    reals: RwLock<Arc<Vec<Real>>>,
    /// The kernel's lookup count; the node leaves the table when it reaches 0.
    pub lookups: AtomicU64,
    /// Node id of the directory it was last found in (for `..`).
    pub parent: AtomicU64,
    /// The FUSE passthrough backing id shared by the node's open files.
    pub backing: crate::file::Backing,
}

impl Node {
    pub fn new(id: u64, kind: FileType, reals: Vec<Real>, parent: u64) -> Node {
        Node {
            id,
            kind,
            reals: RwLock::new(Arc::new(reals)),
            lookups: AtomicU64::new(0),
            parent: AtomicU64::new(parent),
            backing: Default::default(),
        }
    }

    /// The real objects, topmost first.
    pub fn reals(&self) -> Arc<Vec<Real>> {
        self.reals.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn parent(&self) -> u64 {
        self.parent.load(Ordering::Relaxed)
    }
}
