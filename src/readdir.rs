//! The merged listing of a directory: entries of every layer the directory merges, topmost
//! first, de-duplicated, with whiteouts and the private marker names removed.
//!
//! Rules: a name belongs to the topmost layer that mentions it; if that mention is a whiteout
//! the name is hidden. Within one layer an entry wins over a whiteout of the same name. d_ino is
//! the node id lookup gives the same name (the origin rule: an upper directory that merges with a
//! lower one below it takes the lower's id), so d_ino equals st_ino. Invariant: a listing is built
//! once per open-and-rewind and kept in the directory handle; offsets are indexes + 1.

use fuser::FileType;
use nix::dir::{Dir, Type};
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use std::collections::HashMap;
use std::ffi::{CStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::{Arc, Mutex};

use crate::inode;
use crate::namei::{self, AUFS_WHITEOUT_PREFIX};
use crate::node::{Node, Real};
use crate::ovl::{errno, OResult, Ovl};

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    pub kind: FileType,
    pub ino: u64,
}

/// An open directory: the listing, built on the first read from offset 0.
#[derive(Default)]
pub struct DirHandle {
    pub listing: Mutex<Option<Arc<Vec<Entry>>>>,
    /// Every entry goes with its attributes, past `plus_entries` too: the listing before this
    /// one left some out (`DirState::names_only`).
    pub full: bool,
    /// Entries of the listing looked up ahead of the kernel's next read (`ahead.rs`).
    pub ahead: crate::ahead::Ahead,
}

/// One name's first mention in the layers.
struct Slot {
    shown: bool,
    kind: FileType,
    layer: usize,
    ino: u64,
    /// An upper directory still looking for the directory it merges with below.
    seeking_below: bool,
    below: Option<(usize, u64)>,
}

fn kind_of(t: Type) -> FileType {
    match t {
        Type::Directory => FileType::Directory,
        Type::Symlink => FileType::Symlink,
        Type::Fifo => FileType::NamedPipe,
        Type::Socket => FileType::Socket,
        Type::CharacterDevice => FileType::CharDevice,
        Type::BlockDevice => FileType::BlockDevice,
        Type::File => FileType::RegularFile,
    }
}

/// What one real directory holds: entries (name, kind, inode) and whiteout names.
type LayerListing = (Vec<(Vec<u8>, FileType, u64)>, Vec<Vec<u8>>);

fn read_real(ovl: &Ovl, real: &Real) -> OResult<LayerListing> {
    let Some(fd) = real.dir_fd() else {
        return Err(fuser::Errno::ENOTDIR);
    };
    let fd = fd.as_fd();
    let mut dir = Dir::openat(
        fd,
        c".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let (mut entries, mut whiteouts) = (Vec::new(), Vec::new());
    for e in dir.iter() {
        let e = e.map_err(errno)?;
        let name: &CStr = e.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." || bytes == namei::AUFS_OPAQUE.to_bytes() {
            continue;
        }
        if let Some(target) = bytes.strip_prefix(AUFS_WHITEOUT_PREFIX) {
            whiteouts.push(target.to_vec());
            continue;
        }
        let t = match e.file_type() {
            Some(t) => t,
            None => {
                let st = fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(errno)?;
                kind_to_type(inode::file_type(st.st_mode))
            }
        };
        let maybe_whiteout = t == Type::CharacterDevice || (t == Type::File && real.xwhiteouts);
        if maybe_whiteout {
            match fstatat(fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st)
                    if namei::is_chardev_whiteout(&st)
                        || namei::is_xattr_whiteout(ovl, fd, name, &st)? =>
                {
                    whiteouts.push(bytes.to_vec());
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::ENOENT) => continue,
                Err(e) => return Err(errno(e)),
            }
        }
        entries.push((bytes.to_vec(), kind_of(t), e.ino()));
    }
    Ok((entries, whiteouts))
}

fn kind_to_type(k: FileType) -> Type {
    match k {
        FileType::Directory => Type::Directory,
        FileType::Symlink => Type::Symlink,
        FileType::NamedPipe => Type::Fifo,
        FileType::Socket => Type::Socket,
        FileType::CharDevice => Type::CharacterDevice,
        FileType::BlockDevice => Type::BlockDevice,
        FileType::RegularFile => Type::File,
    }
}

