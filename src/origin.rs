//! The `overlay.origin` xattr value: the kernel's `struct ovl_fb` (fs/overlayfs/overlayfs.h),
//! which names the lower object an upper object was copied up from.
//!
//! On-disk layout (packed, 21-byte header, then the handle; verified against Linux 6.18 by the
//! `kernel_writes_the_same_bytes` test):
//!
//! | offset | size | field                                                                    |
//! |--------|------|--------------------------------------------------------------------------|
//! | 0      | 1    | version: 0                                                               |
//! | 1      | 1    | magic: 0xfb                                                              |
//! | 2      | 1    | len: 21 + handle length (the whole value)                                |
//! | 3      | 1    | flags: bit 0 big endian, bit 1 any endian, bit 2 "handle of an upper"    |
//! | 4      | 1    | type: the real handle's type (`name_to_handle_at`'s `handle_type`)       |
//! | 5      | 16   | uuid of the filesystem the handle belongs to                             |
//! | 21     | n    | the real handle bytes (`f_handle`, a whole number of 32-bit words)       |
//!
//! What the kernel writes on copy-up (`ovl_encode_real_fh`): flags = the CPU's endianness
//! (0 on little endian), type and bytes = what `name_to_handle_at(lower, 0)` returns (the kernel
//! uses `exportfs_encode_inode_fh` with no parent, the same encoding), and uuid = the lower
//! filesystem's `sb->s_uuid`, which `FS_IOC_GETFSUUID` reports (`sys::handle::fs_uuid`). That
//! holds for every `uuid=` mount option except `uuid=off`, which writes the null uuid (and then
//! checks for a null uuid when decoding), and only when all layers are on one filesystem: else
//! the kernel falls back to `uuid=null`. `uuid=null`/`auto`/`on` only change the overlay's own
//! fsid. A filesystem without a uuid (e.g. an ext4 made with a null UUID, as this project's test
//! VM's root) gives a null uuid in every mode; tmpfs has a random one per mount (6.6+). When the
//! lower cannot export handles, the kernel writes an empty value: "copied up, origin unknown".
//!
//! Reading (`decode`) follows the kernel's `ovl_get_fh` + `ovl_check_fb_len` +
//! `ovl_decode_real_fh` exactly, also where that is lenient: a value longer than `len` is
//! accepted and the bytes after `len` ignored; the handle is `(len - 21) / 4` whole words (a
//! partial word is ignored). A value the kernel would treat as "origin unknown" (empty, newer
//! version, unknown flags, other endianness, no handle word) is an error with `is_unknown()`;
//! one it calls "invalid origin" (short, bad magic) has errno EINVAL. `decode` never panics.

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::sys::handle::{self, FileHandle};

/// `OVL_FH_VERSION`.
pub const VERSION: u8 = 0;
/// `OVL_FH_MAGIC`.
pub const MAGIC: u8 = 0xfb;
/// `OVL_FH_FLAG_BIG_ENDIAN`: the handle was encoded on a big-endian CPU.
pub const FLAG_BIG_ENDIAN: u8 = 1 << 0;
/// `OVL_FH_FLAG_ANY_ENDIAN`: the handle decodes on a CPU of either endianness.
pub const FLAG_ANY_ENDIAN: u8 = 1 << 1;
/// `OVL_FH_FLAG_PATH_UPPER`: the handle names an upper object (index entries, NFS export).
pub const FLAG_PATH_UPPER: u8 = 1 << 2;
/// `OVL_FH_FLAG_ALL`.
pub const FLAG_ALL: u8 = FLAG_BIG_ENDIAN | FLAG_ANY_ENDIAN | FLAG_PATH_UPPER;
/// `OVL_FH_FLAG_CPU_ENDIAN`: what the kernel on this machine writes.
pub const FLAG_CPU_ENDIAN: u8 = if cfg!(target_endian = "big") {
    FLAG_BIG_ENDIAN
} else {
    0
};
/// `sizeof(struct ovl_fb)`: the header before the handle.
pub const HEADER_LEN: usize = 21;
/// The kernel's `FILEID_INVALID`: never a valid handle type.
const FILEID_INVALID: i32 = 0xff;

