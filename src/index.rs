//! The index (`W/index`, the kernel's `index=on` format): one entry per copied-up lower inode
//! that has several links, named by the hex of its `overlay.origin`, and hard-linked with the
//! upper copy. Every other lower link of that inode (an alias) then shows the upper copy, and is
//! linked up at its own name when it changes, so hard links stay hard links through copy-up.
//!
//! st_nlink of an indexed inode is the union's link count, kept as the kernel does in the
//! `overlay.nlink` xattr of the upper inode: `U±N` (the upper inode's count, which includes the
//! index entry, plus N) or `L±N` (relative to the lower inode's).
//!
//! Invariants: an index entry is only made from a complete copy (linked from the work dir after
//! the copy is built), so a crash leaves no entry or a whole one.

use fuser::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, FileStat};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::node::{Loc, Real};
use crate::origin::Origin;
use crate::ovl::{errno, OResult, Ovl};
use crate::{realops, xattr};

/// The index entry name of the lower object `dir`/`name` of `layer`.
pub fn entry_name(ovl: &Ovl, layer: usize, dir: BorrowedFd, name: &CStr) -> Option<CString> {
    let origin = Origin::for_object(dir, name, ovl.uuids[layer]).ok()?;
    CString::new(origin.index_name()).ok()
}

/// The index entry of lower object `dir`/`name` (of `layer`, with stat `st`), if it was copied
/// up through the index: a real object in the upper layer reached through the index.
pub fn lookup_alias(
    ovl: &Ovl,
    layer: usize,
    dir: BorrowedFd,
    name: &CStr,
    st: &FileStat,
) -> OResult<Option<(Real, FileStat)>> {
    let Some(index) = &ovl.index else {
        return Ok(None);
    };
    if st.st_nlink < 2 || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Ok(None);
    }
    let Some(iname) = entry_name(ovl, layer, dir, name) else {
        return Ok(None);
    };
    match fstatat(
        index.as_fd(),
        iname.as_c_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(ist) => Ok(Some((
            Real::new(0, Loc::At(index.clone(), iname.into()), ist.st_ino).alias(),
            ist,
        ))),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// Whether upper object `ino` is the indexed copy of `origin`.
pub fn is_indexed(ovl: &Ovl, origin: &Origin, ino: u64) -> bool {
    let (Some(index), Ok(iname)) = (&ovl.index, CString::new(origin.index_name())) else {
        return false;
    };
    fstatat(
        index.as_fd(),
        iname.as_c_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_ino == ino)
}

/// Records the union link count `union` of upper inode `dir`/`name` whose own count is `upper`.
pub fn set_nlink(ovl: &Ovl, dir: BorrowedFd, name: &CStr, upper: u64, union: i64) -> OResult<()> {
    let value = format!("U{:+}", union - upper as i64);
    realops::set_xattr(dir, name, &ovl.xattrs.nlink, value.as_bytes(), 0).map_err(errno)
}

/// The union link count of an upper non-directory with stat `st`: from `overlay.nlink` where it
/// has one (only relative to the upper count: an `L` value falls back to the upper count less
/// the index entry), else the real count.
pub fn union_nlink(ovl: &Ovl, dir: BorrowedFd, name: &CStr, st: &FileStat) -> u32 {
    if st.st_nlink < 2 || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return st.st_nlink as u32;
    }
    let Ok(Some(v)) = xattr::read_small(dir, name, &ovl.xattrs.nlink) else {
        return st.st_nlink as u32;
    };
    let parsed = std::str::from_utf8(&v[1..])
        .ok()
        .and_then(|n| n.parse::<i64>().ok());
    match (v.first(), parsed) {
        (Some(b'U'), Some(n)) => (st.st_nlink as i64 + n).max(1) as u32,
        _ => (st.st_nlink as u32).saturating_sub(1).max(1),
    }
}

/// Links the indexed copy behind `alias` in at `name` of upper directory `udir` (the alias
/// changes, so it gets its own upper name); the union count does not change.
pub fn link_up(ovl: &Ovl, alias: &Real, udir: &Arc<OwnedFd>, name: &CStr) -> OResult<Real> {
    let w = ovl.writable_work().ok_or(Errno::EROFS)?;
    let (idir, iname) = alias.at();
    let st = fstatat(idir, iname, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
    let union = union_nlink(ovl, idir, iname, &st) as i64;
    let tmp = w.temp_name();
    realops::link(idir, iname, w.dir(), &tmp).map_err(errno)?;
    if let Err(e) = realops::rename(
        w.dir(),
        &tmp,
        udir.as_fd(),
        name,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    ) {
        let _ = realops::unlink(w.dir(), &tmp);
        return Err(errno(e));
    }
    set_nlink(ovl, idir, iname, st.st_nlink + 1, union)?;
    Ok(Real::new(0, Loc::At(udir.clone(), name.into()), st.st_ino))
}

/// An alias that was never linked up went away (whiteout): the union count drops by one.
pub fn alias_removed(ovl: &Ovl, alias: &Real) -> OResult<()> {
    let (idir, iname) = alias.at();
    let st = fstatat(idir, iname, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
    let union = union_nlink(ovl, idir, iname, &st) as i64;
    set_nlink(ovl, idir, iname, st.st_nlink, union - 1)
}
