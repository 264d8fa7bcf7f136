//! What the fuzz targets feed arbitrary bytes to, shared with `tests/decoders.rs` (which runs
//! the same bodies on stable Rust for a bounded count in CI): the command line and option
//! parser, and every decoder of bytes found on disk (private xattrs, POSIX ACLs, the export
//! record's slots). Each body only asserts that nothing panics and that what decodes is sane.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// The command line: `data` split at NUL bytes into arguments, after `plyfs`.
pub fn options(data: &[u8]) {
    let mut args = vec![OsString::from("plyfs")];
    args.extend(
        data.split(|b| *b == 0)
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    let _ = plyfs::config::parse_args(&args);
    // The `-o` form, the way containers-storage and mount(8) pass options.
    let opts = OsString::from_vec(data.to_vec());
    let _ = plyfs::config::parse_args(&[
        OsString::from("plyfs"),
        OsString::from("-o"),
        opts,
        OsString::from("/mnt"),
    ]);
}

/// The on-disk decoders; the first byte picks one, the rest is the value.
pub fn xattrs(data: &[u8]) {
    let Some((&which, value)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(origin) = plyfs::origin::Origin::decode(value) {
                // What decodes is whole 32-bit words of handle (the kernel ignores a partial
                // last word and bytes past the claimed length), and decodes again as itself.
                assert_eq!(origin.encode().len() % 4, 21 % 4, "origin handle words");
                assert_eq!(
                    plyfs::origin::Origin::decode(&origin.encode()).ok(),
                    Some(origin),
                    "origin round trip"
                );
            }
        }
        1 => {
            if let Ok(plyfs::namei::Redirect::Absolute(parts)) = plyfs::namei::parse_redirect(value)
            {
                assert!(!parts.is_empty());
                assert!(parts
                    .iter()
                    .all(|p| !p.as_bytes().is_empty() && p.as_bytes() != b".."));
            }
        }
        2 => {
            let _ = plyfs::record::Entry::decode_slot(value);
        }
        3 => {
            let (mode, umask) = (0o777, 0o022);
            let _ = plyfs::acl::inherit(Some(value), mode, umask, false);
            let _ = plyfs::acl::inherit(Some(value), mode, umask, true);
        }
        4 => {
            for userxattr in [false, true] {
                let x = plyfs::xattr::OvlXattrs::new(userxattr);
                let _ = x.filter_list(value);
                let _ = x.to_real(value);
                let _ = x.to_user(value);
            }
        }
        5 => {
            let _ = plyfs::export::generation_of(&plyfs::sys::handle::FileHandle {
                handle_type: value.first().copied().unwrap_or(0).into(),
                bytes: value.to_vec(),
            });
        }
        6 => {
            // An owner override: what parses encodes to a value that parses as itself.
            if let Ok(o) = plyfs::override_stat::Override::parse(value) {
                assert!(o.perm <= 0o7777, "override permission bits");
                assert_eq!(
                    plyfs::override_stat::Override::parse(&o.encode()),
                    Ok(o),
                    "override round trip"
                );
            }
        }
        _ => {
            let handle_type = value.first().copied().unwrap_or(0).into();
            let _ = plyfs::export::ino_from_handle(handle_type, value.get(1..).unwrap_or(&[]));
        }
    }
}
