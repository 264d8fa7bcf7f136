//! Owner mapping, as fuse-overlayfs does it: `uidmapping=`/`gidmapping=` and `squash_to_*`.
//!
//! The layers store ids as the container sees them (`inner`); with a mapping, plyfs shows each
//! as the host id it maps to (`outer`, which a user namespace maps back to the container's), and
//! stores the id of a new owner (a chown, a new file) back as the inner id. An id outside every
//! range shows (and is stored) as the overflow id 65534, as fuse-overlayfs does. Squashing shows
//! every object as owned by one uid or gid (it wins over a mapping) and changes nothing stored.
//!
//! Invariant: without options every function here is the identity, so a mount without them
//! costs nothing but a branch.

use fuser::FileAttr;

use crate::config::{Config, IdRange};

/// The id shown for one that no range maps (the kernel's default overflow id).
pub const OVERFLOW_ID: u32 = 65534;

#[derive(Default)]
pub struct IdMap {
    uids: Vec<IdRange>,
    gids: Vec<IdRange>,
    squash_uid: Option<u32>,
    squash_gid: Option<u32>,
}

fn to_outer(ranges: &[IdRange], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.inner && id - r.inner < r.count)
        .and_then(|r| r.outer.checked_add(id - r.inner))
        .unwrap_or(OVERFLOW_ID)
}

fn to_inner(ranges: &[IdRange], id: u32) -> u32 {
    if ranges.is_empty() {
        return id;
    }
    ranges
        .iter()
        .find(|r| id >= r.outer && id - r.outer < r.count)
        .and_then(|r| r.inner.checked_add(id - r.outer))
        .unwrap_or(OVERFLOW_ID)
}

impl IdMap {
    pub fn new(cfg: &Config) -> IdMap {
        IdMap {
            uids: cfg.uid_map.clone(),
            gids: cfg.gid_map.clone(),
            squash_uid: cfg.squash_uid,
            squash_gid: cfg.squash_gid,
        }
    }

    /// Without the id mapping: containers-storage passes `uidmapping=` also when it mounted
    /// the lower layers idmapped already (podman run --uidmap as root); mapping again would show
    /// every file as 65534 (fuse-overlayfs 1.10 breaks that way).
    pub fn without_mapping(self) -> IdMap {
        IdMap {
            uids: Vec::new(),
            gids: Vec::new(),
            ..self
        }
    }

    pub fn maps_ids(&self) -> bool {
        !self.uids.is_empty() || !self.gids.is_empty()
    }

    /// Rewrites the owner of attributes read from a layer into the one the mount shows.
    pub fn present(&self, attr: &mut FileAttr) {
        attr.uid = self
            .squash_uid
            .unwrap_or_else(|| to_outer(&self.uids, attr.uid));
        attr.gid = self
            .squash_gid
            .unwrap_or_else(|| to_outer(&self.gids, attr.gid));
    }

    /// The uid to store for a uid the kernel sent (a caller's, or a chown's).
    pub fn store_uid(&self, uid: u32) -> u32 {
        to_inner(&self.uids, uid)
    }

    /// The gid to store for a gid the kernel sent.
    pub fn store_gid(&self, gid: u32) -> u32 {
        to_inner(&self.gids, gid)
    }

    /// The gid shown for a gid read from a layer (to compare a caller's groups with it).
    pub fn shown_gid(&self, gid: u32) -> u32 {
        self.squash_gid.unwrap_or_else(|| to_outer(&self.gids, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_args, Action};

    fn map(opts: &str) -> IdMap {
        let args: Vec<std::ffi::OsString> =
            ["plyfs", "-o", opts, "/m"].iter().map(Into::into).collect();
        match parse_args(&args).unwrap() {
            Action::Mount(cfg) => IdMap::new(&cfg),
            _ => unreachable!(),
        }
    }

    fn attr(uid: u32, gid: u32) -> FileAttr {
        FileAttr {
            ino: fuser::INodeNo(2),
            size: 0,
            blocks: 0,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            crtime: std::time::UNIX_EPOCH,
            kind: fuser::FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid,
            gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn containers_storage_mappings() {
        // container 0 -> host 1001 (1 id), container 1.. -> host 100000.. (65536 ids)
        let m = map(
            "lowerdir=/a,uidmapping=:0:1001:1:1:100000:65536,gidmapping=0:1001:1:1:100000:65536",
        );
        let mut a = attr(0, 1);
        m.present(&mut a);
        assert_eq!((a.uid, a.gid), (1001, 100000));
        let mut a = attr(70000, 65536);
        m.present(&mut a);
        assert_eq!(
            (a.uid, a.gid),
            (OVERFLOW_ID, 165535),
            "outside every range: overflow"
        );
        assert_eq!(m.store_uid(1001), 0);
        assert_eq!(m.store_uid(100041), 42);
        assert_eq!(m.store_gid(5), OVERFLOW_ID);
        for id in [0, 1, 500, 65536] {
            let mut a = attr(id, id);
            m.present(&mut a);
            assert_eq!(m.store_uid(a.uid), id, "round trip of {id}");
        }
    }

    #[test]
    fn squash_wins_and_no_options_is_identity() {
        let m = map("lowerdir=/a,squash_to_root,uidmapping=0:1000:10");
        let mut a = attr(5, 7);
        m.present(&mut a);
        assert_eq!((a.uid, a.gid), (0, 0));
        let m = map("lowerdir=/a,squash_to_uid=33,squash_to_gid=44");
        let mut a = attr(5, 7);
        m.present(&mut a);
        assert_eq!((a.uid, a.gid), (33, 44));
        assert_eq!(m.store_uid(5), 5, "squashing changes nothing stored");
        let m = map("lowerdir=/a");
        let mut a = attr(123, 456);
        m.present(&mut a);
        assert_eq!(
            (a.uid, a.gid, m.store_uid(9), m.store_gid(9)),
            (123, 456, 9, 9)
        );
    }
}
