//! The upper-layer watch: changes made in the upper directory underneath a live mount (by a
//! tool that writes it directly) become visible through the mount.
//!
//! A fanotify mark on the upper layer's filesystem reports each directory-entry and attribute
//! change as (parent directory's file handle, name). Events of plyfs's own process are
//! ignored (they are changes through the mount). For a directory the kernel holds, plyfs makes
//! it incomplete (its version moves) and queues invalidations of the entry and of the
//! directory's attributes (`notify.rs`). When events were lost (queue overflow), every held
//! directory is invalidated whole: its attributes, and the entries of every node found in it.
//!
//! Needs `CAP_SYS_ADMIN` (a filesystem mark); without it the watch is off and says so in the log.
//!
//! Invariants: `dirs` maps the file handles of the upper directories of live directory nodes to
//! their node ids; an entry may outlive its node (it is dropped when found stale, and swept when
//! the map grows), never the other way round for a node added through `add`. Its mutex is a leaf,
//! never held across a system call.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::FileType;

use crate::node::Node;
use crate::notify::Inval;
use crate::ovl::Ovl;
use crate::sys::fanotify::{self, Event};
use crate::sys::handle::{name_to_handle_at, FileHandle};

const AT_HANDLE_FID: libc::c_int = 0x200;
/// How long the watch lets events gather between reads.
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Events that change a directory's names.
const ENTRY_EVENTS: u64 =
    fanotify::FAN_CREATE | fanotify::FAN_DELETE | fanotify::FAN_MOVED_FROM | fanotify::FAN_MOVED_TO;
const EVENTS: u64 = fanotify::FAN_CREATE
    | fanotify::FAN_DELETE
    | fanotify::FAN_MOVED_FROM
    | fanotify::FAN_MOVED_TO
    | fanotify::FAN_ATTRIB
    | fanotify::FAN_CLOSE_WRITE
    | fanotify::FAN_ONDIR;

#[derive(Default)]
pub struct Watch {
    on: AtomicBool,
    dirs: Mutex<HashMap<FileHandle, u64>>,
    /// Set when `dirs` grew by another 4096: the next event drops stale entries.
    sweep_needed: AtomicBool,
}

/// The handle fanotify reports for directory `fd` (a FID where the kernel has them).
fn dir_handle(fd: std::os::fd::BorrowedFd) -> Option<FileHandle> {
    name_to_handle_at(fd, c"", AT_HANDLE_FID)
        .or_else(|_| name_to_handle_at(fd, c"", 0))
        .ok()
        .map(|(h, _)| h)
}

