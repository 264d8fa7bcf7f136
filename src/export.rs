//! Node ids and generations: the identity the kernel (and an NFS client, through FUSE file
//! handles) holds for every object of the mount.
//!
//! Scheme: node id = the object's **origin** (the real object where it was first found: the
//! topmost lower for a merged directory, the real object itself otherwise) packed as
//! `fs_index << 56 | inode number`, so the same object gets the same id after a remount and no
//! two objects share one. Root is always id 1. An inode number that does not fit (or that would
//! be 0 or 1) gets an id from the allocated range (bit 63 set), handed out by the node table;
//! those live in memory only, so their handles do not survive a restart.
//!
//! Generation: 0 for an id that names a lower object (lower layers do not reuse inode numbers
//! under a mount), else the upper object's `i_generation` as its real file handle carries it
//! (`generation_of`). With the id it makes the FUSE file handle; the kernel compares it after
//! `LOOKUP(id, ".")`, so the handle of a deleted upper object whose inode number was reused is
//! ESTALE. Why not `FS_IOC_GETVERSION`: it needs an open fd, and plyfs holds `O_PATH` fds.
//!
//! A copy's origin is found from its `overlay.origin` handle: opened by it as root; in a user
//! namespace, where handles cannot be opened, read from the handle bytes where the layer's
//! filesystem puts the inode number there (ext4, xfs, tmpfs), so ids survive copy-up there too.
//!
//! Finding an object from its id alone is `reconnect.rs`, from the record `record.rs` keeps;
//! `note_lookup` writes that record as ids are handed out.
//!
//! Invariant: `pack` is a pure function of (filesystem index, inode number); ids it returns never
//! have bit 63 set, so they cannot collide with allocated ids.

use fuser::FileType;
use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};

use crate::node::Real;
use crate::origin::Origin;
use crate::ovl::Ovl;
use crate::record::Entry;
use crate::sys::handle::{name_to_handle_at, FileHandle};

/// The (layer, inode number) an upper object was copied up from, read from its
/// `overlay.origin` (`None` when it has none, it no longer decodes, or the lower inode has other
/// links and this copy is not their indexed copy: such a copy split from its links keeps its own
/// inode number, as in the kernel). An origin of another file type than the upper object
/// (`kind`) is a damaged or hostile layer: it is ignored with a warning (the kernel says EIO
/// there), so the object keeps its own id. `upper_ino` is the upper object's inode number and
/// `parent_reals` the real directories of its overlay parent (where its lower object may still
/// be found by the same name).
///
/// As root the origin is opened by its handle (`open_by_handle_at`) and checked. Where that is
/// not allowed (a user namespace: it needs `CAP_DAC_READ_SEARCH` in the initial one) the inode
/// number is read from the handle bytes instead, on layers whose handles are known to carry it
/// (`ino_from_handle`; ext4, xfs, tmpfs), see `origin_from_handle_bytes`.
pub fn upper_origin(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    upper_ino: u64,
    kind: FileType,
    parent_reals: &[Real],
) -> Option<(usize, u64)> {
    let value = crate::xattr::read_small(dir, name, &ovl.xattrs.origin).ok()??;
    let origin = Origin::decode(&value)
        .inspect_err(|e| tracing::debug!(?name, ?e, "overlay.origin does not decode"))
        .ok()?;
    if !ovl.open_handles {
        return origin_from_handle_bytes(ovl, &origin, name, upper_ino, kind, parent_reals);
    }
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
        tracing::debug!(?name, ino = st.st_ino, "origin decoded");
        return checked_origin(ovl, &origin, name, upper_ino, kind, layer.index, &st);
    }
    None
}

