//! The `fuser::Filesystem` transport: requests read from /dev/fuse by fuser's threads, unpacked
//! and handed to `ops.rs`, answered through fuser's reply objects (which implement `reply.rs`).
//! It also negotiates the connection (INIT), and, once io_uring queues serve the requests
//! (`uring/`), it is left with the FORGETs and INTERRUPTs the kernel never sends through them.
//!
//! Invariant: nothing here but unpacking and replying; no handler state lives in this module.
//! Its one state of its own is whether io_uring took the requests, so that a reader of forgets
//! lets them gather (`FORGET_GATHER`).

use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::killpriv::Who;
use crate::ops::Ops;
use crate::reply::{self, Opened, StatfsOut};
use crate::sys::backing::BackingId;

pub use crate::ops::STATS_XATTR;

pub struct PlyFs {
    ops: Ops,
    /// The kernel agreed to io_uring queues: /dev/fuse carries only FORGETs and INTERRUPTs.
    forgets_only: AtomicBool,
}

impl PlyFs {
    pub fn new(ops: Ops) -> PlyFs {
        PlyFs {
            ops,
            forgets_only: AtomicBool::new(false),
        }
    }
}

/// How long a /dev/fuse reader that took a forget waits before it reads again, once io_uring
/// queues serve every other request. Each unlinked or evicted inode queues a forget; read as
/// they come, an `rm -rf` of 50000 files woke a reader 50000 times (a third of its context
/// switches, on the CPUs `rm` and the io_uring threads run on). Left in the kernel's queue a
/// moment, they come as one BATCH_FORGET. Nothing else waits: fuser answers the first
/// INTERRUPT with ENOSYS, after which the kernel sends none (a request always finishes).
const FORGET_GATHER: Duration = Duration::from_millis(5);

