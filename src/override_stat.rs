//! Owner and mode overrides kept in xattrs, the way rootless container storage keeps what a user
//! namespace cannot store: an owner the namespace does not map, or a device node where mknod is
//! refused. fuse-overlayfs and containers-storage write the wanted owner, mode (and type) into an
//! xattr of the real file and show that instead.
//!
//! Through FUSE the kernel itself refuses an id that the mount's user namespace does not map
//! (EINVAL, EOVERFLOW), so plyfs meets an owner it cannot store when the id it stores differs
//! from the one the kernel sent: `uidmapping=`/`gidmapping=` whose container ids lie outside the
//! namespace; or when plyfs runs unprivileged (no CAP_CHOWN) and root chowns through the mount.
//!
//! Format (fuse-overlayfs' `override_mode`, containers-storage's `parseOverrideXattr`):
//! `UID:GID:MODE[:TYPE]`: decimal ids, the mode in octal (with or without a leading 0; bits
//! above 0o7777 are a file type, as fuse-overlayfs writes the whole `st_mode` at times), and the
//! optional type `file`, `dir`, `symlink`, `pipe`, `socket`, `block-MAJOR-MINOR` or
//! `char-MAJOR-MINOR` (matched by prefix, as both readers do; `char1:3` of fuse-overlayfs 2.0's
//! tests is read too). A type part wins over type bits in the mode. plyfs writes
//! `UID:GID:0MODE`, keeping the `:TYPE` of a value it updates.
//!
//! Names, highest precedence first (fuse-overlayfs picks a layer's name in this order):
//! `security.fuseoverlayfs.override_stat` (fuse-overlayfs `xattr_permissions=1`),
//! `user.containers.override_stat` (containers-storage's `force_mask` layers, fuse-overlayfs
//! `xattr_permissions=2`), `user.fuseoverlayfs.override_stat`. An object carrying several shows
//! the first. plyfs writes `user.containers.override_stat`, as current fuse-overlayfs does.
//!
//! Rules:
//! - Only the topmost real object's override counts (an upper copy carries its lower's: copy-up
//!   copies these xattrs), and only on a real directory or regular file (the only objects that
//!   take `user.*` xattrs). A type override applies to a real regular file (standing for a
//!   device, fifo or socket) and never turns a directory into something else or the reverse.
//! - Overrides are read when the mount uses `user.*` private xattrs (rootless, `userxattr`) or
//!   when a layer root carries one of the names (how fuse-overlayfs and containers-storage mark
//!   such layers). Otherwise nothing is read: a rootful mount pays nothing.
//! - Overrides are written only with `user.*` private xattrs (rootless): when the real chown or
//!   chmod of an upper directory or regular file fails with EINVAL (an id the namespace does not
//!   map), EPERM or EOVERFLOW, and when a new directory or file cannot be given its owner. An
//!   object that carries an override keeps its owner and mode there: a later chown or chmod
//!   changes the override, never the real object (which may be masked on purpose, as
//!   `force_mask` does). plyfs writes no device stand-ins: in a user namespace the kernel
//!   refuses mknod of a device before it reaches the mount.
//! - A malformed value is ignored with a warning (the real owner and mode show); nothing here
//!   panics on what a layer holds. The names are hidden from users of the mount and cannot be
//!   set through it (`xattr.rs`).

use nix::sys::stat::FileStat;
use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use crate::ovl::{errno, OResult, Ovl};
use crate::{realops, sys, xattr};

pub const PRIVILEGED: &CStr = c"security.fuseoverlayfs.override_stat";
pub const CONTAINERS: &CStr = c"user.containers.override_stat";
pub const FUSE_OVERLAYFS: &CStr = c"user.fuseoverlayfs.override_stat";
/// The names, highest precedence first.
pub const NAMES: [&CStr; 3] = [PRIVILEGED, CONTAINERS, FUSE_OVERLAYFS];
/// The name plyfs writes a new override under.
pub const WRITTEN: &CStr = CONTAINERS;

/// Whether `name` is one of the override names.
pub fn is_name(name: &[u8]) -> bool {
    NAMES.iter().any(|n| n.to_bytes() == name)
}

/// When a mount reads and writes overrides (decided once at mount).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    pub read: bool,
    pub write: bool,
}

