//! Extended attributes of objects named by a directory fd and a name, without following symlinks.
//!
//! A (directory fd, name) pair uses `getxattrat`/`listxattrat` (Linux 6.13+), which read
//! symlinks, devices and fifos without opening them; older kernels go through
//! `/proc/self/fd/N/NAME` with `lgetxattr`/`llistxattr`. An empty name means the fd itself: the
//! fd calls refuse `O_PATH` fds, so a read looks up `.` from it (every empty-name read is of a
//! directory), and anything else goes through the /proc magic link `/proc/self/fd/N`, which lands
//! on the object itself (a symlink is not followed past it) but walks /proc on every call.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

// The new *xattrat syscalls have the same number on every architecture (after 424 they are
// allocated in the generic table).
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;

/// Set once the kernel answered ENOSYS to a *xattrat call: use the /proc fallback from then on.
static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

fn use_xattrat(name: &CStr) -> bool {
    !name.is_empty() && !NO_XATTRAT.load(Ordering::Relaxed)
}

/// The name a read by `*xattrat` uses for `dir`/`name`: an empty name (the fd itself) becomes
/// `.`, which names a directory fd itself, `O_PATH` or not; None when the /proc path must do.
fn read_name(name: &CStr) -> Option<&CStr> {
    if NO_XATTRAT.load(Ordering::Relaxed) {
        None
    } else if name.is_empty() {
        Some(c".")
    } else {
        Some(name)
    }
}

/// Whether a `*xattrat` read must be done again through /proc: the kernel has no such call, or
/// `.` was tried on an fd that is not a directory, or on one the daemon may not search (the
/// magic link needs no search permission).
fn read_again(r: &io::Result<usize>, name: &CStr) -> bool {
    let dot_refused =
        |e: &io::Error| matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EACCES));
    xattrat_missing(r) || (name.is_empty() && matches!(r, Err(e) if dot_refused(e)))
}

fn proc_path(dir: BorrowedFd, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{}", dir.as_raw_fd()).into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.to_bytes());
    }
    CString::new(p).expect("no NUL in a path built from a CStr")
}

fn result(r: libc::c_long) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn xattrat_missing(r: &io::Result<usize>) -> bool {
    if matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENOSYS)) {
        NO_XATTRAT.store(true, Ordering::Relaxed);
        return true;
    }
    false
}

