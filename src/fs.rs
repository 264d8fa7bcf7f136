//! The thin `fuser::Filesystem` implementation: unpack each request, call the module that owns
//! it, reply. No overlay logic lives here.
//!
//! Invariant: no handler holds a lock while it replies, and none sends a kernel notification.

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use crate::dir::{self, Caller, New};
use crate::ovl::{errno, io_errno, OResult, Ovl};
use crate::{file, inode, killpriv, namei, readdir, realops, xattr};

pub struct PlyFs {
    pub ovl: std::sync::Arc<Ovl>,
}

/// The virtual xattr of the mount's root that reads the daemon's cache counters.
pub const STATS_XATTR: &str = "plyfs.stats";

/// A zeroed attribute for negative entries (node id 0).
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
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

fn dir_node(ovl: &Ovl, ino: INodeNo) -> OResult<std::sync::Arc<crate::node::Node>> {
    let node = ovl.node(ino.0)?;
    if node.kind != FileType::Directory {
        return Err(Errno::ENOTDIR);
    }
    Ok(node)
}

/// Replies to a getxattr/listxattr with `value` under the size protocol.
fn reply_sized(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn caller(req: &Request, umask: u32) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        umask,
    }
}

impl PlyFs {
    fn reply_made(
        &self,
        reply: ReplyEntry,
        made: OResult<(
            std::sync::Arc<crate::node::Node>,
            FileAttr,
            Option<std::os::fd::OwnedFd>,
        )>,
    ) {
        match made {
            Ok((node, attr, _)) => {
                reply.entry(&self.ovl.timeout, &attr, Generation(node.generation.into()))
            }
            Err(e) => reply.error(e),
        }
    }

    fn make(
        &self,
        req: &Request,
        umask: u32,
        parent: INodeNo,
        name: &OsStr,
        what: New,
    ) -> OResult<(
        std::sync::Arc<crate::node::Node>,
        FileAttr,
        Option<std::os::fd::OwnedFd>,
    )> {
        let parent = dir_node(&self.ovl, parent)?;
        dir::make(&self.ovl, caller(req, umask), &parent, name, what)
    }

