//! The merged view of a real plyfs mount (root and /dev/fuse needed; skipped with a printed
//! reason otherwise): plyfs compared with the kernel's overlay on the `layers/` sets in every
//! on-disk form of the markers (chardev/xattr/aufs whiteouts, xattr/fuse-overlayfs/aufs opaque
//! dirs, trusted/user xattr namespace), read-write and lowerdir-only; stray whiteouts; inode
//! invariants (st_dev, st_ino, d_ino, root ino, stability across remounts); hiding of the
//! private xattrs; every file type; `.` and `..`; long names and AUFS marker names.

mod common;

use common::*;
use nix::errno::Errno;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The builder forms plyfs must read to the kernel's view of the default form, and whether the
/// plyfs mount needs `userxattr` for it.
const FORMS: &[(&[&str], bool)] = &[
    (&[], false),
    (&["--whiteout=xattr"], false),
    (&["--whiteout=aufs"], false),
    (&["--opaque=fuse-overlayfs"], false),
    (&["--opaque=aufs"], false),
    (&["--xattr-ns=user"], true),
];

fn with_userxattr(opts: String, userxattr: bool) -> String {
    if userxattr {
        format!("{opts},userxattr")
    } else {
        opts
    }
}

/// Mounts the kernel on a default-form copy of `set` and plyfs on a copy built with `form`, and
/// compares the dumps.
fn differential(test: &str, set: &str, form: &[&str], userxattr: bool) {
    if !require_kernel_overlay(test) {
        return;
    }
    let kl = Layers::build(set, &[]);
    let km = KernelMount::new(&kl.opts);
    let expected = dump(&km.mnt);
    let pl = Layers::build(set, form);
    let pm = PlyMount::new(&with_userxattr(pl.opts.clone(), userxattr));
    let actual = dump(&pm.mnt);
    assert!(expected.len() > 10, "kernel dump of {set}: {expected:?}");
    assert!(
        !expected.iter().any(|l| l.contains("lstat-failed")),
        "the kernel's view of {set} is not clean: fix the layer set"
    );
    assert_same_dump(
        &format!("{set} built with {form:?} (plyfs) vs default form (kernel)"),
        &expected,
        &actual,
    );
}

macro_rules! differential_tests {
    ($($name:ident: $set:expr, $form:expr, $ux:expr;)*) => {
        $(
            #[test]
            fn $name() {
                differential(stringify!($name), $set, $form, $ux);
            }
        )*
    };
}

differential_tests! {
    diff_demo_chardev: "demo", &[], false;
    diff_demo_xattr_whiteouts: "demo", &["--whiteout=xattr"], false;
    diff_demo_aufs_whiteouts: "demo", &["--whiteout=aufs"], false;
    diff_demo_fuse_overlayfs_opaque: "demo", &["--opaque=fuse-overlayfs"], false;
    diff_demo_aufs_opaque: "demo", &["--opaque=aufs"], false;
    diff_demo_userxattr: "demo", &["--xattr-ns=user"], true;
    diff_forms_chardev: "forms", &[], false;
    diff_forms_xattr_whiteouts: "forms", &["--whiteout=xattr"], false;
    diff_forms_aufs_whiteouts: "forms", &["--whiteout=aufs"], false;
    diff_forms_fuse_overlayfs_opaque: "forms", &["--opaque=fuse-overlayfs"], false;
    diff_forms_aufs_opaque: "forms", &["--opaque=aufs"], false;
    diff_forms_userxattr: "forms", &["--xattr-ns=user"], true;
}

