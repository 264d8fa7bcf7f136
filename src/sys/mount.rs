//! Detached mount clones (`open_tree` and `mount_setattr`, which nix does not wrap): a private
//! view of a directory's mount with its own atime rule, as the kernel's overlay clones its upper
//! layer's mount.
//!
//! Invariant: the clone is detached (never attached to any mount point) and lives as long as an
//! fd refers into it; it changes nothing for other users of the filesystem.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A detached clone of the mount at directory `path` (rooted there), with strict atime: every
/// read of a file through it updates the file's atime.
pub fn clone_with_strictatime(path: &Path) -> io::Result<OwnedFd> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: open_tree reads a NUL-terminated path that outlives the call; on success it
    // returns a new fd that nothing else owns, which OwnedFd takes over.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            cpath.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid fd owned by no one else (see above).
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_STRICTATIME,
        attr_clr: libc::MOUNT_ATTR__ATIME,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `attr` (its size passed with it) and an empty path string,
    // both alive for the call; it changes only the detached clone `fd` names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
