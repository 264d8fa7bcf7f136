//! Lookup through the layers: the kernel overlayfs rules for whiteouts, opaque directories and
//! redirects, and the on-disk forms other writers leave (AUFS `.wh.` names, fuse-overlayfs'
//! opaque xattr).
//!
//! Rules (as fs/overlayfs/namei.c): the name is looked up in the parent's real directories,
//! topmost first. A whiteout (char 0/0, a zero-size file with `overlay.whiteout`, or a `.wh.NAME`
//! beside it) ends the search. The first object found decides the type; a non-directory ends the
//! search; a directory merges with directories below it until a non-directory, a whiteout or an
//! opaque directory (`overlay.opaque` = `y`, `user.fuseoverlayfs.opaque` = `y`, or a
//! `.wh..wh..opq` inside). A directory's `overlay.redirect` (not read in the lowest layer) changes
//! the name looked up below: a relative one replaces the last component, an absolute one restarts
//! from the lower layers' roots. Invariant: every real lookup is one name, `O_NOFOLLOW`, beneath a
//! directory fd of the same layer.

use fuser::{Errno, FileType};
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, FileStat, SFlag};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::config::RedirectDir;
use crate::inode;
use crate::layer::open_dir;
use crate::node::{Loc, Node, Real};
use crate::ovl::{errno, io_errno, OResult, Ovl};
use crate::xattr::{self, FUSE_OVERLAYFS_OPAQUE};

pub const AUFS_WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const AUFS_OPAQUE: &CStr = c".wh..wh..opq";
const NAME_MAX: usize = 255;

/// What one layer holds under a name.
#[derive(Clone, Copy)]
pub enum Probe {
    Missing,
    Whiteout,
    Object(FileStat),
}

/// Where the search continues below a directory that carries a redirect.
#[derive(Debug)]
pub enum Redirect {
    Relative(CString),
    Absolute(Vec<CString>),
}

/// The result of a lookup before it becomes a node.
pub struct Found {
    pub kind: FileType,
    pub reals: Vec<Real>,
    pub stat: FileStat,
    /// The lower object an index alias stands for (its id is the lower one's).
    pub alias_of: Option<(usize, u64)>,
    /// Made by plyfs just now in the upper layer: it has no origin to read for its id.
    pub fresh: bool,
}

/// Whether the name is one plyfs never shows (an AUFS whiteout or opaque marker).
pub fn is_hidden_name(name: &[u8]) -> bool {
    name.starts_with(AUFS_WHITEOUT_PREFIX)
}

