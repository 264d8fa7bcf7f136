//! Whole-file clones (`FICLONE`): copy-up shares the lower file's extents where the filesystem
//! allows (btrfs, xfs with reflink, bcachefs), instead of copying data.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `_IOW(0x94, 9, int)`
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Makes `dst` share all of `src`'s data. Fails with EOPNOTSUPP/EXDEV/EINVAL where the
/// filesystem cannot.
pub fn ficlone(dst: BorrowedFd, src: BorrowedFd) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its integer argument; both fds are open for the
    // duration of the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
