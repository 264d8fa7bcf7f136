//! The overlay node: one object of the merged view, with the real objects behind it.
//!
//! Invariants: `reals` is ordered topmost layer first. A directory's real object is held open as
//! an `O_PATH` fd (shared through an `Arc` with the children found in it); a non-directory is
//! named by its directory's fd and its name there, so the number of open fds follows the number
//! of directories the kernel holds, not files. A non-directory has exactly one real object (the
//! topmost); a directory has one per layer it merges, cut after the first opaque one. The
//! `state` lock (reals and link) is only held to clone or replace them (never across a system
//! call). Lock order: a directory's `names` lock (two of them in node id order), then the node
//! table, then a node's other locks, which are leaves.

use fuser::FileType;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat, FileStat};
use once_cell::race::OnceBox;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

pub use crate::name::Name;

/// How a real object is reached. Two variants, so it fits in three words (there is one per
/// node, and a node per inode the kernel holds).
#[derive(Clone)]
pub enum Loc {
    /// A directory (or layer root), held open as `O_PATH`.
    Dir(Arc<OwnedFd>),
    /// A non-directory: a directory of the same layer and its name there; or, with an empty
    /// name, the object itself held as `O_PATH` (one whose name went away while it has other
    /// links: `Loc::held`).
    At(Arc<OwnedFd>, Name),
}

impl Loc {
    /// A non-directory held open as `O_PATH` itself.
    pub fn held(fd: OwnedFd) -> Loc {
        Loc::At(Arc::new(fd), Name::from(c""))
    }
}

/// A real object in one layer.
#[derive(Clone)]
pub struct Real {
    /// The layer's index (`u16`: `Layers::open` refuses more layers, and config more than
    /// `config::MAX_LOWERS` lower ones).
    layer: u16,
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
    pub fn new(layer: usize, loc: Loc, ino: u64) -> Real {
        Real {
            // Never saturates: `Layers::open` refuses an index that does not fit.
            layer: u16::try_from(layer).unwrap_or(u16::MAX),
            loc,
            ino,
            opaque: false,
            xwhiteouts: false,
            alias: false,
        }
    }

    /// The same, reached through the index for a lower link not yet linked up (`alias`).
    pub fn alias(mut self) -> Real {
        self.alias = true;
        self
    }

    /// The same, with a directory's opaque and xattr-whiteouts marks.
    pub fn marks(mut self, opaque: bool, xwhiteouts: bool) -> Real {
        self.opaque = opaque;
        self.xwhiteouts = xwhiteouts;
        self
    }

