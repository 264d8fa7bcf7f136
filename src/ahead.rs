//! Listing ahead: while the kernel takes in one READDIRPLUS reply (an inode and a dentry per
//! entry, made in the reader's own time), a background thread looks up the entries of the next
//! reply, so the daemon's work and the kernel's overlap on two CPUs instead of taking turns.
//!
//! An open directory's `Ahead` (in its handle, `readdir::DirHandle`) says which indexes of its
//! listing are claimed, and which entries are looked up and waiting. Each waiting entry holds
//! the lookup count its lookup took: whoever drops it unsent (a rewind, a change of the
//! directory, the handle closing) gives that count back with `forget`, as a reply that did not
//! fit does.
//!
//! Invariants: an index of one listing is looked up by one thread (the request's or the
//! read-ahead's), claimed under the `Ahead` lock; no lock is held across a lookup; the
//! read-ahead writes the export-record slots of a group before it publishes the group (its own
//! record batch, dropped first), so every id is recorded before a reply holds it; a waiting
//! entry is used only while the directory's version is the one it was looked up at. The `Ahead`
//! lock is a leaf; the read-ahead thread takes no other lock of the daemon's but the ones a
//! lookup takes.

use fuser::FileAttr;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::background::Background;
use crate::namei;
use crate::node::Node;
use crate::ovl::{OResult, Ovl};
use crate::readdir::{DirHandle, Entry};

/// Entries the read-ahead looks up before it publishes them (and writes their record slots).
const GROUP: usize = 16;
/// Jobs waiting for the thread; more are dropped (the request threads then do the work).
const QUEUE: usize = 16;

/// What a lookup of a name found (`namei::lookup`).
pub type Found = OResult<Option<(Arc<Node>, FileAttr)>>;
/// One lookup done ahead: the directory's version before it, and what it found.
type Looked = (u64, Found);

#[derive(Default)]
struct State {
    /// Which listing of the handle the indexes are of (moved when it is built anew).
    generation: u64,
    /// The read-ahead claims indexes from here up.
    claimed: usize,
    /// The indexes the read-ahead is looking up now.
    busy: Range<usize>,
    /// Looked up ahead, not yet sent.
    ready: HashMap<usize, Looked>,
    /// The handle was released: nothing more is kept.
    closed: bool,
}

/// The read-ahead state of one open directory.
#[derive(Default)]
pub struct Ahead {
    state: Mutex<State>,
    /// Signalled when a busy group is published.
    published: Condvar,
}

/// Gives back the lookup counts of entries looked up and never sent.
fn give_back(ovl: &Ovl, looked: impl IntoIterator<Item = Looked>) {
    for (_, found) in looked {
        if let Ok(Some((node, _))) = found {
            ovl.nodes.forget(node.id, 1);
        }
    }
}

impl Ahead {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A listing is built anew (a read from offset 0): what was looked up is of the old one.
    /// Returns the new listing's generation.
    pub fn restart(&self, ovl: &Ovl) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        s.claimed = 0;
        let old = std::mem::take(&mut s.ready);
        let generation = s.generation;
        drop(s);
        give_back(ovl, old.into_values());
        generation
    }

    /// The generation of the handle's current listing.
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// The handle is released.
    pub fn close(&self, ovl: &Ovl) {
        let mut s = self.lock();
        s.closed = true;
        let old = std::mem::take(&mut s.ready);
        drop(s);
        give_back(ovl, old.into_values());
    }

    /// Keeps the lookup of entry `index`, done at `version`, for the next reply (it did not
    /// fit in this one); gives its count back if the listing is gone.
    pub fn keep(&self, ovl: &Ovl, index: usize, version: u64, found: Found) {
        let mut s = self.lock();
        if s.closed {
            drop(s);
            give_back(ovl, [(version, found)]);
            return;
        }
        let old = s.ready.insert(index, (version, found));
        drop(s);
        give_back(ovl, old);
    }

    /// The lookup of entry `index`, if the read-ahead did it while the directory stayed at
    /// `version` (waiting for a group it is doing); None when the caller is to look it up.
    pub fn take(&self, ovl: &Ovl, index: usize, version: u64) -> Option<Found> {
        let mut s = self.lock();
        loop {
            if let Some((at, found)) = s.ready.remove(&index) {
                drop(s);
                if at == version {
                    ovl.caches
                        .stats
                        .listed_ahead
                        .fetch_add(1, Ordering::Relaxed);
                    return Some(found);
                }
                give_back(ovl, [(at, found)]);
                return None;
            }
            if !s.busy.contains(&index) {
                // Not the read-ahead's: never will be.
                s.claimed = s.claimed.max(index + 1);
                return None;
            }
            s = self.published.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The read-ahead's next group below `to`, claimed; None when there is none (or the
    /// listing is not the one of `generation` any more).
    fn claim(&self, generation: u64, from: usize, to: usize) -> Option<Range<usize>> {
        let mut s = self.lock();
        if s.closed || s.generation != generation {
            return None;
        }
        let start = s.claimed.max(from);
        if start >= to {
            return None;
        }
        let group = start..to.min(start + GROUP);
        s.claimed = group.end;
        s.busy = group.clone();
        Some(group)
    }

    fn publish(&self, ovl: &Ovl, generation: u64, start: usize, looked: Vec<Looked>) {
        let mut s = self.lock();
        s.busy = 0..0;
        let unwanted = if s.closed || s.generation != generation {
            Some(looked)
        } else {
            s.ready.extend((start..).zip(looked));
            None
        };
        drop(s);
        self.published.notify_all();
        if let Some(looked) = unwanted {
            give_back(ovl, looked);
        }
    }
}

/// What the read-ahead thread is asked: entries `range` of `listing`, the `generation`th of
/// `handle`'s listings of directory `dir`.
pub struct Job {
    pub ovl: Arc<Ovl>,
    pub dir: Arc<Node>,
    pub handle: Arc<DirHandle>,
    pub listing: Arc<Vec<Entry>>,
    pub generation: u64,
    pub range: Range<usize>,
}

/// The read-ahead thread (at normal priority: the request that follows may wait for it).
pub struct Worker(Background<Job>);

impl Default for Worker {
    fn default() -> Self {
        Worker(Background::new("plyfs-listahead", QUEUE, false))
    }
}

impl Worker {
    /// Queues `job`; a full queue drops it (the request threads then do the work).
    pub fn ask(&self, job: Job) {
        self.0.send(job, |job| look_ahead(&job));
    }
}

fn look_ahead(job: &Job) {
    let _listing = namei::listing(&job.ovl, job.listing.len());
    let ahead = &job.handle.ahead;
    let to = job.range.end.min(job.listing.len());
    while let Some(group) = ahead.claim(job.generation, job.range.start, to) {
        let start = group.start;
        let batch = job.ovl.record.as_ref().map(|r| r.batch());
        let looked: Vec<Looked> = group
            .map(|i| {
                let version = job.dir.dir().version.load(Ordering::Acquire);
                let e = &job.listing[i];
                let found = if e.name == "." || e.name == ".." {
                    Ok(None)
                } else {
                    namei::lookup(&job.ovl, &job.dir, &e.name)
                };
                (version, found)
            })
            .collect();
        // The slots are written before anyone can send these ids.
        drop(batch);
        ahead.publish(&job.ovl, job.generation, start, looked);
    }
}
