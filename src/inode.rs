//! Attributes of overlay nodes: getattr, access, and the st_ino/st_dev rules.
//!
//! Rules: st_ino is the node id (so it equals readdir's d_ino and survives remounts); st_dev is
//! the FUSE mount's own device for every object (the kernel fills it in); a directory that merges
//! several layers reports one link, as the kernel's overlay does. Everything else is the topmost
//! real object's, with its owner override where it has one (`override_stat.rs`).

use fuser::{FileAttr, FileType, INodeNo};
use nix::sys::stat::{FileStat, SFlag};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::node::Node;
use crate::ovl::{errno, OResult};

pub fn file_type(mode: u32) -> FileType {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => FileType::Directory,
        SFlag::S_IFLNK => FileType::Symlink,
        SFlag::S_IFIFO => FileType::NamedPipe,
        SFlag::S_IFSOCK => FileType::Socket,
        SFlag::S_IFCHR => FileType::CharDevice,
        SFlag::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// The `S_IFMT` bits of a file type.
pub fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::Directory => libc::S_IFDIR,
        FileType::Symlink => libc::S_IFLNK,
        FileType::NamedPipe => libc::S_IFIFO,
        FileType::Socket => libc::S_IFSOCK,
        FileType::CharDevice => libc::S_IFCHR,
        FileType::BlockDevice => libc::S_IFBLK,
        FileType::RegularFile => libc::S_IFREG,
    }
}

/// A time from seconds and nanoseconds since the epoch, as `struct timespec` has them (before
/// the epoch: negative seconds, positive nanoseconds).
pub fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// The kernel's 32-bit device encoding (`new_encode_dev`), as FUSE carries it.
pub fn encode_rdev(rdev: u64) -> u32 {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

pub fn attr(id: u64, st: &FileStat, merged_dir: bool) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: if merged_dir { 1 } else { st.st_nlink as u32 },
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_rdev(st.st_rdev),
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// The link count to report: 1 for a merged directory (as the kernel), the union count for an
/// upper non-directory (index), else the real one.
pub fn nlink(
    ovl: &crate::ovl::Ovl,
    real: &crate::node::Real,
    st: &FileStat,
    merged_dir: bool,
) -> u32 {
    if merged_dir {
        return 1;
    }
    if ovl.layers.is_upper(real.layer()) && ovl.index.is_some() {
        let (dir, name) = real.at();
        return crate::index::union_nlink(ovl, dir, name, st);
    }
    st.st_nlink as u32
}

/// The attributes of a node, from its topmost real object. ESTALE if the name now holds another
/// object (the layer was changed underneath).
pub fn getattr(ovl: &crate::ovl::Ovl, node: &Node) -> OResult<FileAttr> {
    let reals = node.reals();
    let mut st = reals[0].stat().map_err(|e| match e {
        nix::errno::Errno::ENOENT => fuser::Errno::ESTALE,
        e => errno(e),
    })?;
    if st.st_ino != reals[0].ino {
        return Err(fuser::Errno::ESTALE);
    }
    let (dir, name) = reals[0].at();
    crate::override_stat::apply(ovl, dir, name, &mut st);
    let merged = node.kind == FileType::Directory && reals.len() > 1;
    let mut a = attr(node.id, &st, merged);
    a.nlink = nlink(ovl, &reals[0], &st, merged);
    ovl.ids.present(&mut a);
    Ok(a)
}

/// What a setattr request changes.
#[derive(Default, Debug)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<fuser::TimeOrNow>,
    pub mtime: Option<fuser::TimeOrNow>,
    /// An open file of the node, for truncate.
    pub fh: Option<u64>,
}

impl SetAttr {
    /// Whether it changes nothing: `chown(f, -1, -1)`, or (with `FUSE_HANDLE_KILLPRIV_V2`) the
    /// kernel asking for the setuid and setgid bits a write takes (`killpriv.rs`).
    pub fn is_empty(&self) -> bool {
        self.uid.is_none()
            && self.gid.is_none()
            && self.mode.is_none()
            && self.size.is_none()
            && self.atime.is_none()
            && self.mtime.is_none()
    }
}

fn timespec(t: Option<fuser::TimeOrNow>) -> nix::sys::time::TimeSpec {
    use nix::sys::time::TimeSpec;
    match t {
        None => TimeSpec::UTIME_OMIT,
        Some(fuser::TimeOrNow::Now) => TimeSpec::UTIME_NOW,
        Some(fuser::TimeOrNow::SpecificTime(t)) => {
            let (s, ns) = epoch_parts(&t);
            TimeSpec::new(s, i64::from(ns))
        }
    }
}

/// The inverse of `time`: seconds and nanoseconds since the epoch, as `struct timespec` and
/// FUSE have them (saturated where seconds do not fit).
pub fn epoch_parts(t: &SystemTime) -> (i64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(e) => {
            let d = e.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    }
}

