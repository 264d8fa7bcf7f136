//! The daemon's lookup caches: what a lower layer holds under a name, and complete directories.
//!
//! - **Lower lookups**: an LRU (the `lru` crate) of probe results keyed by (layer, real parent
//!   inode, name): found (with the real stat), whiteout, or missing. Lower layers do not change
//!   under a mount, so an entry never goes stale; the upper layer is never cached. With
//!   `drop_negative_lower` a "missing" result is not kept once the lookup is answered.
//! - **Complete directories**: once a directory's whole merged listing was read, its names are
//!   kept with the directory's version (`Node::version`, bumped by every change of its names
//!   through the mount, and by the upper-layer watch); a lookup of a name that is not among them
//!   is answered without touching the layers while the version still matches. A name made
//!   through the mount is added as the version moves (`name_added`, under the directory's
//!   `complete` lock), so a directory being filled stays complete. A name is kept
//!   as its 64-bit hash (seeded at random per mount), not its bytes: a collision can only make a
//!   missing name look present, which costs a real probe, never a wrong answer.
//!
//! - **Statahead** (`statahead.rs`) is no cache of plyfs's own: it warms the real filesystem's
//!   inodes for a directory listed by name alone, and counts what it did here.
//!
//! Memory: `cache_entries=N` bounds both: at most N lookup entries, and at most N names in all
//! complete directories together (the least recently completed directory stops being complete,
//! before its names are dropped, to make room: prune before forgetting). A lookup entry's name
//! is kept inline up to 32 bytes, and a full LRU reuses the evicted entry's allocation, so the
//! cache allocates nothing once full: entries allocated all over the heap during a walk would pin
//! its pages after the kernel forgot the nodes around them (it kept 40-60 MiB resident). A found
//! object's stat is kept in the widths its fields need (`LowerStat`: 96 bytes, not 144).
//!
//! Locks: `lower` and `complete_lru` are leaves towards the node table; `complete_lru` may be
//! held while taking a node's `complete` lock, never the reverse. No lock is held across a
//! system call.

use hashbrown::hash_table::Entry as Slot;
use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::namei::Probe as Cached;
use crate::node::Node;
use nix::sys::stat::FileStat;

/// The fewest complete-directory entries worth a sweep of forgotten ones.
const SWEEP_MIN: usize = 1024;

/// The default `cache_entries`.
pub const DEFAULT_ENTRIES: usize = 16384;

#[derive(Hash, PartialEq, Eq)]
struct Key {
    dir_ino: u64,
    layer: u16,
    name: SmallVec<[u8; 32]>,
}

impl Key {
    fn new(layer: usize, dir_ino: u64, name: &[u8]) -> Key {
        Key {
            dir_ino,
            // At most `config::MAX_LOWERS` layers; a wider index could only share a key.
            layer: u16::try_from(layer).unwrap_or(u16::MAX),
            name: SmallVec::from_slice(name),
        }
    }
}

/// What the cache keeps of a probe.
#[derive(Clone, Copy)]
enum Entry {
    Missing,
    Whiteout,
    Object(LowerStat),
}

/// A lower object's `stat`, each field in the width it needs (lower layers hold no link
/// counts or block sizes beyond 32 bits that matter).
#[derive(Clone, Copy)]
struct LowerStat {
    dev: u64,
    ino: u64,
    rdev: u64,
    size: i64,
    blocks: i64,
    secs: [i64; 3],
    nsecs: [u32; 3],
    nlink: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    blksize: u32,
}

impl From<&FileStat> for LowerStat {
    fn from(st: &FileStat) -> LowerStat {
        let nsec = |n: i64| u32::try_from(n).unwrap_or(0);
        LowerStat {
            dev: st.st_dev,
            ino: st.st_ino,
            rdev: st.st_rdev,
            size: st.st_size,
            blocks: st.st_blocks,
            secs: [st.st_atime, st.st_mtime, st.st_ctime],
            nsecs: [
                nsec(st.st_atime_nsec),
                nsec(st.st_mtime_nsec),
                nsec(st.st_ctime_nsec),
            ],
            nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            blksize: u32::try_from(st.st_blksize).unwrap_or(u32::MAX),
        }
    }
}

