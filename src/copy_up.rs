//! Copy-up: the first change to an object that lives in a lower layer copies it, and its missing
//! parent directories, into the upper layer, as the kernel's overlay does.
//!
//! The copy is built in the work dir, unnamed (`O_TMPFILE`) for a regular file where the
//! filesystem allows, else under a temp name: data (a `FICLONE` where the filesystem
//! allows, else `copy_file_range` over the data segments only, so holes stay holes, then synced
//! unless `volatile`/`fsync=0`), owner, xattrs (`security.capability` and ACLs included, the
//! mount's private ones excluded), `overlay.origin`, mode, times; one link (or rename) then puts
//! it in place. A crash leaves the lower object visible or the whole copy, never half of one.
//!
//! Invariants: a node is copied up at most once (its `copy_up_lock`, re-checked under the lock);
//! copy-up locks are taken child before parent (a node's copy-up first copies up its parent), so
//! they cannot deadlock; no lock is held across a request to the mount itself.

use fuser::{Errno, FileType};
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::FileStat;
use nix::sys::time::TimeSpec;
use nix::unistd::Whence;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::layer::open_dir;
use crate::node::{Loc, Node, Real};
use crate::origin::Origin;
use crate::ovl::{errno, io_errno, OResult, Ovl};
use crate::{realops, sys, xattr};

/// Makes sure `node`'s topmost real object is in the upper layer.
pub fn copy_up(ovl: &Ovl, node: &Arc<Node>) -> OResult<()> {
    if ovl.writable_work().is_none() {
        return Err(Errno::EROFS);
    }
    if node.is_upper(true) {
        return Ok(());
    }
    let _guard = node
        .copy_up_lock()
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if node.is_upper(true) {
        return Ok(());
    }
    let link = node.link();
    // A node the kernel decoded from a file handle may have a parent it no longer holds.
    let parent = crate::reconnect::hold(ovl, link.parent)?;
    let new_reals = while_syncing(ovl, || {
        copy_up_at(ovl, &parent, &link.name, node.kind, &node.reals())
    })?;
    if node.kind == FileType::Directory {
        crate::export::note_dir_copied_up(ovl, &new_reals);
    }
    node.set_reals(new_reals);
    ovl.watch.add(node);
    tracing::debug!(id = node.id, name = ?link.name, "copied up");
    Ok(())
}