impl Mode {
    /// `userxattr`: the mount keeps its private xattrs in `user.*` (rootless); `marked`: a layer
    /// root carries an override; `writable`: the mount has an upper layer.
    pub fn new(userxattr: bool, marked: bool, writable: bool) -> Mode {
        Mode {
            read: userxattr || marked,
            write: userxattr && writable,
        }
    }
}

/// Whether the directory `root` (a layer root) carries an override: fuse-overlayfs and
/// containers-storage mark layers that hold overrides this way.
pub fn marks_layer(root: BorrowedFd) -> bool {
    NAMES
        .iter()
        .any(|n| matches!(xattr::read_small(root, c"", n), Ok(Some(_))))
}

/// One override value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (`0o7777`).
    pub perm: u32,
    /// The file type (`S_IFMT` bits) when the value names one.
    pub fmt: Option<u32>,
    /// The device number of a block or character device type.
    pub rdev: u64,
}

/// Why a value does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

fn parse_device(s: &str) -> Option<u64> {
    let s = s.trim_start_matches('-');
    let (major, minor) = s.split_once('-').or_else(|| s.split_once(':'))?;
    // Anything after a further dash is ignored, as containers-storage does (forward compatible).
    let minor = minor.split('-').next()?;
    Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
}

impl Override {
    /// Parses a stored value (see the module comment).
    pub fn parse(value: &[u8]) -> Result<Override, Malformed> {
        let s = std::str::from_utf8(value).map_err(|_| Malformed("not UTF-8"))?;
        let s = s.trim_end_matches(['\0', '\n', ' ']);
        let mut parts = s.splitn(4, ':');
        let mut field = |what| parts.next().ok_or(Malformed(what));
        let uid = field("no uid")?.parse().map_err(|_| Malformed("bad uid"))?;
        let gid = field("no gid")?.parse().map_err(|_| Malformed("bad gid"))?;
        let mode_field = field("no mode")?;
        if mode_field.is_empty() || mode_field.starts_with(['+', '-']) {
            return Err(Malformed("bad mode"));
        }
        let mode = u32::from_str_radix(mode_field, 8).map_err(|_| Malformed("bad mode"))?;
        if mode & !(libc::S_IFMT | 0o7777) != 0 {
            return Err(Malformed("mode out of range"));
        }
        let mut fmt = match mode & libc::S_IFMT {
            0 => None,
            t if type_name(t).is_some() => Some(t),
            _ => return Err(Malformed("bad type bits in the mode")),
        };
        let mut rdev = 0;
        if let Some(t) = parts.next() {
            let dev = |prefix: &str| {
                parse_device(&t[prefix.len()..]).ok_or(Malformed("bad device number"))
            };
            fmt = Some(if t.starts_with("dir") {
                libc::S_IFDIR
            } else if t.starts_with("file") {
                libc::S_IFREG
            } else if t.starts_with("symlink") {
                libc::S_IFLNK
            } else if t.starts_with("pipe") {
                libc::S_IFIFO
            } else if t.starts_with("socket") {
                libc::S_IFSOCK
            } else if t.starts_with("block") {
                rdev = dev("block")?;
                libc::S_IFBLK
            } else if t.starts_with("char") {
                rdev = dev("char")?;
                libc::S_IFCHR
            } else {
                return Err(Malformed("unknown type"));
            });
        }
        Ok(Override {
            uid,
            gid,
            perm: mode & 0o7777,
            fmt,
            rdev,
        })
    }

    /// The value to store: `UID:GID:0MODE`, and `:TYPE` when it names a type.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = format!("{}:{}:0{:o}", self.uid, self.gid, self.perm & 0o7777);
        if let Some(name) = self.fmt.and_then(type_name) {
            v.push(':');
            v.push_str(name);
            if matches!(self.fmt, Some(libc::S_IFBLK | libc::S_IFCHR)) {
                v.push_str(&format!(
                    "-{}-{}",
                    libc::major(self.rdev),
                    libc::minor(self.rdev)
                ));
            }
        }
        v.into_bytes()
    }

    /// Shows this override in the stat of the real object it was read from: owner and
    /// permissions, and the type where the real object can stand for it (see the module
    /// comment).
    pub fn apply(&self, st: &mut FileStat) {
        let real = st.st_mode & libc::S_IFMT;
        let fmt = match self.fmt {
            Some(t) if t == real => real,
            Some(t @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK))
                if real == libc::S_IFREG =>
            {
                st.st_rdev = if matches!(t, libc::S_IFCHR | libc::S_IFBLK) {
                    self.rdev
                } else {
                    0
                };
                t
            }
            Some(t) => {
                tracing::debug!(
                    real,
                    t,
                    "override type does not fit the real object: type kept"
                );
                real
            }
            None => real,
        };
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_mode = fmt | self.perm;
    }
}

