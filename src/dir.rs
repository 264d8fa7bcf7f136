//! Changes to the namespace: create, mkdir, mknod, symlink, link, unlink, rmdir, rename, with
//! the kernel overlay's semantics and on-disk results.
//!
//! Rules: every change happens in the upper layer, after copying up the parent directories. A
//! new object is built in the work dir with its final owner, mode and markers, then one rename
//! puts it in place: `RENAME_NOREPLACE`, or `RENAME_EXCHANGE` over a whiteout (then removed), so
//! the name shows either nothing or the whole new object. A regular file that needs nothing
//! but its mode (the daemon's own owner, no setgid directory or default ACL, no whiteout at the
//! name) is made in place by one exclusive `open`, which is just as whole. A directory made
//! over a whiteout is opaque. Removing a name that a lower layer also holds leaves a whiteout
//! in its place.
//!
//! Invariants: no lock is held across these calls but a node's own copy-up lock; the node table
//! learns about new objects after they are in place, through an ordinary lookup, or for a file
//! made in place, from what its fd says (`namei::instantiate`).

use fuser::{Errno, FileAttr, FileType};
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::SFlag;
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::copy_up::copy_up;
use crate::namei::{self, UpperEntry};
use crate::node::{Loc, Node, Real};
use crate::ovl::{errno, OResult, Ovl};
use crate::work::{remove_tree, WorkDir};
use crate::{readdir, realops};

/// What to make.
pub enum New<'a> {
    File {
        flags: OFlag,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Special {
        mode: u32,
        rdev: u64,
    },
    Symlink {
        target: &'a CStr,
    },
    /// A hard link to an existing (copied-up) object.
    Link {
        node: &'a Arc<Node>,
    },
}

/// The caller of a request, for ownership of what it makes.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    /// The caller's umask, applied unless the directory has a default ACL.
    pub umask: u32,
}

fn work(ovl: &Ovl) -> OResult<&WorkDir> {
    ovl.writable_work().ok_or(Errno::EROFS)
}

/// The upper directory of a (copied-up) directory node.
fn upper_dir(node: &Node) -> OResult<Arc<OwnedFd>> {
    node.reals()[0].dir_fd().cloned().ok_or(Errno::ENOTDIR)
}

/// Marks upper directory `dir` as holding xattr whiteouts, unless it is opaque.
fn mark_xwhiteouts(ovl: &Ovl, dir: BorrowedFd) -> OResult<()> {
    let mark =
        crate::xattr::read_small(dir, c"", &ovl.xattrs.opaque).map_err(crate::ovl::io_errno)?;
    if mark.as_deref() != Some(b"y") {
        realops::set_xattr(dir, c"", &ovl.xattrs.opaque, b"x", 0).map_err(errno)?;
    }
    Ok(())
}

/// Makes a whiteout named `tmp` in the work dir.
fn work_whiteout(ovl: &Ovl, w: &WorkDir, tmp: &CStr) -> OResult<bool> {
    w.whiteout(&ovl.xattrs, tmp).map_err(errno)
}