    fn set_or_remove_xattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: Option<(&[u8], i32)>,
    ) -> OResult<()> {
        let node = self.ovl.node(ino.0)?;
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
            self.kill_priv(req, ino, killpriv::on_access_acl)?;
        }
        Ok(())
    }

    /// Clears the setuid/setgid bits `rule` says the request's caller takes from upper object
    /// `ino` (see `killpriv.rs`); whether it cleared any.
    fn kill_priv(&self, req: &Request, ino: INodeNo, rule: killpriv::Rule) -> OResult<bool> {
        let node = self.ovl.node(ino.0)?;
        let attr = inode::getattr(&self.ovl, &node)?;
        self.kill_priv_of(req, &node, &attr, rule)
    }

    /// `kill_priv` of `node`, whose attributes `attr` the caller has just read.
    fn kill_priv_of(
        &self,
        req: &Request,
        node: &crate::node::Node,
        attr: &FileAttr,
        rule: killpriv::Rule,
    ) -> OResult<bool> {
        let ino = node.id;
        let mode = inode::type_bits(attr.kind) | u32::from(attr.perm);
        let bits = rule(mode, attr.gid, &killpriv::Who::of(req));
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

    fn lookup_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> OResult<Option<(std::sync::Arc<crate::node::Node>, FileAttr)>> {
        // The kernel decoding a file handle of a node it forgot (export only).
        if self.ovl.exporting() && (name == "." || name == "..") {
            let node = if name == "." {
                crate::reconnect::decode(&self.ovl, parent.0)?
            } else {
                crate::reconnect::parent(&self.ovl, parent.0)?
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
        namei::lookup(&self.ovl, &parent, name)
    }

    fn getxattr_value(&self, ino: INodeNo, name: &OsStr) -> OResult<Vec<u8>> {
        let node = self.ovl.node(ino.0)?;
        let real_name = self.real_xattr_name(name, Errno::ENODATA)?;
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        xattr::read_all(dir, name, &real_name)
            .map_err(io_errno)?
            .ok_or(Errno::ENODATA)
    }

    fn listxattr_value(&self, ino: INodeNo) -> OResult<Vec<u8>> {
        let node = self.ovl.node(ino.0)?;
        let reals = node.reals();
        let (dir, name) = reals[0].at();
        let list = xattr::list_all(dir, name).map_err(io_errno)?;
        Ok(self.ovl.xattrs.filter_list(&list))
    }
}

impl Filesystem for PlyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Always READDIRPLUS (not AUTO): a listing then caches every entry and its attributes
        // in the kernel, so a walk after it asks the daemon nothing.
        let wanted = [
            InitFlags::FUSE_DO_READDIRPLUS,
            // The kernel checks ACLs and keeps them in step with the mode; with DONT_MASK it
            // hands the umask to plyfs, which applies it or the parent's default ACL (acl.rs).
            InitFlags::FUSE_POSIX_ACL,
            InitFlags::FUSE_DONT_MASK,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_MAX_PAGES,
        ];
        // File handles that decode after the kernel forgot the inode (reconnect.rs).
        if self.ovl.exporting()
            && config
                .add_capabilities(InitFlags::FUSE_EXPORT_SUPPORT)
                .is_err()
        {
            tracing::warn!("kernel lacks FUSE_EXPORT_SUPPORT: file handles will not decode");
        }
        for flag in wanted {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!("kernel lacks {flag:?}");
            }
        }
        // plyfs clears setuid and setgid itself (killpriv.rs); in return the kernel marks a
        // file it found without them (S_NOSEC) and stops asking for `security.capability`
        // before every write: a GETXATTR round trip per write(), also through passthrough.
        if config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_err()
        {
            tracing::debug!("kernel lacks FUSE_HANDLE_KILLPRIV_V2");
        }
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.ovl.passthrough.store(true, Ordering::Relaxed);
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(1 << 20);
        tracing::info!(
            passthrough = self.ovl.passthrough.load(Ordering::Relaxed),
            "mounted"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        tracing::debug!(parent = parent.0, ?name, "lookup");
        match self.lookup_entry(parent, name) {
            Ok(Some((node, attr))) => {
                reply.entry(&self.ovl.timeout, &attr, Generation(node.generation.into()))
            }
            Ok(None) if !self.ovl.timeout.is_zero() => {
                reply.entry(&self.ovl.timeout, &negative_attr(), Generation(0))
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.ovl.nodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = self.ovl.node(ino.0).and_then(|n| match fh {
            // An open file answers from its fd, also after it was unlinked.
            Some(fh) if n.kind == FileType::RegularFile => file::fstat(&self.ovl, fh.0)
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

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self.ovl.node(ino.0).and_then(|n| {
            let reals = n.reals();
            let (dir, name) = reals[0].at();
            nix::fcntl::readlinkat(dir, name).map_err(errno)
        });
        match res {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.ovl.node(ino.0) {
            Ok(node) => file::open(&self.ovl, &node, flags.0, reply),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match file::read(&self.ovl, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        file::release(&self.ovl, fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match dir_node(&self.ovl, ino) {
            Ok(_) => {
                let fh = self.ovl.dirs.insert(readdir::DirHandle::default());
                // The kernel may cache the listing across opens: it changes only through the
                // mount (which invalidates it) while the layers are in use.
                reply.opened(
                    FileHandle(fh),
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = self.ovl.node(ino.0).and_then(|node| {
            let dh = self.ovl.dirs.get(fh.0)?;
            readdir::listing_for(&self.ovl, &node, &dh, offset)
        });
        match listing {
            Ok(listing) => {
                for (i, e) in listing.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, &e.name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = self.ovl.node(ino.0).and_then(|node| {
            let dh = self.ovl.dirs.get(fh.0)?;
            Ok((readdir::listing_for(&self.ovl, &node, &dh, offset)?, node))
        });
        let (listing, node) = match res {
            Ok(r) => r,
            Err(e) => return reply.error(e),
        };
        for (i, e) in listing.iter().enumerate().skip(offset as usize) {
            let off = i as u64 + 1;
            let full = if e.name == "." || e.name == ".." {
                // The kernel takes no lookup count for these.
                let id = e.ino;
                match self
                    .ovl
                    .node(id)
                    .and_then(|n| Ok((inode::getattr(&self.ovl, &n)?, n.generation)))
                {
                    Ok((attr, generation)) => reply.add(
                        INodeNo(id),
                        off,
                        &e.name,
                        &self.ovl.timeout,
                        &attr,
                        Generation(generation.into()),
                    ),
                    Err(_) => continue,
                }
            } else {
                match namei::lookup(&self.ovl, &node, &e.name) {
                    Ok(Some((child, attr))) => {
                        let full = reply.add(
                            INodeNo(child.id),
                            off,
                            &e.name,
                            &self.ovl.timeout,
                            &attr,
                            Generation(child.generation.into()),
                        );
                        if full {
                            // Not sent: the kernel will not count this lookup.
                            self.ovl.nodes.forget(child.id, 1);
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
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.ovl.dirs.remove(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match nix::sys::statfs::fstatfs(&self.ovl.layers.statfs_layer().root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.maximum_name_length() as u32,
                s.block_size() as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // The daemon's counters (cache.rs), on the root only; not listed.
        if ino.0 == crate::export::ROOT_ID && name == STATS_XATTR {
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

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.listxattr_value(ino) {
            Ok(v) => reply_sized(reply, &v, size),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let a = inode::SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh: fh.map(|f| f.0),
        };
        let res = self.ovl.node(ino.0).and_then(|n| {
            let attr = inode::setattr(&self.ovl, &n, &a)?;
            // The bits the change takes that the kernel left to plyfs (killpriv.rs), from the
            // attributes just read: by the data rule for a truncate or an empty SETATTR (a
            // write's, or chown(f, -1, -1)), by chown's for a chown. Where the kernel sent the
            // mode itself (no FUSE_HANDLE_KILLPRIV_V2), setattr applied it and only what it
            // leaves is left.
            let rule: Option<killpriv::Rule> = if size.is_some() || a.is_empty() {
                Some(killpriv::on_data_change)
            } else if uid.is_some() || gid.is_some() {
                Some(killpriv::on_chown)
            } else {
                None
            };
            match rule {
                Some(rule) if self.kill_priv_of(req, &n, &attr, rule)? => {
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

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
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
            Some(_) => New::Special { mode, rdev },
            None => return reply.error(Errno::EINVAL),
        };
        let made = self.make(req, umask, parent, name, what);
        self.reply_made(reply, made);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let made = self.make(req, umask, parent, name, New::Dir { mode });
        self.reply_made(reply, made);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Ok(target) = CString::new(target.as_os_str().as_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        let made = self.make(req, 0, parent, link_name, New::Symlink { target: &target });
        self.reply_made(reply, made);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let made = self
            .ovl
            .node(ino.0)
            .and_then(|node| self.make(req, 0, newparent, newname, New::Link { node: &node }));
        self.reply_made(reply, made);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match dir_node(&self.ovl, parent).and_then(|p| dir::remove(&self.ovl, &p, name, false)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match dir_node(&self.ovl, parent).and_then(|p| dir::remove(&self.ovl, &p, name, true)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = dir_node(&self.ovl, parent).and_then(|p| {
            let np = dir_node(&self.ovl, newparent)?;
            dir::rename(&self.ovl, &p, name, &np, newname, flags.bits())
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let what = New::File {
            flags: nix::fcntl::OFlag::from_bits_truncate(flags),
            mode,
        };
        let (node, attr, fd) = match self.make(req, umask, parent, name, what) {
            Ok((node, attr, Some(fd))) => (node, attr, fd),
            Ok(_) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(e),
        };
        let (fh, fopen, backing) =
            file::register(&self.ovl, &node, fd, flags, |fd| reply.open_backing(fd));
        match backing {
            Some(b) => reply.created_passthrough(
                &self.ovl.timeout,
                &attr,
                Generation(node.generation.into()),
                FileHandle(fh),
                fopen,
                &b,
            ),
            None => reply.created(
                &self.ovl.timeout,
                &attr,
                Generation(node.generation.into()),
                FileHandle(fh),
                fopen,
            ),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let res = file::write(&self.ovl, fh.0, offset, data).and_then(|(n, first)| {
            if first || kill {
                self.kill_priv(req, ino, killpriv::on_data_change)?;
            }
            Ok(n)
        });
        match res {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match file::fsync(&self.ovl, fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        if let (true, Some(record)) = (self.ovl.fsync, &self.ovl.record) {
            record.sync();
        }
        let res = self.ovl.node(ino.0).and_then(|n| {
            let reals = n.reals();
            match (self.ovl.fsync, reals[0].dir_fd()) {
                (true, Some(fd)) if self.ovl.layers.is_upper(reals[0].layer()) => {
                    let d = crate::layer::reopen_dir(fd)?;
                    nix::unistd::fsync(&d).map_err(errno)
                }
                _ => Ok(()),
            }
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let res = file::fallocate(&self.ovl, fh.0, offset, length, mode)
            .and_then(|()| self.kill_priv(req, ino, killpriv::on_data_change).map(drop));
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match file::lseek(&self.ovl, fh.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(e),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        match self.set_or_remove_xattr(req, ino, name, Some((value, flags))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.set_or_remove_xattr(req, ino, name, None) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// No ioctl is passed on to the real files: ENOTTY, as a regular file of the kernel's
    /// overlay answers what its filesystem does not know. Every `isatty()` of an open file
    /// (Python's `open` does one) comes here; fuser's default logged a warning for each.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        tracing::trace!(cmd, "ioctl: ENOTTY");
        reply.error(Errno::ENOTTY);
    }

    /// Files of the layers are regular files: always ready. ENOSYS tells the kernel so once
    /// (fuser's default logs a warning for it on every mount).
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let res = self
            .ovl
            .node(ino.0)
            .and_then(|n| inode::getattr(&self.ovl, &n));
        match res {
            Ok(attr) => {
                let groups = inode::caller_groups(req.pid());
                if inode::permitted(&attr, req.uid(), req.gid(), &groups, mask.bits()) {
                    reply.ok()
                } else {
                    reply.error(Errno::EACCES)
                }
            }
            Err(e) => reply.error(e),
        }
    }
}