thread_local! {
    /// The forget request this reader saw last (a BATCH_FORGET reaches `forget` once per
    /// node, all under one request).
    static GATHERED_AFTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn who(req: &Request) -> Who {
    Who {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

macro_rules! fuser_reply {
    ($($t:ty),*) => {$(
        impl reply::Reply for $t {
            fn error(self, err: Errno) {
                <$t>::error(self, err)
            }
        }
    )*};
}

fuser_reply!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr
);

impl reply::Empty for ReplyEmpty {
    fn ok(self) {
        ReplyEmpty::ok(self)
    }
}

impl reply::Entry for ReplyEntry {
    fn entry(self, ttl: &Duration, attr: &FileAttr, generation: u64) {
        ReplyEntry::entry(self, ttl, attr, Generation(generation))
    }
}

impl reply::Attr for ReplyAttr {
    fn attr(self, ttl: &Duration, attr: &FileAttr) {
        ReplyAttr::attr(self, ttl, attr)
    }
}

impl reply::Data for ReplyData {
    fn data(self, data: &[u8]) {
        ReplyData::data(self, data)
    }
}

impl reply::Open for ReplyOpen {
    fn opened(self, fh: u64, flags: FopenFlags, backing: Option<&BackingId>) {
        match backing {
            Some(b) => crate::sys::backing::fuser_opened(self, fh, flags, b),
            None => ReplyOpen::opened(self, FileHandle(fh), flags),
        }
    }
}

impl reply::Create for ReplyCreate {
    fn created(self, ttl: &Duration, attr: &FileAttr, generation: u64, open: Opened) {
        let (fh, generation) = (FileHandle(open.fh), Generation(generation));
        match open.backing {
            Some(b) => crate::sys::backing::fuser_created(
                self,
                (ttl, attr, generation),
                open.fh,
                open.flags,
                b,
            ),
            None => ReplyCreate::created(self, ttl, attr, generation, fh, open.flags),
        }
    }
}

impl reply::Write for ReplyWrite {
    fn written(self, size: u32) {
        ReplyWrite::written(self, size)
    }
}

impl reply::Statfs for ReplyStatfs {
    fn statfs(self, s: &StatfsOut) {
        ReplyStatfs::statfs(
            self, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        )
    }
}

impl reply::Xattr for ReplyXattr {
    fn size(self, size: u32) {
        ReplyXattr::size(self, size)
    }
    fn value(self, value: &[u8]) {
        ReplyXattr::data(self, value)
    }
}

impl reply::Lseek for ReplyLseek {
    fn offset(self, offset: i64) {
        ReplyLseek::offset(self, offset)
    }
}

impl reply::Dir for ReplyDirectory {
    fn add(&mut self, ino: u64, offset: u64, kind: FileType, name: &OsStr) -> bool {
        ReplyDirectory::add(self, INodeNo(ino), offset, kind, name)
    }
    fn ok(self) {
        ReplyDirectory::ok(self)
    }
}

impl reply::DirPlus for ReplyDirectoryPlus {
    fn add(
        &mut self,
        offset: u64,
        name: &OsStr,
        ttl: &Duration,
        attr: &FileAttr,
        generation: u64,
    ) -> bool {
        ReplyDirectoryPlus::add(
            self,
            attr.ino,
            offset,
            name,
            ttl,
            attr,
            Generation(generation),
        )
    }
    fn ok(self) {
        ReplyDirectoryPlus::ok(self)
    }
}

impl Filesystem for PlyFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let ovl = &self.ops.ovl;
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
        if ovl.exporting()
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
            ovl.passthrough.store(true, Ordering::Relaxed);
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_write(crate::uring::MAX_WRITE as u32);
        // Requests through io_uring queues, where plyfs made them and the kernel offers it
        // (the fuse module's `enable_uring`). Without the offer the queues are dropped.
        let mut queues = ovl.uring.lock().unwrap_or_else(|e| e.into_inner());
        if queues.is_some()
            && config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_err()
        {
            tracing::info!("the kernel does not offer FUSE over io_uring (fuse enable_uring)");
            *queues = None;
        }
        self.forgets_only.store(queues.is_some(), Ordering::Relaxed);
        tracing::info!(
            passthrough = ovl.passthrough.load(Ordering::Relaxed),
            uring = queues.is_some(),
            "mounted"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.ops.lookup(parent.0, name, reply);
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.ops.forget(ino.0, nlookup);
        let unique = req.unique().0;
        if GATHERED_AFTER.get() == unique {
            return;
        }
        GATHERED_AFTER.set(unique);
        let stats = &self.ops.ovl.caches.stats;
        stats.forget_reads.fetch_add(1, Ordering::Relaxed);
        if self.forgets_only.load(Ordering::Relaxed) {
            std::thread::sleep(FORGET_GATHER);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.ops.getattr(ino.0, fh.map(|f| f.0), reply);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.ops.readlink(ino.0, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.ops.open(ino.0, flags.0, reply);
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
        self.ops.read(fh.0, offset, size, reply);
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
        self.ops.release(fh.0, reply);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.ops.opendir(ino.0, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.ops.readdir(ino.0, fh.0, offset, reply);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.ops.readdirplus(ino.0, fh.0, offset, reply);
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.ops.releasedir(fh.0, reply);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.ops.statfs(reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.ops.getxattr(ino.0, name, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.ops.listxattr(ino.0, size, reply);
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
        let a = crate::inode::SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            fh: fh.map(|f| f.0),
        };
        self.ops.setattr(&who(req), ino.0, &a, reply);
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
        self.ops
            .mknod(&who(req), parent.0, name, mode, umask, rdev, reply);
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
        self.ops
            .mkdir(&who(req), parent.0, name, mode, umask, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        self.ops
            .symlink(&who(req), parent.0, link_name, target, reply);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.ops.link(&who(req), ino.0, newparent.0, newname, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.ops.remove(parent.0, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.ops.remove(parent.0, name, true, reply);
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
        self.ops
            .rename(parent.0, name, newparent.0, newname, flags.bits(), reply);
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
        self.ops
            .create(&who(req), parent.0, name, mode, umask, flags, reply);
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
        self.ops
            .write(&who(req), ino.0, fh.0, offset, data, kill, reply);
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.ops.fsync(fh.0, datasync, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.ops.fsyncdir(ino.0, reply);
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
        self.ops
            .fallocate(&who(req), ino.0, fh.0, offset, length, mode, reply);
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
        self.ops.lseek(fh.0, offset, whence, reply);
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
        self.ops
            .setxattr(&who(req), ino.0, name, value, flags, reply);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.ops.removexattr(&who(req), ino.0, name, reply);
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
        self.ops.access(&who(req), ino.0, mask.bits(), reply);
    }
}
