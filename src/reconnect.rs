//! Finding a node from nothing but its id: the kernel's `LOOKUP(id, ".")` and `LOOKUP(id, "..")`
//! when it decodes a FUSE file handle (NFS export, `open_by_handle_at`) whose inode it no longer
//! caches, maybe after a restart of plyfs.
//!
//! A node still in the table is returned as is. Otherwise the export record (`record.rs`) says
//! where to look:
//! - a directory: its topmost real directory, opened by real file handle. plyfs walks up the
//!   real parents to a layer root, naming each step by listing the parent and matching the inode
//!   number (a lower ancestor that was copied up, maybe renamed, continues from its upper copy,
//!   which the record points at), then walks down the merged tree from the root one name at a
//!   time, holding the overlay directory's `names` lock while it looks the name up and checks
//!   that the child merges the very real directory the walk came from. A rename that raced the
//!   walk (a directory version or the mount's rename sequence moved) restarts it, at most
//!   `TRIES` times; anything else that does not match is ESTALE.
//! - a non-directory: the directories it was last found in (reconnected as above); the name is
//!   the listing entry whose `d_ino` is the id.
//!
//! Invariant: the node returned is one that a lookup by name just produced and whose id is the
//! id asked for, so a stale, torn or hostile record gives ESTALE, never another object. Every
//! node returned carries one lookup count; the nodes used on the way are held with a count of
//! the daemon's own (`Held`), dropped when the walk moves on.

use fuser::{Errno, FileType};
use nix::dir::Dir;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, FileStat, Mode};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::export::ROOT_ID;
use crate::layer::open_dir;
use crate::node::Node;
use crate::ovl::{OResult, Ovl};
use crate::record::Entry;
use crate::sys::handle::{open_by_handle_at, FileHandle};

/// How many times a walk restarts after a racing rename before it gives up with ESTALE.
const TRIES: usize = 16;
/// The deepest directory a walk follows.
const MAX_DEPTH: usize = 4096;

/// A node the daemon holds for its own use: one lookup count, dropped with the `Held`.
pub struct Held<'a> {
    ovl: &'a Ovl,
    node: Option<Arc<Node>>,
}

impl<'a> Held<'a> {
    /// Takes over one lookup count already taken on `node`.
    fn counted(ovl: &'a Ovl, node: Arc<Node>) -> Held<'a> {
        Held {
            ovl,
            node: Some(node),
        }
    }

    /// Hands the count to the kernel (the caller replies with this node).
    pub fn into_counted(mut self) -> Arc<Node> {
        self.node.take().expect("held")
    }
}

impl std::ops::Deref for Held<'_> {
    type Target = Arc<Node>;
    fn deref(&self) -> &Arc<Node> {
        self.node.as_ref().expect("held")
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.node.take() {
            self.ovl.nodes.forget(n.id, 1);
        }
    }
}

/// `LOOKUP(id, ".")`: the node of `id`, with one lookup count for the kernel.
pub fn decode(ovl: &Ovl, id: u64) -> OResult<Arc<Node>> {
    let node = hold(ovl, id)?;
    tracing::debug!(id, "decoded");
    Ok(node.into_counted())
}

/// `LOOKUP(id, "..")`: the directory of directory `id`, with one lookup count for the kernel.
pub fn parent(ovl: &Ovl, id: u64) -> OResult<Arc<Node>> {
    let node = hold(ovl, id)?;
    if node.kind != FileType::Directory {
        return Err(Errno::ENOTDIR);
    }
    let parent = hold(ovl, node.parent())?;
    tracing::debug!(id, parent = parent.id, "decoded parent");
    Ok(parent.into_counted())
}

