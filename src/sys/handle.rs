//! Real file handles and filesystem uuids: `name_to_handle_at`, `open_by_handle_at` and the
//! `FS_IOC_GETFSUUID` ioctl.
//!
//! Invariants: symlinks are never followed (`AT_SYMLINK_FOLLOW` is never passed), an empty name
//! means the fd itself (`AT_EMPTY_PATH`, which works on `O_PATH` fds); every fd returned is
//! `O_CLOEXEC`; errors are the kernel's errno as is (`EOPNOTSUPP` where the filesystem cannot
//! export, `EPERM` from `open_by_handle_at` without `CAP_DAC_READ_SEARCH`, `ESTALE` for a handle
//! of a deleted object). A `FileHandle` is opaque bytes: nothing here interprets them.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// The kernel's `MAX_HANDLE_SZ`: no filesystem hands out a longer handle (the kernel refuses a
/// longer `handle_bytes` with EINVAL).
pub const MAX_HANDLE_SZ: usize = 128;

/// The header of `struct file_handle`: `handle_bytes` and `handle_type`, two 32-bit words.
const HEADER_WORDS: usize = 2;

/// A real filesystem's file handle as `name_to_handle_at` returns it: the handle type (the
/// filesystem's `fid_type`, e.g. 1 = `FILEID_INO32_GEN` on ext4) and the opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileHandle {
    pub handle_type: i32,
    pub bytes: Vec<u8>,
}

/// A `struct file_handle` in a 4-byte aligned buffer: header words, then `f_handle`.
struct RawHandle {
    words: Vec<u32>,
}

impl RawHandle {
    fn with_capacity(bytes: usize) -> RawHandle {
        let mut words = vec![0u32; HEADER_WORDS + bytes.div_ceil(4)];
        words[0] = bytes as u32;
        RawHandle { words }
    }

    fn from_handle(h: &FileHandle) -> RawHandle {
        let mut raw = RawHandle::with_capacity(h.bytes.len());
        raw.words[1] = h.handle_type as u32;
        for (i, chunk) in h.bytes.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            raw.words[HEADER_WORDS + i] = u32::from_ne_bytes(w);
        }
        raw
    }

    fn capacity(&self) -> usize {
        (self.words.len() - HEADER_WORDS) * 4
    }

    fn handle_bytes(&self) -> usize {
        self.words[0] as usize
    }

    fn to_handle(&self) -> FileHandle {
        let len = self.handle_bytes().min(self.capacity());
        let bytes: Vec<u8> = self.words[HEADER_WORDS..]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .take(len)
            .collect();
        FileHandle {
            handle_type: self.words[1] as i32,
            bytes,
        }
    }

    fn as_mut_ptr(&mut self) -> *mut libc::file_handle {
        self.words.as_mut_ptr().cast()
    }
}

/// The file handle and mount id of `dir`/`name`, never following a symlink. An empty `name`
/// means `dir` itself (an `O_PATH` fd is fine): `AT_EMPTY_PATH` is added. `flags` may add
/// `AT_HANDLE_FID` or `AT_HANDLE_CONNECTABLE`; `AT_SYMLINK_FOLLOW` is removed. The buffer
/// starts at `MAX_HANDLE_SZ` and grows to what the kernel asks for on EOVERFLOW.
pub fn name_to_handle_at(
    dir: BorrowedFd,
    name: &CStr,
    flags: libc::c_int,
) -> io::Result<(FileHandle, i32)> {
    let mut flags = flags & !libc::AT_SYMLINK_FOLLOW;
    if name.is_empty() {
        flags |= libc::AT_EMPTY_PATH;
    }
    let mut capacity = MAX_HANDLE_SZ;
    // Two rounds are enough: the second one has the size the kernel asked for. The bound
    // guards against a size that keeps changing under us (a racing rename does not change it).
    for _ in 0..4 {
        let mut raw = RawHandle::with_capacity(capacity);
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `name` is NUL-terminated; `raw` is a 4-byte aligned buffer holding a
        // `struct file_handle` header whose `handle_bytes` is the number of bytes that follow
        // it in the buffer, so the kernel writes within it; `mount_id` is a live c_int.
        let r = unsafe {
            libc::name_to_handle_at(
                dir.as_raw_fd(),
                name.as_ptr(),
                raw.as_mut_ptr(),
                &mut mount_id,
                flags,
            )
        };
        if r == 0 {
            return Ok((raw.to_handle(), mount_id));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EOVERFLOW) || raw.handle_bytes() <= capacity {
            return Err(err);
        }
        capacity = raw.handle_bytes();
    }
    Err(io::Error::from_raw_os_error(libc::EOVERFLOW))
}

