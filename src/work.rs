//! The work directory `W/work` (the same one the kernel's overlay uses): where new and
//! copied-up objects are built before one rename puts them in place, so a crash leaves the old
//! or the new object, never a half one.
//!
//! Invariants: temp names are unique for the life of the mount (`#plyfs.N`); whatever is in the
//! work directory when plyfs mounts is a leftover of a crash and is removed (as the kernel does);
//! the work directory is on the upper layer's filesystem (checked at mount), so a rename from it
//! into the upper layer is atomic.

use anyhow::{Context, Result};
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::AccessFlags;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::layer::open_dir;
use crate::xattr::OvlXattrs;

pub struct WorkDir {
    pub fd: Arc<OwnedFd>,
    next: AtomicU64,
    /// The shared whiteout (name in the work dir, and whether it is the xattr form) that new
    /// whiteouts are hard links of, as the kernel does: linking is far cheaper than allocating
    /// an inode per whiteout. Its mutex is a leaf.
    shared_whiteout: Mutex<Option<(CString, bool)>>,
    /// Set once the work dir's filesystem refused `O_TMPFILE` (or there is no /proc to link
    /// one through): copy-ups then build regular files under temp names.
    no_tmpfile: AtomicBool,
}

impl WorkDir {
    /// Opens (making it if needed) `workdir/work` and empties it.
    pub fn open(workdir: &Path) -> Result<WorkDir> {
        let fd = open_subdir(workdir, c"work")?;
        let removed = empty_dir(fd.as_fd())
            .with_context(|| format!("cannot clean '{}/work'", workdir.display()))?;
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed leftovers of an earlier mount from the work dir"
            );
        }
        Ok(WorkDir {
            fd: Arc::new(fd),
            next: AtomicU64::new(1),
            shared_whiteout: Mutex::new(None),
            no_tmpfile: AtomicBool::new(!Path::new("/proc/self/fd").exists()),
        })
    }

    pub fn dir(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A fresh temp name in the work dir.
    pub fn temp_name(&self) -> CString {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#plyfs.{n:x}")).expect("no NUL")
    }

    /// An unnamed regular file in the work dir (`O_TMPFILE`, open for writing, mode 0600), or
    /// None: where the filesystem has none (not tried again), or on any other error (the caller
    /// falls back to a named temp, which reports it).
    pub fn tmpfile(&self) -> Option<OwnedFd> {
        if self.no_tmpfile.load(Ordering::Relaxed) {
            return None;
        }
        match nix::fcntl::openat(
            self.dir(),
            c".",
            OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => Some(fd),
            Err(e) => {
                if matches!(
                    e,
                    nix::errno::Errno::EOPNOTSUPP
                        | nix::errno::Errno::EISDIR
                        | nix::errno::Errno::EINVAL
                ) {
                    tracing::debug!(%e, "no O_TMPFILE in the work dir");
                    self.no_tmpfile.store(true, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// Makes a whiteout named `tmp` in the work dir: a hard link of the shared whiteout (made on
    /// first use, and again when it reaches the link limit). Returns whether it is the xattr
    /// form (the caller marks the directory it lands in).
    pub fn whiteout(&self, x: &OvlXattrs, tmp: &CStr) -> nix::Result<bool> {
        let mut shared = self
            .shared_whiteout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for _ in 0..2 {
            if let Some(xform) = self.link_shared(&shared, self.dir(), tmp)? {
                return Ok(xform);
            }
            let name = self.temp_name();
            let xform = crate::realops::whiteout(x, self.dir(), &name)?;
            if let Some((old, _)) = shared.replace((name, xform)) {
                let _ = crate::realops::unlink(self.dir(), &old);
            }
        }
        crate::realops::whiteout(x, self.dir(), tmp)
    }

    /// Links the shared whiteout at `name` in `dir`, where nothing may be: one atomic system
    /// call instead of a temp whiteout and a rename. Ok(None) when there is no usable shared
    /// whiteout yet (the caller makes one through `whiteout`); else whether it is the xattr form.
    pub fn link_whiteout(&self, dir: BorrowedFd, name: &CStr) -> nix::Result<Option<bool>> {
        let shared = self
            .shared_whiteout
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.link_shared(&shared, dir, name)
    }

    /// Links shared whiteout `shared` at `name` in `dir`: whether it is the xattr form, or
    /// None when there is none or it is gone or full (EMLINK, ENOENT).
    fn link_shared(
        &self,
        shared: &Option<(CString, bool)>,
        dir: BorrowedFd,
        name: &CStr,
    ) -> nix::Result<Option<bool>> {
        let Some((wh, xform)) = shared else {
            return Ok(None);
        };
        match crate::realops::link(self.dir(), wh, dir, name) {
            Ok(()) => Ok(Some(*xform)),
            Err(nix::errno::Errno::EMLINK) | Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `name` (a directory tree or any other object) from the work dir.
    pub fn remove(&self, name: &std::ffi::CStr) -> nix::Result<()> {
        remove_tree(self.dir(), name)
    }
}

/// Opens (making it if needed) the index dir `workdir/index`.
pub fn open_index(workdir: &Path) -> Result<OwnedFd> {
    open_subdir(workdir, c"index")
}

/// Opens (making it if needed, mode 0 as the kernel does) directory `name` of the workdir. Mode 0
/// keeps out everyone but a daemon with CAP_DAC_OVERRIDE (root, or root of a user namespace, as
/// under rootless podman); a daemon without it that owns the directory opens it to itself
/// (0700, as fuse-overlayfs makes its work dir), else it could not use it.
fn open_subdir(workdir: &Path, name: &CStr) -> Result<OwnedFd> {
    let what = || format!("'{}/{}'", workdir.display(), name.to_string_lossy());
    let w = nix::fcntl::open(
        workdir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open workdir '{}'", workdir.display()))?;
    match nix::sys::stat::mkdirat(&w, name, Mode::empty()) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot make {}", what())),
    }
    let fd = open_dir(w.as_fd(), name).with_context(|| format!("cannot open {}", what()))?;
    let all = AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK;
    if nix::unistd::faccessat(&fd, c".", all, AtFlags::AT_EACCESS) == Err(Errno::EACCES) {
        crate::realops::chmod(fd.as_fd(), c"", 0o700)
            .with_context(|| format!("cannot use {}: mode 0, and not ours", what()))?;
    }
    Ok(fd)
}

/// Removes everything in directory `dir`; returns how many top-level entries went.
fn empty_dir(dir: BorrowedFd) -> nix::Result<usize> {
    let mut names = Vec::new();
    let mut d = Dir::openat(
        dir,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for e in d.iter() {
        let e = e?;
        let n = e.file_name();
        if n != c"." && n != c".." {
            names.push((n.to_owned(), e.file_type()));
        }
    }
    for (n, t) in &names {
        match t {
            Some(Type::Directory) => remove_tree(dir, n)?,
            _ => match crate::realops::unlink(dir, n) {
                Err(nix::errno::Errno::EISDIR) => remove_tree(dir, n)?,
                r => r?,
            },
        }
    }
    Ok(names.len())
}

/// Removes `name` in `dir`, recursively if it is a directory.
pub fn remove_tree(dir: BorrowedFd, name: &std::ffi::CStr) -> nix::Result<()> {
    match crate::realops::unlink(dir, name) {
        Err(nix::errno::Errno::EISDIR) | Err(nix::errno::Errno::EPERM) => {}
        r => return r,
    }
    let sub = open_dir(dir, name)?;
    empty_dir(sub.as_fd())?;
    crate::realops::rmdir(dir, name)
}