/// Makes name `name` of `parent` an object of the upper layer, when it is not one already. For
/// a non-directory this is per name: hard links share one node, but each name is copied (or
/// linked) up on its own.
pub fn copy_up_name(ovl: &Ovl, parent: &Arc<Node>, name: &std::ffi::OsStr) -> OResult<()> {
    copy_up(ovl, parent)?;
    let cname = crate::namei::cname(name)?;
    let udir = parent.reals()[0].dir_fd().ok_or(Errno::EIO)?.clone();
    if crate::namei::upper_entry(ovl, udir.as_fd(), &cname)? == crate::namei::UpperEntry::Object {
        return Ok(());
    }
    let found = crate::namei::find(ovl, parent, name)?.ok_or(Errno::ENOENT)?;
    let id = match found.alias_of {
        Some((layer, ino)) => ovl.id_of(layer, ino),
        None => ovl.id_of_reals(found.kind, &found.reals, parent),
    };
    let node = ovl.nodes.get(id);
    if found.kind == FileType::Directory {
        return match node {
            Some(n) => copy_up(ovl, &n),
            None => Err(Errno::ESTALE),
        };
    }
    let copied = while_syncing(ovl, || {
        copy_up_at(ovl, parent, &cname, found.kind, &found.reals)
    });
    let new_reals = match copied {
        Ok(r) => r,
        // Another request copied this name up first: it is in the upper layer now.
        Err(Errno::EEXIST)
            if crate::namei::upper_entry(ovl, udir.as_fd(), &cname)?
                == crate::namei::UpperEntry::Object =>
        {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    if let Some(n) = node {
        if !n.is_upper(true) {
            n.set_reals(new_reals);
        }
    }
    Ok(())
}

/// Runs copy-up `f` free to move off its pinned CPU (`uring::unpinned`) when it syncs its copy:
/// the wake-up after the fsync then goes to a CPU that is awake. A volatile copy-up waits on the
/// disk at most for a short read of a cold lower file, and the two affinity changes cost it more
/// than they save (3000 chmods of 4 KiB lower files: 0.18-0.20 s pinned, 0.21-0.25 s moving;
/// with the lower files cold, 0.34-0.51 s and 0.48-0.55 s).
fn while_syncing<R>(ovl: &Ovl, f: impl FnOnce() -> R) -> R {
    if ovl.fsync {
        crate::uring::unpinned(f)
    } else {
        f()
    }
}

/// Copies (or, for an index alias, links) up the object that `reals` (topmost first) make of
/// name `name` in `parent`, and returns the object's new real objects.
fn copy_up_at(
    ovl: &Ovl,
    parent: &Arc<Node>,
    name: &CStr,
    kind: FileType,
    reals: &[Real],
) -> OResult<Vec<Real>> {
    let work = ovl.writable_work().ok_or(Errno::EROFS)?;
    copy_up(ovl, parent)?;
    let upper_dir = parent.reals()[0].dir_fd().ok_or(Errno::EIO)?.clone();
    // A copy-up is no change of the directory: its times are put back afterwards, as the
    // kernel's ovl_copy_up_one does (else a remount shows the directory as just modified).
    let pstat = nix::sys::stat::fstat(upper_dir.as_fd()).map_err(errno)?;
    let restore_times = || {
        let t = |s, ns| nix::sys::time::TimeSpec::new(s, ns);
        let res = realops::utimens(
            upper_dir.as_fd(),
            c"",
            &t(pstat.st_atime, pstat.st_atime_nsec),
            &t(pstat.st_mtime, pstat.st_mtime_nsec),
        );
        if let Err(e) = res {
            tracing::debug!(%e, "directory times not restored after copy-up");
        }
    };
    let src = &reals[0];
    if src.alias {
        // The upper copy exists in the index: link it in at this name.
        let linked = crate::index::link_up(ovl, src, &upper_dir, name)?;
        restore_times();
        return Ok(vec![linked]);
    }
    let st = src.stat().map_err(errno)?;
    mark_impure(ovl, upper_dir.as_fd())?;
    // A lower file with other links goes through the index, so they all keep sharing it.
    let indexed = match &ovl.index {
        Some(index) if kind != FileType::Directory && st.st_nlink > 1 => {
            let (sdir, sname) = src.at();
            crate::index::entry_name(ovl, src.layer(), sdir, sname).map(|n| (index.clone(), n))
        }
        _ => None,
    };
    // A regular file is built unnamed (`O_TMPFILE`) where the work dir's filesystem allows, as
    // the kernel's overlay does: syncing its data syncs no directory, a crash leaves nothing in
    // the work dir, and one link puts it in place. Anything else is built under a temp name.
    let tmpfile = match crate::inode::file_type(st.st_mode) {
        FileType::RegularFile => work.tmpfile(),
        _ => None,
    };
    let tmp = work.temp_name();
    let (bdir, bname) = match &tmpfile {
        Some(fd) => (fd.as_fd(), c""),
        None => (work.dir(), tmp.as_c_str()),
    };
    let put = |dir: BorrowedFd, name: &CStr| match &tmpfile {
        Some(fd) => realops::link_tmpfile(fd.as_fd(), dir, name),
        None => realops::link(work.dir(), &tmp, dir, name),
    };
    let built = build(ovl, bdir, bname, tmpfile.as_ref(), src, &st)
        .and_then(|()| match &indexed {
            Some((index, iname)) => {
                // The copy's own link count becomes 2 (index and name); the union keeps the
                // lower one's.
                crate::index::set_nlink(ovl, bdir, bname, 2, st.st_nlink as i64)?;
                put(index.as_fd(), iname).map_err(errno)
            }
            None => Ok(()),
        })
        .and_then(|()| match &tmpfile {
            Some(_) => put(upper_dir.as_fd(), name).map_err(errno),
            None => realops::rename(
                work.dir(),
                &tmp,
                upper_dir.as_fd(),
                name,
                RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(errno),
        });
    if let Err(e) = built {
        if tmpfile.is_none() {
            let _ = work.remove(&tmp);
        }
        tracing::warn!(?name, ?e, "copy-up failed");
        return Err(e);
    }
    restore_times();
    let loc = if kind == FileType::Directory {
        Loc::Dir(Arc::new(open_dir(upper_dir.as_fd(), name).map_err(errno)?))
    } else {
        Loc::At(upper_dir, name.into())
    };
    let mut upper = Real::new(0, loc, 0);
    upper.ino = upper.stat().map_err(errno)?.st_ino;
    let mut new_reals = vec![upper];
    if kind == FileType::Directory {
        new_reals.extend(reals.iter().cloned());
    }
    Ok(new_reals)
}

/// Marks an upper directory `overlay.impure` (it holds copied-up or moved objects whose inode
/// numbers come from their origin), as the kernel does; readdir then reads their origins.
pub fn mark_impure(ovl: &Ovl, dir: BorrowedFd) -> OResult<()> {
    if xattr::read_small(dir, c"", &ovl.xattrs.impure)
        .map_err(io_errno)?
        .is_none()
    {
        realops::set_xattr(dir, c"", &ovl.xattrs.impure, b"y", 0).map_err(errno)?;
    }
    Ok(())
}

/// Builds the copy of `src` as `name` in `dir` (the work dir), or in `tmpfile` (then `dir` is
/// its fd and `name` empty).
fn build(
    ovl: &Ovl,
    dir: BorrowedFd,
    name: &CStr,
    tmpfile: Option<&OwnedFd>,
    src: &Real,
    st: &FileStat,
) -> OResult<()> {
    let (sdir, sname) = src.at();
    // By the real type: a regular file standing for a device (an owner override) stays one.
    match crate::inode::file_type(st.st_mode) {
        FileType::Directory => realops::mkdir(dir, name, 0o700).map_err(errno)?,
        FileType::RegularFile => {
            let created;
            let dst = match tmpfile {
                Some(dst) => dst,
                None => {
                    created = realops::create(dir, name, OFlag::O_WRONLY, 0o600).map_err(errno)?;
                    &created
                }
            };
            copy_data(ovl, dst, src, st)?
        }
        FileType::Symlink => {
            let target = nix::fcntl::readlinkat(sdir, sname).map_err(errno)?;
            let target = CString::new(target.into_encoded_bytes()).map_err(|_| Errno::EIO)?;
            realops::symlink(&target, dir, name).map_err(errno)?
        }
        _ => realops::mknod(dir, name, st.st_mode, st.st_rdev).map_err(errno)?,
    }
    // chown first: it clears setuid/setgid and security.capability, which come back after.
    realops::chown(dir, name, Some(st.st_uid), Some(st.st_gid)).map_err(errno)?;
    copy_xattrs(ovl, sdir, sname, dir, name)?;
    set_origin(ovl, src, dir, name);
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        realops::chmod(dir, name, st.st_mode & 0o7777).map_err(errno)?;
    }
    let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
    let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
    realops::utimens(dir, name, &atime, &mtime).map_err(errno)
}

/// Copies a regular file's data into `dst`, keeping holes, and syncs it unless the mount is
/// volatile.
fn copy_data(ovl: &Ovl, dst: &OwnedFd, real: &Real, st: &FileStat) -> OResult<()> {
    let (sdir, sname) = real.at();
    let src = realops::open(sdir, sname, OFlag::O_RDONLY).map_err(errno)?;
    if st.st_size > 0 && !clone(ovl, real.layer(), &src, dst) {
        if st.st_size <= st.st_blksize && st.st_blocks * 512 >= st.st_size {
            // A file within one block, with storage for all of it, has no hole to keep: one
            // copy, without asking where the data is.
            copy_range(&src, dst, 0, st.st_size)?;
        } else {
            copy_segments(&src, dst, st.st_size)?;
        }
    }
    if ovl.fsync {
        nix::unistd::fsync(dst).map_err(errno)?;
    }
    Ok(())
}

/// Whether `dst` now shares `src`'s data (`FICLONE`); not tried again for a layer where it
/// failed (each try is a system call per copy-up).
fn clone(ovl: &Ovl, layer: usize, src: &OwnedFd, dst: &OwnedFd) -> bool {
    let fails = &ovl.layers.get(layer).clone_fails;
    if fails.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    match sys::clone::ficlone(dst.as_fd(), src.as_fd()) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(layer, %e, "no FICLONE for copy-ups from this layer");
            fails.store(true, std::sync::atomic::Ordering::Relaxed);
            false
        }
    }
}

