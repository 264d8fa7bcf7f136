//! Process plumbing for daemonizing: fork and detaching the standard streams.
//!
//! Invariant: `fork` is only called while the process has a single thread (before the FUSE
//! session or any other thread is started); `main.rs` is the only caller.

use std::io;
use std::os::fd::AsRawFd;

/// Forks; `Ok(None)` in the child, `Ok(Some(pid))` in the parent.
pub fn fork() -> io::Result<Option<libc::pid_t>> {
    // SAFETY: the caller guarantees the process is single-threaded, so the child cannot inherit
    // a lock held by another thread; the child goes on running ordinary Rust code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid)),
    }
}

/// Points stdin, stdout and stderr at /dev/null, so a caller waiting for the pipes to close
/// (containers-storage waits on stderr) is released.
pub fn detach_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors; `null` is a valid open fd. Rust's std
        // handles for 0..=2 stay valid (they now name /dev/null).
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
