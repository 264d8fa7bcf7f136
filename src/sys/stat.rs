//! An empty `struct stat`, for code that rebuilds one from fields it kept.

use nix::sys::stat::FileStat;

/// A `struct stat` with every field 0 (it has private padding fields, so it cannot be written
/// as a literal outside libc).
pub fn zeroed() -> FileStat {
    // SAFETY: `struct stat` is plain old data (integers only); all zero bits is a valid value.
    unsafe { std::mem::zeroed() }
}
