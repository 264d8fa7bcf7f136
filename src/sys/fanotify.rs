//! fanotify: a filesystem-wide mark reporting directory entry changes with the parent
//! directory's file handle and the name (`FAN_REPORT_DFID_NAME`), and the parsing of its event
//! records (safe code over the bytes `read` returns).
//!
//! Invariants: the fanotify fd is `O_CLOEXEC`; `mark_filesystem` needs `CAP_SYS_ADMIN` (EPERM
//! otherwise); events carry no fd (`FAN_NOFD`), so nothing read here has to be closed.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::handle::FileHandle;

pub const FAN_ATTRIB: u64 = 0x0000_0004;
pub const FAN_CLOSE_WRITE: u64 = 0x0000_0008;
pub const FAN_MOVED_FROM: u64 = 0x0000_0040;
pub const FAN_MOVED_TO: u64 = 0x0000_0080;
pub const FAN_CREATE: u64 = 0x0000_0100;
pub const FAN_DELETE: u64 = 0x0000_0200;
pub const FAN_Q_OVERFLOW: u64 = 0x0000_4000;
pub const FAN_ONDIR: u64 = 0x4000_0000;

const FAN_CLOEXEC: u32 = 0x0000_0001;
const FAN_CLASS_NOTIF: u32 = 0x0000_0000;
const FAN_REPORT_DIR_FID: u32 = 0x0000_0400;
const FAN_REPORT_NAME: u32 = 0x0000_0800;
const FAN_MARK_ADD: u32 = 0x0000_0001;
const FAN_MARK_FILESYSTEM: u32 = 0x0000_0100;
const FAN_MARK_IGNORED_SURV_MODIFY: u32 = 0x0000_0040;
const FAN_MARK_IGNORE: u32 = 0x0000_0400;
const FAN_EVENT_ON_CHILD: u64 = 0x0800_0000;
const FAN_EVENT_INFO_TYPE_DFID_NAME: u8 = 2;
const METADATA_LEN: usize = 24;

/// A fanotify group that reports changes as (directory handle, name).
pub fn init() -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments; a non-negative result is a new fd that
    // nothing else owns.
    let fd = unsafe {
        libc::fanotify_init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_REPORT_DIR_FID | FAN_REPORT_NAME,
            (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by fanotify_init and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Watches the whole filesystem that `dir` is on for the events in `mask`.
pub fn mark_filesystem(group: BorrowedFd, dir: BorrowedFd, mask: u64) -> io::Result<()> {
    // SAFETY: both fds are live for the call; `pathname` is NULL, so the object marked is
    // `dirfd` itself, as fanotify_mark(2) documents; nothing is written through pointers.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            FAN_MARK_ADD | FAN_MARK_FILESYSTEM,
            mask,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Ignores the events in `mask` on directory `dir` and its children (kernel 6.0+).
pub fn ignore_dir(group: BorrowedFd, dir: BorrowedFd, mask: u64) -> io::Result<()> {
    // SAFETY: as in `mark_filesystem`: live fds, NULL pathname, no pointers written.
    let r = unsafe {
        libc::fanotify_mark(
            group.as_raw_fd(),
            FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY,
            mask | FAN_EVENT_ON_CHILD,
            dir.as_raw_fd(),
            std::ptr::null(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One event: what happened (`mask`), by which process, and where (directory handle, name).
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub mask: u64,
    pub pid: i32,
    pub dir: Option<FileHandle>,
    pub name: Vec<u8>,
}

/// Parses the events in `buf` (what one `read` of the group returned). A malformed record ends
/// the parse.
pub fn parse(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut at = 0;
    let u16_at = |b: &[u8], i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes(b[i..i + 4].try_into().expect("4"));
    while at + METADATA_LEN <= buf.len() {
        let len = u32_at(buf, at) as usize;
        let meta_len = usize::from(u16_at(buf, at + 6));
        if len < METADATA_LEN || meta_len < METADATA_LEN || at + len > buf.len() {
            break;
        }
        let rec = &buf[at..at + len];
        let mask = u64::from_ne_bytes(rec[8..16].try_into().expect("8"));
        let pid = i32::from_ne_bytes(rec[20..24].try_into().expect("4"));
        let mut ev = Event {
            mask,
            pid,
            dir: None,
            name: Vec::new(),
        };
        // Info records: header (type, pad, len), fsid (8 bytes), file_handle, name.
        let mut i = meta_len;
        while i + 4 <= rec.len() {
            let (kind, ilen) = (rec[i], usize::from(u16_at(rec, i + 2)));
            if ilen < 4 || i + ilen > rec.len() {
                break;
            }
            let info = &rec[i..i + ilen];
            if kind == FAN_EVENT_INFO_TYPE_DFID_NAME && info.len() >= 4 + 8 + 8 {
                let hbytes = u32_at(info, 12) as usize;
                let htype = i32::from_ne_bytes(info[16..20].try_into().expect("4"));
                if 20 + hbytes <= info.len() {
                    ev.dir = Some(FileHandle {
                        handle_type: htype,
                        bytes: info[20..20 + hbytes].to_vec(),
                    });
                    let rest = &info[20 + hbytes..];
                    if let Ok(name) = CStr::from_bytes_until_nul(rest) {
                        ev.name = name.to_bytes().to_vec();
                    }
                }
            }
            i += ilen;
        }
        out.push(ev);
        at += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mask: u64, pid: i32, handle: &[u8], name: &str) -> Vec<u8> {
        let mut info = vec![FAN_EVENT_INFO_TYPE_DFID_NAME, 0, 0, 0];
        info.extend_from_slice(&[0u8; 8]); // fsid
        info.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        info.extend_from_slice(&1i32.to_ne_bytes());
        info.extend_from_slice(handle);
        info.extend_from_slice(name.as_bytes());
        info.push(0);
        while info.len() % 4 != 0 {
            info.push(0);
        }
        let ilen = info.len() as u16;
        info[2..4].copy_from_slice(&ilen.to_ne_bytes());
        let mut rec = Vec::new();
        rec.extend_from_slice(&((METADATA_LEN + info.len()) as u32).to_ne_bytes());
        rec.extend_from_slice(&[3, 0]);
        rec.extend_from_slice(&(METADATA_LEN as u16).to_ne_bytes());
        rec.extend_from_slice(&mask.to_ne_bytes());
        rec.extend_from_slice(&(-1i32).to_ne_bytes());
        rec.extend_from_slice(&pid.to_ne_bytes());
        rec.extend_from_slice(&info);
        rec
    }

    #[test]
    fn parses_records_and_stops_at_garbage() {
        let mut buf = record(FAN_CREATE, 42, &[1, 2, 3, 4, 5, 6, 7, 8], "new-name");
        buf.extend(record(FAN_DELETE | FAN_ONDIR, 7, &[9; 8], "d"));
        buf.extend([0xff; 10]);
        let evs = parse(&buf);
        assert_eq!(evs.len(), 2);
        assert_eq!(evs[0].mask, FAN_CREATE);
        assert_eq!(evs[0].pid, 42);
        assert_eq!(evs[0].name, b"new-name");
        assert_eq!(
            evs[0].dir.as_ref().unwrap().bytes,
            vec![1, 2, 3, 4, 5, 6, 7, 8]
        );
        assert_eq!(evs[1].name, b"d");
        assert!(
            parse(&[0u8; 30]).is_empty(),
            "a zero length record ends the parse"
        );
    }
}
