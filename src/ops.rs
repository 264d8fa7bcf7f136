//! The request handlers, one per FUSE operation: unpack nothing, call the module that owns the
//! operation, reply. Both transports call them: fuser's /dev/fuse loop (`fs.rs`) and plyfs's
//! io_uring queues (`uring/`), each with reply objects of its own (`reply.rs`). No overlay
//! logic lives here.
//!
//! Invariant: no handler holds a lock while it replies, and none sends a kernel notification
//! (they are queued for the notify worker).

use fuser::{Errno, FileAttr, FileType, FopenFlags};
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::dir::{self, Caller, New};
use crate::killpriv::Who;
use crate::node::Node;
use crate::ovl::{errno, io_errno, OResult, Ovl};
use crate::reply::{self, Opened, StatfsOut};
use crate::{file, inode, killpriv, namei, readdir, realops, xattr};

/// The virtual xattr of the mount's root that reads the daemon's cache counters.
pub const STATS_XATTR: &str = "plyfs.stats";

/// The handlers, over the mount's state.
#[derive(Clone)]
pub struct Ops {
    pub ovl: Arc<Ovl>,
}

/// A zeroed attribute for negative entries and entries without an inode (node id 0).
pub fn negative_attr() -> FileAttr {
    FileAttr {
        ino: fuser::INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn dir_node(ovl: &Ovl, ino: u64) -> OResult<Arc<Node>> {
    let node = ovl.node(ino)?;
    if node.kind != FileType::Directory {
        return Err(Errno::ENOTDIR);
    }
    Ok(node)
}

/// Replies to a getxattr/listxattr with `value` under the size protocol.
fn reply_sized(reply: impl reply::Xattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.value(value);
    }
}

fn caller(who: &Who, umask: u32) -> Caller {
    Caller {
        uid: who.uid,
        gid: who.gid,
        umask,
    }
}

fn answer(reply: impl reply::Empty, res: OResult<()>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

type Made = (Arc<Node>, FileAttr, Option<std::os::fd::OwnedFd>);

impl Ops {
    fn reply_made(&self, reply: impl reply::Entry, made: OResult<Made>) {
        match made {
            Ok((node, attr, _)) => reply.entry(&self.ovl.timeout, &attr, node.generation.into()),
            Err(e) => reply.error(e),
        }
    }

    fn make(&self, who: &Who, umask: u32, parent: u64, name: &OsStr, what: New) -> OResult<Made> {
        let parent = dir_node(&self.ovl, parent)?;
        dir::make(&self.ovl, caller(who, umask), &parent, name, what)
    }

    fn set_or_remove_xattr(
        &self,
        who: &Who,
        ino: u64,
        name: &OsStr,
        value: Option<(&[u8], i32)>,
    ) -> OResult<()> {
        let node = self.ovl.node(ino)?;
        let real_name = self.real_xattr_name(name, Errno::EPERM)?;
        crate::copy_up::copy_up(&self.ovl, &node)?;
        let reals = node.reals();
        let (dir, n) = reals[0].at();
        match value {
            Some((v, flags)) => realops::set_xattr(dir, n, &real_name, v, flags),
            None => realops::remove_xattr(dir, n, &real_name),
        }
        .map_err(errno)?;
        if value.is_some() && real_name.as_bytes() == b"system.posix_acl_access" {
            self.kill_priv(who, ino, killpriv::on_access_acl)?;
        }
        Ok(())
    }

    /// Clears the setuid/setgid bits `rule` says the request's caller takes from upper object
    /// `ino` (see `killpriv.rs`); whether it cleared any.
    fn kill_priv(&self, who: &Who, ino: u64, rule: killpriv::Rule) -> OResult<bool> {
        let node = self.ovl.node(ino)?;
        let attr = inode::getattr(&self.ovl, &node)?;
        self.kill_priv_of(who, &node, &attr, rule)
    }

    /// `kill_priv` of `node`, whose attributes `attr` the caller has just read.
    fn kill_priv_of(
        &self,
        who: &Who,
        node: &Node,
        attr: &FileAttr,
        rule: killpriv::Rule,
    ) -> OResult<bool> {
        let ino = node.id;
        let mode = inode::type_bits(attr.kind) | u32::from(attr.perm);
        let bits = rule(mode, attr.gid, who);
        if bits == 0 {
            return Ok(false);
        }
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        killpriv::clear(&self.ovl, dir, name, mode, bits)?;
        // The kernel refreshes only size and times after a fallocate or write, so a `stat` of
        // the mode alone would show its cached bits. Queued before the reply; the worker sends
        // it at once (see `notify.rs` for why not from here).
        self.ovl.notify.queue(crate::notify::Inval::Inode { ino });
        Ok(true)
    }

    /// The real xattr name behind a user's; `hidden` when the name is one users cannot reach.
    fn real_xattr_name(&self, name: &OsStr, hidden: Errno) -> OResult<CString> {
        let real = self.ovl.xattrs.to_real(name.as_bytes()).ok_or(hidden)?;
        CString::new(real).map_err(|_| Errno::EINVAL)
    }

    fn lookup_entry(&self, parent: u64, name: &OsStr) -> OResult<Option<(Arc<Node>, FileAttr)>> {
        // The kernel decoding a file handle of a node it forgot (export only).
        if self.ovl.exporting() && (name == "." || name == "..") {
            let node = if name == "." {
                crate::reconnect::decode(&self.ovl, parent)?
            } else {
                crate::reconnect::parent(&self.ovl, parent)?
            };
            return match inode::getattr(&self.ovl, &node) {
                Ok(attr) => Ok(Some((node, attr))),
                Err(e) => {
                    self.ovl.nodes.forget(node.id, 1);
                    Err(e)
                }
            };
        }
        let parent = dir_node(&self.ovl, parent)?;
        let found = namei::lookup(&self.ovl, &parent, name)?;
        let dir = parent.dir();
        // The first lookup of an entry after a listing by name alone (a name that is not
        // there says nothing of the entries): the others are likely to follow.
        if found.is_some()
            && dir.names_only.load(Ordering::Acquire)
            && !dir.statahead.swap(true, Ordering::AcqRel)
        {
            let reals = parent.reals();
            let dirs = reals.iter().filter_map(|r| r.dir_fd().cloned());
            self.ovl.caches.statahead.ask(dirs);
        }
        Ok(found)
    }

    fn getxattr_value(&self, ino: u64, name: &OsStr) -> OResult<Vec<u8>> {
        let node = self.ovl.node(ino)?;
        let real_name = self.real_xattr_name(name, Errno::ENODATA)?;
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        xattr::read_all(dir, name, &real_name)
            .map_err(io_errno)?
            .ok_or(Errno::ENODATA)
    }

    fn listxattr_value(&self, ino: u64) -> OResult<Vec<u8>> {
        let node = self.ovl.node(ino)?;
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        let list = xattr::list_all(dir, name).map_err(io_errno)?;
        Ok(self.ovl.xattrs.filter_list(&list))
    }

    pub fn lookup(&self, parent: u64, name: &OsStr, reply: impl reply::Entry) {
        tracing::debug!(parent, ?name, "lookup");
        match self.lookup_entry(parent, name) {
            Ok(Some((node, attr))) => reply.entry(&self.ovl.timeout, &attr, node.generation.into()),
            Ok(None) if !self.ovl.timeout.is_zero() => {
                reply.entry(&self.ovl.timeout, &negative_attr(), 0)
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        self.ovl.nodes.forget(ino, nlookup);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>, reply: impl reply::Attr) {
        let res = self.ovl.node(ino).and_then(|n| match fh {
            // An open file answers from its fd, also after it was unlinked.
            Some(fh) if n.kind == FileType::RegularFile => file::fstat(&self.ovl, fh)
                .map(|st| {
                    let mut a = inode::attr(n.id, &st, false);
                    self.ovl.ids.present(&mut a);
                    a
                })
                .or_else(|_| inode::getattr(&self.ovl, &n)),
            _ => inode::getattr(&self.ovl, &n),
        });
        match res {
            Ok(attr) => reply.attr(&self.ovl.timeout, &attr),
            Err(e) => reply.error(e),
        }
    }

    pub fn readlink(&self, ino: u64, reply: impl reply::Data) {
        let res = self.ovl.node(ino).and_then(|n| {
            let reals = n.reals();
            let (dir, name) = reals[0].at();
            nix::fcntl::readlinkat(dir, name).map_err(errno)
        });
        match res {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    pub fn open(&self, ino: u64, flags: i32, reply: impl reply::Open) {
        match self.ovl.node(ino) {
            Ok(node) => file::open(&self.ovl, &node, flags, reply),
            Err(e) => reply.error(e),
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32, reply: impl reply::Data) {
        reply.fill(size as usize, |buf| {
            file::read_into(&self.ovl, fh, offset, buf)
        });
    }

    pub fn release(&self, fh: u64, reply: impl reply::Empty) {
        file::release(&self.ovl, fh);
        reply.ok();
    }

    pub fn opendir(&self, ino: u64, reply: impl reply::Open) {
        match dir_node(&self.ovl, ino) {
            Ok(node) => {
                // A listing that gave some entries by name alone is not kept past this open:
                // a directory listed twice is read by someone who wants it again, so this
                // time every entry goes with its attributes (`readdirplus`).
                let full = node.dir().names_only.swap(false, Ordering::AcqRel);
                node.dir().statahead.store(false, Ordering::Release);
                let fh = self.ovl.dirs.insert(readdir::DirHandle {
                    full,
                    ..Default::default()
                });
                // Otherwise the kernel may cache the listing across opens: it changes only
                // through the mount (which invalidates it) while the layers are in use.
                let keep = if full {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(fh, FopenFlags::FOPEN_CACHE_DIR | keep, None);
            }
            Err(e) => reply.error(e),
        }
    }

    pub fn readdir(&self, ino: u64, fh: u64, offset: u64, mut reply: impl reply::Dir) {
        let listing = self.ovl.node(ino).and_then(|node| {
            let dh = self.ovl.dirs.get(fh)?;
            readdir::listing_for(&self.ovl, &node, &dh, offset)
        });
        match listing {
            Ok(listing) => {
                for (i, e) in listing.iter().enumerate().skip(offset as usize) {
                    if reply.add(e.ino, i as u64 + 1, e.kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    pub fn readdirplus(&self, ino: u64, fh: u64, offset: u64, mut reply: impl reply::DirPlus) {
        let res = self.ovl.node(ino).and_then(|node| {
            let dh = self.ovl.dirs.get(fh)?;
            if offset == 0 {
                dh.ahead.restart(&self.ovl);
            }
            let listing = readdir::listing_for(&self.ovl, &node, &dh, offset)?;
            Ok((listing, node, dh))
        });
        let (listing, node, dh) = match res {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        let all = dh.full;
        let ttl = self.ovl.timeout;
        // In full too once a lookup in it came between two parts of this listing: its reader
        // stats as it goes.
        let interleaved = node.dir().statahead.load(Ordering::Acquire);
        let plus_entries = if all || interleaved {
            usize::MAX
        } else {
            self.ovl.plus_entries
        };
        // The export record's slots of the entries found, written in runs before the reply.
        let batch = self.ovl.record.as_ref().map(|r| r.batch());
        let _listing = namei::listing(&self.ovl, listing.len());
        // Where the reply stopped for want of room, how many entries it holds, and whether some
        // went by name alone.
        let (mut stopped, mut sent, mut names_only) = (None, 0, false);
        for (i, e) in listing.iter().enumerate().skip(offset as usize) {
            let off = i as u64 + 1;
            let dots = e.name == "." || e.name == "..";
            // Past `plus_entries` (io_uring only), names alone: listing a huge directory then
            // makes no inode per entry, in the daemon or the kernel (a 100k-entry `ls -f`: 0.2 s
            // instead of 1.2). Whoever stats the entries after the listing looks each up, with
            // statahead warming the real inodes (`statahead.rs`); one who stats as it lists
            // gets the rest in full (`interleaved`), and so does the directory's next listing
            // (`opendir`): a directory listed twice is wanted with its attributes.
            if i >= plus_entries && !dots {
                if let Some(full) = reply.add_name(e.ino, off, e.kind, &e.name) {
                    names_only = true;
                    if full {
                        break;
                    }
                    sent += 1;
                    continue;
                }
            }
            let full = if dots {
                // The kernel takes no lookup count for these.
                match self
                    .ovl
                    .node(e.ino)
                    .and_then(|n| Ok((inode::getattr(&self.ovl, &n)?, n.generation)))
                {
                    Ok((attr, generation)) => {
                        reply.add(off, &e.name, &ttl, &attr, generation.into())
                    }
                    Err(_) => continue,
                }
            } else {
                let version = node.dir().version.load(Ordering::Acquire);
                let found = match dh.ahead.take(&self.ovl, i, version) {
                    Some(found) => found,
                    None => namei::lookup(&self.ovl, &node, &e.name),
                };
                match found {
                    Ok(Some((child, attr))) => {
                        let full = reply.add(off, &e.name, &ttl, &attr, child.generation.into());
                        if full {
                            // Not sent: kept (with its count) for the reply that starts here.
                            dh.ahead
                                .keep(&self.ovl, i, version, Ok(Some((child, attr))));
                        }
                        full
                    }
                    Ok(None) => continue,
                    Err(err) => {
                        tracing::warn!(?err, name = ?e.name, "readdirplus lookup failed");
                        continue;
                    }
                }
            };
            if full {
                stopped = Some(i);
                break;
            }
            sent += 1;
        }
        drop(batch);
        if names_only {
            node.dir().names_only.store(true, Ordering::Release);
        }
        reply.ok();
        // The kernel will ask for the entries from `stopped` on next, while it takes this
        // reply in: look up the next two replies' worth meanwhile, where they go with
        // attributes.
        if let Some(next) = stopped {
            let end = (next + 2 * sent.max(1))
                .min(plus_entries)
                .min(listing.len());
            if next + 1 < end {
                self.ovl.listahead.ask(crate::ahead::Job {
                    ovl: self.ovl.clone(),
                    dir: node,
                    generation: dh.ahead.generation(),
                    handle: dh,
                    listing,
                    range: next..end,
                });
            }
        }
    }

    pub fn releasedir(&self, fh: u64, reply: impl reply::Empty) {
        if let Some(dh) = self.ovl.dirs.remove(fh) {
            dh.ahead.close(&self.ovl);
        }
        reply.ok();
    }

    pub fn statfs(&self, reply: impl reply::Statfs) {
        match nix::sys::statfs::fstatfs(&self.ovl.layers.statfs_layer().root) {
            Ok(s) => reply.statfs(&StatfsOut {
                blocks: s.blocks(),
                bfree: s.blocks_free(),
                bavail: s.blocks_available(),
                files: s.files(),
                ffree: s.files_free(),
                bsize: s.block_size() as u32,
                namelen: s.maximum_name_length() as u32,
                frsize: s.block_size() as u32,
            }),
            Err(e) => reply.error(errno(e)),
        }
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32, reply: impl reply::Xattr) {
        // The daemon's counters (cache.rs), on the root only; not listed.
        if ino == crate::export::ROOT_ID && name == STATS_XATTR {
            let line = format!(
                "{} nodes={}\n",
                self.ovl.caches.stats_line().trim_end(),
                self.ovl.nodes.count()
            );
            return reply_sized(reply, line.as_bytes(), size);
        }
        self.ovl
            .caches
            .stats
            .getxattrs
            .fetch_add(1, Ordering::Relaxed);
        match self.getxattr_value(ino, name) {
            Ok(v) => reply_sized(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    pub fn listxattr(&self, ino: u64, size: u32, reply: impl reply::Xattr) {
        match self.listxattr_value(ino) {
            Ok(v) => reply_sized(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    pub fn setattr(&self, who: &Who, ino: u64, a: &inode::SetAttr, reply: impl reply::Attr) {
        let res = self.ovl.node(ino).and_then(|n| {
            let attr = inode::setattr(&self.ovl, &n, a)?;
            // The bits the change takes that the kernel left to plyfs (killpriv.rs), from the
            // attributes just read: by the data rule for a truncate or an empty SETATTR (a
            // write's, or chown(f, -1, -1)), by chown's for a chown. Where the kernel sent the
            // mode itself (no FUSE_HANDLE_KILLPRIV_V2), setattr applied it and only what it
            // leaves is left.
            let rule: Option<killpriv::Rule> = if a.size.is_some() || a.is_empty() {
                Some(killpriv::on_data_change)
            } else if a.uid.is_some() || a.gid.is_some() {
                Some(killpriv::on_chown)
            } else {
                None
            };
            match rule {
                Some(rule) if self.kill_priv_of(who, &n, &attr, rule)? => {
                    inode::getattr(&self.ovl, &n)
                }
                _ => Ok(attr),
            }
        });
        match res {
            Ok(attr) => reply.attr(&self.ovl.timeout, &attr),
            Err(e) => reply.error(e),
        }
    }

    /// mknod, with `rdev` as the kernel encodes it (`new_encode_dev`).
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        who: &Who,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: impl reply::Entry,
    ) {
        let rdev = libc::makedev(
            (rdev >> 8) & 0xfff,
            (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
        );
        let what = match dir::special_kind(mode) {
            Some(FileType::RegularFile) => New::File {
                flags: nix::fcntl::OFlag::O_WRONLY,
                mode,
            },
            // A char device 0/0 is a whiteout's form in the upper layer: refused, as the
            // kernel's ovl_mknod refuses it (else it would hide itself once made).
            Some(FileType::CharDevice) if rdev == 0 => return reply.error(Errno::EPERM),
            Some(_) => New::Special { mode, rdev },
            None => return reply.error(Errno::EINVAL),
        };
        let made = self.make(who, umask, parent, name, what);
        self.reply_made(reply, made);
    }

    pub fn mkdir(
        &self,
        who: &Who,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: impl reply::Entry,
    ) {
        let made = self.make(who, umask, parent, name, New::Dir { mode });
        self.reply_made(reply, made);
    }

    pub fn symlink(
        &self,
        who: &Who,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        reply: impl reply::Entry,
    ) {
        let Ok(target) = CString::new(target) else {
            return reply.error(Errno::EINVAL);
        };
        let target: &CStr = &target;
        let made = self.make(who, 0, parent, name, New::Symlink { target });
        self.reply_made(reply, made);
    }

    pub fn link(
        &self,
        who: &Who,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: impl reply::Entry,
    ) {
        let made = self
            .ovl
            .node(ino)
            .and_then(|node| self.make(who, 0, newparent, newname, New::Link { node: &node }));
        self.reply_made(reply, made);
    }

    /// unlink (`dir` false) or rmdir (`dir` true).
    pub fn remove(&self, parent: u64, name: &OsStr, dir: bool, reply: impl reply::Empty) {
        let res = dir_node(&self.ovl, parent).and_then(|p| dir::remove(&self.ovl, &p, name, dir));
        answer(reply, res);
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: impl reply::Empty,
    ) {
        let res = dir_node(&self.ovl, parent).and_then(|p| {
            let np = dir_node(&self.ovl, newparent)?;
            dir::rename(&self.ovl, &p, name, &np, newname, flags)
        });
        answer(reply, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        who: &Who,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: impl reply::Create,
    ) {
        let what = New::File {
            flags: nix::fcntl::OFlag::from_bits_truncate(flags),
            mode,
        };
        let (node, attr, fd) = match self.make(who, umask, parent, name, what) {
            Ok((node, attr, Some(fd))) => (node, attr, fd),
            Ok(_) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(e),
        };
        let (fh, fopen, backing) = file::register(&self.ovl, &node, fd, flags);
        let open = Opened {
            fh,
            flags: fopen,
            backing: backing.as_deref(),
        };
        reply.created(&self.ovl.timeout, &attr, node.generation.into(), open);
    }

    /// write; `kill` when the kernel asks to clear setuid and setgid with it.
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &self,
        who: &Who,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill: bool,
        reply: impl reply::Write,
    ) {
        let res = file::write(&self.ovl, fh, offset, data).and_then(|(n, first)| {
            if first || kill {
                self.kill_priv(who, ino, killpriv::on_data_change)?;
            }
            Ok(n)
        });
        match res {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    pub fn fsync(&self, fh: u64, datasync: bool, reply: impl reply::Empty) {
        answer(reply, file::fsync(&self.ovl, fh, datasync));
    }

    pub fn fsyncdir(&self, ino: u64, reply: impl reply::Empty) {
        if let (true, Some(record)) = (self.ovl.fsync, &self.ovl.record) {
            record.sync();
        }
        let res = self.ovl.node(ino).and_then(|n| {
            let reals = n.reals();
            match (self.ovl.fsync, reals[0].dir_fd()) {
                (true, Some(fd)) if self.ovl.layers.is_upper(reals[0].layer()) => {
                    let d = crate::layer::reopen_dir(fd)?;
                    nix::unistd::fsync(&d).map_err(errno)
                }
                _ => Ok(()),
            }
        });
        answer(reply, res);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn fallocate(
        &self,
        who: &Who,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        reply: impl reply::Empty,
    ) {
        let res = file::fallocate(&self.ovl, fh, offset, length, mode)
            .and_then(|()| self.kill_priv(who, ino, killpriv::on_data_change).map(drop));
        answer(reply, res);
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32, reply: impl reply::Lseek) {
        match file::lseek(&self.ovl, fh, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(e),
        }
    }

    pub fn setxattr(
        &self,
        who: &Who,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        reply: impl reply::Empty,
    ) {
        answer(
            reply,
            self.set_or_remove_xattr(who, ino, name, Some((value, flags))),
        );
    }

    pub fn removexattr(&self, who: &Who, ino: u64, name: &OsStr, reply: impl reply::Empty) {
        answer(reply, self.set_or_remove_xattr(who, ino, name, None));
    }

    pub fn access(&self, who: &Who, ino: u64, mask: i32, reply: impl reply::Empty) {
        let res = self
            .ovl
            .node(ino)
            .and_then(|n| inode::getattr(&self.ovl, &n));
        match res {
            Ok(attr) => {
                let groups = inode::caller_groups(who.pid);
                if inode::permitted(&attr, who.uid, who.gid, &groups, mask) {
                    reply.ok()
                } else {
                    reply.error(Errno::EACCES)
                }
            }
            Err(e) => reply.error(e),
        }
    }
}
