//! Node ids and generations: the identity the kernel (and an NFS client, through FUSE file
//! handles) holds for every object of the mount.
//!
//! Scheme: node id = the object's **origin** (the real object where it was first found: the
//! topmost lower for a merged directory, the real object itself otherwise) packed as
//! `fs_index << 56 | inode number`, so the same object gets the same id after a remount and no
//! two objects share one. Root is always id 1. An inode number that does not fit (or that would
//! be 0 or 1) gets an id from the allocated range (bit 63 set), handed out by the node table.
//!
//! Invariant: `pack` is a pure function of (filesystem index, inode number); ids it returns never
//! have bit 63 set, so they cannot collide with allocated ids.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::origin::Origin;
use crate::ovl::Ovl;

/// The (layer, inode number) an upper object was copied up from, read from its
/// `overlay.origin` and decoded on the lower layers (`None` when it has none, it no longer
/// decodes, or the lower inode has other links and this copy is not their indexed copy: such a
/// copy split from its links keeps its own inode number, as in the kernel).
pub fn upper_origin(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    upper_ino: u64,
) -> Option<(usize, u64)> {
    let value = crate::xattr::read_small(dir, name, &ovl.xattrs.origin).ok()??;
    let origin = Origin::decode(&value)
        .inspect_err(|e| tracing::debug!(?name, ?e, "overlay.origin does not decode"))
        .ok()?;
    for layer in ovl
        .layers
        .all
        .iter()
        .filter(|l| !ovl.layers.is_upper(l.index))
    {
        let Some(mount_fd) = &layer.handle_fd else {
            continue;
        };
        let fd = match origin.open(mount_fd.as_fd(), &ovl.uuids[layer.index], libc::O_PATH) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::debug!(?name, layer = layer.index, ?e, "origin not on this layer");
                continue;
            }
        };
        let st = nix::sys::stat::fstat(&fd).ok()?;
        if st.st_dev != layer.dev {
            continue;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        tracing::debug!(
            ?name,
            ino = st.st_ino,
            nlink = st.st_nlink,
            "origin decoded"
        );
        let whole = is_dir || st.st_nlink == 1 || crate::index::is_indexed(ovl, &origin, upper_ino);
        return whole.then_some((layer.index, st.st_ino));
    }
    None
}

/// The node id of the mount's root.
pub const ROOT_ID: u64 = 1;
const FS_SHIFT: u32 = 56;
/// First id of the allocated range.
pub const ALLOCATED_BASE: u64 = 1 << 63;

/// Packs a real object's filesystem index and inode number into a node id, or `None` when it
/// does not fit and an id must be allocated.
pub fn pack(fs_index: u8, ino: u64) -> Option<u64> {
    if fs_index >= 0x80 || ino >= 1 << FS_SHIFT {
        return None;
    }
    let id = (u64::from(fs_index) << FS_SHIFT) | ino;
    (id > ROOT_ID).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing() {
        assert_eq!(pack(0, 1234), Some(1234));
        assert_eq!(pack(1, 5), Some((1 << 56) | 5));
        assert_eq!(pack(0, 1), None, "would collide with the root");
        assert_eq!(pack(0, 0), None);
        assert_eq!(pack(0, 1 << 56), None, "too large");
        assert_eq!(pack(0x80, 7), None, "fs index would reach bit 63");
        assert!(pack(0x7f, (1 << 56) - 1).unwrap() < ALLOCATED_BASE);
    }
}