/// A decoded `overlay.origin` (or `overlay.upper`) value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub flags: u8,
    pub handle_type: u8,
    pub uuid: [u8; 16],
    pub handle: Vec<u8>,
}

/// Why a value is not a usable origin. `errno()` is what the kernel's checks return for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginError {
    /// Empty value: copied up, origin unknown (the lower could not export handles).
    Empty,
    /// Shorter than the 21-byte header.
    TooShort { len: usize },
    /// Shorter than its own `len` field.
    Truncated { len: usize, claimed: u8 },
    /// Magic is not 0xfb.
    BadMagic(u8),
    /// A version newer than 0: origin unknown.
    NewerVersion(u8),
    /// Flags the kernel does not know: origin unknown.
    UnknownFlags(u8),
    /// Encoded on a CPU of the other endianness, without `FLAG_ANY_ENDIAN`: origin unknown.
    ForeignEndian,
    /// `len` leaves no whole 32-bit word of handle: the kernel's decode gets ESTALE, which for
    /// a lower handle means origin unknown.
    NoHandle { claimed: u8 },
}

impl OriginError {
    /// The errno the kernel uses: EINVAL for an invalid value (it logs "invalid origin"),
    /// ENODATA for "origin unknown", ESTALE for a handle that cannot decode.
    pub fn errno(&self) -> i32 {
        match self {
            OriginError::TooShort { .. }
            | OriginError::Truncated { .. }
            | OriginError::BadMagic(_) => libc::EINVAL,
            OriginError::Empty
            | OriginError::NewerVersion(_)
            | OriginError::UnknownFlags(_)
            | OriginError::ForeignEndian => libc::ENODATA,
            OriginError::NoHandle { .. } => libc::ESTALE,
        }
    }

    /// The kernel treats the object as copied up with an unknown origin (no warning).
    pub fn is_unknown(&self) -> bool {
        self.errno() != libc::EINVAL
    }
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::Empty => write!(f, "empty origin (origin unknown)"),
            OriginError::TooShort { len } => {
                write!(
                    f,
                    "origin of {len} bytes is shorter than the {HEADER_LEN}-byte header"
                )
            }
            OriginError::Truncated { len, claimed } => {
                write!(
                    f,
                    "origin of {len} bytes is shorter than its len field {claimed}"
                )
            }
            OriginError::BadMagic(m) => write!(f, "origin magic {m:#04x} is not {MAGIC:#04x}"),
            OriginError::NewerVersion(v) => write!(f, "origin version {v} is newer than {VERSION}"),
            OriginError::UnknownFlags(fl) => write!(f, "origin flags {fl:#04x} are unknown"),
            OriginError::ForeignEndian => write!(f, "origin encoded on the other endianness"),
            OriginError::NoHandle { claimed } => {
                write!(f, "origin len {claimed} leaves no handle word")
            }
        }
    }
}

impl std::error::Error for OriginError {}

impl From<OriginError> for io::Error {
    fn from(e: OriginError) -> io::Error {
        io::Error::from_raw_os_error(e.errno())
    }
}

impl Origin {
    /// The origin of `dir`/`name` (never following a symlink; an empty name means `dir`
    /// itself) as the kernel writes it on copy-up from a lower layer whose uuid is
    /// `layer_uuid` (`fs_uuid` of the layer, or the null uuid for `uuid=off`).
    pub fn for_object(dir: BorrowedFd, name: &CStr, layer_uuid: [u8; 16]) -> io::Result<Origin> {
        let (fh, _mount_id) = handle::name_to_handle_at(dir, name, 0)?;
        Origin::from_handle(&fh, FLAG_CPU_ENDIAN, layer_uuid)
    }

