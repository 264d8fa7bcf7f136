//! Mounting the FUSE file system.
//!
//! As root plyfs makes the mount(2) call itself, so /proc/mounts shows the type `fuse.plyfs`
//! (`umount -t fuse.plyfs`, findmnt and podman's checks go by it; stock xfstests wants `fuse`
//! and gets it from the `df` wrapper in xfstests-config; fuser's own direct mount says `fuse`),
//! then hands the /dev/fuse fd to a fuser session. Without privilege, fuser runs fusermount3,
//! which sets the same type from the `subtype=` option.
//!
//! Invariant: when this returns Ok, the FUSE handshake is done and the mount is live.

use anyhow::{Context, Result};
use fuser::{MountOption as M, Session, SessionACL};
use nix::mount::MsFlags;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use crate::config::{Config, KernelFlag};
use crate::fs::PlyFs;

/// Who may use the mount. As root, everyone (as fuse-overlayfs does, and as with the kernel's
/// overlay; the kernel checks permissions, `default_permissions`): containers run as many uids.
fn allow_other(cfg: &Config) -> bool {
    cfg.allow_other || nix::unistd::geteuid().is_root()
}

fn acl(cfg: &Config) -> SessionACL {
    if allow_other(cfg) {
        SessionACL::All
    } else if cfg.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    }
}

fn subtype(cfg: &Config) -> String {
    cfg.subtype.clone().unwrap_or_else(|| "plyfs".into())
}

/// The mount flags: nodev and nosuid unless asked otherwise (as libfuse does); the last of a
/// flag and its negation wins.
fn flags(cfg: &Config) -> MsFlags {
    let mut f = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    for flag in &cfg.kernel_flags {
        let (bit, set) = match *flag {
            KernelFlag::Dev(on) => (MsFlags::MS_NODEV, !on),
            KernelFlag::Suid(on) => (MsFlags::MS_NOSUID, !on),
            KernelFlag::Exec(on) => (MsFlags::MS_NOEXEC, !on),
            KernelFlag::Atime(on) => (MsFlags::MS_NOATIME, !on),
        };
        f.set(bit, set);
    }
    if cfg.is_read_only() {
        f |= MsFlags::MS_RDONLY;
    }
    f
}

fn session_config(cfg: &Config) -> fuser::Config {
    let mut fc = fuser::Config::default();
    fc.acl = acl(cfg);
    fc.n_threads = Some(cfg.threads);
    fc.clone_fd = true;
    fc
}

/// Mounts `fs` on the configured mount point and returns the live session.
pub fn mount(fs: PlyFs, cfg: &Config) -> Result<Session<PlyFs>> {
    if nix::unistd::geteuid().is_root() {
        let fd = mount_direct(cfg)?;
        return Session::from_fd(fs, fd, acl(cfg), session_config(cfg))
            .context("FUSE handshake failed");
    }
    let mut fc = session_config(cfg);
    fc.mount_options = vec![
        M::FSName(cfg.fs_name()),
        M::Subtype(subtype(cfg)),
        M::DefaultPermissions,
    ];
    let f = flags(cfg);
    for (bit, on, off) in [
        (MsFlags::MS_NODEV, M::NoDev, M::Dev),
        (MsFlags::MS_NOSUID, M::NoSuid, M::Suid),
        (MsFlags::MS_NOEXEC, M::NoExec, M::Exec),
        (MsFlags::MS_NOATIME, M::NoAtime, M::Atime),
        (MsFlags::MS_RDONLY, M::RO, M::RW),
    ] {
        fc.mount_options
            .push(if f.contains(bit) { on } else { off });
    }
    Session::new(fs, &cfg.mountpoint, &fc)
        .with_context(|| format!("cannot mount on '{}'", cfg.mountpoint.display()))
}

fn mount_direct(cfg: &Config) -> Result<OwnedFd> {
    let dev: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .context("cannot open /dev/fuse")?
        .into();
    let root_mode = std::fs::metadata(&cfg.mountpoint)
        .with_context(|| format!("mount point '{}'", cfg.mountpoint.display()))?
        .mode()
        & libc::S_IFMT;
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        root_mode,
        nix::unistd::getuid(),
        nix::unistd::getgid()
    );
    if allow_other(cfg) || cfg.allow_root {
        data.push_str(",allow_other");
    }
    let fstype = format!("fuse.{}", subtype(cfg));
    nix::mount::mount(
        Some(cfg.fs_name().as_str()),
        &cfg.mountpoint,
        Some(fstype.as_str()),
        flags(cfg),
        Some(data.as_str()),
    )
    .with_context(|| format!("cannot mount on '{}'", cfg.mountpoint.display()))?;
    Ok(dev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_args, Action};

    fn cfg(opts: &str) -> Config {
        let args = ["-o", opts, "/m"].map(std::ffi::OsString::from);
        match parse_args(&args).unwrap() {
            Action::Mount(c) => *c,
            _ => unreachable!(),
        }
    }

    #[test]
    fn default_flags_are_nodev_nosuid() {
        let f = flags(&cfg("lowerdir=/a,upperdir=/u,workdir=/w"));
        assert_eq!(f, MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
    }

    #[test]
    fn last_flag_wins_and_ro_without_upper() {
        let f = flags(&cfg("lowerdir=/a,dev,suid,noexec,exec,noatime"));
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
    }
}
