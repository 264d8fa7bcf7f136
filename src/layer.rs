//! The layers of a mount: their root fds, devices and order; and opening real objects below them.
//!
//! Invariants: index 0 is the upper layer when there is one, then the lowers topmost first. A
//! layer's root fd is an `O_PATH` directory fd opened before the mount exists, so no real lookup
//! can cross into the plyfs mount itself. Real objects are only ever opened one name at a time
//! with `O_NOFOLLOW` relative to a directory fd of the same layer, so they stay beneath the root.

use anyhow::{Context, Result};
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, FileStat, Mode};
use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::config::Config;

pub struct Layer {
    pub index: usize,
    pub path: PathBuf,
    pub root: OwnedFd,
    pub dev: u64,
    /// Index of this layer's filesystem among the distinct filesystems of all layers, upper's
    /// first; it tags node ids so equal inode numbers on two filesystems never collide.
    pub fs_index: u8,
    /// The root opened for reading: `open_by_handle_at` needs a real fd (not `O_PATH`) to name
    /// the filesystem. `None` where it cannot be opened.
    pub handle_fd: Option<OwnedFd>,
    /// A copy-up from this layer found that `FICLONE` does not work (no reflink, or another
    /// filesystem than the upper's): later ones do not try it.
    pub clone_fails: std::sync::atomic::AtomicBool,
}

pub struct Layers {
    pub all: Vec<Layer>,
    pub has_upper: bool,
}

/// Opens a directory path (following symlinks, as lowerdir= paths may be symlinks) as `O_PATH`.
fn open_root(path: &Path) -> Result<(OwnedFd, FileStat)> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open layer '{}'", path.display()))?;
    let st = fstat(&fd).with_context(|| format!("cannot stat layer '{}'", path.display()))?;
    Ok((fd, st))
}