/// Lowerdir-only mounts: plyfs on every form vs the kernel's lowerdir-only mount of the default
/// form.
fn readonly_differential(test: &str, set: &str) {
    if !require_kernel_overlay(test) {
        return;
    }
    let kl = Layers::build(set, &[]);
    let km = KernelMount::new(&kl.ro_opts());
    let expected = dump(&km.mnt);
    assert!(!expected.iter().any(|l| l.contains("lstat-failed")));
    let mut failures = Vec::new();
    for (form, ux) in FORMS {
        let pl = Layers::build(set, form);
        let pm = PlyMount::new(&with_userxattr(pl.ro_opts(), *ux));
        let actual = dump(&pm.mnt);
        let what = format!("lowerdir-only {set} built with {form:?}");
        if let Err(e) = std::panic::catch_unwind(|| assert_same_dump(&what, &expected, &actual)) {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| what.clone()),
            );
        }
        let entry = mount_entry(&pm.mnt).unwrap();
        if !entry.options.split(',').any(|o| o == "ro") {
            failures.push(format!(
                "{what}: /proc/mounts options '{}' lack ro",
                entry.options
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn readonly_demo() {
    readonly_differential("readonly_demo", "demo");
}

#[test]
fn readonly_forms() {
    readonly_differential("readonly_forms", "forms");
}

/// plyfs hides the stray whiteouts (which the kernel lists as entries that fail lstat) and
/// otherwise shows what the kernel shows.
#[test]
fn stray_whiteouts_hidden() {
    if !require_kernel_overlay("stray_whiteouts_hidden") {
        return;
    }
    let kl = Layers::build("stray", &[]);
    let km = KernelMount::new(&kl.opts);
    let kernel = dump(&km.mnt);
    assert!(
        kernel.iter().any(|l| l.contains("lstat-failed")),
        "the kernel lists no stray whiteout any more: the test's premise changed"
    );
    let expected: Vec<String> = kernel
        .into_iter()
        .filter(|l| !l.contains("lstat-failed"))
        .collect();
    for form in [&[][..], &["--whiteout=xattr"], &["--whiteout=aufs"]] {
        let pl = Layers::build("stray", form);
        let pm = PlyMount::new(&pl.opts);
        let actual = dump(&pm.mnt);
        let ghosts: Vec<&String> = actual
            .iter()
            .filter(|l| l.contains("lstat-failed"))
            .collect();
        assert!(
            ghosts.is_empty(),
            "stray {form:?}: plyfs lists whiteouts as entries: {ghosts:?}"
        );
        assert_same_dump(
            &format!("stray {form:?}: plyfs vs kernel minus ghosts"),
            &expected,
            &actual,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Inode invariants
// ---------------------------------------------------------------------------------------------

/// Checks st_dev, st_ino uniqueness (hard links in `links` share one), d_ino and the root ino.
fn check_invariants(set: &str, ids: &BTreeMap<PathBuf, Ids>, links: &[&[&str]]) {
    let root = ids[Path::new("")];
    assert_eq!(
        root.ino, 1,
        "{set}: the root's st_ino is {} (want 1)",
        root.ino
    );
    let mut by_ino: BTreeMap<u64, Vec<&Path>> = BTreeMap::new();
    for (p, i) in ids {
        assert_eq!(
            i.dev,
            root.dev,
            "{set}: '{}' has st_dev {} but the root has {}",
            p.display(),
            i.dev,
            root.dev
        );
        assert_eq!(
            i.d_ino,
            i.ino,
            "{set}: '{}': readdir d_ino {} != lstat st_ino {}",
            p.display(),
            i.d_ino,
            i.ino
        );
        by_ino.entry(i.ino).or_default().push(p);
    }
    let groups: BTreeSet<BTreeSet<PathBuf>> = links
        .iter()
        .map(|g| g.iter().map(PathBuf::from).collect())
        .collect();
    for (ino, paths) in &by_ino {
        if paths.len() > 1 {
            let set_of: BTreeSet<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
            assert!(
                groups.contains(&set_of),
                "{set}: distinct objects share st_ino {ino}: {paths:?}"
            );
        }
    }
    for g in links {
        let inos: BTreeSet<u64> = g.iter().map(|p| ids[Path::new(p)].ino).collect();
        assert_eq!(
            inos.len(),
            1,
            "{set}: hard links {g:?} have different st_ino {inos:?}"
        );
    }
}

fn invariants(test: &str, set: &str, links: &[&[&str]]) {
    if !require_root_and_fuse(test) {
        return;
    }
    let l = Layers::build(set, &[]);
    let tmp = TempDir::new("inv");
    let mnt = tmp.mkdir("m");
    let m = PlyMount::at(&l.opts, &mnt);
    let first = walk(&m.mnt);
    check_invariants(set, &first, links);
    m.unmount();
    let m = PlyMount::at(&l.opts, &mnt);
    let second = walk(&m.mnt);
    let a: BTreeMap<&PathBuf, u64> = first.iter().map(|(p, i)| (p, i.ino)).collect();
    let b: BTreeMap<&PathBuf, u64> = second.iter().map(|(p, i)| (p, i.ino)).collect();
    let changed: Vec<String> = a
        .iter()
        .filter(|(p, ino)| b.get(*p) != Some(*ino))
        .map(|(p, ino)| format!("{}: {ino} -> {:?}", p.display(), b.get(*p)))
        .collect();
    assert!(
        changed.is_empty() && a.len() == b.len(),
        "{set}: st_ino changed across a remount: {changed:?}"
    );
    drop(m);
}

#[test]
fn invariants_demo() {
    invariants(
        "invariants_demo",
        "demo",
        &[&["bin/busybox", "bin/bb-link"]],
    );
}

#[test]
fn invariants_forms() {
    invariants(
        "invariants_forms",
        "forms",
        &[
            &["types-middle/file", "types-middle/hard"],
            &["types-top/file", "types-top/hard"],
            &["types-upper/file", "types-upper/hard"],
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Private xattrs
// ---------------------------------------------------------------------------------------------

fn private_xattrs_hidden_in(form: &[&str], userxattr: bool) {
    let l = Layers::build("forms", form);
    let m = PlyMount::new(&with_userxattr(l.opts.clone(), userxattr));
    let private_prefix = if userxattr {
        "user.overlay."
    } else {
        "trusted.overlay."
    };
    // Make sure the layers do hold private xattrs, or the test proves nothing.
    let ns = if userxattr { "user" } else { "trusted" };
    let top = &l.lowers[0];
    let opaque_name = format!("{ns}.overlay.opaque");
    if form.is_empty() || userxattr {
        assert!(
            xattr::get(top.join("opq/t"), &opaque_name)
                .unwrap()
                .is_some(),
            "the builder wrote no {opaque_name} on opq/t"
        );
    }
    for (p, _) in walk(&m.mnt) {
        let full = m.path(&p);
        let names = xattr::list(&full)
            .unwrap_or_else(|e| panic!("{form:?}: listxattr {}: {e}", full.display()));
        for n in names {
            let n = n.to_string_lossy().into_owned();
            assert!(
                !n.starts_with(private_prefix) && !n.starts_with("user.fuseoverlayfs."),
                "{form:?}: listxattr of '{}' shows the private xattr {n}",
                p.display()
            );
        }
    }
    for p in ["opq/t", "opq/m", "opq/u", "types/private"] {
        for n in [
            opaque_name.as_str(),
            "user.fuseoverlayfs.opaque",
            &format!("{ns}.overlay.plyfs-test"),
        ] {
            let r = xattr::get(m.path(p), n);
            let errno = match &r {
                Ok(None) => Some(libc::ENODATA),
                Ok(Some(_)) => None,
                Err(e) => e.raw_os_error(),
            };
            assert_eq!(
                errno,
                Some(libc::ENODATA),
                "{form:?}: getxattr({p}, {n}) = {r:?}, want ENODATA"
            );
        }
    }
    // The layers' user.* xattrs show.
    let get = |p: &str, n: &str| xattr::get(m.path(p), n).unwrap();
    // types/hard is the bottom's inode (types/file is the middle's, without xattrs).
    assert_eq!(
        get("types/hard", "user.layer").as_deref(),
        Some(&b"bottom"[..])
    );
    assert_eq!(get("types/file", "user.layer"), None);
    assert_eq!(get("types/dir", "user.layer").as_deref(), Some(&b"top"[..]));
    assert_eq!(
        get("types/private", "user.bin").as_deref(),
        Some(&[0u8, 1, 0xfe, 0xff][..])
    );
    assert_eq!(
        get("names/ünïcødé-名前-🙂", "user.ünï").as_deref(),
        Some("ç".as_bytes())
    );
    let list: Vec<String> = xattr::list(m.path("types/private"))
        .unwrap()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    assert_eq!(list, vec!["user.bin".to_string()], "{form:?}");
}

#[test]
fn private_xattrs_hidden() {
    if !require_root_and_fuse("private_xattrs_hidden") {
        return;
    }
    private_xattrs_hidden_in(&[], false);
    private_xattrs_hidden_in(&["--whiteout=xattr"], false);
    private_xattrs_hidden_in(&["--opaque=fuse-overlayfs"], false);
    private_xattrs_hidden_in(&["--xattr-ns=user"], true);
}

#[test]
fn private_xattrs_hidden_demo() {
    if !require_root_and_fuse("private_xattrs_hidden_demo") {
        return;
    }
    let l = Layers::build("demo", &[]);
    let m = PlyMount::new(&l.opts);
    assert_eq!(
        xattr::get(m.path("bin/busybox"), "user.mime")
            .unwrap()
            .as_deref(),
        Some(&b"application/x-executable"[..])
    );
    // etc/conf is opaque in the app layer, whose copy has no user.comment.
    let conf: Vec<_> = xattr::list(m.path("etc/conf")).unwrap().collect();
    assert!(conf.is_empty(), "etc/conf xattrs: {conf:?}");
    let r = xattr::get(m.path("etc/conf"), "trusted.overlay.opaque");
    assert!(
        matches!(r, Ok(None)),
        "getxattr(etc/conf, trusted.overlay.opaque) = {r:?}, want ENODATA"
    );
}

// ---------------------------------------------------------------------------------------------
// File types, statfs, access
// ---------------------------------------------------------------------------------------------

/// The topmost layer object for `rel` (default form: the first layer where lstat finds it).
fn topmost(stack: &[PathBuf], rel: &Path) -> PathBuf {
    stack
        .iter()
        .map(|l| l.join(rel))
        .find(|p| fs::symlink_metadata(p).is_ok())
        .unwrap_or_else(|| panic!("'{}' is in no layer", rel.display()))
}

fn check_types(set: &str) {
    let l = Layers::build(set, &[]);
    let m = PlyMount::new(&l.opts);
    let stack = l.stack();
    let mut seen = BTreeSet::new();
    for (rel, _) in walk(&m.mnt) {
        if rel.as_os_str().is_empty() {
            continue;
        }
        let merged = m.path(&rel);
        let real = topmost(&stack, &rel);
        let (mm, rm) = (
            fs::symlink_metadata(&merged).unwrap(),
            fs::symlink_metadata(&real).unwrap(),
        );
        let ft = mm.file_type();
        let what = format!("{set}: '{}'", rel.display());
        assert_eq!(
            mm.mode() & libc::S_IFMT,
            rm.mode() & libc::S_IFMT,
            "{what}: type differs from the layer's"
        );
        assert_eq!(mm.mode(), rm.mode(), "{what}: mode");
        assert_eq!((mm.uid(), mm.gid()), (rm.uid(), rm.gid()), "{what}: owner");
        if ft.is_file() {
            seen.insert("file");
            assert_eq!(mm.len(), rm.len(), "{what}: size");
            let (a, b) = (fs::read(&merged).unwrap(), fs::read(&real).unwrap());
            assert!(a == b, "{what}: content differs from the layer file");
        } else if ft.is_symlink() {
            seen.insert("symlink");
            assert_eq!(
                fs::read_link(&merged).unwrap(),
                fs::read_link(&real).unwrap(),
                "{what}: readlink"
            );
            assert_eq!(mm.len(), rm.len(), "{what}: symlink st_size");
        } else if ft.is_char_device() || ft.is_block_device() {
            seen.insert(if ft.is_char_device() { "chr" } else { "blk" });
            assert_eq!(mm.rdev(), rm.rdev(), "{what}: rdev");
        } else if ft.is_fifo() {
            seen.insert("fifo");
        } else if ft.is_socket() {
            seen.insert("socket");
        } else if ft.is_dir() {
            seen.insert("dir");
        }
    }
    assert_eq!(seen.len(), 7, "{set}: types seen: {seen:?}");
}

#[test]
fn file_types_read_right() {
    if !require_root_and_fuse("file_types_read_right") {
        return;
    }
    check_types("demo");
    check_types("forms");
    // A few fixed expectations, independent of the layer lookup above.
    let l = Layers::build("forms", &[]);
    let m = PlyMount::new(&l.opts);
    let md = |p: &str| fs::symlink_metadata(m.path(p)).unwrap();
    assert!(md("types-top/chr").file_type().is_char_device());
    assert_eq!(md("types-top/chr").rdev(), libc::makedev(10, 200));
    assert!(md("types-top/blk").file_type().is_block_device());
    assert_eq!(md("types-top/blk").rdev(), libc::makedev(259, 0));
    assert_eq!(
        md("types/blk").rdev(),
        libc::makedev(7, 2),
        "upper's blk wins"
    );
    assert!(md("types/fifo").file_type().is_fifo());
    assert_eq!(md("types/fifo").mode() & 0o7777, 0o600, "top's fifo wins");
    assert!(md("types-top/sock").file_type().is_socket());
    assert_eq!(
        fs::read_link(m.path("types-top/link")).unwrap(),
        Path::new("a target with spaces")
    );
    assert_eq!(fs::read(m.path("types/file")).unwrap(), b"middle file\n");
    assert_eq!(fs::read(m.path("types/hard")).unwrap(), b"bottom file\n");
    assert_eq!(fs::read(m.path("types/big")).unwrap().len(), 1000);
    assert_eq!(fs::read(m.path("many/f295")).unwrap(), b"upper 295\n");
    let holes = fs::read(m.path("types/holes")).unwrap();
    assert_eq!(holes.len(), 2097152);
    assert!(holes[..holes.len() - 1].iter().all(|&b| b == 0) && holes.ends_with(b"\n"));
    assert_eq!(
        fs::read_to_string(m.path("types/dir/inner")).unwrap(),
        "bottom inner\n"
    );
    let e = fs::symlink_metadata(m.path("types/sock")).unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::ENOENT),
        "types/sock is whited out"
    );
}

#[test]
fn statfs_and_access() {
    if !require_root_and_fuse("statfs_and_access") {
        return;
    }
    use nix::unistd::{access, AccessFlags};
    let l = Layers::build("demo", &[]);
    let m = PlyMount::new(&l.opts);
    let sv = nix::sys::statvfs::statvfs(&m.mnt).expect("statvfs on the mount");
    let up = nix::sys::statvfs::statvfs(&l.upper).unwrap();
    assert!(sv.block_size() > 0);
    assert_eq!(
        sv.blocks(),
        up.blocks(),
        "statfs reports the upper's filesystem"
    );
    assert_eq!(sv.name_max(), 255);
    access(&m.path("etc/passwd"), AccessFlags::R_OK).expect("access(etc/passwd, R_OK)");
    access(&m.path("etc"), AccessFlags::R_OK | AccessFlags::X_OK).expect("access(etc, R_OK|X_OK)");
    access(&m.path("bin/busybox"), AccessFlags::X_OK).expect("access(bin/busybox, X_OK)");
    assert_eq!(
        access(&m.path("etc/motd"), AccessFlags::F_OK),
        Err(Errno::ENOENT),
        "etc/motd is whited out"
    );
    // A read-only (lowerdir-only) mount refuses W_OK with EROFS.
    let ro = PlyMount::new(&l.ro_opts());
    assert_eq!(
        access(&ro.path("etc/passwd"), AccessFlags::W_OK),
        Err(Errno::EROFS)
    );
    access(&ro.path("etc/passwd"), AccessFlags::R_OK).expect("R_OK on the read-only mount");
}

// ---------------------------------------------------------------------------------------------
// `.` and `..`
// ---------------------------------------------------------------------------------------------

#[test]
fn dot_and_dotdot_listed() {
    if !require_root_and_fuse("dot_and_dotdot_listed") {
        return;
    }
    use nix::dir::Dir;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let l = Layers::build("forms", &[]);
    let m = PlyMount::new(&l.opts);
    // A dir from one layer, a merged dir and an opaque dir.
    for (sub, parent) in [
        ("types-top/dir", "types-top"),
        ("types/dir", "types"),
        ("opq/t", "opq"),
        ("many", ""),
    ] {
        let mut d = Dir::open(
            &m.path(sub),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        let entries: BTreeMap<Vec<u8>, u64> = d
            .iter()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_bytes().to_vec(), e.ino())
            })
            .collect();
        let dot = entries.get(&b"."[..]);
        let dotdot = entries.get(&b".."[..]);
        assert!(
            dot.is_some() && dotdot.is_some(),
            "readdir of {sub} lacks . or ..: {:?}",
            entries
                .keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
        let own = fs::metadata(m.path(sub)).unwrap().ino();
        let up = fs::metadata(m.path(parent)).unwrap().ino();
        assert_eq!(*dot.unwrap(), own, "{sub}: d_ino of . != st_ino of the dir");
        assert_eq!(
            *dotdot.unwrap(),
            up,
            "{sub}: d_ino of .. != st_ino of the parent"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

#[test]
fn long_names() {
    if !require_root_and_fuse("long_names") {
        return;
    }
    let l = Layers::build("forms", &[]);
    let m = PlyMount::new(&l.opts);
    let long: Vec<_> = fs::read_dir(m.path("names"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.as_bytes().starts_with(b"long-"))
        .collect();
    assert_eq!(long.len(), 1, "names/long-*: {long:?}");
    let name = &long[0];
    assert_eq!(name.len(), 255, "the long name is 255 bytes");
    let p = m.path("names").join(name);
    assert_eq!(fs::read(&p).unwrap(), b"255-byte name, top version\n");
    assert_eq!(fs::symlink_metadata(&p).unwrap().mode() & 0o777, 0o600);
    let mut too_long = name.as_bytes().to_vec();
    too_long.push(b'z');
    for dir in ["names", "", "no-such-dir-but-parent-exists"] {
        let p = if dir == "no-such-dir-but-parent-exists" {
            m.path(OsStr::from_bytes(&too_long))
        } else {
            m.path(dir).join(OsStr::from_bytes(&too_long))
        };
        let e = fs::symlink_metadata(&p).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENAMETOOLONG),
            "lstat of a 256-byte name in '{dir}': {e}"
        );
    }
}

#[test]
fn aufs_markers_never_shown() {
    if !require_root_and_fuse("aufs_markers_never_shown") {
        return;
    }
    let l = Layers::build("forms", &["--whiteout=aufs", "--opaque=aufs"]);
    // The markers exist in the layers.
    let top = &l.lowers[0];
    for p in ["wh/.wh.dir1", "many/.wh.f100", "opq/t/.wh..wh..opq"] {
        assert!(
            fs::symlink_metadata(top.join(p)).is_ok(),
            "the builder wrote no {p} in the top layer"
        );
    }
    assert!(fs::symlink_metadata(l.upper.join("opq/u/.wh..wh..opq")).is_ok());
    let m = PlyMount::new(&l.opts);
    for (p, _) in walk(&m.mnt) {
        assert!(
            !p.file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b".wh.")),
            "'{}' is listed",
            p.display()
        );
    }
    for p in [
        "wh/.wh.dir1",
        "many/.wh.f100",
        "many/.wh.f290",
        "opq/t/.wh..wh..opq",
        "opq/u/.wh..wh..opq",
        "opq/m/.wh..wh..opq",
        ".wh..wh..opq",
        "wh/.wh.linkdir",
        "wh/dir1",
        "many/f100",
        "many/f290",
        "opq/t/b1",
    ] {
        let e = fs::symlink_metadata(m.path(p)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "lstat({p}): {e}");
    }
    assert_eq!(
        fs::read(m.path("opq/t/t1")).unwrap(),
        b"top, inside opaque\n"
    );
}

/// Directories renamed by the kernel's overlay (relative, absolute and upper redirects) merge
/// with their old lower directories exactly as the kernel shows them.
#[test]
fn diff_redirect() {
    differential("diff_redirect", "redirect", &[], false);
    let (test, set) = ("diff_redirect", "redirect");
    if !require_kernel_overlay(test) {
        return;
    }
    let pl = Layers::build(set, &[]);
    let pm = PlyMount::new(&pl.opts);
    for (path, content) in [
        ("renamed/a", "orig a\n"),
        ("renamed/c", "renamed c\n"),
        ("moved/z", "deep z\n"),
        ("moved/m", "moved m\n"),
        ("upr/p", "plain p\n"),
        ("upr/u", "upper u\n"),
    ] {
        assert_eq!(
            fs::read_to_string(pm.mnt.join(path)).unwrap(),
            content,
            "{path} through the redirect"
        );
    }
    assert!(!pm.mnt.join("orig").exists() && !pm.mnt.join("plain").exists());
}

/// With redirect_dir=nofollow a redirect is refused with EPERM, as the kernel does; with
/// redirect_dir=off it is ignored.
#[test]
fn redirect_nofollow_and_off() {
    let test = "redirect_nofollow_and_off";
    if !require_root_and_fuse(test) {
        return;
    }
    let pl = Layers::build("redirect", &[]);
    let pm = PlyMount::new(&format!("{},redirect_dir=nofollow", pl.opts));
    let err = fs::metadata(pm.mnt.join("renamed")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    drop(pm);
    let pl = Layers::build("redirect", &[]);
    let pm = PlyMount::new(&format!("{},redirect_dir=off", pl.opts));
    assert!(pm.mnt.join("renamed/c").exists());
    assert!(
        !pm.mnt.join("renamed/a").exists(),
        "redirect_dir=off does not merge the old dir"
    );
}

/// An invalid redirect (a relative one with a slash) makes the lookup fail with EINVAL, as the
/// kernel does, without harming the rest of the view.
#[test]
fn invalid_redirect_is_einval() {
    let test = "invalid_redirect_is_einval";
    if !require_root_and_fuse(test) {
        return;
    }
    let pl = Layers::build("redirect", &[]);
    let bad = pl
        .lowers
        .iter()
        .find(|l| l.ends_with("10-middle"))
        .unwrap()
        .join("renamed");
    xattr::set(&bad, "trusted.overlay.redirect", b"a/b").unwrap();
    let pm = PlyMount::new(&pl.opts);
    let err = fs::metadata(pm.mnt.join("renamed")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert!(pm.mnt.join("moved/z").exists());
}
