//! The overlay node: one object of the merged view, with the real objects behind it.
//!
//! Invariants: `reals` is ordered topmost layer first. A directory's real object is held open as
//! an `O_PATH` fd (shared through an `Arc` with the children found in it); a non-directory is
//! named by its directory's fd and its name there, so the number of open fds follows the number
//! of directories the kernel holds, not files. A non-directory has exactly one real
//! object (the topmost); a directory has one per layer it merges, cut after the first opaque
//! one. The `state` lock (reals and link) is only held to clone or replace them (never across a system call). Lock
//! order: a directory's `names` lock (two of them in node id order), then the node table, then
//! a node's other locks, which are leaves.

use fuser::FileType;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, FileStat};
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// A name in a directory, shared by a node's link and its real object's location (one
/// allocation for both: there is a node per inode the kernel holds).
pub type Name = Arc<CStr>;

/// How a real object is reached.
#[derive(Clone)]
pub enum Loc {
    /// A directory (or layer root), held open as `O_PATH`.
    Dir(Arc<OwnedFd>),
    /// A non-directory: a directory of the same layer and its name there.
    At(Arc<OwnedFd>, Name),
    /// A non-directory whose name went away while it has other links, held as `O_PATH`.
    Fd(Arc<OwnedFd>),
}

/// A real object in one layer.
#[derive(Clone)]
pub struct Real {
    pub layer: usize,
    pub loc: Loc,
    pub ino: u64,
    /// A directory marked opaque: nothing below it merges.
    pub opaque: bool,
    /// A directory marked as holding xattr whiteouts (`overlay.opaque` = `x`).
    pub xwhiteouts: bool,
    /// An upper copy reached through the index for a lower link not yet linked up at its own
    /// name (see `index.rs`).
    pub alias: bool,
}

impl Real {
    /// The directory fd of a directory real object.
    pub fn dir_fd(&self) -> Option<&Arc<OwnedFd>> {
        match &self.loc {
            Loc::Dir(fd) => Some(fd),
            Loc::At(..) | Loc::Fd(_) => None,
        }
    }

    /// The (directory fd, name) pair naming the object for `*at` calls; an empty name means the
    /// fd itself.
    pub fn at(&self) -> (BorrowedFd<'_>, &CStr) {
        match &self.loc {
            Loc::Dir(fd) | Loc::Fd(fd) => (fd.as_fd(), c""),
            Loc::At(dir, name) => (dir.as_fd(), name),
        }
    }