/// Makes `name` in `parent` and returns its node (one kernel lookup counted), its attributes and,
/// for a file, the open fd.
pub fn make(
    ovl: &Ovl,
    caller: Caller,
    parent: &Arc<Node>,
    name: &OsStr,
    what: New,
) -> OResult<(Arc<Node>, FileAttr, Option<OwnedFd>)> {
    if parent.kind != FileType::Directory {
        return Err(Errno::ENOTDIR);
    }
    let (found, upper_clean) = namei::find_with_upper(ovl, parent, name)?;
    if found.is_some() {
        return Err(Errno::EEXIST);
    }
    // Nothing at the name in the upper directory, whiteouts included, as `find` just saw it
    // (the kernel holds the directory locked against other changes through the mount).
    let mut upper_clean = upper_clean == Some(true);
    let w = work(ovl)?;
    let cname = namei::cname(name)?;
    if let New::Link { node } = &what {
        if node.kind == FileType::Directory {
            return Err(Errno::EPERM);
        }
        copy_up(ovl, node)?;
    }
    copy_up(ovl, parent)?;
    let udir = upper_dir(parent)?;
    if let New::Link { node } = &what {
        // A link to a copy makes its new directory impure, as the kernel's ovl_link: the
        // directory now holds a name whose inode number is not its real one.
        let reals = node.reals();
        let (d, n) = reals[0].at();
        if crate::xattr::read_small(d, n, &ovl.xattrs.origin)
            .map_err(crate::ovl::io_errno)?
            .is_some()
        {
            crate::copy_up::mark_impure(ovl, udir.as_fd())?;
        }
    }
    let mut pst = nix::sys::stat::fstat(udir.as_fd()).map_err(errno)?;
    // Its group and setgid bit as shown: an owner override where it has one.
    crate::override_stat::apply(ovl, udir.as_fd(), c"", &mut pst);
    let setgid_dir = pst.st_mode & libc::S_ISGID != 0;
    // Stored ids: the directory's gid as it is, the caller's through the owner mapping.
    let gid = if setgid_dir {
        pst.st_gid
    } else {
        ovl.ids.store_gid(caller.gid)
    };
    let parent_default = crate::xattr::read_all(udir.as_fd(), c"", crate::acl::DEFAULT)
        .map_err(crate::ovl::io_errno)?;
    let inherit = |mode: u32, is_dir: bool| {
        crate::acl::inherit(parent_default.as_deref(), mode, caller.umask, is_dir)
    };
    if let New::File { flags, mode } = &what {
        let (uid, plain_dir) = (ovl.ids.store_uid(caller.uid), !setgid_dir);
        if plain_dir && parent_default.is_none() && ovl.maker.owns_as(uid, gid) {
            let mode = inherit(*mode, false).mode;
            let made = create_in_place(ovl, udir.as_fd(), &cname, *flags, mode, upper_clean)?;
            if let Some(fd) = made {
                ovl.caches.name_added(parent, name.as_bytes());
                // What `find` would find now: this file alone, in the upper layer (no whiteout,
                // origin or owner override to read on a file just made).
                let stat = nix::sys::stat::fstat(fd.as_fd()).map_err(errno)?;
                let found = namei::Found {
                    kind: FileType::RegularFile,
                    reals: vec![Real::new(
                        0,
                        Loc::At(udir.clone(), cname.into()),
                        stat.st_ino,
                    )],
                    stat,
                    alias_of: None,
                    fresh: true,
                };
                let (node, attr) = namei::instantiate(ovl, parent, name, found)?;
                return Ok((node, attr, Some(fd)));
            }
            // A whiteout holds the name after all.
            upper_clean = false;
        }
    }
    let entry = if upper_clean {
        UpperEntry::Nothing
    } else {
        namei::upper_entry(ovl, udir.as_fd(), &cname)?
    };
    let tmp = w.temp_name();
    let wd = w.dir();
    let built = (|| -> OResult<Option<OwnedFd>> {
        let mut fd = None;
        let acl = match &what {
            New::File { flags, mode } => {
                fd = Some(
                    realops::create(wd, &tmp, *flags & OFlag::O_ACCMODE, 0o600).map_err(errno)?,
                );
                Some(inherit(*mode, false))
            }
            New::Dir { mode } => {
                realops::mkdir(wd, &tmp, 0o700).map_err(errno)?;
                let mut i = inherit(*mode, true);
                if setgid_dir {
                    i.mode |= libc::S_ISGID;
                }
                Some(i)
            }
            New::Special { mode, rdev } => {
                realops::mknod(wd, &tmp, (*mode & libc::S_IFMT) | 0o600, *rdev).map_err(errno)?;
                Some(inherit(*mode, false))
            }
            New::Symlink { target } => {
                realops::symlink(target, wd, &tmp).map_err(errno)?;
                None
            }
            New::Link { node } => {
                let reals = node.reals();
                let (d, n) = reals[0].at();
                realops::link(d, n, wd, &tmp).map_err(errno)?;
                return Ok(None);
            }
        };
        // An owner the upper layer cannot store goes in an owner override, where the new
        // object can carry one (a directory or regular file).
        let uid = ovl.ids.store_uid(caller.uid);
        let carries = matches!(what, New::File { .. } | New::Dir { .. });
        let owner_kept = match realops::chown(wd, &tmp, Some(uid), Some(gid)) {
            Ok(()) => false,
            Err(e) if carries && crate::override_stat::unstorable(ovl, e) => true,
            Err(e) => return Err(errno(e)),
        };
        if let Some(acl) = acl {
            realops::chmod(wd, &tmp, acl.mode & 0o7777).map_err(errno)?;
            if owner_kept {
                let o = crate::override_stat::Override {
                    uid,
                    gid,
                    perm: acl.mode & 0o7777,
                    fmt: None,
                    rdev: 0,
                };
                crate::override_stat::record(wd, &tmp, &o)?;
            }
            for (name, value) in [
                (crate::acl::ACCESS, &acl.access),
                (crate::acl::DEFAULT, &acl.default),
            ] {
                if let Some(v) = value {
                    realops::set_xattr(wd, &tmp, name, v, 0).map_err(errno)?;
                }
            }
        }
        // A new directory over a whiteout must not merge with what it hid; with redirect_dir=on
        // the kernel also makes every new directory of a merged parent opaque (a later rename
        // with a redirect could bring lower directories under its name).
        let merged_parent =
            parent.reals().len() > 1 && ovl.redirect_dir == crate::config::RedirectDir::On;
        if matches!(what, New::Dir { .. }) && (entry != UpperEntry::Nothing || merged_parent) {
            realops::set_xattr(wd, &tmp, &ovl.xattrs.opaque, b"y", 0).map_err(errno)?;
        }
        Ok(fd)
    })();
    let fd = match built.and_then(|fd| install(w, &tmp, udir.as_fd(), &cname, entry).map(|()| fd)) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = w.remove(&tmp);
            return Err(e);
        }
    };
    ovl.caches.name_added(parent, name.as_bytes());
    let (node, attr) = namei::lookup(ovl, parent, name)?.ok_or(Errno::EIO)?;
    if matches!(what, New::Dir { .. }) {
        // A directory just made is empty in the merged view (nothing was at its name in any
        // layer, or it is opaque): complete with no names, so that the names then made in it
        // are looked up and created without probing the upper layer for each.
        let version = node
            .dir()
            .version
            .load(std::sync::atomic::Ordering::Acquire);
        ovl.caches.set_complete(&node, version, std::iter::empty());
    }
    Ok((node, attr, fd))
}

