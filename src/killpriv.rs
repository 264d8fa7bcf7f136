//! Setuid and setgid bits plyfs clears itself, where the kernel's FUSE client leaves that to the
//! server:
//! - **fallocate** (allocate, punch a hole, zero a range) by a caller without `CAP_FSETID`: the
//!   kernel sends FUSE_FALLOCATE without touching the mode;
//! - **a new access ACL** set by a caller outside the file's group and without `CAP_FSETID`:
//!   the kernel says so only with `FUSE_SETXATTR_EXT`, whose request fuser cannot parse;
//! - **writes, truncates and chowns**, where the kernel granted `FUSE_HANDLE_KILLPRIV_V2`
//!   (plyfs asks for it: the kernel then marks a file it found without the bits or a
//!   `security.capability` as such, and stops asking for that xattr before every write). The
//!   kernel sends no mode change then: a write by a caller who takes a bit comes as an empty
//!   SETATTR before it (the same request as `chown(f, -1, -1)`, which takes the same bits) or
//!   as a WRITE flagged `FUSE_WRITE_KILL_SUIDGID`; a truncate and a chown come as they are.
//!   Without it, the kernel sends the mode for a write or truncate itself, and leaves plyfs
//!   only setgid without group execute for a caller outside the file's group.
//!
//! The rules are the kernel's: `setattr_should_drop_suidgid` and `setattr_should_drop_sgid`
//! (fs/attr.c) for a change of a regular file's data, `chown_common` (fs/open.c) for a chown,
//! and `posix_acl_update_mode` (fs/posix_acl.c) for an ACL. Invariant: the caller's groups and
//! capabilities are read from /proc only when the file has a bit to lose, so the common case
//! costs one mode test.

use crate::ovl::OResult;

const S_ISUID: u32 = libc::S_ISUID;
const S_ISGID: u32 = libc::S_ISGID;
const S_IXGRP: u32 = libc::S_IXGRP;
/// CAP_FSETID's bit in /proc/PID/status's CapEff.
const CAP_FSETID: u32 = 4;

/// Who sent a request (from its FUSE header).
#[derive(Clone, Copy, Debug)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// What /proc tells of a caller: its supplementary groups and whether it may keep the bits.
#[derive(Debug, Default, PartialEq)]
struct Creds {
    groups: Vec<u32>,
    fsetid: bool,
}

/// Parses /proc/PID/status. A caller that is gone counts as unprivileged unless it was root.
fn creds(who: &Who) -> Creds {
    match std::fs::read_to_string(format!("/proc/{}/status", who.pid)) {
        Ok(status) if who.pid != 0 => parse_status(&status),
        _ => Creds {
            groups: Vec::new(),
            fsetid: who.uid == 0,
        },
    }
}