impl LowerStat {
    fn stat(&self) -> FileStat {
        let mut st = crate::sys::stat::zeroed();
        st.st_dev = self.dev;
        st.st_ino = self.ino;
        st.st_rdev = self.rdev;
        st.st_size = self.size;
        st.st_blocks = self.blocks;
        [st.st_atime, st.st_mtime, st.st_ctime] = self.secs;
        st.st_atime_nsec = self.nsecs[0].into();
        st.st_mtime_nsec = self.nsecs[1].into();
        st.st_ctime_nsec = self.nsecs[2].into();
        st.st_nlink = self.nlink.into();
        st.st_mode = self.mode;
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_blksize = self.blksize.into();
        st
    }
}

impl From<&Cached> for Entry {
    fn from(probe: &Cached) -> Entry {
        match probe {
            Cached::Missing => Entry::Missing,
            Cached::Whiteout => Entry::Whiteout,
            Cached::Object(st) => Entry::Object(st.into()),
        }
    }
}

impl Entry {
    fn probe(&self) -> Cached {
        match self {
            Entry::Missing => Cached::Missing,
            Entry::Whiteout => Cached::Whiteout,
            Entry::Object(st) => Cached::Object(st.stat()),
        }
    }
}

/// Counters, readable through the `plyfs.stats` xattr of the mount's root.
#[derive(Default)]
pub struct Stats {
    /// Real lookups in lower layers (the ones the cache did not answer).
    pub lower_probes: AtomicU64,
    /// Lower lookups answered by the cache.
    pub lower_hits: AtomicU64,
    /// Lookups of names answered "no such name" by a complete directory.
    pub complete_hits: AtomicU64,
    /// GETXATTR requests (the kernel asks for `security.capability` before a write, until it
    /// knows a file has none: `killpriv.rs`).
    pub getxattrs: AtomicU64,
    /// Requests served through io_uring queues (`uring/`).
    pub uring_requests: AtomicU64,
    /// Listing entries sent as the read-ahead looked them up (`ahead.rs`).
    pub listed_ahead: AtomicU64,
    /// FORGET and BATCH_FORGET messages read from /dev/fuse (`fs.rs`, `FORGET_GATHER`).
    pub forget_reads: AtomicU64,
}

/// The names of a complete directory at one version of it, as their hashes (`Caches::hasher`);
/// a hash table slot holds the hash and is found by it.
pub struct Complete {
    pub version: u64,
    names: HashTable<u64>,
    held: Arc<AtomicUsize>,
}

impl Complete {
    /// Whether a name with hash `hash` may be in the directory.
    fn may_hold(&self, hash: u64) -> bool {
        self.names.find(hash, |&h| h == hash).is_some()
    }
}

impl Drop for Complete {
    fn drop(&mut self) {
        self.held.fetch_sub(self.names.len(), Ordering::AcqRel);
    }
}

pub struct Caches {
    lower: Mutex<lru::LruCache<Key, Entry>>,
    keep_negative: bool,
    /// Complete directories, least recently completed first.
    complete_lru: Mutex<lru::LruCache<u64, Weak<Node>>>,
    /// The `complete_lru` length at which its forgotten directories are swept out.
    sweep_at: AtomicUsize,
    /// Names held by all complete directories.
    complete_names: Arc<AtomicUsize>,
    budget: usize,
    /// Hashes the names of complete directories.
    hasher: DefaultHashBuilder,
    pub stats: Stats,
    /// Warms the real inodes of directories listed by name alone (`statahead.rs`).
    pub statahead: crate::statahead::Statahead,
}