/// Opens the object `handle` names on the filesystem of `mount_fd` (any fd on it). Needs
/// `CAP_DAC_READ_SEARCH` (EPERM otherwise); `O_CLOEXEC` is always added. `flags` are open
/// flags, typically `O_PATH` or `O_RDONLY`; a symlink is opened only with `O_PATH`.
pub fn open_by_handle_at(
    mount_fd: BorrowedFd,
    handle: &FileHandle,
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    if handle.bytes.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut raw = RawHandle::from_handle(handle);
    // SAFETY: `raw` is a 4-byte aligned `struct file_handle` whose `handle_bytes` equals the
    // number of bytes following the header; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            raw.as_mut_ptr(),
            flags | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct fsuuid2` of include/uapi/linux/fs.h.
#[repr(C)]
struct FsUuid2 {
    len: u8,
    uuid: [u8; 16],
}

/// `FS_IOC_GETFSUUID` = `_IOR(0x15, 0, struct fsuuid2)`.
const FS_IOC_GETFSUUID: libc::c_ulong = ((2 as libc::c_ulong) << 30) // _IOC_READ
    | ((std::mem::size_of::<FsUuid2>() as libc::c_ulong) << 16)
    | (0x15 << 8);

/// The uuid of the filesystem `fd` is on (the kernel's `sb->s_uuid`, the same value overlayfs
/// writes into `overlay.origin`), via `FS_IOC_GETFSUUID` (Linux 6.5+). A uuid shorter than 16
/// bytes is padded with zeros, as `s_uuid` is.
///
/// `fd` must be a real open file or directory: an `O_PATH` fd gets EBADF (ioctl refuses it).
/// ENOTTY (older kernel, or a filesystem without a uuid), EINVAL and EOPNOTSUPP are returned as
/// is: the caller decides the fallback.
pub fn fs_uuid(fd: BorrowedFd) -> io::Result<[u8; 16]> {
    let mut out = FsUuid2 {
        len: 0,
        uuid: [0; 16],
    };
    // SAFETY: FS_IOC_GETFSUUID writes one `struct fsuuid2` (17 bytes, the size encoded in the
    // request number) to the pointer, which is a live, writable `FsUuid2`.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            FS_IOC_GETFSUUID as _,
            &mut out as *mut FsUuid2,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (out.len as usize).min(16);
    let mut uuid = [0u8; 16];
    uuid[..len].copy_from_slice(&out.uuid[..len]);
    Ok(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    /// A scratch directory, removed when dropped (also when the test panics).
    struct TempDir(std::path::PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("plyfs-handle-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn fstat(fd: BorrowedFd) -> (u64, u64) {
        let st = nix::sys::stat::fstat(fd).unwrap();
        (st.st_dev, st.st_ino)
    }

    #[test]
    fn ioctl_number_matches_the_uapi_header() {
        assert_eq!(std::mem::size_of::<FsUuid2>(), 17);
        assert_eq!(FS_IOC_GETFSUUID, 0x8011_1500);
    }

    #[test]
    fn raw_handle_round_trip() {
        for len in [0usize, 1, 3, 4, 8, 12, 13, 128] {
            let h = FileHandle {
                handle_type: 0x81,
                bytes: (0..len as u8).collect(),
            };
            assert_eq!(RawHandle::from_handle(&h).to_handle(), h);
        }
    }

    #[test]
    fn handle_decodes_to_the_same_inode() {
        let d = temp_dir("decode");
        std::fs::write(d.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", d.join("l")).unwrap();
        let dir = std::fs::File::open(&*d).unwrap();
        let name = CString::new("f").unwrap();
        let (h, _mnt) = match name_to_handle_at(dir.as_fd(), &name, 0) {
            Ok(x) => x,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                println!("SKIPPED: {} cannot export file handles", d.display());
                return;
            }
            Err(e) => panic!("name_to_handle_at: {e}"),
        };
        assert!(!h.bytes.is_empty() && h.bytes.len() <= MAX_HANDLE_SZ);

        // The symlink's own handle, not its target's.
        let (hl, _) = name_to_handle_at(dir.as_fd(), c"l", 0).unwrap();
        assert_ne!(hl, h);

        // An O_PATH fd names itself with an empty name.
        let p = nix::fcntl::openat(
            dir.as_fd(),
            "f",
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let (hp, _) = name_to_handle_at(p.as_fd(), c"", 0).unwrap();
        assert_eq!(hp, h);
        drop(p);

        if !is_root() {
            println!("SKIPPED: open_by_handle_at needs CAP_DAC_READ_SEARCH (not root)");
        } else {
            let fd = open_by_handle_at(dir.as_fd(), &h, libc::O_PATH).unwrap();
            let want = std::fs::symlink_metadata(d.join("f")).unwrap();
            assert_eq!(fstat(fd.as_fd()), (want.dev(), want.ino()));
            drop(fd);
            let fd = open_by_handle_at(dir.as_fd(), &hl, libc::O_PATH).unwrap();
            let want = std::fs::symlink_metadata(d.join("l")).unwrap();
            assert_eq!(fstat(fd.as_fd()), (want.dev(), want.ino()));

            // A deleted object does not decode (ESTALE), never to another object (nothing may
            // hold it open: an open inode still decodes).
            std::fs::remove_file(d.join("f")).unwrap();
            let e = open_by_handle_at(dir.as_fd(), &h, libc::O_PATH).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
        }
    }

    #[test]
    fn fs_uuid_needs_a_real_fd() {
        let d = temp_dir("uuid");
        let dir = std::fs::File::open(&*d).unwrap();
        match fs_uuid(dir.as_fd()) {
            Ok(u) => {
                let p = nix::fcntl::open(
                    &*d,
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .unwrap();
                let e = fs_uuid(p.as_fd()).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EBADF));
                // Same filesystem, same uuid, whichever object asks.
                std::fs::write(d.join("f"), b"").unwrap();
                let f = std::fs::File::open(d.join("f")).unwrap();
                assert_eq!(fs_uuid(f.as_fd()).unwrap(), u);
            }
            Err(e) => println!("SKIPPED: FS_IOC_GETFSUUID on {}: {e}", d.display()),
        }
    }
}
