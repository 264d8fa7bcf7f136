//! The private xattr names of the overlay formats plyfs reads and writes, in their namespaces;
//! reading them from real objects, and hiding them from users of the mount.
//!
//! Invariants (as the kernel's overlay): only the namespace the mount uses is private
//! (`trusted.overlay.` by default, `user.overlay.` with `userxattr`); a real `NS.overlay.overlay.X`
//! is shown to users as `NS.overlay.X` and a user's `NS.overlay.X` is stored as that escaped name,
//! so a private marker can be neither seen nor set. fuse-overlayfs' own names
//! (`user.fuseoverlayfs.*`) and the owner overrides (`override_stat.rs`) are never shown.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

/// The private xattr names of one mount (namespace chosen by `userxattr`).
pub struct OvlXattrs {
    /// `trusted.overlay.` or `user.overlay.`.
    pub prefix: &'static [u8],
    pub opaque: CString,
    pub whiteout: CString,
    pub redirect: CString,
    pub origin: CString,
    pub impure: CString,
    pub nlink: CString,
}

pub const FUSE_OVERLAYFS_OPAQUE: &CStr = c"user.fuseoverlayfs.opaque";

impl OvlXattrs {
    pub fn new(userxattr: bool) -> OvlXattrs {
        let ns = if userxattr { "user" } else { "trusted" };
        let name = |n: &str| CString::new(format!("{ns}.overlay.{n}")).unwrap();
        OvlXattrs {
            prefix: if userxattr {
                b"user.overlay."
            } else {
                b"trusted.overlay."
            },
            opaque: name("opaque"),
            whiteout: name("whiteout"),
            redirect: name("redirect"),
            origin: name("origin"),
            impure: name("impure"),
            nlink: name("nlink"),
        }
    }
}

const ESCAPE: &[u8] = b"overlay.";

/// fuse-overlayfs' private names and the owner overrides, never shown.
fn is_foreign_private(name: &[u8]) -> bool {
    name.starts_with(b"user.fuseoverlayfs.") || crate::override_stat::is_name(name)
}

impl OvlXattrs {
    /// The real name behind a name a user asked for; `None` when it must look absent.
    pub fn to_real(&self, name: &[u8]) -> Option<Vec<u8>> {
        if is_foreign_private(name) {
            return None;
        }
        match name.strip_prefix(self.prefix) {
            Some(rest) => Some([self.prefix, ESCAPE, rest].concat()),
            None => Some(name.to_vec()),
        }
    }

    /// The name a user sees for a real name; `None` for a private one.
    pub fn to_user<'a>(&self, real: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        if is_foreign_private(real) {
            return None;
        }
        match real.strip_prefix(self.prefix) {
            Some(rest) => rest
                .strip_prefix(ESCAPE)
                .map(|r| std::borrow::Cow::Owned([self.prefix, r].concat())),
            None => Some(std::borrow::Cow::Borrowed(real)),
        }
    }

    /// Maps a real NUL-separated name list to what users see.
    pub fn filter_list(&self, list: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(list.len());
        for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if let Some(user) = self.to_user(name) {
                out.extend_from_slice(&user);
                out.push(0);
            }
        }
        out
    }
}

/// Reads an xattr of `dir`/`name` (empty name: `dir` itself), as `read_all`, but `Ok(None)`
/// also where the filesystem has no xattrs or refuses the namespace.
pub fn read_small(dir: BorrowedFd, name: &CStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    match read_all(dir, name, attr) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP) | Some(libc::EPERM)) => Ok(None),
        r => r,
    }
}

