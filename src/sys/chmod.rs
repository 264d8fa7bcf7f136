//! `fchmodat2` (Linux 6.6): with `AT_SYMLINK_NOFOLLOW`, a chmod by directory fd and name that
//! never follows a symlink, in one system call (the C library here emulates the flag with an
//! `O_PATH` open, an fstat and a chmod through /proc, four calls); with `AT_EMPTY_PATH`, a chmod
//! of an fd itself, `O_PATH` or not (`fchmod` refuses an `O_PATH` fd). nix does not wrap it.
//!
//! Invariant: once the kernel says it lacks the call (ENOSYS), it is not tried again.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

static MISSING: AtomicBool = AtomicBool::new(false);

/// chmod of `name` in `dir` without following a symlink. `None` when the kernel lacks
/// `fchmodat2` (the caller falls back); a symlink gives EOPNOTSUPP.
pub fn fchmodat_nofollow(dir: BorrowedFd, name: &CStr, mode: u32) -> Option<io::Result<()>> {
    fchmodat2(dir, name, mode, libc::AT_SYMLINK_NOFOLLOW)
}

/// chmod of the object `fd` names. `None` when the kernel lacks `fchmodat2`.
pub fn fchmod_fd(fd: BorrowedFd, mode: u32) -> Option<io::Result<()>> {
    fchmodat2(fd, c"", mode, libc::AT_EMPTY_PATH)
}

fn fchmodat2(dir: BorrowedFd, name: &CStr, mode: u32, flags: i32) -> Option<io::Result<()>> {
    if MISSING.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: fchmodat2 reads the NUL-terminated `name`, alive for the call, and takes the
    // other arguments by value; `dir` is an open fd for the call's duration.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            flags,
        )
    };
    super::unless_lacking(r, libc::ENOSYS, &MISSING)
}