    /// Wraps a real handle; EIO for one the kernel refuses to encode (a negative or invalid
    /// type, a type with flag bits, more than `MAX_HANDLE_SZ` bytes).
    pub fn from_handle(fh: &FileHandle, flags: u8, uuid: [u8; 16]) -> io::Result<Origin> {
        if !(0..FILEID_INVALID).contains(&fh.handle_type) || fh.bytes.len() > handle::MAX_HANDLE_SZ
        {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(Origin {
            flags,
            handle_type: fh.handle_type as u8,
            uuid,
            handle: fh.bytes.clone(),
        })
    }

    /// The real handle, for `open_by_handle_at`.
    pub fn file_handle(&self) -> FileHandle {
        FileHandle {
            handle_type: self.handle_type.into(),
            bytes: self.handle.clone(),
        }
    }

    /// Opens the object on the layer whose uuid is `layer_uuid` (any fd on its filesystem as
    /// `mount_fd`), as `ovl_decode_real_fh` does: ESTALE when the uuid differs. Needs
    /// `CAP_DAC_READ_SEARCH`.
    pub fn open(
        &self,
        mount_fd: BorrowedFd,
        layer_uuid: &[u8; 16],
        flags: libc::c_int,
    ) -> io::Result<OwnedFd> {
        if &self.uuid != layer_uuid {
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        handle::open_by_handle_at(mount_fd, &self.file_handle(), flags)
    }

    /// The value as stored in the xattr. The handle must fit (at most 234 bytes; real handles
    /// are at most `MAX_HANDLE_SZ`).
    pub fn encode(&self) -> Vec<u8> {
        let len = HEADER_LEN + self.handle.len();
        debug_assert!(len <= u8::MAX as usize, "origin handle too long");
        let mut v = Vec::with_capacity(len);
        v.extend_from_slice(&[VERSION, MAGIC, len as u8, self.flags, self.handle_type]);
        v.extend_from_slice(&self.uuid);
        v.extend_from_slice(&self.handle);
        v
    }

    /// The name of this origin's entry in the kernel's index dir (`W/index`): the lowercase
    /// hex of the encoded value (`ovl_get_index_name_fh`).
    pub fn index_name(&self) -> String {
        self.encode().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses a stored value with the kernel's checks (see the module comment).
    pub fn decode(buf: &[u8]) -> Result<Origin, OriginError> {
        if buf.is_empty() {
            return Err(OriginError::Empty);
        }
        let Some((header, rest)) = buf.split_first_chunk::<HEADER_LEN>() else {
            return Err(OriginError::TooShort { len: buf.len() });
        };
        let [version, magic, claimed, flags, handle_type, ..] = *header;
        if buf.len() < claimed as usize {
            return Err(OriginError::Truncated {
                len: buf.len(),
                claimed,
            });
        }
        if magic != MAGIC {
            return Err(OriginError::BadMagic(magic));
        }
        if version > VERSION {
            return Err(OriginError::NewerVersion(version));
        }
        if flags & !FLAG_ALL != 0 {
            return Err(OriginError::UnknownFlags(flags));
        }
        if flags & FLAG_ANY_ENDIAN == 0 && flags & FLAG_BIG_ENDIAN != FLAG_CPU_ENDIAN {
            return Err(OriginError::ForeignEndian);
        }
        let words = (claimed as usize).saturating_sub(HEADER_LEN) / 4;
        if words == 0 {
            return Err(OriginError::NoHandle { claimed });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&header[5..]);
        Ok(Origin {
            flags,
            handle_type,
            uuid,
            handle: rest[..words * 4].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    fn sample() -> Origin {
        Origin {
            flags: FLAG_CPU_ENDIAN,
            handle_type: 1,
            uuid: *b"0123456789abcdef",
            handle: vec![5, 0, 0x99, 0, 0x77, 0xaf, 0xdd, 0x8a],
        }
    }

    #[test]
    fn layout() {
        let v = sample().encode();
        assert_eq!(v.len(), 29);
        assert_eq!(&v[..5], &[0, 0xfb, 29, FLAG_CPU_ENDIAN, 1]);
        assert_eq!(&v[5..21], b"0123456789abcdef");
        assert_eq!(Origin::decode(&v).unwrap(), sample());
        assert_eq!(sample().index_name().len(), 58);
        assert!(sample().index_name().starts_with("00fb1d"));
    }

    #[test]
    fn a_value_the_kernel_wrote_decodes() {
        // trusted.overlay.origin of a file copied up by Linux 6.18 from a tmpfs lower.
        let v = [
            0x00, 0xfb, 0x21, 0x00, 0x01, 0x3e, 0xc6, 0xeb, 0x37, 0x9c, 0x2e, 0x46, 0xfe, 0x92,
            0x17, 0x8a, 0xdf, 0xef, 0xf4, 0xca, 0x43, 0x54, 0x7b, 0x2c, 0x16, 0x03, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let o = Origin::decode(&v).unwrap();
        assert_eq!((o.flags, o.handle_type, o.handle.len()), (0, 1, 12));
        assert_eq!(o.uuid[0], 0x3e);
        assert_eq!(o.encode(), v);
    }

    #[test]
    fn checks_in_the_kernels_order() {
        let v = sample().encode();
        let with = |i: usize, b: u8| {
            let mut w = v.clone();
            w[i] = b;
            Origin::decode(&w)
        };
        assert_eq!(Origin::decode(&[]), Err(OriginError::Empty));
        assert_eq!(
            Origin::decode(&v[..20]),
            Err(OriginError::TooShort { len: 20 })
        );
        assert_eq!(
            Origin::decode(&v[..28]),
            Err(OriginError::Truncated {
                len: 28,
                claimed: 29
            })
        );
        assert_eq!(with(1, 0xfa), Err(OriginError::BadMagic(0xfa)));
        assert_eq!(with(0, 1), Err(OriginError::NewerVersion(1)));
        assert_eq!(with(3, 8), Err(OriginError::UnknownFlags(8)));
        let foreign = FLAG_BIG_ENDIAN ^ FLAG_CPU_ENDIAN;
        assert_eq!(with(3, foreign), Err(OriginError::ForeignEndian));
        assert!(with(3, foreign | FLAG_ANY_ENDIAN).is_ok());
        assert_eq!(with(3, FLAG_PATH_UPPER).unwrap().flags, FLAG_PATH_UPPER);
        assert_eq!(with(2, 21), Err(OriginError::NoHandle { claimed: 21 }));
        assert_eq!(with(2, 24), Err(OriginError::NoHandle { claimed: 24 }));
        assert_eq!(with(2, 0), Err(OriginError::NoHandle { claimed: 0 }));
        // Lenient where the kernel is: trailing bytes and a partial last word are ignored.
        let mut longer = v.clone();
        longer.extend_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(Origin::decode(&longer).unwrap(), sample());
        longer[2] = 30;
        assert_eq!(Origin::decode(&longer).unwrap(), sample());
        assert_eq!(with(2, 25).unwrap().handle, sample().handle[..4]);
        assert!(OriginError::Empty.is_unknown() && !OriginError::BadMagic(0).is_unknown());
        let e: io::Error = OriginError::BadMagic(0).into();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    /// xorshift64*: a deterministic PRNG for the fuzz test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn check_decode(buf: &[u8]) {
        if let Ok(o) = Origin::decode(buf) {
            let again = o.encode();
            assert!(again.len() <= buf.len());
            assert_eq!(Origin::decode(&again).unwrap(), o);
        }
    }

    #[test]
    fn decode_never_panics() {
        let mut long = sample();
        long.handle = (0..128).collect();
        for v in [sample().encode(), long.encode()] {
            for n in 0..=v.len() {
                check_decode(&v[..n]);
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            for _ in 0..20_000 {
                let mut w = v.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(w.len());
                    w[i] = rng.next() as u8;
                }
                // Bias the header towards the values the checks look at.
                if rng.below(2) == 0 {
                    w[1] = MAGIC;
                    w[0] = rng.below(2) as u8;
                }
                let cut = rng.below(w.len() + 1);
                check_decode(&w);
                check_decode(&w[..cut]);
            }
            for _ in 0..5_000 {
                let n = rng.below(300);
                let w: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                check_decode(&w);
            }
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Owns the test's directory and what is mounted in it: unmounts (newest first) and
    /// removes everything when dropped, also when the test panics.
    struct Scratch {
        base: PathBuf,
        mounts: Vec<PathBuf>,
    }

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let base =
                std::env::temp_dir().join(format!("plyfs-origin-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&base).unwrap();
            Scratch {
                base,
                mounts: Vec::new(),
            }
        }

        fn mount(&mut self, fstype: &str, target: &Path, data: &str) -> nix::Result<()> {
            nix::mount::mount(
                Some(fstype),
                target,
                Some(fstype),
                nix::mount::MsFlags::empty(),
                Some(data),
            )?;
            self.mounts.push(target.to_owned());
            Ok(())
        }

        fn umount(&mut self, target: &Path) {
            nix::mount::umount(target).unwrap();
            self.mounts.retain(|m| m != target);
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            for m in self.mounts.iter().rev() {
                if nix::mount::umount(m.as_path()).is_err() {
                    let _ = nix::mount::umount2(m.as_path(), nix::mount::MntFlags::MNT_DETACH);
                }
            }
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    const ORIGIN: &str = "trusted.overlay.origin";

    /// One kernel overlay over `lower`: copies up every name by chmod, then unmounts.
    fn kernel_copy_up(s: &mut Scratch, lower: &Path, names: &[&str]) -> Result<PathBuf, String> {
        let tag = lower.to_string_lossy().replace('/', "_");
        let (upper, work, mnt) = (
            s.base.join(format!("upper{tag}")),
            s.base.join(format!("work{tag}")),
            s.base.join(format!("mnt{tag}")),
        );
        for d in [&upper, &work, &mnt] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lower.display(),
            upper.display(),
            work.display()
        );
        s.mount("overlay", &mnt, &opts)
            .map_err(|e| format!("mount -t overlay -o {opts}: {e}"))?;
        for n in names {
            let p = mnt.join(n);
            let mut perm = std::fs::metadata(&p).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
            std::fs::set_permissions(&p, perm).unwrap();
        }
        s.umount(&mnt);
        Ok(upper)
    }

    fn ino(p: &Path) -> (u64, u64) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.dev(), m.ino())
    }

    /// Checks (a) decode, (b) open_by_handle_at, (c) for_object == the kernel's bytes, for
    /// `lower/f`; returns the stored value.
    fn check_kernel_origin(lower: &Path, upper: &Path) -> Vec<u8> {
        let stored = xattr::get(upper.join("f"), ORIGIN)
            .unwrap()
            .expect("the kernel wrote no origin");
        let origin = Origin::decode(&stored).expect("(a) the kernel's origin decodes");
        assert_eq!(origin.flags, FLAG_CPU_ENDIAN);
        assert_eq!(origin.encode(), stored);

        let lower_dir = std::fs::File::open(lower).unwrap();
        let fd = origin
            .open(lower_dir.as_fd(), &origin.uuid, libc::O_PATH)
            .expect("(b) the handle opens on the lower");
        let st = nix::sys::stat::fstat(fd.as_fd()).unwrap();
        assert_eq!((st.st_dev, st.st_ino), ino(&lower.join("f")));

        let uuid = match handle::fs_uuid(lower_dir.as_fd()) {
            Ok(u) => {
                assert_eq!(
                    u, origin.uuid,
                    "FS_IOC_GETFSUUID == the uuid the kernel wrote"
                );
                u
            }
            Err(e) => {
                println!("NOTE: FS_IOC_GETFSUUID failed ({e}); using the kernel's uuid");
                origin.uuid
            }
        };
        let mine = Origin::for_object(lower_dir.as_fd(), &CString::new("f").unwrap(), uuid)
            .expect("name_to_handle_at on the lower");
        assert_eq!(mine.encode(), stored, "(c) same bytes as the kernel");
        println!(
            "{}: origin {} (uuid {})",
            lower.display(),
            origin.index_name(),
            if uuid == [0; 16] { "null" } else { "s_uuid" }
        );
        stored
    }

    #[test]
    fn kernel_writes_the_same_bytes() {
        if !is_root() {
            println!("SKIPPED: mounting the kernel's overlay needs root");
            return;
        }
        let mut s = Scratch::new("kernel");

        // 1. Lower on the same filesystem as upper (whatever TMPDIR is on).
        let lower = s.base.join("lower");
        std::fs::create_dir(&lower).unwrap();
        let names = [
            "f", "trailing", "magic", "nohandle", "flags", "version", "partial",
        ];
        for n in names {
            std::fs::write(lower.join(n), n).unwrap();
        }
        let upper = match kernel_copy_up(&mut s, &lower, &names) {
            Ok(u) => u,
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        let stored = check_kernel_origin(&lower, &upper);

        // The kernel is the judge of decode: edit origins offline, remount, and see whether the
        // kernel used the origin (same filesystem: a copied-up file keeps the lower st_ino).
        let edit = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = stored.clone();
            let (fh, _) = handle::name_to_handle_at(
                std::fs::File::open(&lower).unwrap().as_fd(),
                &CString::new(name).unwrap(),
                0,
            )
            .unwrap();
            v.truncate(HEADER_LEN);
            v.extend_from_slice(&fh.bytes);
            f(&mut v);
            xattr::set(upper.join(name), ORIGIN, &v).unwrap();
            v
        };
        let cases = [
            (
                "trailing",
                edit("trailing", &|v| v.extend_from_slice(&[0; 4])),
            ),
            ("magic", edit("magic", &|v| v[1] = 0xfa)),
            ("nohandle", edit("nohandle", &|v| v[2] = HEADER_LEN as u8)),
            ("flags", edit("flags", &|v| v[3] |= 0x08)),
            ("version", edit("version", &|v| v[0] = 1)),
            (
                "partial",
                edit("partial", &|v| {
                    v.push(0xee);
                    v[2] += 1;
                }),
            ),
        ];
        let mnt = s.base.join("mnt-check");
        std::fs::create_dir(&mnt).unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lower.display(),
            upper.display(),
            s.base
                .join(format!("work{}", lower.to_string_lossy().replace('/', "_")))
                .display()
        );
        s.mount("overlay", &mnt, &opts).unwrap();
        for (name, value) in &cases {
            let kernel_used_origin = ino(&mnt.join(name)).1 == ino(&lower.join(name)).1;
            let decoded = Origin::decode(value);
            assert_eq!(
                kernel_used_origin,
                decoded.is_ok(),
                "{name}: kernel used origin {kernel_used_origin}, decode gave {decoded:?}"
            );
        }
        s.umount(&mnt);

        // 2. Lower on a fresh tmpfs: another filesystem, with a random s_uuid (kernel 6.6+).
        let t = s.base.join("tmpfs");
        std::fs::create_dir(&t).unwrap();
        if let Err(e) = s.mount("tmpfs", &t, "mode=0755") {
            println!("SKIPPED (tmpfs lower): mount -t tmpfs: {e}");
            return;
        }
        let tlower = t.join("lower");
        std::fs::create_dir(&tlower).unwrap();
        std::fs::write(tlower.join("f"), b"f").unwrap();
        match kernel_copy_up(&mut s, &tlower, &["f"]) {
            Ok(tupper) => {
                check_kernel_origin(&tlower, &tupper);
            }
            Err(e) => println!("SKIPPED (tmpfs lower): {e}"),
        }
    }
}