/// How the upper filesystem owns what the daemon makes itself: the daemon's ids, and its
/// umask, which `open` applies to the mode it is given.
pub struct Maker {
    uid: u32,
    gid: u32,
    umask: u32,
}

impl Maker {
    /// The daemon's. The umask is read from /proc (reading it through `umask` would set it
    /// for every thread); without /proc, every bit counts as masked, so a mode is always set.
    pub fn current() -> Maker {
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let line = s.lines().find_map(|l| l.strip_prefix("Umask:"))?;
                u32::from_str_radix(line.trim(), 8).ok()
            })
            .unwrap_or(0o777);
        Maker {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            umask,
        }
    }

    /// Whether a file the daemon makes is owned by stored ids `uid` and `gid` as it is made
    /// (in a directory without the setgid bit).
    fn owns_as(&self, uid: u32, gid: u32) -> bool {
        (uid, gid) == (self.uid, self.gid)
    }
}

/// Creates regular file `name` straight in upper directory `udir` with its final `mode`, as
/// the kernel's overlay creates where no whiteout holds the name: one `openat(O_EXCL)` makes it
/// whole, for a file whose owner is the daemon's own (see `Maker`). None when a whiteout holds
/// the name (an aufs one beside it, or `EEXIST` for one at it): the caller then builds the
/// file in the work dir and puts it in place over the whiteout. `clean`: the caller saw nothing
/// at the name, aufs whiteout included.
fn create_in_place(
    ovl: &Ovl,
    udir: BorrowedFd,
    name: &CStr,
    flags: OFlag,
    mode: u32,
    clean: bool,
) -> OResult<Option<OwnedFd>> {
    if !clean && namei::has_aufs_whiteout(udir, name)? {
        return Ok(None);
    }
    let fd = match realops::create(udir, name, flags & OFlag::O_ACCMODE, mode) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EEXIST) => return Ok(None),
        Err(e) => return Err(errno(e)),
    };
    if mode & 0o777 & ovl.maker.umask != 0 {
        // The umask took bits the mode asks for: give them back, or take the file away. Until
        // then the file has fewer permission bits than asked, never more (a crash between the
        // two calls leaves it so).
        let mode = nix::sys::stat::Mode::from_bits_truncate(mode & 0o7777);
        if let Err(e) = nix::sys::stat::fchmod(fd.as_fd(), mode) {
            let _ = realops::unlink(udir, name);
            return Err(errno(e));
        }
    }
    Ok(Some(fd))
}