/// Whether upper directory `name` below `dir` is opaque (then it merges with nothing below).
fn upper_dir_opaque(ovl: &Ovl, dir: &Real, name: &[u8]) -> OResult<bool> {
    let cname = std::ffi::CString::new(name).map_err(|_| fuser::Errno::EINVAL)?;
    let Some(parent) = dir.dir_fd() else {
        return Ok(true);
    };
    let fd = match crate::layer::open_dir(parent.as_fd(), &cname) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(true),
        Err(e) => return Err(errno(e)),
    };
    Ok(namei::dir_marks(ovl, parent.as_fd(), &cname, fd.as_fd())?.0)
}

/// The id of an entry of kind `kind` found in `reals[0]` (with inode number `ino`), `reals`
/// being the listed directory's real directories: an upper entry of an impure directory takes
/// its origin's, as lookup does.
fn entry_id(ovl: &Ovl, reals: &[Real], impure: bool, name: &[u8], ino: u64, kind: FileType) -> u64 {
    let real = &reals[0];
    if impure {
        if let (Some(dir), Ok(cname)) = (real.dir_fd(), std::ffi::CString::new(name)) {
            if let Some((layer, oino)) =
                crate::export::upper_origin(ovl, dir.as_fd(), &cname, ino, kind, reals)
            {
                return ovl.id_of(layer, oino);
            }
        }
    }
    ovl.id_of(real.layer(), ino)
}

/// Whether `real` is an upper directory marked impure.
fn is_impure(ovl: &Ovl, real: &Real) -> bool {
    ovl.layers.is_upper(real.layer())
        && real.dir_fd().is_some_and(|d| {
            crate::xattr::read_small(d.as_fd(), c"", &ovl.xattrs.impure)
                .ok()
                .flatten()
                .is_some()
        })
}

/// Builds the merged listing of directory `node`, with `.` and `..` first.
pub fn merged_listing(ovl: &Ovl, node: &Node) -> OResult<Vec<Entry>> {
    let reals = node.reals();
    let impure = is_impure(ovl, &reals[0]);
    let mut out = vec![
        Entry {
            name: ".".into(),
            kind: FileType::Directory,
            ino: node.id,
        },
        Entry {
            name: "..".into(),
            kind: FileType::Directory,
            ino: node.parent(),
        },
    ];
    if reals.len() == 1 {
        let r = &reals[0];
        let (entries, _) = read_real(ovl, r)?;
        out.extend(entries.into_iter().map(|(name, kind, ino)| Entry {
            ino: entry_id(ovl, &reals, impure, &name, ino, kind),
            name: OsString::from_vec(name),
            kind,
        }));
        return Ok(out);
    }
    let mut slots: HashMap<Vec<u8>, Slot> = HashMap::new();
    let mut order: Vec<Vec<u8>> = Vec::new();
    for r in reals.iter() {
        let is_upper = ovl.layers.is_upper(r.layer());
        let (entries, whiteouts) = read_real(ovl, r)?;
        for (name, kind, ino) in entries {
            match slots.get_mut(&name) {
                None => {
                    slots.insert(
                        name.clone(),
                        Slot {
                            shown: true,
                            kind,
                            layer: r.layer(),
                            ino,
                            seeking_below: is_upper && kind == FileType::Directory,
                            below: None,
                        },
                    );
                    order.push(name);
                }
                Some(slot) if slot.seeking_below => {
                    slot.seeking_below = false;
                    if kind == FileType::Directory {
                        slot.below = Some((r.layer(), ino));
                    }
                }
                Some(_) => {}
            }
        }
        for name in whiteouts {
            match slots.get_mut(&name) {
                None => {
                    slots.insert(
                        name,
                        Slot {
                            shown: false,
                            kind: FileType::RegularFile,
                            layer: r.layer(),
                            ino: 0,
                            seeking_below: false,
                            below: None,
                        },
                    );
                }
                Some(slot) => slot.seeking_below = false,
            }
        }
    }
    for name in order {
        let slot = &slots[&name];
        if !slot.shown {
            continue;
        }
        let ino = match slot.below {
            Some((layer, ino)) if !upper_dir_opaque(ovl, &reals[0], &name)? => {
                ovl.id_of(layer, ino)
            }
            // An upper entry may be a copy: its id is its origin's, as lookup says.
            _ if ovl.layers.is_upper(slot.layer) => {
                entry_id(ovl, &reals, impure, &name, slot.ino, slot.kind)
            }
            _ => ovl.id_of(slot.layer, slot.ino),
        };
        out.push(Entry {
            name: OsString::from_vec(name),
            kind: slot.kind,
            ino,
        });
    }
    Ok(out)
}

