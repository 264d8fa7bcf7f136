//! The only `unsafe` code in plyfs: raw system calls that `nix` does not wrap.
//!
//! Invariants: every function here is a thin, safe wrapper around one system call; each `unsafe`
//! block says why it is sound in a `// SAFETY:` comment. Nothing here holds a lock or knows about
//! overlay semantics.

pub mod backing;
pub mod chmod;
pub mod clone;
pub mod fanotify;
pub mod handle;
pub mod mem;
pub mod mount;
pub mod process;
pub mod sched;
pub mod stat;
pub mod uring;
pub mod utimes;
pub mod xattr;

/// The outcome of a call the kernel may lack (`r`, its return value, just made): `None`, and
/// `lacking` set so it is not tried again, when it failed with `errno`, the kernel's way of
/// saying so.
fn unless_lacking(
    r: libc::c_long,
    errno: i32,
    lacking: &std::sync::atomic::AtomicBool,
) -> Option<std::io::Result<()>> {
    if r == 0 {
        return Some(Ok(()));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(errno) {
        lacking.store(true, std::sync::atomic::Ordering::Relaxed);
        return None;
    }
    Some(Err(e))
}
