//! The overlay node: one object of the merged view, with the real objects behind it.
//!
//! Invariants: `reals` is ordered topmost layer first. A non-directory has exactly one real
//! object (the topmost); a directory has one per layer it merges, cut after the first opaque
//! one. The `reals` lock is only held to clone the `Arc` (never across a system call). Lock
//! order: node table, then a node's locks; a node's locks are leaves.

use fuser::FileType;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A real object in one layer, held open as an `O_PATH` fd.
pub struct Real {
    pub layer: usize,
    pub fd: OwnedFd,
    pub ino: u64,
    /// A directory marked opaque: nothing below it merges.
    pub opaque: bool,
    /// A directory marked as holding xattr whiteouts (`overlay.opaque` = `x`).
    pub xwhiteouts: bool,
}

impl Real {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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

    /// A directory that merges more than one layer.
    pub fn is_merged_dir(&self) -> bool {
        self.kind == FileType::Directory && self.reals().len() > 1
    }

    pub fn parent(&self) -> u64 {
        self.parent.load(Ordering::Relaxed)
    }
}