/// Puts work-dir object `tmp` in place as `name` in upper directory `udir`.
fn install(
    w: &WorkDir,
    tmp: &CStr,
    udir: BorrowedFd,
    name: &CStr,
    entry: UpperEntry,
) -> OResult<()> {
    match entry {
        UpperEntry::Whiteout => {
            realops::rename(w.dir(), tmp, udir, name, RenameFlags::RENAME_EXCHANGE)
                .map_err(errno)?;
            // The whiteout now sits in the work dir under the temp name.
            let _ = w.remove(tmp);
        }
        UpperEntry::Nothing | UpperEntry::AufsWhiteout => {
            realops::rename(w.dir(), tmp, udir, name, RenameFlags::RENAME_NOREPLACE)
                .map_err(errno)?;
            if entry == UpperEntry::AufsWhiteout {
                let wh = CString::new([namei::AUFS_WHITEOUT_PREFIX, name.to_bytes()].concat())
                    .map_err(|_| Errno::EINVAL)?;
                realops::unlink(udir, &wh).map_err(errno)?;
            }
        }
        UpperEntry::Object => return Err(Errno::EEXIST),
    }
    Ok(())
}

/// Puts a whiteout at `name` in upper directory `udir`, replacing what the upper layer has there
/// (a non-directory is replaced atomically; a directory is exchanged and then removed).
fn whiteout_in_place(
    ovl: &Ovl,
    udir: BorrowedFd,
    name: &CStr,
    entry: UpperEntry,
    is_dir: bool,
) -> OResult<()> {
    let w = work(ovl)?;
    if matches!(entry, UpperEntry::Nothing | UpperEntry::AufsWhiteout) {
        // Nothing to replace: link the shared whiteout straight in.
        if let Some(xform) = w.link_whiteout(udir, name).map_err(errno)? {
            if xform {
                mark_xwhiteouts(ovl, udir)?;
            }
            return Ok(());
        }
    }
    let tmp = w.temp_name();
    let xform = work_whiteout(ovl, w, &tmp)?;
    let flags = match (entry, is_dir) {
        (UpperEntry::Object, true) => RenameFlags::RENAME_EXCHANGE,
        (UpperEntry::Object, false) | (UpperEntry::Whiteout, _) => RenameFlags::empty(),
        _ => RenameFlags::RENAME_NOREPLACE,
    };
    if let Err(e) = realops::rename(w.dir(), &tmp, udir, name, flags) {
        let _ = w.remove(&tmp);
        return Err(errno(e));
    }
    if flags == RenameFlags::RENAME_EXCHANGE {
        w.remove(&tmp).map_err(errno)?;
    }
    if xform {
        mark_xwhiteouts(ovl, udir)?;
    }
    Ok(())
}

/// Removes an upper object outright (no lower layer holds the name).
fn remove_upper(ovl: &Ovl, udir: BorrowedFd, name: &CStr, is_dir: bool) -> OResult<()> {
    if !is_dir {
        return realops::unlink(udir, name).map_err(errno);
    }
    // The directory may still hold whiteouts: move it out, then empty it.
    let w = work(ovl)?;
    let tmp = w.temp_name();
    realops::rename(udir, name, w.dir(), &tmp, RenameFlags::RENAME_NOREPLACE).map_err(errno)?;
    remove_tree(w.dir(), &tmp).map_err(errno)
}