impl Watch {
    /// Starts watching the upper layer of `ovl` (when there is one and the mark is allowed).
    pub fn start(ovl: Arc<Ovl>) {
        if ovl.read_only || !ovl.layers.has_upper || !ovl.watch_upper {
            return;
        }
        let group = match fanotify::init() {
            Ok(g) => g,
            Err(e) => return tracing::info!(%e, "upper-layer watch off: fanotify unavailable"),
        };
        // fanotify_mark needs a real fd (not O_PATH) to name the filesystem.
        let Some(upper) = ovl.layers.get(0).handle_fd.as_ref() else {
            return tracing::info!("upper-layer watch off: cannot open the upper layer");
        };
        if let Err(e) = fanotify::mark_filesystem(group.as_fd(), upper.as_fd(), EVENTS) {
            return tracing::info!(%e, "upper-layer watch off: cannot mark its filesystem");
        }
        // What plyfs builds in the work dir is its own business: do not even wake up for it.
        if let Some(work) = ovl.writable_work() {
            let ignored = crate::layer::reopen_dir(&work.fd).and_then(|fd| {
                fanotify::ignore_dir(group.as_fd(), fd.as_fd(), EVENTS)
                    .map_err(crate::ovl::io_errno)
            });
            if let Err(e) = ignored {
                tracing::debug!(?e, "work dir events not ignored");
            }
        }
        ovl.watch.on.store(true, Ordering::Release);
        tracing::debug!("upper-layer watch on");
        if let Some(root) = ovl.nodes.get(crate::export::ROOT_ID) {
            ovl.watch.add(&root);
        }
        let spawned = std::thread::Builder::new()
            .name("plyfs-watch".into())
            .spawn(move || {
                let me = std::process::id() as i32;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match nix::unistd::read(&group, &mut buf) {
                        Ok(n) => n,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(e) => return tracing::warn!(%e, "upper-layer watch stopped"),
                    };
                    // One pass per batch: the same (directory, name, kind of change) once.
                    let mut seen = std::collections::HashSet::new();
                    for ev in fanotify::parse(&buf[..n]) {
                        let key = (ev.dir.clone(), ev.name.clone(), ev.mask & ENTRY_EVENTS != 0);
                        if ev.pid != me && seen.insert(key) {
                            ovl.watch.event(&ovl, ev);
                        }
                    }
                    // Let events gather (a busy filesystem sends thousands a second): one
                    // wake-up per BATCH_DELAY, well within the second a change may take to show.
                    std::thread::sleep(BATCH_DELAY);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(%e, "upper-layer watch off: no thread");
        }
    }

    /// Watches directory node `node` if its topmost real directory is in the upper layer.
    pub fn add(&self, node: &Node) {
        if !self.on.load(Ordering::Acquire) || node.kind != FileType::Directory {
            return;
        }
        let reals = node.reals();
        let Some(fd) = reals
            .first()
            .filter(|r| r.layer() == 0)
            .and_then(|r| r.dir_fd())
        else {
            return;
        };
        let Some(h) = dir_handle(fd.as_fd()) else {
            return;
        };
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        dirs.insert(h, node.id);
        if dirs.len().is_multiple_of(4096) {
            self.sweep_needed.store(true, Ordering::Release);
        }
    }

    fn event(&self, ovl: &Ovl, ev: Event) {
        tracing::trace!(?ev, "upper-layer event");
        if ev.mask & fanotify::FAN_Q_OVERFLOW != 0 {
            tracing::warn!("upper-layer watch lost events: invalidating every directory");
            return self.overflow(ovl);
        }
        if self.sweep_needed.swap(false, Ordering::AcqRel) {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, id| ovl.nodes.get(*id).is_some());
        }
        let Some(h) = ev.dir else { return };
        let Some(id) = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&h)
            .copied()
        else {
            return;
        };
        let Some(dir) = ovl.nodes.get(id) else {
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&h);
            return;
        };
        tracing::debug!(dir = id, name = ?String::from_utf8_lossy(&ev.name), mask = ev.mask, "changed underneath");
        let name: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(ev.name);
        if ev.mask & ENTRY_EVENTS != 0 {
            // A name came or went: the entry (positive or negative), the listing and the
            // directory's attributes (size, times) are stale.
            dir.bump_version();
            if !name.is_empty() {
                ovl.notify.queue(Inval::Entry { parent: id, name });
            }
        } else if !name.is_empty() {
            // Content or attributes of a child (also a write through a passthrough file, which
            // the kernel does as the writer): only the child's attributes, which takes no lock
            // (an entry invalidation takes the directory's, see notify.rs). The directory itself
            // did not change.
            if let Ok(Some(found)) = crate::namei::find(ovl, &dir, &name) {
                let child = ovl.id_of_reals(found.kind, &found.reals, &dir);
                if ovl.nodes.get(child).is_some() {
                    ovl.notify.queue(Inval::Inode { ino: child });
                }
            }
            return;
        }
        ovl.notify.queue(Inval::Inode { ino: id });
    }

    fn overflow(&self, ovl: &Ovl) {
        let ids: Vec<u64> = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .copied()
            .collect();
        let watched: std::collections::HashSet<u64> = ids.iter().copied().collect();
        for id in &ids {
            if let Some(dir) = ovl.nodes.get(*id) {
                dir.bump_version();
                ovl.notify.queue(Inval::Inode { ino: *id });
            }
        }
        for (parent, name) in ovl.nodes.links() {
            if watched.contains(&parent) {
                ovl.notify.queue(Inval::Entry {
                    parent,
                    name: std::os::unix::ffi::OsStringExt::from_vec(name.to_bytes().to_vec()),
                });
            }
        }
    }
}
