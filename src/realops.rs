//! Every change plyfs makes to a real layer: one function per system call, each traced at debug
//! level with the layer-relative name. Request paths call these and nothing else to write.
//!
//! Invariants: every call names its object by a directory fd and one name (never a path), never
//! follows a symlink, and returns the errno unchanged. Whiteouts are char devices 0/0; where
//! mknod is refused (no CAP_MKNOD, rootless) they are zero-size files with `overlay.whiteout`, and
//! the caller marks the directory `overlay.opaque=x`.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::xattr::OvlXattrs;

type R<T> = nix::Result<T>;

pub fn mkdir(dir: BorrowedFd, name: &CStr, mode: u32) -> R<()> {
    tracing::debug!(?name, mode, "real mkdir");
    nix::sys::stat::mkdirat(dir, name, Mode::from_bits_truncate(mode))
}

/// Creates a regular file that must not exist, open for `flags` (an access mode).
pub fn create(dir: BorrowedFd, name: &CStr, flags: OFlag, mode: u32) -> R<OwnedFd> {
    tracing::debug!(?name, mode, "real create");
    nix::fcntl::openat(
        dir,
        name,
        flags | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )
}

pub fn mknod(dir: BorrowedFd, name: &CStr, mode: u32, rdev: u64) -> R<()> {
    tracing::debug!(?name, mode, rdev, "real mknod");
    nix::sys::stat::mknodat(
        dir,
        name,
        SFlag::from_bits_truncate(mode & libc::S_IFMT),
        Mode::from_bits_truncate(mode),
        rdev,
    )
}

pub fn symlink(target: &CStr, dir: BorrowedFd, name: &CStr) -> R<()> {
    tracing::debug!(?name, ?target, "real symlink");
    nix::unistd::symlinkat(target, dir, name)
}

pub fn link(odir: BorrowedFd, oname: &CStr, ndir: BorrowedFd, nname: &CStr) -> R<()> {
    tracing::debug!(?oname, ?nname, "real link");
    let flags = if oname.is_empty() {
        AtFlags::AT_EMPTY_PATH
    } else {
        AtFlags::empty()
    };
    nix::unistd::linkat(odir, oname, ndir, nname, flags)
}

/// Set once a link by `AT_EMPTY_PATH` was refused (no CAP_DAC_READ_SEARCH: rootless plyfs).
static NO_EMPTY_PATH_LINK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Gives `O_TMPFILE` file `fd` the name `name` in `dir`, which must not exist. By the fd itself
/// (`AT_EMPTY_PATH`, which needs CAP_DAC_READ_SEARCH), else through its /proc link.
pub fn link_tmpfile(fd: BorrowedFd, dir: BorrowedFd, name: &CStr) -> R<()> {
    use std::sync::atomic::Ordering;
    tracing::debug!(?name, "real link of a temp file");
    if !NO_EMPTY_PATH_LINK.load(Ordering::Relaxed) {
        // Without the capability the kernel answers ENOENT, as for a name that is not there.
        match nix::unistd::linkat(fd, c"", dir, name, AtFlags::AT_EMPTY_PATH) {
            Err(Errno::ENOENT) => NO_EMPTY_PATH_LINK.store(true, Ordering::Relaxed),
            r => return r,
        }
    }
    nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        crate::layer::proc_path(fd).as_str(),
        dir,
        name,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
}

pub fn unlink(dir: BorrowedFd, name: &CStr) -> R<()> {
    tracing::debug!(?name, "real unlink");
    nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
}