fn type_name(fmt: u32) -> Option<&'static str> {
    Some(match fmt {
        libc::S_IFDIR => "dir",
        libc::S_IFREG => "file",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "pipe",
        libc::S_IFSOCK => "socket",
        libc::S_IFBLK => "block",
        libc::S_IFCHR => "char",
        _ => return None,
    })
}

/// Whether a real object of this stat can carry an override.
fn can_carry(st: &FileStat) -> bool {
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR)
}

/// The override of real object `dir`/`name` (empty name: `dir` itself) whose real stat is
/// `st`, and the name it is stored under; `None` when the mount does not read overrides, the
/// object has none, or its value is malformed (warned about).
pub fn read(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    st: &FileStat,
) -> Option<(&'static CStr, Override)> {
    if !ovl.overrides.read || !can_carry(st) {
        return None;
    }
    // One listxattr answers "none" for most objects; a value is read only where a name is.
    let mut buf = [0u8; 1024];
    let list = match sys::xattr::list(dir, name, &mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(e) if e.raw_os_error() == Some(libc::ERANGE) => xattr::list_all(dir, name).ok()?,
        Err(_) => return None,
    };
    let present = |n: &CStr| list.split(|b| *b == 0).any(|l| l == n.to_bytes());
    let attr = NAMES.into_iter().find(|n| present(n))?;
    let value = xattr::read_small(dir, name, attr).ok()??;
    match Override::parse(&value) {
        Ok(o) => Some((attr, o)),
        Err(Malformed(why)) => {
            tracing::warn!(
                ?name,
                ?attr,
                value = %String::from_utf8_lossy(&value),
                why,
                "malformed owner override ignored"
            );
            None
        }
    }
}

/// Applies the override of real object `dir`/`name`, if any, to its real stat `st`.
pub fn apply(ovl: &Ovl, dir: BorrowedFd, name: &CStr, st: &mut FileStat) {
    if let Some((_, o)) = read(ovl, dir, name, st) {
        o.apply(st);
    }
}

fn store(dir: BorrowedFd, name: &CStr, attr: &CStr, o: &Override) -> OResult<()> {
    tracing::debug!(?name, ?attr, ?o, "owner override");
    realops::set_xattr(dir, name, attr, &o.encode(), 0).map_err(errno)
}

/// Whether an owner or mode the real object refused (`e`) is kept in an override instead: the
/// mount writes overrides, and the id is one the namespace cannot map (EINVAL), the process may
/// not give (EPERM), or the upper filesystem cannot represent (EOVERFLOW).
pub fn unstorable(ovl: &Ovl, e: nix::errno::Errno) -> bool {
    use nix::errno::Errno as E;
    ovl.overrides.write && matches!(e, E::EINVAL | E::EPERM | E::EOVERFLOW)
}

/// Stores override `o` on upper object `dir`/`name` under the name plyfs writes.
pub fn record(dir: BorrowedFd, name: &CStr, o: &Override) -> OResult<()> {
    store(dir, name, WRITTEN, o)
}

