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
