//! `utimensat` of an fd itself (`AT_EMPTY_PATH`), which nix does not offer: it reaches an
//! `O_PATH` fd too, where `futimens` refuses (EBADF) and the way round is the fd's /proc link.
//!
//! Invariant: once the kernel refuses the flag (EINVAL), it is not tried again.

use nix::sys::time::TimeSpec;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

static REFUSED: AtomicBool = AtomicBool::new(false);

/// Sets the access and modification times of the object `fd` names (a symlink's own, for an
/// `O_PATH` fd of one). `None` where the kernel takes no `AT_EMPTY_PATH` here (the caller falls
/// back).
pub fn utimens_fd(fd: BorrowedFd, atime: &TimeSpec, mtime: &TimeSpec) -> Option<io::Result<()>> {
    if REFUSED.load(Ordering::Relaxed) {
        return None;
    }
    let times = [*atime.as_ref(), *mtime.as_ref()];
    // SAFETY: utimensat reads the NUL-terminated empty name and the two timespecs of `times`,
    // both alive for the call; `fd` is an open fd for the call's duration.
    let r = unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    super::unless_lacking(r as libc::c_long, libc::EINVAL, &REFUSED)
}
