//! The node table: node id -> node, the kernel's lookup counts, and forgetting.
//!
//! Invariants: a node is in the table while the kernel holds a lookup count on it (the root
//! always). Looking a node up and bumping its count happen under the table's read lock, and a
//! node is only removed under the write lock after re-checking its count is 0, so a lookup racing
//! a forget either revives the node or finds it gone, never a removed node. The table lock is
//! taken before any node lock and never held across a system call.
//!
//! Memory: the table holds a node per inode the kernel holds (about 160 bytes each with its
//! real objects and names), so the daemon's memory follows the kernel's inode cache. A slot is
//! the node's pointer alone (the id is read from the node), not an (id, pointer) pair. When
//! FORGETs shrink the table to a quarter of its high-water mark, the freed heap is handed back
//! to the system (`sys::mem::trim_heap`), so a big walk's memory goes when the kernel forgets.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::export::{pack, ALLOCATED_BASE};
use crate::node::Node;

/// The nodes by id: a hash table of node pointers, each keyed by its node's own id.
#[derive(Default)]
struct Nodes {
    table: HashTable<Arc<Node>>,
    hasher: DefaultHashBuilder,
}

impl Nodes {
    fn hash(&self, id: u64) -> u64 {
        self.hasher.hash_one(id)
    }

    fn get(&self, id: &u64) -> Option<&Arc<Node>> {
        self.table.find(self.hash(*id), |n| n.id == *id)
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    fn values(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.table.iter()
    }

    /// The table's slot for `id`, filled or not.
    fn entry(&mut self, id: u64) -> hashbrown::hash_table::Entry<'_, Arc<Node>> {
        let hasher = &self.hasher;
        self.table.entry(
            hasher.hash_one(id),
            |n| n.id == id,
            |n| hasher.hash_one(n.id),
        )
    }

    /// Puts `node` in the table, in place of the node with its id if there is one.
    fn insert(&mut self, node: Arc<Node>) {
        self.entry(node.id).insert(node);
    }

    /// The node with `id`, made by `make` if there is none.
    fn get_or_insert_with(&mut self, id: u64, make: impl FnOnce() -> Arc<Node>) -> &Arc<Node> {
        self.entry(id).or_insert_with(make).into_mut()
    }

    fn remove(&mut self, id: u64) {
        if let Ok(e) = self.table.find_entry(self.hash(id), |n| n.id == id) {
            e.remove();
        }
    }

    fn shrink_to(&mut self, len: usize) {
        let hasher = &self.hasher;
        self.table.shrink_to(len, |n| hasher.hash_one(n.id));
    }
}

pub struct NodeTable {
    nodes: RwLock<Nodes>,
    /// Ids for (fs index, inode number) pairs that do not pack. Not yet persistent.
    allocated: Mutex<HashMap<(u8, u64), u64>>,
    next_allocated: AtomicU64,
    /// The most nodes held since the heap was last trimmed.
    peak: AtomicUsize,
}

impl Default for NodeTable {
    fn default() -> Self {
        NodeTable {
            nodes: RwLock::new(Nodes::default()),
            allocated: Mutex::new(HashMap::new()),
            next_allocated: AtomicU64::new(ALLOCATED_BASE),
            peak: AtomicUsize::new(0),
        }
    }
}

impl NodeTable {
    /// The node id of the object whose origin is inode `ino` on filesystem `fs_index`.
    pub fn id_for(&self, fs_index: u8, ino: u64) -> u64 {
        if let Some(id) = pack(fs_index, ino) {
            return id;
        }
        let mut alloc = self.allocated.lock().unwrap_or_else(|e| e.into_inner());
        *alloc
            .entry((fs_index, ino))
            .or_insert_with(|| self.next_allocated.fetch_add(1, Ordering::Relaxed))
    }

    /// How many nodes the table holds (the kernel's inodes of this mount, and the root).
    pub fn count(&self) -> usize {
        self.read().len()
    }

    /// An id no object has had in this mount (for one whose own id is held by another).
    pub fn fresh_id(&self) -> u64 {
        self.next_allocated.fetch_add(1, Ordering::Relaxed)
    }

    pub fn get(&self, id: u64) -> Option<Arc<Node>> {
        self.read().get(&id).cloned()
    }

    /// The node of `id` with one more lookup count (the caller's to drop), if it is in the
    /// table.
    pub fn hold(&self, id: u64) -> Option<Arc<Node>> {
        let nodes = self.read();
        let node = nodes.get(&id)?;
        node.lookups.fetch_add(1, Ordering::AcqRel);
        Some(node.clone())
    }