/// Lookups of missing names in a directory before plyfs reads its whole listing, so that the
/// next misses are answered from memory (a search path probes many names in few directories).
const MISSES_BEFORE_LISTING: u32 = 32;
/// The largest directory listed that way: the sum of its real directories' sizes.
const LISTING_MAX_BYTES: i64 = 1 << 20;

/// Notes a lookup in `dir` that found nothing; after `MISSES_BEFORE_LISTING` of them, lists the
/// directory (at most once per version, and only a small one) and makes it complete, as a
/// listing through the mount would.
pub fn note_miss(ovl: &Ovl, dir: &Node) {
    use std::sync::atomic::Ordering;
    let state = dir.dir();
    if dir.kind != FileType::Directory
        || state.misses.fetch_add(1, Ordering::Relaxed) + 1 < MISSES_BEFORE_LISTING
    {
        return;
    }
    state.misses.store(0, Ordering::Relaxed);
    let version = state.version.load(Ordering::Acquire);
    if state.listed_at.swap(version + 1, Ordering::Relaxed) == version + 1
        || state
            .complete
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    {
        return;
    }
    let size: i64 = dir
        .reals()
        .iter()
        .filter_map(|r| r.dir_fd())
        .filter_map(|fd| nix::sys::stat::fstat(fd.as_fd()).ok())
        .map(|st| st.st_size)
        .sum();
    let Some(node) = ovl.nodes.get(dir.id).filter(|_| size <= LISTING_MAX_BYTES) else {
        return;
    };
    let _ = complete_listing(ovl, &node, version);
}

/// The merged listing of `node`, read at `version` of it; the directory is complete with it
/// from then on (`cache.rs`), while that version lasts.
fn complete_listing(ovl: &Ovl, node: &Arc<Node>, version: u64) -> OResult<Vec<Entry>> {
    let listing = merged_listing(ovl, node)?;
    ovl.caches.set_complete(
        node,
        version,
        listing
            .iter()
            .skip(2) // "." and ".."
            .map(|e| std::os::unix::ffi::OsStrExt::as_bytes(e.name.as_os_str())),
    );
    Ok(listing)
}

/// The listing of an open directory for a read at `offset`: built anew at offset 0.
pub fn listing_for(
    ovl: &Ovl,
    node: &Arc<Node>,
    dh: &DirHandle,
    offset: u64,
) -> OResult<Arc<Vec<Entry>>> {
    let mut guard = dh.listing.lock().unwrap_or_else(|e| e.into_inner());
    match &*guard {
        Some(l) if offset != 0 => Ok(l.clone()),
        _ => {
            // Only this handle's own lock is held: a directory handle is read by one opener.
            let version = node
                .dir()
                .version
                .load(std::sync::atomic::Ordering::Acquire);
            let l = Arc::new(complete_listing(ovl, node, version)?);
            *guard = Some(l.clone());
            Ok(l)
        }
    }
}

#[cfg(test)]
mod tests {
    //! The merged listing on real temp dirs, without a mount (the lookup fixture).
    use super::*;
    use crate::namei::tests::{fixture, walk};
    use std::collections::BTreeSet;

    fn names(ovl: &Ovl, path: &str) -> BTreeSet<String> {
        let node = walk(ovl, path).unwrap().unwrap();
        merged_listing(ovl, &node)
            .unwrap()
            .into_iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn merged_deduplicated_whiteouts_hidden() {
        let Some(f) = fixture("rd-merge") else { return };
        let etc = names(&f.ovl, "etc");
        assert_eq!(
            etc,
            [".", "..", "group", "passwd"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "hosts is whited out, passwd listed once, no marker names"
        );
        let root = names(&f.ovl, "opaque");
        assert!(
            root.contains("kept") && !root.contains("hidden") && !root.contains(".wh..wh..opq")
        );
        assert!(
            names(&f.ovl, "renamed").contains("a"),
            "the redirected lower dir merges"
        );
    }

    #[test]
    fn d_ino_is_the_lookup_id() {
        let Some(f) = fixture("rd-ino") else { return };
        let etc = walk(&f.ovl, "etc").unwrap().unwrap();
        for e in merged_listing(&f.ovl, &etc).unwrap() {
            let id = match e.name.to_str().unwrap() {
                "." => etc.id,
                ".." => crate::export::ROOT_ID,
                n => walk(&f.ovl, &format!("etc/{n}")).unwrap().unwrap().id,
            };
            assert_eq!(e.ino, id, "d_ino of {:?}", e.name);
        }
    }
}