/// Reads a whole xattr value of any size. `Ok(None)` when absent.
pub fn read_all(dir: BorrowedFd, name: &CStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    match read_sized(|buf| sys::xattr::get(dir, name, attr, buf)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Lists the xattr names of `dir`/`name` (NUL-separated, as the kernel gives them).
pub fn list_all(dir: BorrowedFd, name: &CStr) -> io::Result<Vec<u8>> {
    read_sized(|buf| sys::xattr::list(dir, name, buf))
}

/// What `call` (a get or a list: an empty buffer asks for the size) gives, whatever its length.
/// Most values and lists are short: one call into a stack buffer reads them, and only a longer
/// one costs a size probe and a second read (again if it grew in between).
fn read_sized(mut call: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut small = [0u8; 256];
    match call(&mut small) {
        Ok(n) => return Ok(small[..n].to_vec()),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
        Err(e) => return Err(e),
    }
    loop {
        let mut buf = vec![0u8; call(&mut [])?];
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mount_namespace_is_private() {
        let t = OvlXattrs::new(false);
        assert_eq!(t.to_user(b"trusted.overlay.opaque"), None);
        assert_eq!(
            t.to_user(b"user.overlay.opaque").as_deref(),
            Some(&b"user.overlay.opaque"[..])
        );
        assert_eq!(t.to_user(b"user.fuseoverlayfs.opaque"), None);
        assert_eq!(t.to_user(b"user.containers.override_stat"), None);
        assert_eq!(t.to_user(b"security.fuseoverlayfs.override_stat"), None);
        assert_eq!(t.to_real(b"user.containers.override_stat"), None);
        assert_eq!(t.to_real(b"security.fuseoverlayfs.override_stat"), None);
        assert_eq!(
            t.to_user(b"security.capability").as_deref(),
            Some(&b"security.capability"[..])
        );
        let u = OvlXattrs::new(true);
        assert_eq!(u.to_user(b"user.overlay.whiteout"), None);
        assert_eq!(
            u.to_user(b"trusted.overlay.x").as_deref(),
            Some(&b"trusted.overlay.x"[..])
        );
    }

    #[test]
    fn escaping_round_trips() {
        let t = OvlXattrs::new(false);
        assert_eq!(
            t.to_real(b"trusted.overlay.opaque").unwrap(),
            b"trusted.overlay.overlay.opaque"
        );
        assert_eq!(
            t.to_user(b"trusted.overlay.overlay.opaque").as_deref(),
            Some(&b"trusted.overlay.opaque"[..])
        );
        assert_eq!(t.to_real(b"user.mime").unwrap(), b"user.mime");
        assert_eq!(t.to_real(b"user.fuseoverlayfs.origin"), None);
    }

    #[test]
    fn filtering_keeps_order() {
        let t = OvlXattrs::new(false);
        let list = b"user.a\0trusted.overlay.opaque\0security.selinux\0trusted.overlay.overlay.x\0";
        assert_eq!(
            t.filter_list(list),
            b"user.a\0security.selinux\0trusted.overlay.x\0".to_vec()
        );
    }

    #[test]
    fn namespaces() {
        assert_eq!(
            OvlXattrs::new(false).opaque.as_bytes(),
            b"trusted.overlay.opaque"
        );
        assert_eq!(
            OvlXattrs::new(true).whiteout.as_bytes(),
            b"user.overlay.whiteout"
        );
    }

    #[test]
    fn values_and_lists_of_any_length() {
        use std::os::fd::AsFd;
        let tmp = std::env::temp_dir().join(format!("plyfs-xattr-len-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::write(tmp.join("f"), b"").unwrap();
        let dir = std::fs::File::open(&tmp).unwrap();
        let (d, f) = (dir.as_fd(), c"f");
        // The stack buffer's size and one past it, on either side of the second read.
        let long = vec![b'v'; 3000];
        let names: Vec<String> = (0..40)
            .map(|i| format!("user.plyfs-long-name-{i:03}"))
            .collect();
        if ::xattr::set(tmp.join("f"), "user.short", b"s").is_err() {
            println!("SKIPPED: the temp filesystem has no user xattrs");
            let _ = std::fs::remove_dir_all(&tmp);
            return;
        }
        assert_eq!(read_all(d, f, c"user.short").unwrap().unwrap(), b"s");
        assert_eq!(read_all(d, f, c"user.absent").unwrap(), None);
        assert_eq!(read_small(d, f, c"user.absent").unwrap(), None);
        for value in [vec![b'v'; 256], vec![b'v'; 257], long.clone(), Vec::new()] {
            ::xattr::set(tmp.join("f"), "user.v", &value).unwrap();
            assert_eq!(read_all(d, f, c"user.v").unwrap().unwrap(), value);
            assert_eq!(read_small(d, f, c"user.v").unwrap().unwrap(), value);
        }
        let mut want = b"user.short\0user.v\0".to_vec();
        assert_eq!(sorted(&list_all(d, f).unwrap()), sorted(&want));
        for n in &names {
            ::xattr::set(tmp.join("f"), n, b"").unwrap();
            want.extend_from_slice(n.as_bytes());
            want.push(0);
        }
        assert!(want.len() > 256);
        assert_eq!(sorted(&list_all(d, f).unwrap()), sorted(&want));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    fn sorted(list: &[u8]) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = list.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
        v.sort();
        v
    }
}
