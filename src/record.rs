//! The export record: what plyfs needs to find an object again from nothing but its node id,
//! after the kernel forgot it and after a restart (`LOOKUP(id, ".")`, see `reconnect.rs`).
//!
//! Layout: one file per filesystem under the layers, `W/plyfs-export/fs<N>`, holding a 64-byte
//! slot per inode number of that filesystem at offset `ino * 64` (a sparse file: untouched
//! slots cost no disk). A node id packs (filesystem, inode number) (`export.rs`), so its slot is
//! found without any index. A slot says, for a directory, which real directory places it in the
//! merged tree now (a real file handle of its topmost real directory: the upper one once it was
//! copied up), and for a non-directory, the last two directories it was found in (its name there
//! is found again by listing them and matching `d_ino`, as the kernel does for directories).
//!
//! Invariants: a slot is written with one `pwrite` (64 bytes, inside one page) before the id it
//! describes is handed to the kernel, and before a rename moves the object, so a `kill -9` at
//! any moment leaves every handed-out id resolvable (the data is in the page cache; `sync` makes
//! it durable against a power loss, which fsync requests do; unmount does not wait for it: an
//! fdatasync on a busy ext4 waits for everyone's dirty data, and held the daemon's exit for
//! more than 10 s on a loaded machine). A slot is only a
//! hint: whatever it leads to is checked against the id (`reconnect.rs`), so a stale or torn
//! slot gives ESTALE, never another object. Without a work dir (a read-only mount) the record
//! lives in a memfd: ids survive the kernel forgetting them, not a restart. No lock: positional
//! reads and writes of whole slots. A listing with attributes holds its slot writes back in a
//! batch (`Record::batch`, per thread) and writes each run of adjacent slots with one `pwrite`
//! before its reply goes out; a read of the record on that thread sees the held slots.

use anyhow::{Context, Result};
use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::sys::handle::FileHandle;

const SLOT: u64 = 64;
const MAGIC: &[u8; 4] = b"PLY1";
const KIND_DIR: u8 = 1;
const KIND_OTHER: u8 = 2;
/// The longest real handle a slot holds (ext4 and xfs use 8 or 12 bytes, btrfs 20, tmpfs 12).
pub const MAX_HANDLE: usize = 32;
const FS_SHIFT: u32 = 56;

/// What the record knows of one node id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory: the real directory that places it, on filesystem `fs`.
    Dir { fs: u8, handle: FileHandle },
    /// A non-directory: the directories it was last found in, newest first (0 = none).
    Other { parents: [u64; 2] },
}

impl Entry {
    fn encode(&self) -> Option<[u8; SLOT as usize]> {
        let mut s = [0u8; SLOT as usize];
        s[..4].copy_from_slice(MAGIC);
        match self {
            Entry::Dir { fs, handle } => {
                if handle.bytes.len() > MAX_HANDLE {
                    return None;
                }
                s[4] = KIND_DIR;
                s[5] = *fs;
                s[6] = handle.bytes.len() as u8;
                s[8..12].copy_from_slice(&handle.handle_type.to_le_bytes());
                s[32..32 + handle.bytes.len()].copy_from_slice(&handle.bytes);
            }
            Entry::Other { parents } => {
                s[4] = KIND_OTHER;
                s[16..24].copy_from_slice(&parents[0].to_le_bytes());
                s[24..32].copy_from_slice(&parents[1].to_le_bytes());
            }
        }
        Some(s)
    }

    /// Decodes a slot read from the record (any bytes: a torn or scribbled slot is `None`).
    pub fn decode_slot(bytes: &[u8]) -> Option<Entry> {
        Entry::decode(bytes.try_into().ok()?)
    }

    fn decode(s: &[u8; SLOT as usize]) -> Option<Entry> {
        if &s[..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
        match s[4] {
            KIND_DIR => {
                let len = usize::from(s[6]);
                if len > MAX_HANDLE {
                    return None;
                }
                Some(Entry::Dir {
                    fs: s[5],
                    handle: FileHandle {
                        handle_type: i32::from_le_bytes(s[8..12].try_into().expect("4 bytes")),
                        bytes: s[32..32 + len].to_vec(),
                    },
                })
            }
            KIND_OTHER => Some(Entry::Other {
                parents: [u64_at(16), u64_at(24)],
            }),
            _ => None,
        }
    }
}

pub struct Record {
    /// One slot file per filesystem index.
    files: Vec<File>,
}

/// The most a batch holds back before it writes (4096 slots).
const BATCH_BYTES: usize = 256 << 10;

/// Slot writes held back by this thread's batch: one run of adjacent slots in one file.
struct Held {
    /// The record they belong to (its address: one record per mount).
    record: usize,
    file: usize,
    at: u64,
    bytes: Vec<u8>,
}

thread_local! {
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Holds this thread's slot writes back until it is dropped (`Record::batch`).
pub struct Batch<'a> {
    record: Option<&'a Record>,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if let Some(record) = self.record {
            if let Some(held) = HELD.with(|h| h.borrow_mut().take()) {
                held.write(record);
            }
        }
    }
}