/// Reads attribute `attr` of `dir`/`name` into `buf` (an empty `buf` asks for the size).
pub fn get(dir: BorrowedFd, name: &CStr, attr: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(at) = read_name(name) {
        let mut args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len() as u32,
            flags: 0,
        };
        // SAFETY: all pointers are valid for the call: `name` and `attr` are NUL-terminated,
        // `args` points to a live struct of the size passed, and its buffer is `buf`, valid for
        // writes of `buf.len()` bytes.
        let r = result(unsafe {
            libc::syscall(
                SYS_GETXATTRAT,
                dir.as_raw_fd(),
                at.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
                &mut args as *mut XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        });
        if !read_again(&r, name) {
            return r;
        }
    }
    let path = proc_path(dir, name);
    // SAFETY: `path` and `attr` are NUL-terminated; `buf` is valid for writes of its length.
    // Without a name, getxattr follows the /proc magic link to the object the fd names.
    result(unsafe {
        if name.is_empty() {
            libc::getxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        } else {
            libc::lgetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    } as libc::c_long)
}

/// Lists attribute names of `dir`/`name` into `buf` (an empty `buf` asks for the size).
pub fn list(dir: BorrowedFd, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(at) = read_name(name) {
        // SAFETY: `name` is NUL-terminated and `buf` is valid for writes of its length.
        let r = result(unsafe {
            libc::syscall(
                SYS_LISTXATTRAT,
                dir.as_raw_fd(),
                at.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                buf.as_mut_ptr(),
                buf.len(),
            )
        });
        if !read_again(&r, name) {
            return r;
        }
    }
    let path = proc_path(dir, name);
    // SAFETY: `path` is NUL-terminated; `buf` is valid for writes of its length.
    result(unsafe {
        if name.is_empty() {
            libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        } else {
            libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        }
    } as libc::c_long)
}

const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// Sets attribute `attr` of `dir`/`name` to `value` (`flags`: 0, XATTR_CREATE or XATTR_REPLACE).
pub fn set(dir: BorrowedFd, name: &CStr, attr: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    if use_xattrat(name) {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len() as u32,
            flags: flags as u32,
        };
        // SAFETY: `name` and `attr` are NUL-terminated, `args` is a live struct of the size
        // passed whose buffer `value` is valid for reads of its length.
        let r = result(unsafe {
            libc::syscall(
                SYS_SETXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
                &args as *const XattrArgs,
                std::mem::size_of::<XattrArgs>(),
            )
        });
        if !xattrat_missing(&r) {
            return r.map(drop);
        }
    }
    if name.is_empty() {
        // The fd itself: straight through it where it is open for I/O (a copy-up's unnamed
        // file); an `O_PATH` fd refuses (EBADF) and goes through /proc below.
        // SAFETY: `attr` is NUL-terminated; `value` is valid for reads of its length.
        let r = result(unsafe {
            libc::fsetxattr(
                dir.as_raw_fd(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } as libc::c_long);
        if !matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EBADF)) {
            return r.map(drop);
        }
    }
    let path = proc_path(dir, name);
    // SAFETY: `path` and `attr` are NUL-terminated; `value` is valid for reads of its length.
    result(unsafe {
        if name.is_empty() {
            libc::setxattr(
                path.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        } else {
            libc::lsetxattr(
                path.as_ptr(),
                attr.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    } as libc::c_long)
    .map(drop)
}

/// Removes attribute `attr` of `dir`/`name`.
pub fn remove(dir: BorrowedFd, name: &CStr, attr: &CStr) -> io::Result<()> {
    if use_xattrat(name) {
        // SAFETY: `name` and `attr` are NUL-terminated.
        let r = result(unsafe {
            libc::syscall(
                SYS_REMOVEXATTRAT,
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
                attr.as_ptr(),
            )
        });
        if !xattrat_missing(&r) {
            return r.map(drop);
        }
    }
    let path = proc_path(dir, name);
    // SAFETY: `path` and `attr` are NUL-terminated.
    result(unsafe {
        if name.is_empty() {
            libc::removexattr(path.as_ptr(), attr.as_ptr())
        } else {
            libc::lremovexattr(path.as_ptr(), attr.as_ptr())
        }
    } as libc::c_long)
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn open_path(p: &std::path::Path) -> std::os::fd::OwnedFd {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap()
    }

    /// An `O_PATH` fd read with an empty name: a directory through `.`, a file through /proc.
    #[test]
    fn empty_name_reads_the_fd_itself() {
        let tmp = std::env::temp_dir().join(format!("plyfs-xattr-{}", std::process::id()));
        std::fs::create_dir_all(tmp.join("d")).unwrap();
        std::fs::write(tmp.join("f"), b"").unwrap();
        for (obj, value) in [("d", b"dir".as_slice()), ("f", b"file".as_slice())] {
            if ::xattr::set(tmp.join(obj), "user.plyfs", value).is_err() {
                println!("SKIPPED: the temp filesystem has no user xattrs");
                let _ = std::fs::remove_dir_all(&tmp);
                return;
            }
        }
        for (obj, want) in [("d", b"dir".as_slice()), ("f", b"file".as_slice())] {
            let fd = open_path(&tmp.join(obj));
            let mut buf = [0u8; 16];
            let n = get(fd.as_fd(), c"", c"user.plyfs", &mut buf).unwrap();
            assert_eq!(&buf[..n], want, "{obj}");
            let mut names = [0u8; 64];
            let n = list(fd.as_fd(), c"", &mut names).unwrap();
            assert_eq!(&names[..n], b"user.plyfs\0", "{obj}");
        }
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