    /// `lstat` of the object.
    pub fn stat(&self) -> nix::Result<FileStat> {
        match &self.loc {
            Loc::Dir(fd) | Loc::Fd(fd) => fstat(fd.as_fd()),
            Loc::At(dir, name) => fstatat(dir.as_fd(), &**name, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
    }
}

/// A node's place in the tree: its directory and its name there.
#[derive(Clone, Debug)]
pub struct Link {
    pub parent: u64,
    pub name: Name,
}

pub struct Node {
    pub id: u64,
    pub kind: FileType,
    /// Its real objects and its place in the tree, under one lock (held only to clone or
    /// replace them): one lock word less per node, and there is a node per inode the kernel
    /// holds.
    state: Mutex<State>,
    /// The kernel's lookup count; the node leaves the table when it reaches 0.
    pub lookups: AtomicU64,
    /// Held while the node is copied up: one copy-up at a time, and the others wait for it.
    pub copy_up_lock: Mutex<()>,
    /// The FUSE passthrough backing id shared by the node's open files; made at the first open.
    backing: OnceLock<Box<crate::file::Backing>>,
    /// The generation the kernel gets with the id (`export.rs`); fixed for the node's life.
    pub generation: u32,
    /// What only a directory has; `None` for other nodes (most of them: it saves their memory).
    dir: Option<Box<DirState>>,
}

struct State {
    reals: Reals,
    /// The directory it was last found in and its name there (for `..` and copy-up).
    link: Link,
}

/// A node's real objects, topmost first. Most nodes have one, kept inline (no allocation of
/// its own: there is a node per inode the kernel holds); a merged directory shares a slice.
#[derive(Clone)]
pub enum Reals {
    One(Real),
    Many(Arc<[Real]>),
}

impl std::ops::Deref for Reals {
    type Target = [Real];
    fn deref(&self) -> &[Real] {
        match self {
            Reals::One(r) => std::slice::from_ref(r),
            Reals::Many(all) => all,
        }
    }
}

impl From<Vec<Real>> for Reals {
    fn from(mut reals: Vec<Real>) -> Reals {
        if reals.len() == 1 {
            if let Some(one) = reals.pop() {
                return Reals::One(one);
            }
        }
        // Exactly as long as it is: a lookup's vector has room for more.
        Reals::Many(reals.into())
    }
}

/// A directory node's own state.
#[derive(Default)]
pub struct DirState {
    /// Bumped by every change of the directory's names through the mount (and by the
    /// upper-layer watch), so a walk that reconnects a directory (`reconnect.rs`) sees that a
    /// name it followed may have moved, and a complete listing (`cache.rs`) that it is stale.
    pub version: AtomicU64,
    /// The name lock: renames in the directory hold it exclusively, a reconnecting walk holds
    /// it shared while it looks a name up in it and checks what it found. Held across real
    /// system calls (never calls into the mount itself); see the lock order above.
    pub names: RwLock<()>,
    /// The directory's names when its whole listing is known (`cache.rs`).
    pub complete: Mutex<Option<Arc<crate::cache::Complete>>>,
    /// Lookups that found nothing since plyfs last listed it for them (`readdir::note_miss`).
    pub misses: AtomicU32,
    /// The version (plus one) at which plyfs last listed it for its misses.
    pub listed_at: AtomicU64,
}

/// The state non-directories share (never changed in a way anyone reads).
static NOT_A_DIR: DirState = DirState {
    version: AtomicU64::new(0),
    names: RwLock::new(()),
    complete: Mutex::new(None),
    misses: AtomicU32::new(0),
    listed_at: AtomicU64::new(0),
};

impl Node {
    pub fn new(id: u64, kind: FileType, reals: Vec<Real>, parent: u64, name: Name) -> Node {
        Node {
            id,
            kind,
            state: Mutex::new(State {
                reals: reals.into(),
                link: Link { parent, name },
            }),
            lookups: AtomicU64::new(0),
            copy_up_lock: Mutex::new(()),
            backing: OnceLock::new(),
            generation: 0,
            dir: (kind == FileType::Directory).then(Box::default),
        }
    }

    /// A directory's own state (a shared, unused one for other nodes).
    pub fn dir(&self) -> &DirState {
        self.dir.as_deref().unwrap_or(&NOT_A_DIR)
    }

    /// Notes a change of the names in this directory.
    pub fn bump_version(&self) {
        self.dir()
            .version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The real objects, topmost first.
    pub fn reals(&self) -> Reals {
        self.state().reals.clone()
    }

    /// The node's passthrough state (`file.rs`).
    pub fn backing(&self) -> &crate::file::Backing {
        self.backing.get_or_init(Default::default)
    }

    pub fn parent(&self) -> u64 {
        self.link().parent
    }

    /// Where the node was last found: its directory's node id and its name there.
    pub fn link(&self) -> Link {
        self.state().link.clone()
    }

    pub fn set_link(&self, link: Link) {
        self.state().link = link;
    }

    /// Replaces the real objects (after a copy-up or a change in the upper layer).
    pub fn set_reals(&self, reals: Vec<Real>) {
        self.state().reals = reals.into();
    }

    /// Whether the topmost real object is in the upper layer (index 0 when there is one).
    pub fn is_upper(&self, has_upper: bool) -> bool {
        let reals = self.reals();
        has_upper && reals[0].layer == 0 && !reals[0].alias
    }
}