pub fn rmdir(dir: BorrowedFd, name: &CStr) -> R<()> {
    tracing::debug!(?name, "real rmdir");
    nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

pub fn rename(
    odir: BorrowedFd,
    oname: &CStr,
    ndir: BorrowedFd,
    nname: &CStr,
    flags: RenameFlags,
) -> R<()> {
    tracing::debug!(?oname, ?nname, ?flags, "real rename");
    nix::fcntl::renameat2(odir, oname, ndir, nname, flags)
}

/// Makes a whiteout `name` in `dir`. Returns true if it is the xattr form (the caller marks the
/// directory as holding xattr whiteouts).
pub fn whiteout(x: &OvlXattrs, dir: BorrowedFd, name: &CStr) -> R<bool> {
    tracing::debug!(?name, "real whiteout");
    match nix::sys::stat::mknodat(dir, name, SFlag::S_IFCHR, Mode::empty(), 0) {
        Ok(()) => Ok(false),
        Err(Errno::EPERM) => {
            drop(create(dir, name, OFlag::O_WRONLY, 0)?);
            set_xattr(dir, name, &x.whiteout, b"", 0).inspect_err(|_| {
                let _ = unlink(dir, name);
            })?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

pub fn set_xattr(dir: BorrowedFd, name: &CStr, attr: &CStr, value: &[u8], flags: i32) -> R<()> {
    tracing::debug!(?name, ?attr, "real setxattr");
    crate::sys::xattr::set(dir, name, attr, value, flags).map_err(io_to_nix)
}

pub fn remove_xattr(dir: BorrowedFd, name: &CStr, attr: &CStr) -> R<()> {
    tracing::debug!(?name, ?attr, "real removexattr");
    crate::sys::xattr::remove(dir, name, attr).map_err(io_to_nix)
}

pub fn chown(dir: BorrowedFd, name: &CStr, uid: Option<u32>, gid: Option<u32>) -> R<()> {
    tracing::debug!(?name, ?uid, ?gid, "real chown");
    let flags = if name.is_empty() {
        AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW
    } else {
        AtFlags::AT_SYMLINK_NOFOLLOW
    };
    nix::unistd::fchownat(
        dir,
        name,
        uid.map(Uid::from_raw),
        gid.map(Gid::from_raw),
        flags,
    )
}

/// chmod; a symlink's mode cannot be changed (and does not matter).
pub fn chmod(dir: BorrowedFd, name: &CStr, mode: u32) -> R<()> {
    tracing::debug!(?name, mode, "real chmod");
    if name.is_empty() {
        // The fd itself (`O_PATH` or not), else through /proc where the kernel lacks that.
        if let Some(r) = crate::sys::chmod::fchmod_fd(dir, mode) {
            return r.map_err(io_to_nix);
        }
        return nix::sys::stat::fchmodat(
            nix::fcntl::AT_FDCWD,
            crate::layer::proc_path(dir).as_str(),
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        );
    }
    if let Some(res) = crate::sys::chmod::fchmodat_nofollow(dir, name, mode) {
        return res.map_err(io_to_nix);
    }
    nix::sys::stat::fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
}

pub fn utimens(dir: BorrowedFd, name: &CStr, atime: &TimeSpec, mtime: &TimeSpec) -> R<()> {
    tracing::debug!(?name, "real utimens");
    if name.is_empty() {
        // The fd itself (`O_PATH` or not), else through /proc where the kernel refuses that.
        if let Some(r) = crate::sys::utimes::utimens_fd(dir, atime, mtime) {
            return r.map_err(io_to_nix);
        }
        return nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            crate::layer::proc_path(dir).as_str(),
            atime,
            mtime,
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        );
    }
    nix::sys::stat::utimensat(
        dir,
        name,
        atime,
        mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
}

/// Opens an existing non-directory for I/O (never follows a symlink); an empty name opens the
/// object an `O_PATH` fd names.
pub fn open(dir: BorrowedFd, name: &CStr, flags: OFlag) -> R<OwnedFd> {
    if name.is_empty() {
        return crate::layer::reopen(dir, flags);
    }
    nix::fcntl::openat(
        dir,
        name,
        (flags & !(OFlag::O_CREAT | OFlag::O_EXCL)) | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

fn io_to_nix(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