impl Caches {
    pub fn new(entries: usize, keep_negative: bool) -> Caches {
        let cap = NonZeroUsize::new(entries.max(1)).expect("not zero");
        Caches {
            lower: Mutex::new(lru::LruCache::new(cap)),
            keep_negative,
            complete_lru: Mutex::new(lru::LruCache::unbounded()),
            sweep_at: AtomicUsize::new(SWEEP_MIN),
            complete_names: Arc::new(AtomicUsize::new(0)),
            budget: entries,
            hasher: DefaultHashBuilder::default(),
            stats: Stats::default(),
            statahead: Default::default(),
        }
    }

    /// Whether looking up every entry of a listing of `len` entries through the lower-lookup
    /// cache would only flush it (more than a quarter of its entries): such a listing's
    /// lookups bypass it (`namei::listing`).
    pub fn floods(&self, len: usize) -> bool {
        len > self.budget / 4
    }

    /// The cached result of looking `name` up in lower layer `layer`'s directory `dir_ino`.
    pub fn lower_get(&self, layer: usize, dir_ino: u64, name: &[u8]) -> Option<Cached> {
        let key = Key::new(layer, dir_ino, name);
        self.lower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(Entry::probe)
    }

    pub fn lower_put(&self, layer: usize, dir_ino: u64, name: &[u8], value: Cached) {
        if matches!(value, Cached::Missing) && !self.keep_negative {
            return;
        }
        self.lower
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .put(Key::new(layer, dir_ino, name), Entry::from(&value));
    }

    /// Whether `name` is known not to be in directory `dir` (a complete directory at its
    /// current version that does not hold it).
    pub fn known_missing(&self, dir: &Node, name: &[u8]) -> bool {
        let hash = self.hasher.hash_one(name);
        let missing = {
            let mut guard = dir.dir().complete.lock().unwrap_or_else(|e| e.into_inner());
            if guard
                .as_ref()
                .is_some_and(|c| c.version != dir.dir().version.load(Ordering::Acquire))
            {
                // Out of date: give its names back now.
                guard.take();
            }
            guard.as_ref().is_some_and(|c| !c.may_hold(hash))
        };
        if missing {
            self.stats.complete_hits.fetch_add(1, Ordering::Relaxed);
        }
        missing
    }

    /// Notes that `name` was just made in `dir` through the mount: the directory's version
    /// moves, and a complete directory stays complete with the name added (else a create in a
    /// directory would make it incomplete, and each following miss would probe the layers).
    /// Past the names budget, or on any doubt, the directory just stops being complete.
    pub fn name_added(&self, dir: &Node, name: &[u8]) {
        self.names_changed(dir, Some(name));
    }

    /// Notes that a name of `dir` went away through the mount (unlink, rmdir, the source of a
    /// rename): the directory's version moves, and a complete directory stays complete still
    /// holding the name's hash. Its names are a superset of the directory's from then on, which
    /// is safe: a name it may hold is looked up in the layers.
    pub fn name_removed(&self, dir: &Node) {
        self.names_changed(dir, None);
    }

    fn names_changed(&self, dir: &Node, added: Option<&[u8]>) {
        let hash = added.map(|name| self.hasher.hash_one(name));
        let state = dir.dir();
        // The complete lock is held across the bump, so a reader (who compares versions under
        // it) sees the old version with the old names or the new one with the new.
        let mut guard = state.complete.lock().unwrap_or_else(|e| e.into_inner());
        let old = state.version.fetch_add(1, Ordering::AcqRel);
        let kept = guard.as_mut().and_then(Arc::get_mut).is_some_and(|c| {
            if c.version != old {
                return false;
            }
            if let Some(hash) = hash {
                if let Slot::Vacant(slot) = c.names.entry(hash, |&h| h == hash, |&h| h) {
                    if self.complete_names.fetch_add(1, Ordering::AcqRel) >= self.budget {
                        self.complete_names.fetch_sub(1, Ordering::AcqRel);
                        return false;
                    }
                    slot.insert(hash);
                }
            }
            c.version = old + 1;
            true
        });
        if !kept {
            guard.take();
        }
    }

