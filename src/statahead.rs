//! Statahead: reading ahead the metadata of a directory that was listed by name alone.
//!
//! Past `plus_entries` a listing gives the kernel names without attributes, so whoever stats
//! those entries then looks each one up; after `drop_caches` every such lookup waits for the real
//! filesystem to read the entry's inode. When the first lookup in a directory listed that way
//! comes in (`ops::lookup`), one background thread stats every entry of the directory's real
//! directories in turn, so the lookups behind it find the real inodes in memory (what Lustre's
//! statahead does for `ls -l`). It only warms the real filesystem's inode cache: it keeps
//! nothing and answers nothing, so it cannot make an answer wrong.
//!
//! Invariants: a request handler never waits for it (a full queue drops the request); the thread
//! runs under SCHED_IDLE, takes no lock and sees no node, only its own reference to a real
//! directory's fd; it ends with the process.

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::background::Background;

/// Directories waiting for the thread; more are dropped.
const QUEUE: usize = 64;

/// The statahead thread (SCHED_IDLE: only a CPU nothing else wants).
pub struct Statahead {
    thread: Background<Arc<OwnedFd>>,
    /// Entries statted so far (`plyfs.stats`).
    done: Arc<AtomicU64>,
}

impl Default for Statahead {
    fn default() -> Self {
        Statahead {
            thread: Background::new("plyfs-statahead", QUEUE, true),
            done: Arc::default(),
        }
    }
}

impl Statahead {
    /// Asks for the entries of real directories `dirs` to be statted, in the background.
    pub fn ask(&self, dirs: impl IntoIterator<Item = Arc<OwnedFd>>) {
        for dir in dirs {
            let done = self.done.clone();
            if !self.thread.send(dir, move |dir| read_ahead(&dir, &done)) {
                break;
            }
        }
    }

    /// How many entries the thread has statted.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }
}

/// Stats every entry of `dir`, ignoring what fails (an entry gone since is nobody's loss).
fn read_ahead(dir: &OwnedFd, done: &AtomicU64) {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let Ok(mut list) = Dir::openat(dir.as_fd(), c".", flags, Mode::empty()) else {
        return;
    };
    for e in list.iter() {
        let Ok(e) = e else { return };
        let name = e.file_name();
        if name != c"." && name != c".." {
            let _ = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW);
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
}