impl Layers {
    pub fn open(cfg: &Config) -> Result<Layers> {
        let paths: Vec<PathBuf> = cfg.upper.iter().chain(&cfg.lowers).cloned().collect();
        let mut devs: Vec<u64> = Vec::new();
        let mut all = Vec::new();
        for (index, path) in paths.into_iter().enumerate() {
            // A real object keeps its layer's index in 16 bits (`node::Real`).
            u16::try_from(index).context("too many layers")?;
            let (root, st) = open_root(&path)?;
            let dev = st.st_dev;
            let fs_index = match devs.iter().position(|d| *d == dev) {
                Some(i) => i,
                None => {
                    devs.push(dev);
                    devs.len() - 1
                }
            };
            let handle_fd = openat(
                &root,
                c".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok();
            all.push(Layer {
                index,
                path,
                root,
                handle_fd,
                clone_fails: Default::default(),
                dev,
                fs_index: u8::try_from(fs_index)
                    .context("too many filesystems under the layers")?,
            });
        }
        Ok(Layers {
            all,
            has_upper: cfg.upper.is_some(),
        })
    }

    pub fn get(&self, index: usize) -> &Layer {
        &self.all[index]
    }

    pub fn is_upper(&self, index: usize) -> bool {
        self.has_upper && index == 0
    }

    /// The layer whose statfs the mount reports: the upper, else the topmost lower.
    pub fn statfs_layer(&self) -> &Layer {
        &self.all[0]
    }
}

/// The id of the mount `fd` is on (`mnt_id` in /proc/self/fdinfo).
fn mount_id(fd: BorrowedFd) -> Option<String> {
    use std::os::fd::AsRawFd;
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .map(|v| v.trim().to_string())
}

/// Whether the mount `fd` is on is an idmapped mount (`idmapped` among its mount options in
/// /proc/self/mountinfo, found by the `mnt_id` of the fd).
pub fn is_idmapped(fd: BorrowedFd) -> bool {
    let Some(mnt_id) = mount_id(fd) else {
        return false;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_is_idmapped(&mountinfo, &mnt_id)
}

/// With `strictatime`, `cfg` with its upper and work dirs reached through a private clone of
/// their mount with strict atime (below /proc/self/fd/N of the clone's fd, returned too: it
/// lives as long as the mount). The FUSE mount's atime flags do not reach the real files, and
/// the upper filesystem's own mount is usually relatime, so this is how a read updates the
/// atime every time. Where it cannot be done (upper and work on two mounts, or no
/// `CAP_SYS_ADMIN`), atime stays as the upper filesystem's mount has it, and the log says so.
pub fn atime_view(cfg: &Config) -> (Config, Option<OwnedFd>) {
    let (Some(upper), Some(work), true) = (&cfg.upper, &cfg.work, cfg.strictatime) else {
        return (cfg.clone(), None);
    };
    match clone_upper_mount(upper, work) {
        Ok((fd, upper, work)) => {
            let mut view = cfg.clone();
            (view.upper, view.work) = (Some(upper), Some(work));
            (view, Some(fd))
        }
        Err(e) => {
            tracing::warn!(
                "strictatime: atime stays as the upper filesystem's mount has it: {e:#}"
            );
            (cfg.clone(), None)
        }
    }
}

/// Clones the mount holding `upper` and `work` at their deepest common directory; the clone's
/// fd and the two paths through it.
fn clone_upper_mount(upper: &Path, work: &Path) -> Result<(OwnedFd, PathBuf, PathBuf)> {
    use std::os::fd::{AsFd, AsRawFd};
    let (upper, work) = (upper.canonicalize()?, work.canonicalize()?);
    let (u, _) = open_root(&upper)?;
    let (w, _) = open_root(&work)?;
    if mount_id(u.as_fd()).is_none() || mount_id(u.as_fd()) != mount_id(w.as_fd()) {
        anyhow::bail!("upperdir and workdir are not on one mount");
    }
    let common: PathBuf = upper
        .components()
        .zip(work.components())
        .take_while(|(a, b)| a == b)
        .map(|(a, _)| a)
        .collect();
    let fd = crate::sys::mount::clone_with_strictatime(&common)
        .with_context(|| format!("cannot clone the mount at '{}'", common.display()))?;
    let through = |p: &Path| {
        let rel = p.strip_prefix(&common).unwrap_or(Path::new(""));
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(rel)
    };
    let (upper, work) = (through(&upper), through(&work));
    tracing::info!(upper = %upper.display(), "strictatime: upper layer through a private mount");
    Ok((fd, upper, work))
}

/// Whether mount `mnt_id` of a /proc/self/mountinfo text has the `idmapped` mount option.
fn mount_is_idmapped(mountinfo: &str, mnt_id: &str) -> bool {
    mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.first() == Some(&mnt_id)
            && f.get(5)
                .is_some_and(|opts| opts.split(',').any(|o| o == "idmapped"))
    })
}

/// Opens directory `name` in directory `dir` as an `O_PATH` fd without following a symlink.
pub fn open_dir(dir: BorrowedFd, name: &CStr) -> nix::Result<OwnedFd> {
    openat(
        dir,
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a directory held as `O_PATH` for reading (fsync, listing).
pub fn reopen_dir(fd: &OwnedFd) -> crate::ovl::OResult<OwnedFd> {
    openat(
        fd,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(crate::ovl::errno)
}

/// Opens the object an `O_PATH` fd names for I/O, through /proc/self/fd (the fd names the final
/// object: nothing is followed past it).
pub fn reopen(fd: BorrowedFd, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        proc_path(fd).as_str(),
        (flags & !(OFlag::O_CREAT | OFlag::O_EXCL)) | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// The /proc/self/fd magic link of `fd`: the way to the very object an `O_PATH` fd names, for
/// calls that take no fd.
pub fn proc_path(fd: BorrowedFd) -> String {
    use std::os::fd::AsRawFd;
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

#[cfg(test)]
mod tests {
    #[test]
    fn idmapped_mounts_from_mountinfo() {
        let info = "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw\n\
            312 29 254:0 /var/lib/c/l /var/lib/c/mapped/0/l ro,relatime,idmapped - ext4 /dev/vda rw\n";
        assert!(super::mount_is_idmapped(info, "312"));
        assert!(!super::mount_is_idmapped(info, "24"));
        assert!(!super::mount_is_idmapped(info, "31"), "whole ids only");
        use std::os::fd::AsFd;
        let here = std::fs::File::open(".").unwrap();
        assert!(
            !super::is_idmapped(here.as_fd()),
            "the build dir is no idmapped mount"
        );
    }
}