    /// Every node's (directory, name), for invalidating a whole directory.
    pub fn links(&self) -> Vec<(u64, crate::node::Name)> {
        let nodes: Vec<Arc<Node>> = self.read().values().cloned().collect();
        nodes
            .iter()
            .map(|n| {
                let l = n.link();
                (l.parent, l.name)
            })
            .collect()
    }

    /// Inserts the root with a count that never drops to 0.
    pub fn insert_root(&self, node: Node) {
        node.lookups.store(1 << 62, Ordering::Relaxed);
        self.write().insert(Arc::new(node));
    }

    /// Returns the node with `node`'s id, counting one kernel lookup: the one already in the
    /// table (dropping `node`) or `node` itself.
    pub fn intern(&self, node: Node) -> Arc<Node> {
        if let Some(existing) = self.read().get(&node.id) {
            existing.lookups.fetch_add(1, Ordering::Relaxed);
            existing.set_link(node.link());
            return existing.clone();
        }
        let mut nodes = self.write();
        let entry = nodes.get_or_insert_with(node.id, || Arc::new(node));
        entry.lookups.fetch_add(1, Ordering::Relaxed);
        let entry = entry.clone();
        self.peak.fetch_max(nodes.len(), Ordering::Relaxed);
        entry
    }

    /// Puts `node` in place of the node with its id, which names another object now (its inode
    /// number was reused), counting one more kernel lookup on top of the old node's: the
    /// kernel makes its old inode bad, and the FORGETs of both arrive for this id.
    pub fn replace(&self, node: Node) -> Arc<Node> {
        let mut nodes = self.write();
        let before = nodes
            .get(&node.id)
            .map_or(0, |old| old.lookups.load(Ordering::Acquire));
        node.lookups.store(before + 1, Ordering::Release);
        let node = Arc::new(node);
        nodes.insert(node.clone());
        node
    }

    /// After a node left the table with `len` left: trims the heap when the table shrank to
    /// a quarter of its high-water mark (of at least 4096 nodes).
    fn after_removal(&self, len: usize) {
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= 4096 && len <= peak / 4 {
            self.peak.store(len, Ordering::Relaxed);
            tracing::debug!(peak, len, "the kernel forgot most nodes: trimming the heap");
            // The map keeps its capacity: give the big table back too (a short write lock).
            self.write().shrink_to(len * 2);
            crate::sys::mem::trim_heap();
        }
    }

    /// Drops `n` kernel lookups of `id`; the node leaves the table at 0.
    pub fn forget(&self, id: u64, n: u64) {
        let now_zero = match self.read().get(&id) {
            // One atomic update, so racing forgets of one node can never wrap the count.
            Some(node) => {
                let before = node
                    .lookups
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                        Some(c.saturating_sub(n))
                    })
                    .unwrap_or(0);
                before <= n
            }
            None => false,
        };
        if now_zero {
            let mut nodes = self.write();
            if nodes
                .get(&id)
                .is_some_and(|node| node.lookups.load(Ordering::Acquire) == 0)
            {
                nodes.remove(id);
                let len = nodes.len();
                drop(nodes);
                self.after_removal(len);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Nodes> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Nodes> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuser::FileType;

    fn node(id: u64) -> Node {
        Node::new(id, FileType::RegularFile, Vec::new(), 1, c"f".into())
    }

    #[test]
    fn intern_counts_and_forget_removes() {
        let t = NodeTable::default();
        let a = t.intern(node(10));
        let b = t.intern(node(10));
        assert!(Arc::ptr_eq(&a, &b), "same id gives the same node");
        assert_eq!(a.lookups.load(Ordering::Relaxed), 2);
        t.forget(10, 1);
        assert!(t.get(10).is_some());
        t.forget(10, 1);
        assert!(t.get(10).is_none(), "gone when the count reaches 0");
        t.forget(10, 1); // forgetting an unknown id is harmless
    }

    #[test]
    fn over_forget_does_not_wrap() {
        let t = NodeTable::default();
        t.intern(node(11));
        t.forget(11, 5);
        assert!(t.get(11).is_none());
    }

    #[test]
    fn concurrent_forgets_and_lookups_balance() {
        let t = Arc::new(NodeTable::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        t.intern(node(12));
                        t.forget(12, 1);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert!(t.get(12).is_none(), "every lookup was forgotten");
        let n = t.intern(node(12));
        assert_eq!(n.lookups.load(Ordering::Relaxed), 1, "count did not wrap");
    }

    #[test]
    fn allocated_ids_are_stable_and_distinct() {
        let t = NodeTable::default();
        let a = t.id_for(0, 1);
        assert!(a >= ALLOCATED_BASE);
        assert_eq!(t.id_for(0, 1), a);
        assert_ne!(t.id_for(0, u64::MAX), a);
        assert_eq!(t.id_for(0, 77), 77);
    }
}