impl Held {
    fn write(&self, record: &Record) {
        if self.bytes.is_empty() {
            return;
        }
        if let Err(e) = record.files[self.file].write_all_at(&self.bytes, self.at) {
            tracing::warn!(%e, "cannot write the export record: some ids will not decode");
        }
    }

    fn end(&self) -> u64 {
        self.at + self.bytes.len() as u64
    }

    /// Where in `bytes` the slot at `at` of file `file` of record `record` is, if held.
    fn slot(&self, record: usize, file: usize, at: u64) -> Option<std::ops::Range<usize>> {
        if self.record != record || self.file != file || at < self.at || at >= self.end() {
            return None;
        }
        let from = (at - self.at) as usize;
        Some(from..from + SLOT as usize)
    }
}

impl Record {
    /// Opens (making them if needed) the slot files of `fs_count` filesystems under
    /// `workdir/plyfs-export`, or memfds when there is no work dir.
    pub fn open(workdir: Option<&Path>, fs_count: usize) -> Result<Record> {
        let mut files = Vec::with_capacity(fs_count);
        match workdir {
            Some(w) => {
                let dir = w.join("plyfs-export");
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot make '{}'", dir.display()))
                    }
                }
                for fs in 0..fs_count {
                    let path = dir.join(format!("fs{fs}"));
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .with_context(|| format!("cannot open '{}'", path.display()))?;
                    files.push(f);
                }
            }
            None => {
                for fs in 0..fs_count {
                    let fd = nix::sys::memfd::memfd_create(
                        format!("plyfs-export-fs{fs}").as_str(),
                        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                    )
                    .context("cannot make the in-memory export record")?;
                    files.push(File::from(fd));
                }
            }
        }
        Ok(Record { files })
    }

    /// The slot file (its index) and offset of `id`, `None` for ids that are not packed (the
    /// root, the allocated range) or whose slot lies past what the file can hold.
    fn place(&self, id: u64) -> Option<(usize, u64)> {
        let fs = usize::try_from(id >> FS_SHIFT).ok()?;
        let ino = id & ((1 << FS_SHIFT) - 1);
        self.files.get(fs)?;
        Some((fs, ino.checked_mul(SLOT)?))
    }

    fn key(&self) -> usize {
        self as *const Record as usize
    }

    pub fn get(&self, id: u64) -> Option<Entry> {
        let (file, at) = self.place(id)?;
        let mut s = [0u8; SLOT as usize];
        let held = HELD.with(|h| {
            let h = h.borrow();
            let held = h.as_ref()?;
            s.copy_from_slice(&held.bytes[held.slot(self.key(), file, at)?]);
            Some(())
        });
        if held.is_none() {
            self.files[file].read_exact_at(&mut s, at).ok()?;
        }
        Entry::decode(&s)
    }

    /// Holds this thread's slot writes back until the batch is dropped, which writes them;
    /// a batch inside another does nothing. Drop it before the ids go out.
    pub fn batch(&self) -> Batch<'_> {
        let started = HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.is_some() {
                return false;
            }
            *h = Some(Held {
                record: self.key(),
                file: 0,
                at: 0,
                bytes: Vec::new(),
            });
            true
        });
        Batch {
            record: started.then_some(self),
        }
    }

    /// Writes `entry` for `id` (one `pwrite`, whatever the slot held), or holds it back in
    /// this thread's batch.
    pub fn put(&self, id: u64, entry: &Entry) {
        let Some((file, at)) = self.place(id) else {
            return;
        };
        let Some(s) = entry.encode() else {
            tracing::warn!(id, "real file handle too long for the export record");
            return;
        };
        let held = HELD.with(|h| {
            let mut h = h.borrow_mut();
            let held = h.as_mut().filter(|held| held.record == self.key())?;
            if let Some(slot) = held.slot(self.key(), file, at) {
                held.bytes[slot].copy_from_slice(&s);
                return Some(());
            }
            if held.bytes.is_empty()
                || held.file != file
                || held.end() != at
                || held.bytes.len() >= BATCH_BYTES
            {
                held.write(self);
                (held.file, held.at) = (file, at);
                held.bytes.clear();
            }
            held.bytes.extend_from_slice(&s);
            Some(())
        });
        if held.is_none() {
            if let Err(e) = self.files[file].write_all_at(&s, at) {
                tracing::warn!(id, %e, "cannot write the export record: this id will not decode");
            }
        }
    }

    /// Notes that non-directory `id` was found in directory `parent`. With one link, that is
    /// its only directory (one blind write: the common case costs one system call); with
    /// more, `parent` becomes the newest of the two kept.
    pub fn found_in(&self, id: u64, parent: u64, nlink: u64) {
        let parents = if nlink <= 1 {
            [parent, 0]
        } else {
            match self.get(id) {
                Some(Entry::Other { parents }) if parents[0] == parent => return,
                Some(Entry::Other { parents }) => [parent, parents[0]],
                _ => [parent, 0],
            }
        };
        self.put(id, &Entry::Other { parents });
    }

    /// Before non-directory `id` moves from `from` to `to`: both stay hints until the next
    /// lookup, so a crash in the middle of the rename leaves it findable.
    pub fn moving(&self, id: u64, from: u64, to: u64) {
        self.put(
            id,
            &Entry::Other {
                parents: [to, from],
            },
        );
    }

    /// Makes the record durable.
    pub fn sync(&self) {
        for f in &self.files {
            let _ = f.sync_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_persist() {
        let dir = std::env::temp_dir().join(format!("plyfs-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let handle = FileHandle {
            handle_type: 1,
            bytes: vec![1, 2, 3, 4, 5, 6, 7, 8],
        };
        let dir_id = (1 << FS_SHIFT) | 4242;
        {
            let r = Record::open(Some(&dir), 2).unwrap();
            assert_eq!(r.get(dir_id), None, "never written");
            r.put(
                dir_id,
                &Entry::Dir {
                    fs: 0,
                    handle: handle.clone(),
                },
            );
            r.found_in(77, 12, 2);
            r.found_in(77, 12, 2);
            assert_eq!(r.get(77), Some(Entry::Other { parents: [12, 0] }));
            r.found_in(77, 13, 2);
            assert_eq!(r.get(77), Some(Entry::Other { parents: [13, 12] }));
            r.found_in(77, 13, 1);
            assert_eq!(
                r.get(77),
                Some(Entry::Other { parents: [13, 0] }),
                "one link"
            );
            r.found_in(77, 12, 2);
            r.moving(77, 13, 14);
            assert_eq!(r.get(77), Some(Entry::Other { parents: [14, 13] }));
        }
        let r = Record::open(Some(&dir), 2).unwrap();
        assert_eq!(r.get(dir_id), Some(Entry::Dir { fs: 0, handle }));
        assert_eq!(r.get(77), Some(Entry::Other { parents: [14, 13] }));
        assert_eq!(r.get(78), None, "a neighbour slot stays empty");
        assert_eq!(r.get(5 << FS_SHIFT | 1), None, "unknown filesystem");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_batch_writes_when_dropped_and_reads_what_it_holds() {
        let dir = std::env::temp_dir().join(format!("plyfs-record-b-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = Record::open(Some(&dir), 1).unwrap();
        let on_disk = |id: u64| Record::open(Some(&dir), 1).unwrap().get(id);
        r.found_in(5, 1, 1);
        {
            let _batch = r.batch();
            let _inner = r.batch();
            for id in 100..200 {
                r.found_in(id, 7, 1);
            }
            r.found_in(150, 8, 2);
            assert_eq!(r.get(150), Some(Entry::Other { parents: [8, 7] }));
            assert_eq!(on_disk(150), None, "held back");
            // A slot away from the run held writes the run and starts another.
            r.found_in(5, 9, 1);
            assert_eq!(on_disk(150), Some(Entry::Other { parents: [8, 7] }));
            assert_eq!(r.get(5), Some(Entry::Other { parents: [9, 0] }));
            assert_eq!(on_disk(5), Some(Entry::Other { parents: [1, 0] }));
        }
        assert_eq!(on_disk(5), Some(Entry::Other { parents: [9, 0] }));
        assert_eq!(on_disk(100), Some(Entry::Other { parents: [7, 0] }));
        assert_eq!(on_disk(150), Some(Entry::Other { parents: [8, 7] }));
        assert_eq!(on_disk(199), Some(Entry::Other { parents: [7, 0] }));
        assert_eq!(on_disk(200), None);
        r.found_in(300, 3, 1);
        assert_eq!(
            on_disk(300),
            Some(Entry::Other { parents: [3, 0] }),
            "no batch"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_slots_are_ignored() {
        let r = Record::open(None, 1).unwrap();
        r.files[0].write_all_at(&[0xff; 64], 9 * SLOT).unwrap();
        assert_eq!(r.get(9), None);
        let long = FileHandle {
            handle_type: 1,
            bytes: vec![0; MAX_HANDLE + 1],
        };
        r.put(
            10,
            &Entry::Dir {
                fs: 0,
                handle: long,
            },
        );
        assert_eq!(
            r.get(10),
            None,
            "a handle that does not fit is not recorded"
        );
    }
}