/// The origin's (layer, inode number) once its lower object `st` was found on `layer`: `None`
/// for an origin of another file type than the upper object (ignored with a warning), or when
/// the copy is not whole (the kernel's rule: a directory, a lower inode with one link, or the
/// indexed copy).
fn checked_origin(
    ovl: &Ovl,
    origin: &Origin,
    name: &CStr,
    upper_ino: u64,
    kind: FileType,
    layer: usize,
    st: &nix::sys::stat::FileStat,
) -> Option<(usize, u64)> {
    if crate::inode::file_type(st.st_mode) != kind {
        tracing::warn!(
            ?name,
            ?kind,
            origin_mode = st.st_mode,
            "origin of another file type ignored"
        );
        return None;
    }
    let whole = kind == FileType::Directory
        || st.st_nlink == 1
        || crate::index::is_indexed(ovl, origin, upper_ino);
    tracing::debug!(
        ?name,
        ino = st.st_ino,
        nlink = st.st_nlink,
        whole,
        "origin checked"
    );
    whole.then_some((layer, st.st_ino))
}

/// `upper_origin` without opening the origin: its inode number comes from the handle bytes,
/// its layer from the uuid (among the lower layers whose handles carry inode numbers). Whether
/// the copy is whole (the kernel's rule: a directory, a lower inode with one link, or the
/// indexed copy) needs the lower inode's link count: it is read from the lower object found by
/// the same name in the parent's lower directories, where it still is (the common case: a copy
/// stays at its name). Where it is not (the copy was renamed, or this is another link of it):
/// whole if it is indexed, if plyfs already holds the lower inode's node on this very copy, or
/// if the index is on (plyfs copies every lower inode with other links through the index, so a
/// copy outside it had one link). Also `None` when the uuid names lower layers on several
/// filesystems and the name does not tell which, and (as `upper_origin`) when the object found
/// by name is of another file type than the upper one (`kind`); where nothing is found by name
/// the type cannot be checked.
fn origin_from_handle_bytes(
    ovl: &Ovl,
    origin: &Origin,
    name: &CStr,
    upper_ino: u64,
    kind: FileType,
    parent_reals: &[Real],
) -> Option<(usize, u64)> {
    let ino = ino_from_handle(origin.handle_type.into(), &origin.handle)?;
    let candidates: Vec<&crate::layer::Layer> = ovl
        .layers
        .all
        .iter()
        .filter(|l| !ovl.layers.is_upper(l.index))
        .filter(|l| ovl.ino_handles[l.index] && ovl.uuids[l.index] == origin.uuid)
        .collect();
    let first = candidates.first()?;
    let by_name = parent_reals.iter().find_map(|r| {
        let layer = candidates.iter().find(|l| l.index == r.layer())?;
        let st = nix::sys::stat::fstatat(
            r.dir_fd()?.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .ok()?;
        (st.st_ino == ino && st.st_dev == layer.dev).then_some((layer.index, st))
    });
    if let Some((layer, st)) = by_name {
        return checked_origin(ovl, origin, name, upper_ino, kind, layer, &st);
    }
    if candidates.iter().any(|l| l.fs_index != first.fs_index) {
        tracing::debug!(?name, ino, "origin's filesystem is ambiguous");
        return None;
    }
    let held_here = ovl.nodes.get(ovl.id_of(first.index, ino)).is_some_and(|n| {
        let reals = n.reals();
        ovl.layers.is_upper(reals[0].layer()) && !reals[0].alias && reals[0].ino == upper_ino
    });
    let whole = kind == FileType::Directory
        || held_here
        || ovl.index.is_some()
        || crate::index::is_indexed(ovl, origin, upper_ino);
    tracing::debug!(?name, ino, whole, "origin from its handle bytes");
    whole.then_some((first.index, ino))
}

/// The inode number in a real file handle, for the layouts known to hold one: the generic
/// `FILEID_INO32_GEN` (type 1, 8 bytes: inode, generation; ext4, xfs with 32-bit inodes),
/// tmpfs' (type 1, 12 bytes: generation, inode low, inode high) and xfs' 64-bit one (type 0x81,
/// 12 bytes: 64-bit inode, generation). Words are in the CPU's byte order, as the kernel wrote
/// them (`overlay.origin` of the other endianness does not decode). Whether a layer's
/// filesystem uses these layouts is checked once (`handles_carry_ino`).
pub fn ino_from_handle(handle_type: i32, bytes: &[u8]) -> Option<u64> {
    let word = |i: usize| -> Option<u64> {
        let b = bytes.get(i * 4..i * 4 + 4)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?).into())
    };
    match (handle_type, bytes.len()) {
        (FILEID_INO32_GEN, 8) => word(0),
        (FILEID_INO32_GEN, 12) => Some(word(1)? | word(2)? << 32),
        (FILEID_INO64_GEN_XFS, 12) => Some(u64::from_ne_bytes(bytes[..8].try_into().ok()?)),
        _ => None,
    }
}