/// Copies the data segments of `src` (SEEK_DATA/SEEK_HOLE) and sets the size, so a sparse file
/// stays sparse.
fn copy_segments(src: &OwnedFd, dst: &OwnedFd, size: i64) -> OResult<()> {
    let mut pos = 0i64;
    while pos < size {
        let data = match nix::unistd::lseek(src, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(errno(e)),
        };
        let hole = nix::unistd::lseek(src, data, Whence::SeekHole).map_err(errno)?;
        copy_range(src, dst, data, hole - data)?;
        pos = hole;
    }
    if pos == size {
        return Ok(()); // the data ran to the end: the copy has its size already
    }
    nix::unistd::ftruncate(dst, size).map_err(errno)
}

fn copy_range(src: &OwnedFd, dst: &OwnedFd, start: i64, len: i64) -> OResult<()> {
    let (mut off_in, mut off_out, mut left) = (start, start, len);
    while left > 0 {
        let chunk = left.min(1 << 30) as usize;
        match nix::fcntl::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as i64,
            Err(nix::errno::Errno::EXDEV)
            | Err(nix::errno::Errno::EINVAL)
            | Err(nix::errno::Errno::ENOSYS)
            | Err(nix::errno::Errno::EOPNOTSUPP) => {
                return copy_by_reading(src, dst, off_in, left);
            }
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

fn copy_by_reading(src: &OwnedFd, dst: &OwnedFd, mut off: i64, mut left: i64) -> OResult<()> {
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let n = nix::sys::uio::pread(src, &mut buf[..want], off).map_err(errno)?;
        if n == 0 {
            break;
        }
        let mut done = 0;
        while done < n {
            done += nix::sys::uio::pwrite(dst, &buf[done..n], off + done as i64).map_err(errno)?;
        }
        off += n as i64;
        left -= n as i64;
    }
    Ok(())
}

/// Copies every xattr but the mount's private ones (escaped user names are kept). Owner
/// overrides are copied: they are the object's owner and mode (`override_stat.rs`).
fn copy_xattrs(
    ovl: &Ovl,
    sdir: BorrowedFd,
    sname: &CStr,
    wd: BorrowedFd,
    tmp: &CStr,
) -> OResult<()> {
    let list = match xattr::list_all(sdir, sname) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(io_errno(e)),
    };
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if ovl.xattrs.to_user(name).is_none() && !crate::override_stat::is_name(name) {
            continue;
        }
        let attr = CString::new(name).map_err(|_| Errno::EIO)?;
        let Some(value) = xattr::read_all(sdir, sname, &attr).map_err(io_errno)? else {
            continue;
        };
        if let Err(e) = realops::set_xattr(wd, tmp, &attr, &value, 0) {
            // A namespace the upper filesystem does not take is not fatal, as in the kernel.
            if matches!(e, nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EPERM) {
                tracing::warn!(?attr, ?e, "xattr not copied up");
                continue;
            }
            return Err(errno(e));
        }
    }
    Ok(())
}

/// Records where the object came from (`overlay.origin`), as the kernel does; a lower
/// filesystem without file handles leaves none.
fn set_origin(ovl: &Ovl, src: &Real, wd: BorrowedFd, tmp: &CStr) {
    let (sdir, sname) = src.at();
    match Origin::for_object(sdir, sname, ovl.uuids[src.layer()]) {
        Ok(origin) => {
            if let Err(e) = realops::set_xattr(wd, tmp, &ovl.xattrs.origin, &origin.encode(), 0) {
                tracing::warn!(?e, "cannot record overlay.origin");
            }
        }
        Err(e) => tracing::debug!(?e, "no file handle for overlay.origin"),
    }
}