/// chown (ids as stored) and chmod of upper object `dir`/`name`: on the real object, or in its
/// override where it has one, or where the real one fails with an id the namespace cannot
/// store (see the module comment).
pub fn chown_chmod(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> OResult<()> {
    let stat = || {
        if name.is_empty() {
            nix::sys::stat::fstat(dir)
        } else {
            nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        }
        .map_err(errno)
    };
    let changed = |o: Override| Override {
        uid: uid.unwrap_or(o.uid),
        gid: gid.unwrap_or(o.gid),
        perm: mode.map_or(o.perm, |m| m & 0o7777),
        ..o
    };
    if ovl.overrides.read {
        let st = stat()?;
        if let Some((attr, o)) = read(ovl, dir, name, &st) {
            return store(dir, name, attr, &changed(o));
        }
    }
    let fallback = |e: nix::errno::Errno| -> OResult<()> {
        let st = stat()?;
        if !unstorable(ovl, e) || !can_carry(&st) {
            return Err(errno(e));
        }
        tracing::info!(?name, ?uid, ?gid, ?mode, %e, "kept in an owner override");
        let real = Override {
            uid: st.st_uid,
            gid: st.st_gid,
            perm: st.st_mode & 0o7777,
            fmt: None,
            rdev: 0,
        };
        store(dir, name, WRITTEN, &changed(real))
    };
    if uid.is_some() || gid.is_some() {
        if let Err(e) = realops::chown(dir, name, uid, gid) {
            return fallback(e);
        }
    }
    if let Some(mode) = mode {
        if let Err(e) = realops::chmod(dir, name, mode & 0o7777) {
            return fallback(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(uid: u32, gid: u32, perm: u32, fmt: Option<u32>, rdev: u64) -> Override {
        Override {
            uid,
            gid,
            perm,
            fmt,
            rdev,
        }
    }

    #[test]
    fn what_fuse_overlayfs_and_containers_storage_write() {
        // fuse-overlayfs' write_permission_xattr: "%d:%d:%o", sometimes with the type bits.
        assert_eq!(
            Override::parse(b"1000:1000:755"),
            Ok(ov(1000, 1000, 0o755, None, 0))
        );
        assert_eq!(
            Override::parse(b"0:0:100644"),
            Ok(ov(0, 0, 0o644, Some(libc::S_IFREG), 0))
        );
        assert_eq!(
            Override::parse(b"0:5:20620"),
            Ok(ov(0, 5, 0o620, Some(libc::S_IFCHR), 0))
        );
        // containers-storage's FormatContainersOverrideXattrDevice: "%d:%d:%04o:%s".
        assert_eq!(
            Override::parse(b"0:0:0755:dir"),
            Ok(ov(0, 0, 0o755, Some(libc::S_IFDIR), 0))
        );
        assert_eq!(
            Override::parse(b"33:33:4755:file"),
            Ok(ov(33, 33, 0o4755, Some(libc::S_IFREG), 0))
        );
        assert_eq!(
            Override::parse(b"0:6:0660:block-8-1"),
            Ok(ov(0, 6, 0o660, Some(libc::S_IFBLK), libc::makedev(8, 1)))
        );
        assert_eq!(
            Override::parse(b"0:0:0666:char-1-3-future"),
            Ok(ov(0, 0, 0o666, Some(libc::S_IFCHR), libc::makedev(1, 3)))
        );
        assert_eq!(
            Override::parse(b"0:0:0777:symlink").unwrap().fmt,
            Some(libc::S_IFLNK)
        );
        assert_eq!(
            Override::parse(b"0:0:0644:pipe").unwrap().fmt,
            Some(libc::S_IFIFO)
        );
        assert_eq!(
            Override::parse(b"0:0:0644:socket").unwrap().fmt,
            Some(libc::S_IFSOCK)
        );
        // fuse-overlayfs 2.0's tests: "char1:3"; and a trailing NUL some writers keep.
        assert_eq!(
            Override::parse(b"0:6:666:char1:3").unwrap().rdev,
            libc::makedev(1, 3)
        );
        assert_eq!(
            Override::parse(b"12345:12345:0644\0"),
            Ok(ov(12345, 12345, 0o644, None, 0))
        );
        assert_eq!(
            Override::parse(b"1:2:0600:dir").unwrap().fmt,
            Some(libc::S_IFDIR),
            "the type part wins"
        );
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"1000",
            b"1000:1000",
            b"1000:1000:",
            b"x:0:644",
            b"0:x:644",
            b"0:0:648",
            b"0:0:-644",
            b"-1:0:644",
            b"4294967296:0:644",
            b"0:0:1000000",
            b"0:0:070644",
            b"0:0:644:bogus",
            b"0:0:644:char",
            b"0:0:644:block-8",
            b"0:0:644:char-a-b",
            b"\xff:0:644",
        ] {
            assert!(
                Override::parse(bad).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encoding_round_trips() {
        for o in [
            ov(12345, 12345, 0o644, None, 0),
            ov(0, 0, 0o4755, None, 0),
            ov(7, 8, 0o620, Some(libc::S_IFCHR), libc::makedev(4, 64)),
            ov(
                7,
                8,
                0o660,
                Some(libc::S_IFBLK),
                libc::makedev(259, 1 << 12),
            ),
            ov(1, 1, 0o600, Some(libc::S_IFIFO), 0),
            ov(1, 1, 0o1777, Some(libc::S_IFDIR), 0),
        ] {
            assert_eq!(Override::parse(&o.encode()), Ok(o), "{o:?}");
        }
        assert_eq!(
            ov(12345, 12345, 0o644, None, 0).encode(),
            b"12345:12345:0644"
        );
        assert_eq!(
            ov(0, 5, 0o620, Some(libc::S_IFCHR), libc::makedev(4, 1)).encode(),
            b"0:5:0620:char-4-1"
        );
    }

    /// A real stat (of "/") with this mode and owner 1:1.
    fn stat_of(mode: u32) -> FileStat {
        let mut st = nix::sys::stat::fstat(std::fs::File::open("/").unwrap()).unwrap();
        st.st_mode = mode;
        st.st_uid = 1;
        st.st_gid = 1;
        st
    }

    #[test]
    fn applying_keeps_types_that_cannot_change() {
        let mut st = stat_of(libc::S_IFREG | 0o600);
        ov(0, 5, 0o620, Some(libc::S_IFCHR), libc::makedev(4, 1)).apply(&mut st);
        assert_eq!(
            (st.st_mode, st.st_uid, st.st_gid, st.st_rdev),
            (libc::S_IFCHR | 0o620, 0, 5, libc::makedev(4, 1)),
            "a regular file stands for a device"
        );
        let mut st = stat_of(libc::S_IFDIR | 0o700);
        ov(9, 9, 0o755, Some(libc::S_IFREG), 0).apply(&mut st);
        assert_eq!(st.st_mode, libc::S_IFDIR | 0o755, "a directory stays one");
        let mut st = stat_of(libc::S_IFREG | 0o600);
        ov(9, 9, 0o777, Some(libc::S_IFLNK), 0).apply(&mut st);
        assert_eq!(
            st.st_mode,
            libc::S_IFREG | 0o777,
            "no symlink without a target"
        );
        let mut st = stat_of(libc::S_IFREG | 0o600);
        ov(12345, 54321, 0o4711, None, 0).apply(&mut st);
        assert_eq!(
            (st.st_mode, st.st_uid, st.st_gid),
            (libc::S_IFREG | 0o4711, 12345, 54321)
        );
    }

    /// Through lookup and getattr, on real temp dirs without a mount (the namei fixture mounts
    /// with `userxattr`, so overrides are read).
    #[test]
    fn lookup_and_getattr_show_overrides() {
        use crate::namei::tests::{fixture, walk};
        let Some(f) = fixture("override") else { return };
        let set = |p: &str, v: &str| {
            ::xattr::set(
                f.base.join(p),
                "user.containers.override_stat",
                v.as_bytes(),
            )
            .unwrap()
        };
        set("top/etc/group", "12345:54321:0600");
        set("top/opaque/kept", "1:2");
        set("top/opaque", "7:8:01777:dir");
        let etc = walk(&f.ovl, "etc").unwrap().unwrap();
        let (node, a) = crate::namei::lookup(&f.ovl, &etc, std::ffi::OsStr::new("group"))
            .unwrap()
            .unwrap();
        assert_eq!((a.uid, a.gid, a.perm), (12345, 54321, 0o600));
        let a = crate::inode::getattr(&f.ovl, &node).unwrap();
        assert_eq!((a.uid, a.gid, a.perm), (12345, 54321, 0o600), "getattr");
        let kept = walk(&f.ovl, "opaque/kept").unwrap().unwrap();
        let real = std::fs::metadata(f.base.join("top/opaque/kept")).unwrap();
        let a = crate::inode::getattr(&f.ovl, &kept).unwrap();
        assert_eq!(
            a.uid,
            std::os::unix::fs::MetadataExt::uid(&real),
            "a malformed value is ignored"
        );
        let opaque = walk(&f.ovl, "opaque").unwrap().unwrap();
        let a = crate::inode::getattr(&f.ovl, &opaque).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.perm, a.kind),
            (7, 8, 0o1777, fuser::FileType::Directory)
        );
    }

    #[test]
    fn gating() {
        assert_eq!(
            Mode::new(false, false, true),
            Mode {
                read: false,
                write: false
            },
            "rootful: nothing read"
        );
        assert_eq!(
            Mode::new(false, true, true),
            Mode {
                read: true,
                write: false
            }
        );
        assert_eq!(
            Mode::new(true, false, true),
            Mode {
                read: true,
                write: true
            }
        );
        assert_eq!(
            Mode::new(true, false, false),
            Mode {
                read: true,
                write: false
            }
        );
        assert!(is_name(b"user.containers.override_stat"));
        assert!(!is_name(b"user.containers.override_statx"));
    }
}
