//! POSIX ACLs of new objects: a new object inherits its directory's default ACL exactly as the
//! kernel's `posix_acl_create` does (the create mode is masked by the ACL, and the umask is not
//! applied); without a default ACL the umask applies.
//!
//! The xattr format is the kernel's `posix_acl_xattr`: a little-endian `u32` version (2), then
//! entries of `u16` tag, `u16` permissions and `u32` id. Invariant: a value that does not parse
//! is treated as no default ACL (with a warning), never as a reason to fail or to widen access.

/// `system.posix_acl_access`
pub const ACCESS: &std::ffi::CStr = c"system.posix_acl_access";
/// `system.posix_acl_default`
pub const DEFAULT: &std::ffi::CStr = c"system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

fn parse(bytes: &[u8]) -> Option<Vec<Entry>> {
    let (head, rest) = bytes.split_at_checked(4)?;
    if u32::from_le_bytes(head.try_into().ok()?) != VERSION || rest.len() % 8 != 0 {
        return None;
    }
    Some(
        rest.chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

/// What a new object gets.
#[derive(Debug, PartialEq, Eq)]
pub struct Inherited {
    /// The permission bits (and the special bits of the requested mode).
    pub mode: u32,
    /// `system.posix_acl_access`, unless the ACL says no more than the mode.
    pub access: Option<Vec<u8>>,
    /// `system.posix_acl_default`, for a directory.
    pub default: Option<Vec<u8>>,
}

/// The mode and ACLs of a new object made with `mode` (permission and special bits) and `umask`
/// in a directory whose default ACL is `parent_default`.
pub fn inherit(parent_default: Option<&[u8]>, mode: u32, umask: u32, is_dir: bool) -> Inherited {
    let entries = match parent_default.map(|d| (d, parse(d))) {
        None => None,
        Some((_, Some(e))) if !e.is_empty() => Some(e),
        Some((_, _)) => {
            tracing::warn!("a default ACL that does not parse is ignored");
            None
        }
    };
    let Some(mut acl) = entries else {
        return Inherited {
            mode: mode & !umask & 0o7777,
            access: None,
            default: None,
        };
    };
    let default = is_dir.then(|| encode(&acl));
    let (not_equiv, new_mode) = create_masq(&mut acl, mode & 0o7777);
    Inherited {
        mode: new_mode,
        access: not_equiv.then(|| encode(&acl)),
        default,
    }
}

/// The kernel's `posix_acl_create_masq`: masks the ACL by `mode` and `mode` by the ACL; returns
/// whether the ACL says more than the mode, and the new mode.
fn create_masq(acl: &mut [Entry], mut mode: u32) -> (bool, u32) {
    let orig = mode;
    let mut not_equiv = false;
    let (mut group_obj, mut mask_obj) = (None, None);
    for (i, e) in acl.iter_mut().enumerate() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((mode >> 6) & 7) as u16;
                mode &= (u32::from(e.perm) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            GROUP_OBJ => group_obj = Some(i),
            OTHER => {
                e.perm &= (mode & 7) as u16;
                mode &= u32::from(e.perm) | !0o007;
            }
            MASK => {
                mask_obj = Some(i);
                not_equiv = true;
            }
            _ => {}
        }
    }
    if let Some(i) = mask_obj.or(group_obj) {
        acl[i].perm &= ((mode >> 3) & 7) as u16;
        mode &= (u32::from(acl[i].perm) << 3) | !0o070;
    }
    (not_equiv, (orig & !0o777) | (mode & 0o777))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        encode(
            &entries
                .iter()
                .map(|&(tag, perm, id)| Entry { tag, perm, id })
                .collect::<Vec<_>>(),
        )
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn no_default_acl_applies_the_umask() {
        let i = inherit(None, 0o666, 0o022, false);
        assert_eq!(
            i,
            Inherited {
                mode: 0o644,
                access: None,
                default: None
            }
        );
    }

    /// `setfacl -d -m u:1000:rwx,g::r-x,o::---` then `echo x > f` and `mkdir d` with umask 022,
    /// as the kernel's overlay did on this machine: f is 660 with mask rw-, d is 770.
    #[test]
    fn matches_the_kernel() {
        let def = acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, NONE),
            (MASK, 7, NONE),
            (OTHER, 0, NONE),
        ]);
        let f = inherit(Some(&def), 0o666, 0o022, false);
        assert_eq!(f.mode, 0o660, "umask ignored, mode masked by the ACL");
        let kernel_f = "0200000001000600ffffffff02000700e803000004000500ffffffff10000600ffffffff20000000ffffffff";
        let hex: String = f
            .access
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, kernel_f);
        assert_eq!(f.default, None);
        let d = inherit(Some(&def), 0o777, 0o022, true);
        assert_eq!(d.mode, 0o770);
        assert_eq!(d.default.as_deref(), Some(&def[..]));
        assert!(d.access.is_some());
    }

    #[test]
    fn minimal_default_acl_gives_no_access_acl() {
        let def = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 5, NONE), (OTHER, 5, NONE)]);
        let f = inherit(Some(&def), 0o4666, 0o077, false);
        assert_eq!(f.mode, 0o4644, "special bits kept, umask ignored");
        assert_eq!(f.access, None);
    }

    #[test]
    fn garbage_is_no_acl() {
        assert_eq!(inherit(Some(b"\x01\x00"), 0o666, 0o022, false).mode, 0o644);
        assert_eq!(
            inherit(Some(&[2, 0, 0, 0, 1]), 0o666, 0o022, false).mode,
            0o644
        );
    }
}