    /// Marks `dir` complete with `names` as read at `version`, making room by making the least
    /// recently completed directories incomplete first. Nothing happens when the names alone
    /// exceed the budget or the directory changed since.
    pub fn set_complete<'a>(
        &self,
        dir: &Arc<Node>,
        version: u64,
        names: impl Iterator<Item = &'a [u8]>,
    ) {
        let mut hashes = HashTable::new();
        for name in names {
            let hash = self.hasher.hash_one(name);
            if let Slot::Vacant(slot) = hashes.entry(hash, |&h| h == hash, |&h| h) {
                slot.insert(hash);
            }
        }
        let names = hashes;
        if names.len() > self.budget {
            return;
        }
        let mut lru = self.complete_lru.lock().unwrap_or_else(|e| e.into_inner());
        while self.complete_names.load(Ordering::Acquire) + names.len() > self.budget {
            let Some((_, weak)) = lru.pop_lru() else {
                break;
            };
            if let Some(node) = weak.upgrade() {
                // Prune before forgetting: the directory stops being complete, then its names go.
                let old = node
                    .dir()
                    .complete
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                drop(old);
            }
        }
        if self.complete_names.load(Ordering::Acquire) + names.len() > self.budget {
            return;
        }
        self.complete_names.fetch_add(names.len(), Ordering::AcqRel);
        let complete = Arc::new(Complete {
            version,
            names,
            held: self.complete_names.clone(),
        });
        if dir.dir().version.load(Ordering::Acquire) != version {
            return; // changed while listed: dropping `complete` gives its names back
        }
        *dir.dir().complete.lock().unwrap_or_else(|e| e.into_inner()) = Some(complete);
        lru.put(dir.id, Arc::downgrade(dir));
        // A forgotten directory gave its names back, but its entry stays here, and its Weak
        // keeps the node's memory allocated: sweep them when the entries double.
        if lru.len() >= self.sweep_at.load(Ordering::Relaxed) {
            let dead: Vec<u64> = lru
                .iter()
                .filter(|(_, w)| w.strong_count() == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in dead {
                lru.pop(&id);
            }
            self.sweep_at
                .store((lru.len() * 2).max(SWEEP_MIN), Ordering::Relaxed);
        }
    }

    /// The counters as one line of `key=value` pairs.
    pub fn stats_line(&self) -> String {
        let lower = self.lower.lock().unwrap_or_else(|e| e.into_inner()).len();
        format!(
            "lower_probes={} lower_hits={} complete_hits={} lower_entries={} complete_names={} getxattrs={} uring_requests={} statahead={} listed_ahead={} forget_reads={}\n",
            self.stats.lower_probes.load(Ordering::Relaxed),
            self.stats.lower_hits.load(Ordering::Relaxed),
            self.stats.complete_hits.load(Ordering::Relaxed),
            lower,
            self.complete_names.load(Ordering::Relaxed),
            self.stats.getxattrs.load(Ordering::Relaxed),
            self.stats.uring_requests.load(Ordering::Relaxed),
            self.statahead.done(),
            self.stats.listed_ahead.load(Ordering::Relaxed),
            self.stats.forget_reads.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::FileType;

    fn dir(id: u64) -> Arc<Node> {
        Arc::new(Node::new(
            id,
            FileType::Directory,
            Vec::new(),
            1,
            c"d".into(),
        ))
    }

    #[test]
    fn negative_lookups_are_kept_unless_dropped() {
        for keep in [true, false] {
            let c = Caches::new(8, keep);
            assert!(c.lower_get(1, 10, b"x").is_none());
            c.lower_put(1, 10, b"x", Cached::Missing);
            c.lower_put(1, 10, b"w", Cached::Whiteout);
            assert_eq!(c.lower_get(1, 10, b"x").is_some(), keep);
            assert!(
                c.lower_get(1, 10, b"w").is_some(),
                "whiteouts are kept either way"
            );
            assert!(c.lower_get(2, 10, b"x").is_none(), "per layer");
        }
    }

    #[test]
    fn forgotten_complete_directories_are_swept_out() {
        let c = Caches::new(1 << 20, true);
        // Directories completed and then forgotten by the kernel (the node dropped).
        for id in 0..3 * SWEEP_MIN as u64 {
            let d = dir(100 + id);
            c.set_complete(&d, 0, [b"a".as_slice()].into_iter());
        }
        assert_eq!(
            c.complete_names.load(Ordering::Acquire),
            0,
            "names given back"
        );
        let held = c.complete_lru.lock().unwrap().len();
        assert!(
            held <= SWEEP_MIN,
            "{held} entries for forgotten directories kept"
        );
        // Live ones stay complete through a sweep.
        let live: Vec<_> = (0..2 * SWEEP_MIN as u64)
            .map(|id| dir(10_000 + id))
            .collect();
        for d in &live {
            c.set_complete(d, 0, [b"a".as_slice()].into_iter());
        }
        assert!(live
            .iter()
            .all(|d| d.dir().complete.lock().unwrap().is_some()));
    }

    #[test]
    fn a_cached_stat_reads_back_whole() {
        let st = nix::sys::stat::stat("/").unwrap();
        let c = Caches::new(8, true);
        c.lower_put(1, 2, b"root", Cached::Object(st));
        let Some(Cached::Object(back)) = c.lower_get(1, 2, b"root") else {
            panic!("not kept");
        };
        let fields = |s: &FileStat| {
            (
                (s.st_dev, s.st_ino, s.st_rdev, s.st_size, s.st_blocks),
                (s.st_atime, s.st_mtime, s.st_ctime),
                (s.st_atime_nsec, s.st_mtime_nsec, s.st_ctime_nsec),
                (s.st_nlink, s.st_mode, s.st_uid, s.st_gid, s.st_blksize),
            )
        };
        assert_eq!(fields(&back), fields(&st));
        assert_eq!(std::mem::size_of::<LowerStat>(), 96);
    }

    #[test]
    fn lower_cache_is_bounded() {
        let c = Caches::new(4, true);
        for i in 0..10u64 {
            c.lower_put(1, i, b"n", Cached::Missing);
        }
        assert_eq!(c.lower.lock().unwrap().len(), 4);
        assert!(c.lower_get(1, 9, b"n").is_some() && c.lower_get(1, 0, b"n").is_none());
    }

    #[test]
    fn completeness_follows_versions_and_budget() {
        let c = Caches::new(5, true);
        let a = dir(10);
        c.set_complete(&a, 0, [&b"x"[..], b"y", b"z"].into_iter());
        assert!(c.known_missing(&a, b"nope"));
        assert!(!c.known_missing(&a, b"x"), "a name it holds");
        a.bump_version();
        assert!(!c.known_missing(&a, b"nope"), "a change makes it unknown");
        assert_eq!(
            c.complete_names.load(Ordering::Relaxed),
            0,
            "and gives its names back"
        );
        c.set_complete(&a, 1, [&b"x"[..], b"y", b"z"].into_iter());
        let a2 = dir(11);
        c.set_complete(&a2, 0, [&b"p"[..], b"q"].into_iter());
        assert!(c.known_missing(&a2, b"nope"));
        // 3 + 2 names fill the budget: a third directory evicts the least recent one first.
        let b = dir(12);
        c.set_complete(&b, 0, [&b"m"[..], b"n"].into_iter());
        assert!(a.dir().complete.lock().unwrap().is_none(), "pruned");
        assert!(c.known_missing(&b, b"nope"));
        assert_eq!(c.complete_names.load(Ordering::Relaxed), 4);
        drop(b);
        assert_eq!(
            c.complete_names.load(Ordering::Relaxed),
            2,
            "a dropped node gives back"
        );
        let big = dir(13);
        c.set_complete(
            &big,
            0,
            [&b"1"[..], b"2", b"3", b"4", b"5", b"6"].into_iter(),
        );
        assert!(
            big.dir().complete.lock().unwrap().is_none(),
            "larger than the budget"
        );
    }
}