/// The node of `id`, from the table or found again (see the module comment).
pub fn hold(ovl: &Ovl, id: u64) -> OResult<Held<'_>> {
    if let Some(node) = ovl.nodes.hold(id) {
        return Ok(Held::counted(ovl, node));
    }
    let record = ovl.record.as_ref().ok_or(Errno::ESTALE)?;
    let entry = record.get(id).ok_or_else(|| {
        tracing::debug!(id, "not in the export record");
        Errno::ESTALE
    })?;
    tracing::debug!(id, ?entry, "reconnecting");
    match entry {
        Entry::Dir { fs, handle } => directory(ovl, id, fs, &handle),
        Entry::Other { parents } => non_directory(ovl, id, parents),
    }
}

fn non_directory(ovl: &Ovl, id: u64, parents: [u64; 2]) -> OResult<Held<'_>> {
    for (i, &p) in parents.iter().enumerate() {
        if p == 0 || parents[..i].contains(&p) {
            continue;
        }
        let parent = match ovl.nodes.hold(p) {
            Some(n) => Held::counted(ovl, n),
            None => match ovl.record.as_ref().and_then(|r| r.get(p)) {
                Some(Entry::Dir { fs, handle }) => match directory(ovl, p, fs, &handle) {
                    Ok(h) => h,
                    Err(_) => continue,
                },
                _ => continue,
            },
        };
        if parent.kind != FileType::Directory {
            continue;
        }
        let Ok(listing) = crate::readdir::merged_listing(ovl, &parent) else {
            continue;
        };
        tracing::debug!(
            id,
            parent = p,
            entries = listing.len(),
            "searching the parent"
        );
        for e in listing.iter().filter(|e| e.ino == id) {
            if e.name == "." || e.name == ".." {
                continue;
            }
            if let Ok(Some((node, _))) = crate::namei::lookup(ovl, &parent, &e.name) {
                let node = Held::counted(ovl, node);
                if node.id == id {
                    return Ok(node);
                }
            }
        }
    }
    Err(Errno::ESTALE)
}

/// Why a walk failed.
enum Miss {
    /// A rename raced it: walk again.
    Raced,
    /// The directory is gone (or never was one of the layers'): ESTALE.
    Stale,
}

fn directory<'a>(ovl: &'a Ovl, id: u64, fs: u8, handle: &FileHandle) -> OResult<Held<'a>> {
    for _ in 0..TRIES {
        match walk(ovl, id, fs, handle) {
            Ok(node) => return Ok(node),
            Err(Miss::Raced) => tracing::debug!(id, "a rename raced the walk: again"),
            Err(Miss::Stale) => return Err(Errno::ESTALE),
        }
    }
    tracing::debug!(id, "gave up after {TRIES} racing renames");
    Err(Errno::ESTALE)
}

/// One step of a walk: a real directory and its name in its real parent.
struct Step {
    dev: u64,
    ino: u64,
    name: CString,
}

fn walk<'a>(ovl: &'a Ovl, id: u64, fs: u8, handle: &FileHandle) -> Result<Held<'a>, Miss> {
    let seq = ovl.renames.load(Ordering::Acquire);
    let raced_or_stale = || {
        let now = ovl.renames.load(Ordering::Acquire);
        if now != seq || now % 2 == 1 {
            Miss::Raced
        } else {
            Miss::Stale
        }
    };
    let fd = open_handle(ovl, fs, handle).ok_or(Miss::Stale)?;
    let steps = real_path(ovl, fd).ok_or_else(raced_or_stale)?;
    tracing::debug!(id, steps = steps.len(), "walking down");
    let mut cur = Held::counted(ovl, ovl.nodes.hold(ROOT_ID).ok_or(Miss::Stale)?);
    for step in steps.iter().rev() {
        let version = cur.dir().version.load(Ordering::Acquire);
        let child = {
            let _names = cur.dir().names.read().unwrap_or_else(|e| e.into_inner());
            crate::namei::lookup(ovl, &cur, OsStr::from_bytes(step.name.as_bytes()))
                .ok()
                .flatten()
                .map(|(node, _)| Held::counted(ovl, node))
        };
        let merges_step = child.as_ref().is_some_and(|c| {
            c.kind == FileType::Directory
                && c.reals()
                    .iter()
                    .any(|r| r.ino == step.ino && ovl.layers.get(r.layer()).dev == step.dev)
        });
        if !merges_step {
            tracing::debug!(id, name = ?step.name, found = child.is_some(), "step does not match");
        }
        match child {
            Some(child) if merges_step => cur = child,
            _ if cur.dir().version.load(Ordering::Acquire) != version => return Err(Miss::Raced),
            _ => return Err(raced_or_stale()),
        }
    }
    if cur.id != id {
        tracing::debug!(id, found = cur.id, "walk ended on another directory");
        return Err(Miss::Stale);
    }
    Ok(cur)
}