fn parse_status(status: &str) -> Creds {
    let groups = crate::inode::groups_in_status(status);
    let fsetid = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .and_then(|c| u64::from_str_radix(c, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0);
    Creds { groups, fsetid }
}

fn in_group_or_capable(who: &Who, creds: &Creds, file_gid: u32) -> bool {
    who.gid == file_gid || creds.groups.contains(&file_gid) || creds.fsetid
}

/// A rule: the bits a change by `who` takes from `mode` (a file's type and permission bits) of a
/// file in group `file_gid` (as the caller sees it).
pub type Rule = fn(u32, u32, &Who) -> u32;

/// The bits a change of owner or group takes from a non-directory, whoever makes it: setuid,
/// and setgid where the group may execute (`chown_common`, then `notify_change`).
pub fn on_chown(mode: u32, _file_gid: u32, _who: &Who) -> u32 {
    if mode & libc::S_IFMT == libc::S_IFDIR {
        return 0;
    }
    let mut kill = mode & S_ISUID;
    if mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP {
        kill |= S_ISGID;
    }
    kill
}

/// The bits a change of a file's data by `who` takes from `mode` (its type and permission
/// bits, `file_gid` its group as the caller sees it).
pub fn on_data_change(mode: u32, file_gid: u32, who: &Who) -> u32 {
    if mode & libc::S_IFMT != libc::S_IFREG || mode & (S_ISUID | S_ISGID) == 0 {
        return 0;
    }
    drop_on_data_change(mode, file_gid, who, &creds(who))
}

fn drop_on_data_change(mode: u32, file_gid: u32, who: &Who, creds: &Creds) -> u32 {
    if creds.fsetid {
        return 0;
    }
    let mut kill = mode & S_ISUID;
    if mode & S_ISGID != 0 && (mode & S_IXGRP != 0 || !in_group_or_capable(who, creds, file_gid)) {
        kill |= S_ISGID;
    }
    kill
}

/// The bits a new access ACL set by `who` takes from `mode` (after the ACL set it).
pub fn on_access_acl(mode: u32, file_gid: u32, who: &Who) -> u32 {
    if mode & S_ISGID == 0 || in_group_or_capable(who, &creds(who), file_gid) {
        return 0;
    }
    S_ISGID
}

/// Clears `bits` of the permission bits `mode` of upper object `dir`/`name` (through its owner
/// override where it has one).
pub fn clear(
    ovl: &crate::ovl::Ovl,
    dir: std::os::fd::BorrowedFd,
    name: &std::ffi::CStr,
    mode: u32,
    bits: u32,
) -> OResult<()> {
    if bits == 0 {
        return Ok(());
    }
    tracing::debug!(?name, mode, bits, "clearing setuid/setgid");
    crate::override_stat::chown_chmod(ovl, dir, name, None, None, Some(mode & 0o7777 & !bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Who = Who {
        uid: 1000,
        gid: 1000,
        pid: 0,
    };
    const REG: u32 = libc::S_IFREG;

    fn plain() -> Creds {
        Creds::default()
    }

    #[test]
    fn data_change_by_a_user_takes_suid_and_sgid_as_the_kernel_does() {
        // xfstests generic/683-685's four cases, the caller outside the file's group (2000).
        let drop = |mode| drop_on_data_change(REG | mode, 2000, &USER, &plain());
        assert_eq!(drop(0o6666), S_ISUID | S_ISGID);
        assert_eq!(drop(0o6676), S_ISUID | S_ISGID);
        assert_eq!(drop(0o6766), S_ISUID | S_ISGID);
        assert_eq!(drop(0o6777), S_ISUID | S_ISGID);
        // In the group: setgid without group execute is mandatory locking, not privilege.
        let member = |mode| drop_on_data_change(REG | mode, 1000, &USER, &plain());
        assert_eq!(member(0o2666), 0);
        assert_eq!(member(0o2676), S_ISGID);
        assert_eq!(member(0o4666), S_ISUID);
        let supplementary = Creds {
            groups: vec![7, 2000],
            fsetid: false,
        };
        assert_eq!(
            drop_on_data_change(REG | 0o2666, 2000, &USER, &supplementary),
            0
        );
    }

    #[test]
    fn cap_fsetid_keeps_the_bits() {
        let root = Creds {
            groups: vec![],
            fsetid: true,
        };
        assert_eq!(drop_on_data_change(REG | 0o6777, 2000, &USER, &root), 0);
    }

    #[test]
    fn only_regular_files_with_a_bit_to_lose_read_proc() {
        // pid 0 cannot be read: a user caller counts as unprivileged.
        assert_eq!(on_data_change(libc::S_IFDIR | 0o6777, 2000, &USER), 0);
        assert_eq!(on_data_change(REG | 0o0777, 2000, &USER), 0);
        assert_eq!(on_data_change(REG | 0o4755, 2000, &USER), S_ISUID);
    }

    #[test]
    fn access_acl_takes_sgid_from_a_caller_outside_the_group() {
        assert_eq!(on_access_acl(libc::S_IFDIR | 0o2777, 2000, &USER), S_ISGID);
        assert_eq!(on_access_acl(REG | 0o2777, 1000, &USER), 0);
        assert_eq!(on_access_acl(REG | 0o0777, 2000, &USER), 0);
        let root = Who { uid: 0, ..USER };
        assert_eq!(on_access_acl(REG | 0o2777, 2000, &root), 0);
    }

    #[test]
    fn chown_takes_setuid_and_executable_setgid_from_non_directories() {
        let root = Who {
            uid: 0,
            gid: 0,
            pid: 0,
        };
        assert_eq!(on_chown(REG | 0o6755, 0, &root), S_ISUID | S_ISGID);
        assert_eq!(
            on_chown(REG | 0o6745, 0, &USER),
            S_ISUID,
            "setgid without group execute stays"
        );
        assert_eq!(on_chown(REG | 0o0755, 0, &USER), 0);
        assert_eq!(
            on_chown(libc::S_IFDIR | 0o2755, 0, &root),
            0,
            "not a directory's"
        );
    }

    #[test]
    fn status_parsing() {
        let s = "Name:\tx\nGroups:\t4 24 27 \nCapEff:\t0000000000000010\n";
        assert_eq!(
            parse_status(s),
            Creds {
                groups: vec![4, 24, 27],
                fsetid: true
            }
        );
        let s = "Groups:\t\nCapEff:\t0000000000000000\n";
        assert_eq!(parse_status(s), Creds::default());
    }
}