/// A char device 0/0.
pub fn is_chardev_whiteout(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && st.st_rdev == 0
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// A zero-size regular file carrying the `overlay.whiteout` xattr.
pub fn is_xattr_whiteout(ovl: &Ovl, dir: BorrowedFd, name: &CStr, st: &FileStat) -> OResult<bool> {
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG || st.st_size != 0 {
        return Ok(false);
    }
    Ok(xattr::read_small(dir, name, &ovl.xattrs.whiteout)
        .map_err(io_errno)?
        .is_some())
}

/// Whether `dir` holds an AUFS whiteout `.wh.NAME` for `name`.
pub fn has_aufs_whiteout(dir: BorrowedFd, name: &CStr) -> OResult<bool> {
    let name = name.to_bytes();
    if name.len() + AUFS_WHITEOUT_PREFIX.len() > NAME_MAX {
        return Ok(false);
    }
    let wh = CString::new([AUFS_WHITEOUT_PREFIX, name].concat()).map_err(|_| Errno::EINVAL)?;
    exists(dir, &wh)
}

fn exists(dir: BorrowedFd, name: &CStr) -> OResult<bool> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// Whether a lower layer of `parent` holds `name` (so removing or moving the upper object
/// needs a whiteout to keep it hidden).
pub fn lower_positive(ovl: &Ovl, parent: &Node, name: &CStr) -> OResult<bool> {
    for r in parent
        .reals()
        .iter()
        .filter(|r| !ovl.layers.is_upper(r.layer()))
    {
        let Some(dir) = r.dir_fd() else { continue };
        match probe_layer(ovl, r.layer(), Some(r.ino), dir.as_fd(), name)? {
            Probe::Missing => continue,
            Probe::Whiteout => return Ok(false),
            Probe::Object(_) => return Ok(true),
        }
    }
    Ok(false)
}

/// What the upper directory `dir` holds under `name`: nothing, a whiteout, or an object.
pub fn upper_entry(ovl: &Ovl, dir: BorrowedFd, name: &CStr) -> OResult<UpperEntry> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if is_chardev_whiteout(&st) || is_xattr_whiteout(ovl, dir, name, &st)? => {
            Ok(UpperEntry::Whiteout)
        }
        Ok(_) => Ok(UpperEntry::Object),
        Err(nix::errno::Errno::ENOENT) => Ok(if has_aufs_whiteout(dir, name)? {
            UpperEntry::AufsWhiteout
        } else {
            UpperEntry::Nothing
        }),
        Err(e) => Err(errno(e)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperEntry {
    Nothing,
    Whiteout,
    /// A `.wh.NAME` beside it (containers-storage's form).
    AufsWhiteout,
    Object,
}

/// Looks `name` up in one real directory.
pub fn probe(ovl: &Ovl, dir: BorrowedFd, name: &CStr) -> OResult<Probe> {
    let st = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => {
            return Ok(if has_aufs_whiteout(dir, name)? {
                Probe::Whiteout
            } else {
                Probe::Missing
            })
        }
        Err(e) => return Err(errno(e)),
    };
    if is_chardev_whiteout(&st) || is_xattr_whiteout(ovl, dir, name, &st)? {
        return Ok(Probe::Whiteout);
    }
    Ok(Probe::Object(st))
}

thread_local! {
    /// Set while this thread looks up the entries of a listing (`Listing`).
    static LISTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While it lives, this thread's lookups are of the entries of a listing too large for the
/// lower-lookup cache (`Caches::floods`): the cache is neither asked nor filled. Each entry is
/// looked up once, to become a node the kernel holds; a huge directory's entries would only
/// push out the entries the cache is for (names probed again and again, and the names an
/// unlink or a rename probes again after a listing of a small directory), and cost an LRU
/// update each.
pub struct Listing(bool);

/// A `Listing` guard for a listing of `len` entries: one that does nothing if the cache can
/// hold them.
pub fn listing(ovl: &Ovl, len: usize) -> Listing {
    if ovl.caches.floods(len) {
        Listing(LISTING.replace(true))
    } else {
        Listing(LISTING.get())
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTING.set(self.0);
    }
}

/// `probe` in layer `layer`, whose directory `dir` has inode number `dir_ino` (when known):
/// answered by the lower-lookup cache where it can (`cache.rs`, not for a listing), and
/// counted.
fn probe_layer(
    ovl: &Ovl,
    layer: usize,
    dir_ino: Option<u64>,
    dir: BorrowedFd,
    name: &CStr,
) -> OResult<Probe> {
    if ovl.layers.is_upper(layer) {
        return probe(ovl, dir, name);
    }
    let stats = &ovl.caches.stats;
    let dir_ino = dir_ino.filter(|_| !LISTING.get());
    if let Some(ino) = dir_ino {
        if let Some(hit) = ovl.caches.lower_get(layer, ino, name.to_bytes()) {
            stats.lower_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
    }
    stats.lower_probes.fetch_add(1, Ordering::Relaxed);
    let found = probe(ovl, dir, name)?;
    if let Some(ino) = dir_ino {
        ovl.caches.lower_put(layer, ino, name.to_bytes(), found);
    }
    Ok(found)
}

/// The opaque and xwhiteouts marks of directory `name` in `dir` (`fd` is the directory itself).
pub fn dir_marks(ovl: &Ovl, dir: BorrowedFd, name: &CStr, fd: BorrowedFd) -> OResult<(bool, bool)> {
    let mark = xattr::read_small(dir, name, &ovl.xattrs.opaque).map_err(io_errno)?;
    let (mut opaque, xwhiteouts) = match mark.as_deref() {
        Some(b"y") => (true, false),
        Some(b"x") => (false, true),
        _ => (false, false),
    };
    if !opaque {
        opaque = xattr::read_small(dir, name, FUSE_OVERLAYFS_OPAQUE)
            .map_err(io_errno)?
            .is_some_and(|v| v == b"y")
            || exists(fd, AUFS_OPAQUE)?;
    }
    Ok((opaque, xwhiteouts))
}

fn read_redirect(ovl: &Ovl, dir: BorrowedFd, name: &CStr) -> OResult<Option<Redirect>> {
    let Some(value) = xattr::read_all(dir, name, &ovl.xattrs.redirect).map_err(io_errno)? else {
        return Ok(None);
    };
    if matches!(ovl.redirect_dir, RedirectDir::NoFollow) {
        tracing::warn!("refusing to follow redirect of {:?}", name);
        return Err(Errno::EPERM);
    }
    parse_redirect(&value)
        .inspect_err(|_| tracing::warn!(?name, "invalid overlay.redirect"))
        .map(Some)
}

/// An `overlay.redirect` value: an absolute path of names (no `..`, no empty path) or one
/// name; EINVAL for anything else, as the kernel.
pub fn parse_redirect(value: &[u8]) -> OResult<Redirect> {
    let parse = |c: &[u8]| CString::new(c).map_err(|_| Errno::EINVAL);
    if let Some(abs) = value.strip_prefix(b"/") {
        let parts = abs
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .map(parse)
            .collect::<OResult<Vec<_>>>()?;
        if parts.is_empty() || parts.iter().any(|p| p.as_bytes() == b"..") {
            return Err(Errno::EINVAL);
        }
        Ok(Redirect::Absolute(parts))
    } else if value.is_empty() || value.contains(&b'/') || value == b".." || value == b"." {
        Err(Errno::EINVAL)
    } else {
        Ok(Redirect::Relative(parse(value)?))
    }
}

/// Walks `parts[..len-1]` from a layer root, directory by directory; `None` if any is missing.
fn walk_from_root(root: &Arc<OwnedFd>, parts: &[CString]) -> OResult<Option<Arc<OwnedFd>>> {
    let mut dir = root.clone();
    for part in &parts[..parts.len() - 1] {
        match open_dir(dir.as_fd(), part) {
            Ok(fd) => dir = Arc::new(fd),
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
            Err(nix::errno::Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(Some(dir))
}

/// A name from a request as a C string (it can hold no NUL: the kernel splits at them).
pub fn cname(name: &OsStr) -> OResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// Finds `name` in directory node `parent` through the layers.
pub fn find(ovl: &Ovl, parent: &Node, name: &OsStr) -> OResult<Option<Found>> {
    find_with_upper(ovl, parent, name).map(|(found, _)| found)
}

/// `find`, and what it saw of the name in the parent's upper directory: `Some(true)` when that
/// directory holds nothing at the name, in no form of whiteout either; `Some(false)` when it
/// holds something; None when it did not look (no upper directory, or answered by a cache).
pub fn find_with_upper(
    ovl: &Ovl,
    parent: &Node,
    name: &OsStr,
) -> OResult<(Option<Found>, Option<bool>)> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    if is_hidden_name(bytes) {
        return Ok((None, None));
    }
    if ovl.caches.known_missing(parent, bytes) {
        return Ok((None, None));
    }
    let mut upper_clean = None;
    // One allocation for the name, shared by the node's link and its real object's location.
    let cname: crate::node::Name = CString::new(bytes).map_err(|_| Errno::EINVAL)?.into();
    let preals = parent.reals();
    let nlayers = ovl.layers.all.len();
    let mut by_layer: Vec<Option<(&Arc<OwnedFd>, u64)>> = vec![None; nlayers];
    for r in preals.iter() {
        by_layer[r.layer()] = r.dir_fd().map(|d| (d, r.ino));
    }
    let mut found: Vec<Real> = Vec::new();
    let mut kind = None;
    let mut top_stat = None;
    let mut redirect: Option<Redirect> = None;
    let mut alias_of = None;
    let first = preals.first().map_or(nlayers, |r| r.layer());
    for (li, parent_dir) in by_layer.iter().enumerate().skip(first) {
        // The directory to look in, and the name to look up there.
        let (dir, dir_ino, lname): (Arc<OwnedFd>, Option<u64>, &CStr) = match &redirect {
            Some(Redirect::Absolute(parts)) => match walk_from_root(&ovl.roots[li], parts)? {
                Some(d) => (d, None, parts.last().unwrap().as_c_str()),
                None => continue,
            },
            other => match parent_dir {
                Some((d, ino)) => (
                    (*d).clone(),
                    Some(*ino),
                    match other {
                        Some(Redirect::Relative(n)) => n.as_c_str(),
                        _ => &cname,
                    },
                ),
                None => continue,
            },
        };
        let probed = probe_layer(ovl, li, dir_ino, dir.as_fd(), lname)?;
        if ovl.layers.is_upper(li) {
            upper_clean = Some(matches!(probed, Probe::Missing));
        }
        let st = match probed {
            Probe::Missing => continue,
            Probe::Whiteout => break,
            Probe::Object(st) => st,
        };
        let this_is_dir = is_dir(&st);
        match kind {
            None => {
                kind = Some(inode::file_type(st.st_mode));
                top_stat = Some(st);
            }
            Some(FileType::Directory) if this_is_dir => {}
            Some(_) => break,
        }
        if !this_is_dir {
            // A lower link of an inode copied up through the index shows the upper copy.
            if found.is_empty() && !ovl.layers.is_upper(li) {
                if let Some((alias, ist)) =
                    crate::index::lookup_alias(ovl, li, dir.as_fd(), lname, &st)?
                {
                    alias_of = Some((li, st.st_ino));
                    top_stat = Some(ist);
                    found.push(alias);
                    break;
                }
            }
            let name = if lname == &*cname {
                cname.clone()
            } else {
                lname.into()
            };
            found.push(Real::new(li, Loc::At(dir, name), st.st_ino));
            break;
        }
        let fd = match open_dir(dir.as_fd(), lname) {
            Ok(fd) => fd,
            // Replaced underneath between the stat and the open.
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => break,
            Err(e) => return Err(errno(e)),
        };
        let (opaque, xwhiteouts) = dir_marks(ovl, dir.as_fd(), lname, fd.as_fd())?;
        if li + 1 < nlayers && !opaque && ovl.redirect_dir != RedirectDir::Off {
            if let Some(r) = read_redirect(ovl, dir.as_fd(), lname)? {
                redirect = Some(match (redirect.take(), r) {
                    // Below an absolute redirect, a relative one renames the last component of
                    // that path (as the kernel's chained redirects).
                    (Some(Redirect::Absolute(mut parts)), Redirect::Relative(n)) => {
                        *parts.last_mut().expect("absolute redirects are not empty") = n;
                        Redirect::Absolute(parts)
                    }
                    (_, r) => r,
                });
            }
        }
        found.push(Real::new(li, Loc::Dir(Arc::new(fd)), st.st_ino).marks(opaque, xwhiteouts));
        if opaque {
            break;
        }
    }
    let found = match (kind, top_stat, found.first()) {
        (Some(kind), Some(mut stat), Some(top)) => {
            // The topmost object's owner override (rootless storage), which may also name the
            // type a regular file stands for.
            let (dir, name) = top.at();
            crate::override_stat::apply(ovl, dir, name, &mut stat);
            let kind = if kind == FileType::Directory {
                kind
            } else {
                inode::file_type(stat.st_mode)
            };
            Some(Found {
                kind,
                reals: found,
                stat,
                alias_of,
                fresh: false,
            })
        }
        _ => None,
    };
    Ok((found, upper_clean))
}

/// Whether a held node whose topmost real object is `held` stands for what `found` found: the
/// same topmost real object, or (a directory that gained an upper directory) one of its layers.
fn same_object(held: &Real, found: &Found) -> bool {
    let same = |r: &Real| r.layer() == held.layer() && r.ino == held.ino;
    same(&found.reals[0]) || (found.kind == FileType::Directory && found.reals.iter().any(same))
}

/// Whether two real non-directories are reached by the same name in the same directory fd.
fn same_name(a: &Real, b: &Real) -> bool {
    match (&a.loc, &b.loc) {
        (Loc::At(d1, n1), Loc::At(d2, n2)) => {
            a.layer() == b.layer() && Arc::ptr_eq(d1, d2) && n1 == n2
        }
        _ => false,
    }
}

/// Looks `name` up in `parent` and returns its node, counting one kernel lookup.
pub fn lookup(
    ovl: &Ovl,
    parent: &Node,
    name: &OsStr,
) -> OResult<Option<(Arc<Node>, fuser::FileAttr)>> {
    let Some(found) = find(ovl, parent, name)? else {
        crate::readdir::note_miss(ovl, parent);
        return Ok(None);
    };
    instantiate(ovl, parent, name, found).map(Some)
}

/// The node for what `find` found (or what the caller just made, described as `find` would)
/// at `name` in `parent`, counting one kernel lookup.
pub fn instantiate(
    ovl: &Ovl,
    parent: &Node,
    name: &OsStr,
    found: Found,
) -> OResult<(Arc<Node>, fuser::FileAttr)> {
    let mut id = match found.alias_of {
        Some((layer, ino)) => ovl.id_of(layer, ino),
        None if found.fresh => ovl.id_of(found.reals[0].layer(), found.reals[0].ino),
        None => ovl.id_of_reals(found.kind, &found.reals, parent),
    };
    let mut known = ovl.nodes.get(id);
    // A held node of this kind under this id whose topmost real object is another: two names
    // claim one origin (a damaged or hostile layer, or an upper dir changed underneath). Sharing
    // the node would show one object's data under the other's name, so this one takes the id
    // of its own topmost real object, or a fresh one when that is the id in dispute (the liar
    // was looked up first).
    if let Some(k) = known.as_ref().filter(|k| k.kind == found.kind) {
        if !same_object(&k.reals()[0], &found) {
            let top = &found.reals[0];
            let own = ovl.id_of(top.layer(), top.ino);
            let new = if own == id { ovl.nodes.fresh_id() } else { own };
            tracing::warn!(id, new, ?name, "an id claimed by another object");
            id = new;
            known = ovl.nodes.get(id);
        }
    }
    let merged = found.kind == FileType::Directory && found.reals.len() > 1;
    let mut attr = inode::attr(id, &found.stat, merged);
    attr.nlink = inode::nlink(ovl, &found.reals[0], &found.stat, merged);
    ovl.ids.present(&mut attr);
    // A known node still reached by this very name in this very directory is this object
    // (plyfs repoints a held node to an fd when its name goes away): no handle to take.
    let unchanged = known
        .as_ref()
        .filter(|k| k.kind == found.kind && same_name(&k.reals()[0], &found.reals[0]));
    let (generation, top) = match unchanged {
        Some(k) => (k.generation, None),
        None => crate::export::generation(ovl, id, &found.reals),
    };
    // A node still held for an object whose inode number was reused by this one (the kernel has
    // not forgotten the old one yet): this is another object, with the same id.
    let reused = known
        .as_ref()
        .is_some_and(|k| k.kind != found.kind || k.generation != generation);
    match &known {
        // Known: only a new directory for a non-directory needs recording.
        Some(known) if !reused => {
            if found.kind != FileType::Directory && known.parent() != parent.id {
                if let Some(record) = &ovl.record {
                    record.found_in(id, parent.id, found.stat.st_nlink);
                }
            }
        }
        _ => crate::export::note_lookup(
            ovl,
            id,
            found.kind,
            &found.reals,
            parent.id,
            found.stat.st_nlink,
            top,
        ),
    }
    let link_name = match &found.reals[0].loc {
        Loc::At(_, n) if n.to_bytes() == name.as_bytes() => n.clone(),
        _ => cname(name)?.into(),
    };
    let mut node = Node::new(id, found.kind, found.reals, parent.id, link_name);
    node.generation = generation;
    let node = if reused {
        tracing::debug!(id, "node id reused by another object");
        ovl.nodes.replace(node)
    } else {
        ovl.nodes.intern(node)
    };
    if known.is_none() || reused {
        ovl.watch.add(&node);
    }
    Ok((node, attr))
}

#[cfg(test)]
pub(crate) mod tests {
    //! The lookup rules on real temp dirs, without a mount (no privilege needed: whiteouts and
    //! opaque markers in the AUFS form and as `user.overlay.*` xattrs with `userxattr`).
    use super::*;
    use crate::config::{parse_args, Action};
    use crate::export::ROOT_ID;
    use std::fs;
    use std::path::{Path, PathBuf};

    pub(crate) struct Fixture {
        pub base: PathBuf,
        pub ovl: Ovl,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.base);
        }
    }

    /// Two lowers and an upper, a user.* xattr check decides whether xattr cases can run.
    pub(crate) fn fixture(tag: &str) -> Option<Fixture> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "plyfs-unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let d = |p: &str| {
            let p = base.join(p);
            fs::create_dir_all(&p).unwrap();
            p
        };
        let (top, bottom, upper, work, mnt) =
            (d("top"), d("bottom"), d("upper"), d("work"), d("mnt"));
        let w = |p: &Path, data: &str| fs::write(p, data).unwrap();
        // bottom: the base.
        for dir in ["etc", "opaque", "fo-opaque", "x-opaque", "orig", "gone-dir"] {
            d(&format!("bottom/{dir}"));
        }
        w(&bottom.join("etc/passwd"), "bottom passwd");
        w(&bottom.join("etc/hosts"), "bottom hosts");
        w(
            &bottom.join("opaque/hidden"),
            "hidden by an aufs opaque marker",
        );
        w(
            &bottom.join("fo-opaque/hidden"),
            "hidden by the fuse-overlayfs marker",
        );
        w(
            &bottom.join("x-opaque/hidden"),
            "hidden by user.overlay.opaque=y",
        );
        w(&bottom.join("orig/a"), "orig a");
        w(&bottom.join("gone-dir/f"), "f");
        w(&bottom.join("gone"), "gone");
        w(&bottom.join("type-change"), "a file below a dir");
        // top: whiteouts and opaque markers in the AUFS form, and a dir over a file.
        for dir in [
            "etc",
            "opaque",
            "fo-opaque",
            "x-opaque",
            "type-change",
            "renamed",
        ] {
            d(&format!("top/{dir}"));
        }
        w(&top.join("etc/.wh.hosts"), "");
        w(&top.join("etc/group"), "top group");
        w(&top.join(".wh.gone"), "");
        w(&top.join(".wh.gone-dir"), "");
        w(&top.join("opaque/.wh..wh..opq"), "");
        w(&top.join("opaque/kept"), "kept");
        w(&top.join("renamed/b"), "renamed b");
        if ::xattr::set(top.join("fo-opaque"), "user.fuseoverlayfs.opaque", b"y").is_err() {
            println!("SKIPPED: namei unit tests: the temp filesystem has no user xattrs");
            let _ = fs::remove_dir_all(&base);
            return None;
        }
        ::xattr::set(top.join("x-opaque"), "user.overlay.opaque", b"y").unwrap();
        ::xattr::set(top.join("renamed"), "user.overlay.redirect", b"orig").unwrap();
        // upper: a file over the lower etc/passwd.
        d("upper/etc");
        w(&upper.join("etc/passwd"), "upper passwd");
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={},userxattr",
            top.display(),
            bottom.display(),
            upper.display(),
            work.display()
        );
        let args = ["-o", &opts, mnt.to_str().unwrap()].map(std::ffi::OsString::from);
        let Action::Mount(cfg) = parse_args(&args).unwrap() else {
            unreachable!()
        };
        let ovl = Ovl::new(&cfg).unwrap();
        Some(Fixture { base, ovl })
    }

    /// Looks a path up from the root, one name at a time.
    pub(crate) fn walk(ovl: &Ovl, path: &str) -> OResult<Option<Arc<Node>>> {
        let mut node = ovl.node(ROOT_ID)?;
        for part in path.split('/') {
            match lookup(ovl, &node, OsStr::new(part))? {
                Some((n, _)) => node = n,
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    fn content(ovl: &Ovl, path: &str) -> Option<String> {
        let node = walk(ovl, path).unwrap()?;
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        let fd = crate::realops::open(dir, name, nix::fcntl::OFlag::O_RDONLY).ok()?;
        Some(std::io::read_to_string(fs::File::from(fd)).unwrap())
    }

    /// A node still in the table under the id a new object gets (its inode number was
    /// reused before the kernel forgot the old one) is replaced, not handed out again.
    #[test]
    fn a_reused_node_id_gets_a_new_node() {
        let Some(f) = fixture("reuse") else { return };
        let upper = f.base.join("upper");
        fs::create_dir(upper.join("fresh")).unwrap();
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(upper.join("fresh")).unwrap());
        let id = f.ovl.id_of(0, ino);
        let root = f.ovl.node(ROOT_ID).unwrap();
        let stale = f.ovl.nodes.intern(Node::new(
            id,
            FileType::RegularFile,
            root.reals().to_vec(),
            ROOT_ID,
            c"gone".into(),
        ));
        let (node, _) = lookup(&f.ovl, &root, OsStr::new("fresh")).unwrap().unwrap();
        assert_eq!(node.id, id);
        assert_eq!(node.kind, FileType::Directory, "not the stale file node");
        assert!(!Arc::ptr_eq(&node, &stale));
        assert_eq!(
            node.lookups.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "the old node's count carries over, for the old inode's FORGET"
        );
    }

    #[test]
    fn upper_wins_and_lowers_merge() {
        let Some(f) = fixture("merge") else { return };
        assert_eq!(
            content(&f.ovl, "etc/passwd").as_deref(),
            Some("upper passwd")
        );
        assert_eq!(content(&f.ovl, "etc/group").as_deref(), Some("top group"));
        let etc = walk(&f.ovl, "etc").unwrap().unwrap();
        assert_eq!(etc.reals().len(), 3, "etc merges upper, top and bottom");
    }

    #[test]
    fn whiteouts_hide_files_and_dirs() {
        let Some(f) = fixture("whiteouts") else {
            return;
        };
        assert!(
            walk(&f.ovl, "etc/hosts").unwrap().is_none(),
            ".wh.hosts hides hosts"
        );
        assert!(walk(&f.ovl, "gone").unwrap().is_none());
        assert!(walk(&f.ovl, "gone-dir").unwrap().is_none());
        assert!(
            walk(&f.ovl, "etc/.wh.hosts").unwrap().is_none(),
            "markers are never shown"
        );
    }

    #[test]
    fn opaque_dirs_in_every_form() {
        let Some(f) = fixture("opaque") else { return };
        for dir in ["opaque", "fo-opaque", "x-opaque"] {
            assert!(
                walk(&f.ovl, &format!("{dir}/hidden")).unwrap().is_none(),
                "{dir} is opaque"
            );
            assert_eq!(walk(&f.ovl, dir).unwrap().unwrap().reals().len(), 1);
        }
        assert_eq!(content(&f.ovl, "opaque/kept").as_deref(), Some("kept"));
    }

    #[test]
    fn a_dir_over_a_file_stops_merging_and_redirects_merge() {
        let Some(f) = fixture("types") else { return };
        let t = walk(&f.ovl, "type-change").unwrap().unwrap();
        assert_eq!(t.kind, FileType::Directory);
        assert_eq!(t.reals().len(), 1, "a file below a dir does not merge");
        assert_eq!(
            content(&f.ovl, "renamed/a").as_deref(),
            Some("orig a"),
            "the redirect"
        );
        assert_eq!(content(&f.ovl, "renamed/b").as_deref(), Some("renamed b"));
    }

    #[test]
    fn names_too_long_and_markers() {
        let Some(f) = fixture("names") else { return };
        let root = f.ovl.node(ROOT_ID).unwrap();
        let long = "x".repeat(256);
        assert_eq!(
            find(&f.ovl, &root, OsStr::new(&long)).err(),
            Some(Errno::ENAMETOOLONG)
        );
        assert!(find(&f.ovl, &root, OsStr::new(".wh..wh..opq"))
            .unwrap()
            .is_none());
    }
}