/// Whether the handles of the filesystem of `root` (a layer root, inode number `ino`) carry
/// inode numbers as `ino_from_handle` reads them: checked on the root's own handle.
pub fn handles_carry_ino(root: BorrowedFd, ino: u64) -> bool {
    name_to_handle_at(root, c"", 0)
        .is_ok_and(|(h, _)| ino_from_handle(h.handle_type, &h.bytes) == Some(ino))
}

/// Whether `open_by_handle_at` is allowed (it needs `CAP_DAC_READ_SEARCH` in the initial user
/// namespace): tried on the root of the first lower layer that has file handles.
pub fn can_open_handles(layers: &crate::layer::Layers) -> bool {
    for fd in layers
        .all
        .iter()
        .filter(|l| !layers.is_upper(l.index))
        .filter_map(|l| l.handle_fd.as_ref())
    {
        let Ok((h, _)) = name_to_handle_at(fd.as_fd(), c"", 0) else {
            continue;
        };
        return match crate::sys::handle::open_by_handle_at(fd.as_fd(), &h, libc::O_PATH) {
            Err(e) => e.raw_os_error() != Some(libc::EPERM),
            Ok(_) => true,
        };
    }
    true
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

/// `FILEID_INO32_GEN`: the handle ext4 and xfs (32-bit inodes) give, inode then generation.
const FILEID_INO32_GEN: i32 = 1;
/// xfs' handle of a 64-bit inode number without its parent (`FILEID_INO32_GEN` with
/// `XFS_FILEID_TYPE_64FLAG`).
const FILEID_INO64_GEN_XFS: i32 = 0x81;

/// The generation of the object a real file handle names: its `i_generation` where the handle
/// is the common (inode, generation) pair, else a hash of the whole handle. Either way it
/// changes when the inode number is reused for another object, which is all the kernel asks
/// of it (it compares it with the generation in the FUSE handle), and it needs no open fd
/// (`FS_IOC_GETVERSION` does not work on the `O_PATH` fds plyfs holds).
pub fn generation_of(handle: &FileHandle) -> u32 {
    if handle.handle_type == FILEID_INO32_GEN && handle.bytes.len() == 8 {
        return u32::from_ne_bytes(handle.bytes[4..8].try_into().expect("4 bytes"));
    }
    // FNV-1a over the type and the bytes.
    let mut h: u32 = 0x811c_9dc5;
    for b in handle.handle_type.to_le_bytes().iter().chain(&handle.bytes) {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn handle_of(real: &Real) -> Option<FileHandle> {
    let (dir, name) = real.at();
    name_to_handle_at(dir, name, 0)
        .inspect_err(|e| tracing::debug!(%e, "no file handle"))
        .ok()
        .map(|(h, _)| h)
}

/// The generation of the object that `reals` make, whose id is `id`: only an id that names an
/// upper object gets one (that of its real handle): inode numbers are reused only in the upper
/// layer, as lower layers do not change under a mount, so an id that names a lower object (a
/// lower or copied-up object) has generation 0, which saves a system call per lookup. Also the
/// handle, when it was taken. Computed with export off too: the kernel tells a reused node id
/// from the old object by it (and drops the old inode's cached data).
pub fn generation(ovl: &Ovl, id: u64, reals: &[Real]) -> (u32, Option<FileHandle>) {
    let names_top =
        ovl.layers.is_upper(reals[0].layer()) && ovl.id_of(reals[0].layer(), reals[0].ino) == id;
    if !names_top {
        return (0, None);
    }
    let h = handle_of(&reals[0]);
    (h.as_ref().map(generation_of).unwrap_or(0), h)
}

/// For a node about to be handed out for the first time (or anew for a reused id): writes what
/// the export record needs to find it again. `top` is the topmost real's handle if it was
/// taken already. Without export it does nothing.
pub fn note_lookup(
    ovl: &Ovl,
    id: u64,
    kind: FileType,
    reals: &[Real],
    parent: u64,
    nlink: u64,
    top: Option<FileHandle>,
) {
    let Some(record) = &ovl.record else {
        return;
    };
    if kind == FileType::Directory {
        note_dir(ovl, id, &reals[0], top);
    } else {
        record.found_in(id, parent, nlink);
    }
}

/// Records that directory `id` is placed by real directory `top` (its topmost real object).
pub fn note_dir(ovl: &Ovl, id: u64, top: &Real, handle: Option<FileHandle>) {
    let (Some(record), Some(handle)) = (&ovl.record, handle.or_else(|| handle_of(top))) else {
        return;
    };
    let fs = ovl.layers.get(top.layer()).fs_index;
    record.put(id, &Entry::Dir { fs, handle });
}

/// After directory `reals[1..]` was copied up to `reals[0]`: the record of every lower
/// directory it merges now points at the upper one, so a lower directory below it (found
/// through it, maybe after it was renamed) is placed by walking the upper layer.
pub fn note_dir_copied_up(ovl: &Ovl, reals: &[Real]) {
    if ovl.record.is_none() {
        return;
    }
    let Some(handle) = handle_of(&reals[0]) else {
        return;
    };
    for lower in &reals[1..] {
        note_dir(
            ovl,
            ovl.id_of(lower.layer(), lower.ino),
            &reals[0],
            Some(handle.clone()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations() {
        let ext4 = FileHandle {
            handle_type: 1,
            bytes: [12u32.to_ne_bytes(), 99u32.to_ne_bytes()].concat(),
        };
        assert_eq!(generation_of(&ext4), 99, "the real i_generation");
        let other = FileHandle {
            handle_type: 0x4d,
            bytes: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        };
        let mut reused = other.clone();
        reused.bytes[0] = 2;
        assert_ne!(generation_of(&other), generation_of(&reused));
        assert_eq!(generation_of(&other), generation_of(&other.clone()));
    }

    #[test]
    fn inode_numbers_in_handles() {
        let words = |w: &[u32]| w.iter().flat_map(|x| x.to_ne_bytes()).collect::<Vec<u8>>();
        assert_eq!(
            ino_from_handle(1, &words(&[1097741, 0xce68_95d0])),
            Some(1097741)
        );
        assert_eq!(
            ino_from_handle(1, &words(&[0x162c_7b54, 3, 1])),
            Some((1 << 32) | 3),
            "tmpfs: generation, then the inode number in two words"
        );
        let xfs = [
            (1u64 << 40 | 7).to_ne_bytes().to_vec(),
            9u32.to_ne_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(ino_from_handle(0x81, &xfs), Some(1 << 40 | 7));
        assert_eq!(
            ino_from_handle(0x4d, &words(&[1, 2, 3, 4, 5])),
            None,
            "btrfs"
        );
        assert_eq!(ino_from_handle(1, &words(&[5])), None, "too short");
        assert_eq!(
            ino_from_handle(2, &words(&[5, 6, 7, 8])),
            None,
            "with a parent"
        );
    }

    #[test]
    fn the_layer_filesystem_is_checked() {
        let dir = std::env::temp_dir();
        let f = std::fs::File::open(&dir).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&f.metadata().unwrap());
        let fs_type = nix::sys::statfs::fstatfs(&f).unwrap().filesystem_type();
        if fs_type == nix::sys::statfs::EXT4_SUPER_MAGIC {
            assert!(handles_carry_ino(f.as_fd(), ino));
        }
        assert!(
            !handles_carry_ino(f.as_fd(), ino + 1),
            "another inode number"
        );
    }

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