/// chmod, chown, truncate and utimens, after copying the node up.
pub fn setattr(
    ovl: &crate::ovl::Ovl,
    node: &std::sync::Arc<Node>,
    a: &SetAttr,
) -> OResult<FileAttr> {
    use crate::realops;
    crate::copy_up::copy_up(ovl, node)?;
    let reals = node.reals();
    let (dir, name) = reals[0].at();
    // Owner and mode, in an owner override where the real object cannot take them.
    let mode = a.mode.filter(|_| node.kind != FileType::Symlink);
    if a.uid.is_some() || a.gid.is_some() || mode.is_some() {
        let (uid, gid) = (
            a.uid.map(|u| ovl.ids.store_uid(u)),
            a.gid.map(|g| ovl.ids.store_gid(g)),
        );
        crate::override_stat::chown_chmod(ovl, dir, name, uid, gid, mode)?;
    }
    if let Some(size) = a.size {
        let truncate = |fd: std::os::fd::BorrowedFd| nix::unistd::ftruncate(fd, size as i64);
        match a.fh.and_then(|fh| ovl.files.get(fh).ok()) {
            Some(f) if ovl.layers.is_upper(reals[0].layer()) => {
                truncate(std::os::fd::AsFd::as_fd(&*f.fd())).map_err(errno)?
            }
            _ => {
                let fd = realops::open(dir, name, nix::fcntl::OFlag::O_WRONLY).map_err(errno)?;
                truncate(std::os::fd::AsFd::as_fd(&fd)).map_err(errno)?
            }
        }
    }
    if a.atime.is_some() || a.mtime.is_some() {
        realops::utimens(dir, name, &timespec(a.atime), &timespec(a.mtime)).map_err(errno)?;
    }
    if a.is_empty() {
        // `chown(f, -1, -1)` comes as an empty SETATTR; it still changes ctime (as the
        // kernel's overlay passes it to the upper file).
        realops::chown(dir, name, None, None).map_err(errno)?;
    }
    getattr(ovl, node)
}

/// POSIX permission check of `mask` (R_OK/W_OK/X_OK bits) for a caller; root passes except
/// for execute on a file nobody may execute.
pub fn permitted(attr: &FileAttr, uid: u32, gid: u32, groups: &[u32], mask: i32) -> bool {
    let mask = (mask & 7) as u16;
    if mask == 0 {
        return true;
    }
    if uid == 0 {
        return mask & 1 == 0 || attr.kind == FileType::Directory || attr.perm & 0o111 != 0;
    }
    let bits = if attr.uid == uid {
        attr.perm >> 6
    } else if attr.gid == gid || groups.contains(&attr.gid) {
        attr.perm >> 3
    } else {
        attr.perm
    } & 7;
    bits & mask == mask
}

/// The supplementary groups of the calling process (from /proc; empty if it is gone).
pub fn caller_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| groups_in_status(&s))
        .unwrap_or_default()
}

/// The `Groups:` line of a /proc/PID/status text.
pub fn groups_in_status(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(perm: u16, uid: u32, gid: u32, kind: FileType) -> FileAttr {
        FileAttr {
            ino: INodeNo(5),
            kind,
            perm,
            nlink: 1,
            uid,
            gid,
            blksize: 4096,
            ..crate::ops::negative_attr()
        }
    }

    #[test]
    fn rdev_encoding_matches_kernel() {
        assert_eq!(encode_rdev(libc::makedev(1, 3)), 0x103);
        assert_eq!(
            encode_rdev(libc::makedev(8, 0x123)),
            0x23 | (8 << 8) | (0x100 << 12)
        );
    }

    #[test]
    fn permissions() {
        let f = a(0o640, 1000, 100, FileType::RegularFile);
        assert!(permitted(&f, 1000, 5, &[], 6));
        assert!(permitted(&f, 2000, 100, &[], 4));
        assert!(!permitted(&f, 2000, 100, &[], 2));
        assert!(permitted(&f, 2000, 7, &[100], 4));
        assert!(!permitted(&f, 2000, 7, &[], 4));
        assert!(permitted(&f, 0, 0, &[], 6), "root reads and writes");
        assert!(
            !permitted(&f, 0, 0, &[], 1),
            "root cannot exec a non-executable file"
        );
        assert!(permitted(
            &a(0o700, 5, 5, FileType::Directory),
            0,
            0,
            &[],
            1
        ));
    }

    #[test]
    fn times_before_epoch() {
        assert_eq!(
            time(-1, 500_000_000),
            UNIX_EPOCH - Duration::from_millis(500)
        );
        assert_eq!(time(2, 5), UNIX_EPOCH + Duration::new(2, 5));
    }
}