    /// The layer's index, 0 for the upper layer when there is one.
    pub fn layer(&self) -> usize {
        usize::from(self.layer)
    }

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
            Loc::At(dir, name) => (dir.as_fd(), name),
        }
    }

    /// `lstat` of the object.
    pub fn stat(&self) -> nix::Result<FileStat> {
        match &self.loc {
            Loc::Dir(fd) => fstat(fd.as_fd()),
            Loc::At(fd, name) if name.is_empty() => fstat(fd.as_fd()),
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
    /// What only a directory, or a node that was opened or copied up, needs: a directory's is
    /// made with it, another node's at that first use (most nodes of a walk are plain files
    /// never opened). A once-box is one word (`OnceLock<Box<_>>` is two).
    extra: OnceBox<Extra>,
    /// The generation the kernel gets with the id (`export.rs`); fixed for the node's life.
    pub generation: u32,
}

#[derive(Default)]
struct Extra {
    /// Held while the node is copied up: one copy-up at a time, and the others wait for it.
    copy_up_lock: Mutex<()>,
    /// The FUSE passthrough backing id shared by the node's open files.
    backing: crate::file::Backing,
    /// What only a directory has (made with the node); `None` for other nodes.
    dir: Option<DirState>,
}

struct State {
    reals: Reals,
    /// The directory it was last found in (for `..` and copy-up).
    parent: u64,
    /// Its name there, when it is not the topmost real object's own name (`None`: a
    /// non-directory named as its real object, most nodes; one word instead of a name's
    /// three).
    name: Option<Box<Name>>,
}

impl State {
    fn new(reals: Reals, link: Link) -> State {
        let mut state = State {
            reals,
            parent: link.parent,
            name: None,
        };
        state.set_name(link.name);
        state
    }

    /// The topmost real object's name in its directory, for a non-directory.
    fn real_name(&self) -> Option<&Name> {
        match &self.reals.first()?.loc {
            Loc::At(_, name) => Some(name),
            Loc::Dir(_) => None,
        }
    }

    fn name(&self) -> Name {
        match (&self.name, self.real_name()) {
            (Some(own), _) => (**own).clone(),
            (None, Some(real)) => real.clone(),
            (None, None) => Name::from(c""),
        }
    }

    fn set_name(&mut self, name: Name) {
        self.name = (self.real_name() != Some(&name)).then(|| Box::new(name));
    }

    fn link(&self) -> Link {
        Link {
            parent: self.parent,
            name: self.name(),
        }
    }
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
    /// The kernel's cached listing left some entries' attributes out (`plus_entries`): its
    /// next open drops that copy and lists every entry with its attributes (`ops::opendir`).
    pub names_only: AtomicBool,
    /// A lookup in it asked for statahead since it was last opened (`statahead.rs`).
    pub statahead: AtomicBool,
}

/// The state non-directories share (never changed in a way anyone reads).
static NOT_A_DIR: DirState = DirState {
    version: AtomicU64::new(0),
    names: RwLock::new(()),
    complete: Mutex::new(None),
    misses: AtomicU32::new(0),
    listed_at: AtomicU64::new(0),
    names_only: AtomicBool::new(false),
    statahead: AtomicBool::new(false),
};

impl Node {
    pub fn new(id: u64, kind: FileType, reals: Vec<Real>, parent: u64, name: Name) -> Node {
        Node {
            id,
            kind,
            state: Mutex::new(State::new(reals.into(), Link { parent, name })),
            lookups: AtomicU64::new(0),
            extra: if kind == FileType::Directory {
                OnceBox::with_value(Box::new(Extra {
                    dir: Some(DirState::default()),
                    ..Extra::default()
                }))
            } else {
                OnceBox::new()
            },
            generation: 0,
        }
    }

    /// A directory's own state (a shared, unused one for other nodes).
    pub fn dir(&self) -> &DirState {
        self.extra
            .get()
            .and_then(|e| e.dir.as_ref())
            .unwrap_or(&NOT_A_DIR)
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

    fn extra(&self) -> &Extra {
        self.extra.get_or_init(Box::default)
    }

    /// The node's passthrough state (`file.rs`).
    pub fn backing(&self) -> &crate::file::Backing {
        &self.extra().backing
    }

    /// Held while the node is copied up: one copy-up at a time, and the others wait for it.
    pub fn copy_up_lock(&self) -> &Mutex<()> {
        &self.extra().copy_up_lock
    }

    pub fn parent(&self) -> u64 {
        self.state().parent
    }

    /// Where the node was last found: its directory's node id and its name there.
    pub fn link(&self) -> Link {
        self.state().link()
    }

    pub fn set_link(&self, link: Link) {
        let mut state = self.state();
        state.parent = link.parent;
        state.set_name(link.name);
    }

    /// Replaces the real objects (after a copy-up or a change in the upper layer); the link
    /// stays as it was.
    pub fn set_reals(&self, reals: Vec<Real>) {
        let mut state = self.state();
        let name = state.name();
        state.reals = reals.into();
        state.set_name(name);
    }

    /// Whether the topmost real object is in the upper layer (index 0 when there is one).
    pub fn is_upper(&self, has_upper: bool) -> bool {
        let reals = self.reals();
        has_upper && reals[0].layer == 0 && !reals[0].alias
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// There is a node per inode the kernel holds: an `Arc<Node>` of at most 120 bytes takes a
    /// 128-byte glibc chunk (a 200k-node walk: 3 MiB more for the next chunk size).
    #[test]
    fn a_node_stays_small() {
        assert!(
            std::mem::size_of::<Node>() <= 104,
            "{}",
            std::mem::size_of::<Node>()
        );
        assert_eq!(std::mem::size_of::<Real>(), 48);
    }

    #[test]
    fn the_link_name_survives_changes_of_the_real_objects() {
        let dir = Arc::new(OwnedFd::from(std::fs::File::open("/").unwrap()));
        let at = |name: &CStr| vec![Real::new(1, Loc::At(dir.clone(), name.into()), 7)];
        let node = Node::new(9, FileType::RegularFile, at(c"a"), 1, c"a".into());
        assert_eq!(&*node.link().name, c"a");
        assert!(node.state().name.is_none(), "the real object's name serves");
        // A redirect: the real object has another name than the link.
        node.set_reals(at(c"b"));
        assert_eq!(&*node.link().name, c"a");
        node.set_link(Link {
            parent: 2,
            name: c"b".into(),
        });
        assert_eq!((node.parent(), &*node.link().name), (2, c"b"));
        assert!(node.state().name.is_none());
        // Held by its fd (empty name), and a directory (no name in its real object).
        node.set_reals(vec![Real::new(
            1,
            Loc::held(OwnedFd::from(std::fs::File::open("/").unwrap())),
            7,
        )]);
        assert_eq!(&*node.link().name, c"b");
        let d = Node::new(
            10,
            FileType::Directory,
            vec![Real::new(1, Loc::Dir(dir.clone()), 8)],
            1,
            c"d".into(),
        );
        assert_eq!(&*d.link().name, c"d");
    }

    #[test]
    fn a_held_object_stats_through_its_fd() {
        let path = std::env::temp_dir().join(format!("plyfs-held-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        let fd: OwnedFd = std::fs::File::open(&path).unwrap().into();
        std::fs::remove_file(&path).unwrap();
        let real = Real::new(1, Loc::held(fd), 0);
        assert_eq!(real.stat().unwrap().st_size, 3);
        assert!(real.dir_fd().is_none());
        assert_eq!(real.at().1, c"");
    }
}