/// Opens a directory by real file handle on filesystem `fs` of the layers.
fn open_handle(ovl: &Ovl, fs: u8, handle: &FileHandle) -> Option<OwnedFd> {
    let layer = ovl
        .layers
        .all
        .iter()
        .find(|l| l.fs_index == fs && l.handle_fd.is_some())?;
    let mount_fd = layer.handle_fd.as_ref()?;
    open_by_handle_at(mount_fd.as_fd(), handle, libc::O_PATH | libc::O_DIRECTORY)
        .inspect_err(|e| tracing::debug!(%e, "real handle does not open"))
        .ok()
}

/// The steps from real directory `fd` up to (not including) a layer root, innermost first.
/// `None` when a name cannot be found (a rename raced) or the walk leaves the layers.
fn real_path(ovl: &Ovl, mut fd: OwnedFd) -> Option<Vec<Step>> {
    // The layer roots, as (device, inode): the root node's real objects.
    let roots: Vec<(u64, u64)> = ovl
        .nodes
        .get(ROOT_ID)?
        .reals()
        .iter()
        .map(|r| (ovl.layers.get(r.layer()).dev, r.ino))
        .collect();
    let is_layer_root = |st: &FileStat| roots.contains(&(st.st_dev, st.st_ino));
    let mut st = fstat(fd.as_fd()).ok()?;
    let mut steps = Vec::new();
    let mut first = true;
    let mut switches = 0;
    while !is_layer_root(&st) {
        if steps.len() + switches >= MAX_DEPTH {
            return None;
        }
        if !first {
            // A lower directory that was copied up is placed by its upper copy now.
            if let Some((ufd, ust)) = copied_up(ovl, &st) {
                fd = ufd;
                st = ust;
                switches += 1;
                continue;
            }
        }
        first = false;
        let parent = open_dir(fd.as_fd(), c"..").ok()?;
        let pst = fstat(parent.as_fd()).ok()?;
        if pst.st_ino == st.st_ino && pst.st_dev == st.st_dev {
            tracing::debug!("real walk left the layers");
            return None;
        }
        let name = name_in(parent.as_fd(), st.st_ino)?;
        steps.push(Step {
            dev: st.st_dev,
            ino: st.st_ino,
            name,
        });
        fd = parent;
        st = pst;
    }
    Some(steps)
}

/// The upper copy the record points at for real directory `st`, when it is another directory.
fn copied_up(ovl: &Ovl, st: &FileStat) -> Option<(OwnedFd, FileStat)> {
    let layer = ovl.layers.all.iter().find(|l| l.dev == st.st_dev)?;
    let id = crate::export::pack(layer.fs_index, st.st_ino)?;
    let Some(Entry::Dir { fs, handle }) = ovl.record.as_ref()?.get(id) else {
        return None;
    };
    let fd = open_handle(ovl, fs, &handle)?;
    let ust = fstat(fd.as_fd()).ok()?;
    (ust.st_ino != st.st_ino || ust.st_dev != st.st_dev).then_some((fd, ust))
}

/// The name of inode `ino` in directory `dir` (an `O_PATH` fd).
fn name_in(dir: BorrowedFd, ino: u64) -> Option<CString> {
    let mut d = Dir::openat(
        dir,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .ok()?;
    for e in d.iter() {
        let e = e.ok()?;
        let name: &CStr = e.file_name();
        if e.ino() == ino && name != c"." && name != c".." {
            return Some(name.to_owned());
        }
    }
    None
}