/// Before name `cname` of upper directory `udir` goes away: if it is a non-directory with other
/// links, or one the kernel still holds (`in_use`: an open file can still be fstat'ed,
/// fchmod'ed and truncated after its last name went away), an `O_PATH` fd to keep reaching it.
fn hold_other_links(udir: BorrowedFd, cname: &CStr, in_use: bool) -> Option<OwnedFd> {
    let st = nix::sys::stat::fstatat(udir, cname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if (st.st_nlink < 2 && !in_use) || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return None;
    }
    nix::fcntl::openat(
        udir,
        cname,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// After name `cname` of `udir` went away: a node that reached its object through that name
/// now reaches it through the held fd.
fn repoint(node: &Node, udir: &Arc<OwnedFd>, cname: &CStr, held: Option<OwnedFd>) {
    let Some(fd) = held else { return };
    let mut reals: Vec<_> = node.reals().iter().cloned().collect();
    if let Loc::At(d, n) = &reals[0].loc {
        if **n == *cname && same_dir(d, udir) {
            reals[0].loc = Loc::held(fd);
            node.set_reals(reals);
        }
    }
}

fn same_dir(a: &Arc<OwnedFd>, b: &Arc<OwnedFd>) -> bool {
    Arc::ptr_eq(a, b)
        || matches!(
            (nix::sys::stat::fstat(a.as_fd()), nix::sys::stat::fstat(b.as_fd())),
            (Ok(x), Ok(y)) if x.st_ino == y.st_ino && x.st_dev == y.st_dev
        )
}

/// unlink and rmdir.
pub fn remove(ovl: &Ovl, parent: &Arc<Node>, name: &OsStr, dir: bool) -> OResult<()> {
    let found = namei::find(ovl, parent, name)?.ok_or(Errno::ENOENT)?;
    let node = ovl.nodes.get(match found.alias_of {
        Some((layer, ino)) => ovl.id_of(layer, ino),
        None => ovl.id_of_reals(found.kind, &found.reals, parent),
    });
    match (dir, found.kind == FileType::Directory) {
        (false, true) => return Err(Errno::EISDIR),
        (true, false) => return Err(Errno::ENOTDIR),
        _ => {}
    }
    let cname = namei::cname(name)?;
    if dir {
        let (node, _) = namei::lookup(ovl, parent, name)?.ok_or(Errno::ENOENT)?;
        let listing = readdir::merged_listing(ovl, &node);
        ovl.nodes.forget(node.id, 1);
        if listing?.len() > 2 {
            return Err(Errno::ENOTEMPTY);
        }
    }
    work(ovl)?;
    copy_up(ovl, parent)?;
    let udir = upper_dir(parent)?;
    let in_upper = ovl.layers.is_upper(found.reals[0].layer());
    // What the upper layer holds at the name, as `find` just saw it: an object if it found
    // one there, else nothing (a whiteout would have hidden the name). An index alias is
    // looked at again.
    let entry = if found.reals[0].alias {
        namei::upper_entry(ovl, udir.as_fd(), &cname)?
    } else if in_upper {
        UpperEntry::Object
    } else {
        UpperEntry::Nothing
    };
    let held = if in_upper && !dir && !found.reals[0].alias {
        hold_other_links(udir.as_fd(), &cname, node.is_some())
    } else {
        None
    };
    let mut res = remove_found(ovl, parent, &found, &udir, &cname, entry, in_upper, dir);
    if res == Err(Errno::EEXIST) && entry == UpperEntry::Nothing {
        // A copy-up of the object (a change through an fd, which does not lock this
        // directory) put it in the upper layer since: hide that copy instead.
        let entry = namei::upper_entry(ovl, udir.as_fd(), &cname)?;
        res = remove_found(ovl, parent, &found, &udir, &cname, entry, in_upper, dir);
    }
    ovl.caches.name_removed(parent);
    if let (Ok(()), Some(node)) = (&res, &node) {
        repoint(node, &udir, &cname, held);
    }
    res
}

#[allow(clippy::too_many_arguments)]
fn remove_found(
    ovl: &Ovl,
    parent: &Arc<Node>,
    found: &namei::Found,
    udir: &Arc<OwnedFd>,
    cname: &CStr,
    entry: UpperEntry,
    in_upper: bool,
    dir: bool,
) -> OResult<()> {
    let top = &found.reals[0];
    if top.alias {
        // A lower link of an indexed inode, never linked up: hide it; one link fewer.
        whiteout_in_place(ovl, udir.as_fd(), cname, entry, false)?;
        return crate::index::alias_removed(ovl, top);
    }
    if namei::lower_positive(ovl, parent, cname)? {
        whiteout_in_place(ovl, udir.as_fd(), cname, entry, dir && in_upper)
    } else if in_upper {
        remove_upper(ovl, udir.as_fd(), cname, dir)
    } else {
        Ok(())
    }
}

/// One rename request: the names it moves and its flags.
#[derive(Clone, Copy)]
struct Rename<'a> {
    parent: &'a Arc<Node>,
    name: &'a OsStr,
    newparent: &'a Arc<Node>,
    newname: &'a OsStr,
    flags: RenameFlags,
}

/// rename(2) with RENAME_NOREPLACE, RENAME_EXCHANGE and RENAME_WHITEOUT.
pub fn rename(
    ovl: &Ovl,
    parent: &Arc<Node>,
    name: &OsStr,
    newparent: &Arc<Node>,
    newname: &OsStr,
    flags: u32,
) -> OResult<()> {
    let flags = RenameFlags::from_bits(flags).ok_or(Errno::EINVAL)?;
    // The names locks of both directories, in node id order (see node.rs), and the rename
    // sequence odd while names move (see reconnect.rs).
    let (first, second) = if parent.id <= newparent.id {
        (parent, newparent)
    } else {
        (newparent, parent)
    };
    let _first = first.dir().names.write().unwrap_or_else(|e| e.into_inner());
    let _second = (first.id != second.id).then(|| {
        second
            .dir()
            .names
            .write()
            .unwrap_or_else(|e| e.into_inner())
    });
    ovl.renames.fetch_add(1, Ordering::AcqRel);
    let r = Rename {
        parent,
        name,
        newparent,
        newname,
        flags,
    };
    let res = rename_locked(ovl, r);
    // Only these two names changed: complete directories stay complete.
    ovl.caches.name_removed(parent);
    ovl.caches.name_added(newparent, newname.as_bytes());
    ovl.renames.fetch_add(1, Ordering::AcqRel);
    res
}

fn rename_locked(ovl: &Ovl, r: Rename) -> OResult<()> {
    let exchange = r.flags.contains(RenameFlags::RENAME_EXCHANGE);
    let (src, _) = namei::lookup(ovl, r.parent, r.name)?.ok_or(Errno::ENOENT)?;
    let dst = namei::lookup(ovl, r.newparent, r.newname)?.map(|(n, _)| n);
    // The export record learns the new directory before the move, so a crash in between
    // leaves the object findable in one of the two.
    if let Some(record) = &ovl.record {
        if src.kind != FileType::Directory {
            record.moving(src.id, r.parent.id, r.newparent.id);
        }
        if let Some(d) = dst
            .as_ref()
            .filter(|d| exchange && d.kind != FileType::Directory)
        {
            record.moving(d.id, r.newparent.id, r.parent.id);
        }
    }
    let res = rename_nodes(ovl, r, &src, dst.as_ref());
    ovl.nodes.forget(src.id, 1);
    if let Some(d) = &dst {
        ovl.nodes.forget(d.id, 1);
    }
    res
}

/// Renames `src` (and `dst`, the object at the new name, if any) as `r` asks.
fn rename_nodes(ovl: &Ovl, r: Rename, src: &Arc<Node>, dst: Option<&Arc<Node>>) -> OResult<()> {
    let Rename {
        parent,
        name,
        newparent,
        newname,
        flags,
    } = r;
    let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
    let w = work(ovl)?;
    if let Some(d) = dst {
        if Arc::ptr_eq(d, src) {
            return Ok(()); // two names of one object: rename does nothing
        }
        if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            return Err(Errno::EEXIST);
        }
        let (sd, dd) = (
            src.kind == FileType::Directory,
            d.kind == FileType::Directory,
        );
        if !exchange {
            if sd && !dd {
                return Err(Errno::ENOTDIR);
            }
            if !sd && dd {
                return Err(Errno::EISDIR);
            }
            if dd && readdir::merged_listing(ovl, d)?.len() > 2 {
                return Err(Errno::ENOTEMPTY);
            }
        }
    } else if exchange {
        return Err(Errno::ENOENT);
    }
    // A directory that merges lower layers (or lives in one) moves with a redirect to its
    // lower path (redirect_dir=on), else it cannot move (EXDEV, as the kernel).
    let needs_redirect = |n: &Arc<Node>| {
        n.kind == FileType::Directory && !(n.is_upper(true) && n.reals().len() == 1)
    };
    let src_redirect = needs_redirect(src);
    let dst_redirect = exchange && dst.is_some_and(needs_redirect);
    if (src_redirect || dst_redirect) && ovl.redirect_dir != crate::config::RedirectDir::On {
        return Err(Errno::EXDEV);
    }
    // Computed before anything moves: they read the ancestors' places.
    let same_dir = parent.id == newparent.id;
    let redirect = if src_redirect {
        Some(redirect_for(ovl, src, same_dir)?)
    } else {
        None
    };
    let dst_redirect = match dst {
        Some(d) if dst_redirect => Some(redirect_for(ovl, d, same_dir)?),
        _ => None,
    };
    let (cname, cnew) = (namei::cname(name)?, namei::cname(newname)?);
    copy_up(ovl, parent)?;
    copy_up(ovl, newparent)?;
    // Per name: a name of a shared (hard-linked) node may still be lower.
    crate::copy_up::copy_up_name(ovl, parent, name)?;
    if exchange {
        crate::copy_up::copy_up_name(ovl, newparent, newname)?;
    }
    let (od, nd) = (upper_dir(parent)?, upper_dir(newparent)?);
    crate::copy_up::mark_impure(ovl, nd.as_fd())?;
    if exchange {
        crate::copy_up::mark_impure(ovl, od.as_fd())?;
        let d = dst.ok_or(Errno::ENOENT)?;
        // Each directory lands on the other's name: a redirect says where its own lower
        // directories are; without one, it must not merge with what a lower layer holds there.
        for (node, r, dir, n, lands_dir, lands) in [
            (src, &redirect, &od, &cname, &nd, &cnew),
            (d, &dst_redirect, &nd, &cnew, &od, &cname),
        ] {
            if node.kind != FileType::Directory {
                continue;
            }
            match r {
                Some(r) => set_redirect(ovl, dir.as_fd(), n, r, same_dir)?,
                None => {
                    let lands_parent = if Arc::ptr_eq(lands_dir, &nd) {
                        newparent
                    } else {
                        parent
                    };
                    if namei::lower_positive(ovl, lands_parent, lands)? {
                        realops::set_xattr(dir.as_fd(), n, &ovl.xattrs.opaque, b"y", 0)
                            .map_err(errno)?;
                    }
                }
            }
        }
        realops::rename(
            od.as_fd(),
            &cname,
            nd.as_fd(),
            &cnew,
            RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(errno)?;
        relink(src, newparent, &cnew, &nd);
        relink(d, parent, &cname, &od);
        return Ok(());
    }
    if let Some(r) = &redirect {
        set_redirect(ovl, od.as_fd(), &cname, r, same_dir)?;
    }
    let src_dir = src.kind == FileType::Directory;
    let needs_whiteout =
        flags.contains(RenameFlags::RENAME_WHITEOUT) || namei::lower_positive(ovl, parent, &cname)?;
    let dst_lower = namei::lower_positive(ovl, newparent, &cnew)?;
    let dst_entry = namei::upper_entry(ovl, nd.as_fd(), &cnew)?;
    let dst_held = match dst {
        Some(d) if d.kind != FileType::Directory && dst_entry == UpperEntry::Object => {
            hold_other_links(nd.as_fd(), &cnew, true)
        }
        _ => None,
    };
    if src_dir && dst_lower && redirect.is_none() {
        // It now covers a lower directory by name, and no redirect says where its own lower
        // directories are: it must not merge with that one.
        realops::set_xattr(od.as_fd(), &cname, &ovl.xattrs.opaque, b"y", 0).map_err(errno)?;
    }
    match dst_entry {
        UpperEntry::Object if src_dir => {
            // An empty-looking upper directory may still hold whiteouts: clear it first.
            let tmp = w.temp_name();
            realops::rename(
                nd.as_fd(),
                &cnew,
                w.dir(),
                &tmp,
                RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(errno)?;
            let _ = remove_tree(w.dir(), &tmp);
            realops::rename(
                od.as_fd(),
                &cname,
                nd.as_fd(),
                &cnew,
                RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(errno)?;
        }
        UpperEntry::Whiteout if src_dir => {
            realops::rename(
                od.as_fd(),
                &cname,
                nd.as_fd(),
                &cnew,
                RenameFlags::RENAME_EXCHANGE,
            )
            .map_err(errno)?;
            // The whiteout is now at the old name: keep it if a lower layer needs it there.
            if !needs_whiteout {
                realops::unlink(od.as_fd(), &cname).map_err(errno)?;
            }
            relink(src, newparent, &cnew, &nd);
            return Ok(());
        }
        _ => {
            realops::rename(od.as_fd(), &cname, nd.as_fd(), &cnew, RenameFlags::empty())
                .map_err(errno)?;
            if dst_entry == UpperEntry::AufsWhiteout {
                let wh = CString::new([namei::AUFS_WHITEOUT_PREFIX, cnew.to_bytes()].concat())
                    .map_err(|_| Errno::EINVAL)?;
                let _ = realops::unlink(nd.as_fd(), &wh);
            }
        }
    }
    if let Some(d) = dst {
        repoint(d, &nd, &cnew, dst_held);
    }
    relink(src, newparent, &cnew, &nd);
    if needs_whiteout {
        whiteout_in_place(ovl, od.as_fd(), &cname, UpperEntry::Nothing, false)?;
    }
    Ok(())
}

/// The path of directory `node` in the lower layers, from the root: its overlay path with each
/// ancestor's redirect applied (as the kernel's `ovl_get_redirect`).
fn lower_path(ovl: &Ovl, node: &Arc<Node>) -> OResult<Vec<Vec<u8>>> {
    if node.id == crate::export::ROOT_ID {
        return Ok(Vec::new());
    }
    let reals = node.reals();
    if ovl.layers.is_upper(reals[0].layer()) {
        if let Some(fd) = reals[0].dir_fd() {
            let r = crate::xattr::read_all(fd.as_fd(), c"", &ovl.xattrs.redirect)
                .map_err(crate::ovl::io_errno)?;
            if let Some(r) = r {
                if let Some(abs) = r.strip_prefix(b"/") {
                    return Ok(abs
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect());
                }
                let mut p = lower_path(ovl, &ovl.node(node.parent())?)?;
                p.push(r);
                return Ok(p);
            }
        }
    }
    let link = node.link();
    let mut p = lower_path(ovl, &ovl.node(link.parent)?)?;
    p.push(link.name.to_bytes().to_vec());
    Ok(p)
}

/// The `overlay.redirect` value for moving directory `node`: its lower name when it stays in
/// the same directory, else its absolute lower path.
fn redirect_for(ovl: &Ovl, node: &Arc<Node>, same_dir: bool) -> OResult<Vec<u8>> {
    let path = lower_path(ovl, node)?;
    let last = path.last().ok_or(Errno::EXDEV)?;
    if same_dir {
        return Ok(last.clone());
    }
    let mut abs = Vec::new();
    for c in &path {
        abs.push(b'/');
        abs.extend_from_slice(c);
    }
    Ok(abs)
}

/// Sets the redirect of upper directory `name` in `dir` to `value`, unless it keeps the one it
/// has: as the kernel's ovl_set_redirect, an existing redirect stays when the directory stays in
/// its directory or the redirect is absolute.
fn set_redirect(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    value: &[u8],
    same_dir: bool,
) -> OResult<()> {
    let existing =
        crate::xattr::read_all(dir, name, &ovl.xattrs.redirect).map_err(crate::ovl::io_errno)?;
    if existing.is_some_and(|e| same_dir || e.starts_with(b"/")) {
        return Ok(());
    }
    realops::set_xattr(dir, name, &ovl.xattrs.redirect, value, 0).map_err(errno)
}

/// Records a node's new place after a rename in the upper layer.
fn relink(node: &Arc<Node>, parent: &Arc<Node>, name: &CStr, udir: &Arc<OwnedFd>) {
    let name: crate::node::Name = name.into();
    node.set_link(crate::node::Link {
        parent: parent.id,
        name: name.clone(),
    });
    if node.kind != FileType::Directory {
        let mut reals: Vec<_> = node.reals().iter().cloned().collect();
        reals[0].loc = Loc::At(udir.clone(), name);
        node.set_reals(reals);
    }
}

/// The type bits of a mknod mode as a fuser file type.
pub fn special_kind(mode: u32) -> Option<FileType> {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFIFO | SFlag::S_IFSOCK | SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFREG => {
            Some(crate::inode::file_type(mode))
        }
        _ => None,
    }
}
