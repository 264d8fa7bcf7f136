//! Hostile layers (root and /dev/fuse needed; skipped with a printed reason otherwise): layers
//! written by someone who wants plyfs to reach outside them or to show one object as another.
//! Symlinks out of a layer (relative `../..`, absolute, `/proc` magic links) are never
//! followed by plyfs's own operations: redirects, copy-up into a parent replaced by a symlink
//! underneath, the work dir's cleanup at mount. Malformed private xattrs (garbage and
//! mistyped `overlay.origin`, an origin another visible object has, redirects out of the layer,
//! in a loop, overlong) give an error or are ignored, never a crash and never another object's
//! data. Every case ends with the daemon still answering and the outside dir untouched.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

const SECRET: &str = "outside the layers\n";

/// Base dir with two lowers, an upper, a work dir and an `outside` dir the layers point at.
struct Hostile {
    tmp: TempDir,
    l1: PathBuf,
    l2: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    outside: PathBuf,
}

impl Hostile {
    fn new(tag: &str) -> Hostile {
        let tmp = TempDir::new(tag);
        let (l1, l2) = (tmp.mkdir("l1"), tmp.mkdir("l2"));
        let (upper, work) = (tmp.mkdir("upper"), tmp.mkdir("work"));
        let outside = tmp.mkdir("outside");
        fs::create_dir(outside.join("x")).unwrap();
        fs::write(outside.join("secret"), SECRET).unwrap();
        fs::write(outside.join("x/secret2"), SECRET).unwrap();
        Hostile {
            tmp,
            l1,
            l2,
            upper,
            work,
            outside,
        }
    }

    fn opts(&self, extra: &str) -> String {
        format!(
            "lowerdir={}:{},upperdir={},workdir={}{extra}",
            self.l1.display(),
            self.l2.display(),
            self.upper.display(),
            self.work.display()
        )
    }

    fn mount(&self, extra: &str) -> PlyMount {
        PlyMount::at(&self.opts(extra), &self.tmp.mkdir("m"))
    }

    /// The outside dir holds exactly what it was made with.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = walk(&self.outside)
            .keys()
            .map(|p| p.display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["", "secret", "x", "x/secret2"],
            "the outside dir changed"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("secret")).unwrap(),
            SECRET
        );
    }
}

fn set(p: &Path, name: &str, value: &[u8]) {
    xattr::set(p, name, value).unwrap_or_else(|e| panic!("setxattr {name} on {p:?}: {e}"));
}

fn names(dir: &Path) -> Result<Vec<String>, i32> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map_err(|e| e.raw_os_error().unwrap_or(0))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    Ok(v)
}

/// The daemon still answers: the root lists.
fn assert_alive(m: &PlyMount) {
    names(&m.mnt).unwrap_or_else(|e| panic!("the mount stopped answering: errno {e}"));
}

#[test]
fn redirects_never_leave_the_layers() {
    let test = "redirects_never_leave_the_layers";
    if !require_root_and_fuse(test) {
        return;
    }
    let h = Hostile::new("hredir");
    // The middle layer has three ways out: relative, absolute and a /proc magic link.
    let depth = h.l1.components().count() + 2;
    let up = "../".repeat(depth);
    symlink(format!("{up}{}", h.outside.display()), h.l1.join("rel")).unwrap();
    symlink(&h.outside, h.l1.join("abs")).unwrap();
    symlink(
        format!("/proc/self/root{}", h.outside.display()),
        h.l1.join("magic"),
    )
    .unwrap();
    for (dir, redirect) in [
        ("r-rel", "/rel/x".to_string()),
        ("r-abs", "/abs/x".to_string()),
        ("r-magic", "/magic/x".to_string()),
        ("r-dotdot", format!("/..{}/x", h.outside.display())),
        ("r-name", "abs".to_string()),
        ("r-long", format!("/{}", "a/".repeat(1000))),
        ("r-slashes", "//".to_string()),
    ] {
        let d = h.upper.join(dir);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("own"), b"upper\n").unwrap();
        set(&d, "trusted.overlay.redirect", redirect.as_bytes());
    }
    // A loop: upper la -> /lb, l1's lb -> /la, l2's la is a real dir.
    fs::create_dir(h.upper.join("la")).unwrap();
    set(&h.upper.join("la"), "trusted.overlay.redirect", b"/lb");
    fs::create_dir(h.l1.join("lb")).unwrap();
    set(&h.l1.join("lb"), "trusted.overlay.redirect", b"/la");
    fs::create_dir(h.l2.join("la")).unwrap();
    fs::write(h.l2.join("la/bottom"), b"l2\n").unwrap();

    let m = h.mount(",redirect_dir=on");
    // The symlinks show as symlinks, with their text.
    for l in ["rel", "abs", "magic"] {
        let md = fs::symlink_metadata(m.path(l)).unwrap();
        assert!(md.file_type().is_symlink(), "{l} is not a symlink");
    }
    for dir in [
        "r-rel",
        "r-abs",
        "r-magic",
        "r-dotdot",
        "r-name",
        "r-long",
        "r-slashes",
    ] {
        match names(&m.path(dir)) {
            // Ignored: only the upper dir's own entry.
            Ok(v) => assert_eq!(v, ["own"], "{dir} merged with something"),
            // Refused: an error, not another tree.
            Err(e) => assert!(
                [libc::EINVAL, libc::EIO, libc::EACCES, libc::ENOENT].contains(&e),
                "{dir}: errno {e}"
            ),
        }
        assert!(
            fs::read(m.path(dir).join("secret2")).is_err(),
            "{dir} reached outside"
        );
    }
    // The loop ends: each redirect is read once per layer, downwards.
    let la = names(&m.path("la")).expect("the redirect chain lists");
    assert!(!la.contains(&"secret2".to_string()), "la: {la:?}");
    assert_alive(&m);
    m.unmount();
    h.assert_outside_untouched();
}

#[test]
fn copy_up_never_follows_a_swapped_parent() {
    let test = "copy_up_never_follows_a_swapped_parent";
    if !require_root_and_fuse(test) {
        return;
    }
    let h = Hostile::new("hswap");
    fs::create_dir_all(h.l2.join("dir/deeper")).unwrap();
    fs::write(h.l2.join("dir/f"), b"lower f\n").unwrap();
    fs::write(h.l2.join("dir/deeper/g"), b"lower g\n").unwrap();
    // No change events and long kernel caching: plyfs keeps what it looked up, so its own
    // copy-up meets the swapped parent.
    let m = h.mount(",watch=off,timeout=600");
    assert_eq!(fs::read(m.path("dir/f")).unwrap(), b"lower f\n");
    assert_eq!(fs::read(m.path("dir/deeper/g")).unwrap(), b"lower g\n");
    // Underneath: the upper gets symlinks to the outside where copy-up will make parents.
    symlink(&h.outside, h.upper.join("dir")).unwrap();
    let wrote_f = fs::write(m.path("dir/f"), b"new f\n");
    let wrote_g = fs::write(m.path("dir/deeper/g"), b"new g\n");
    let made = fs::write(m.path("dir/new"), b"new\n");
    eprintln!("{test}: writes after the swap: f {wrote_f:?}, g {wrote_g:?}, new {made:?}");
    assert_alive(&m);
    m.unmount();
    h.assert_outside_untouched();
    assert!(
        fs::symlink_metadata(h.upper.join("dir"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink plyfs met is left as it was"
    );
}

#[test]
fn work_dir_cleanup_never_follows_symlinks() {
    let test = "work_dir_cleanup_never_follows_symlinks";
    if !require_root_and_fuse(test) {
        return;
    }
    let h = Hostile::new("hwork");
    fs::write(h.l2.join("f"), b"lower\n").unwrap();
    // A first mount makes the work dir's own layout.
    h.mount("").unmount();
    let wwork = h.work.join("work");
    assert!(wwork.is_dir(), "no {}", wwork.display());
    // Leftovers that point outside: a symlink to the outside dir, one inside a leftover dir,
    // and a symlink in place of the leftover dir itself.
    symlink(&h.outside, wwork.join("#evil")).unwrap();
    fs::create_dir_all(wwork.join("#left/sub")).unwrap();
    symlink(&h.outside, wwork.join("#left/sub/link")).unwrap();
    symlink(h.outside.join("x"), wwork.join("#x")).unwrap();
    let m = h.mount("");
    assert_eq!(fs::read(m.path("f")).unwrap(), b"lower\n");
    fs::write(m.path("f"), b"copied\n").unwrap();
    m.unmount();
    h.assert_outside_untouched();
    let left = names(&wwork).unwrap();
    assert!(left.is_empty(), "leftovers in the work dir: {left:?}");
    // The work dir itself swapped for a symlink to the outside: a clear refusal, nothing
    // emptied there.
    fs::remove_dir(&wwork).unwrap();
    symlink(h.outside.join("x"), &wwork).unwrap();
    let mnt = h.tmp.mkdir("m2");
    let _unmount = MountGuard(mnt.clone());
    let out = run_plyfs(&["-o", &h.opts(""), mnt.to_str().unwrap()]);
    eprintln!(
        "{test}: mount over a symlinked work dir: {} {}",
        out.status,
        out.stderr.trim()
    );
    h.assert_outside_untouched();
}

/// The `trusted.overlay.origin` plyfs wrote when it copied `name` up.
fn origin_of(upper: &Path, name: &str) -> Vec<u8> {
    xattr::get(upper.join(name), "trusted.overlay.origin")
        .unwrap()
        .unwrap_or_else(|| panic!("no origin on the copy of {name}"))
}

#[test]
fn malformed_origins_never_show_another_object() {
    let test = "malformed_origins_never_show_another_object";
    if !require_root_and_fuse(test) {
        return;
    }
    let h = Hostile::new("horigin");
    for (n, body) in [("a", "lower a\n"), ("c", "lower c\n")] {
        fs::write(h.l2.join(n), body).unwrap();
    }
    fs::create_dir(h.l2.join("d")).unwrap();
    fs::write(h.l2.join("d/inside"), b"in d\n").unwrap();
    // Copy-ups through plyfs give real origins to copy around.
    let m = h.mount("");
    for (n, mode) in [("a", 0o600), ("c", 0o640), ("d", 0o750)] {
        fs::set_permissions(m.path(n), fs::Permissions::from_mode(mode)).unwrap();
    }
    m.unmount();
    let origin_a = origin_of(&h.upper, "a");
    let (origin_c, origin_d) = (origin_of(&h.upper, "c"), origin_of(&h.upper, "d"));
    // Lower `a` shows again (its copy removed underneath); `c` stays copied up.
    fs::remove_file(h.upper.join("a")).unwrap();
    // Upper-only files that lie about where they came from: the origin of a visible lower
    // file, of a copied-up file, of a directory, and no origin at all.
    let lies: [(&str, Vec<u8>); 6] = [
        ("claims-a", origin_a),
        ("claims-c", origin_c),
        ("claims-dir", origin_d),
        ("garbage", b"\x00\xfb\x99garbage".to_vec()),
        ("empty", Vec::new()),
        ("huge", vec![0xfb; 4000]),
    ];
    for (n, origin) in &lies {
        fs::write(h.upper.join(n), format!("upper {n}\n")).unwrap();
        set(&h.upper.join(n), "trusted.overlay.origin", origin);
    }
    // A garbage opaque value and a garbage impure value.
    set(&h.upper.join("d"), "trusted.overlay.opaque", b"maybe");
    set(&h.upper, "trusted.overlay.impure", b"\xff\xff");

    // Both lookup orders: the honest object first, and the liar first.
    for liar_first in [false, true] {
        let m = h.mount("");
        let order: &[&str] = if liar_first {
            &["claims-a", "a", "claims-c", "c", "claims-dir", "d"]
        } else {
            &["a", "claims-a", "c", "claims-c", "d", "claims-dir"]
        };
        for n in order {
            fs::symlink_metadata(m.path(n)).unwrap_or_else(|e| panic!("stat {n}: {e}"));
        }
        assert_eq!(fs::read_to_string(m.path("c")).unwrap(), "lower c\n");
        assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "lower a\n");
        assert_eq!(names(&m.path("d")).unwrap(), ["inside"]);
        for (n, _) in &lies {
            let md = fs::symlink_metadata(m.path(n)).unwrap_or_else(|e| panic!("stat {n}: {e}"));
            assert!(md.is_file(), "{n} is no longer a file");
            assert_eq!(
                fs::read_to_string(m.path(n)).unwrap(),
                format!("upper {n}\n"),
                "{n} shows another object (liar first: {liar_first})"
            );
        }
        let ino = |n: &str| fs::symlink_metadata(m.path(n)).unwrap().ino();
        assert_ne!(
            ino("claims-dir"),
            ino("d"),
            "a file shares a directory's inode"
        );
        // Writing through a liar changes only the liar.
        for (liar, honest, body) in [
            ("claims-a", "a", "lower a\n"),
            ("claims-c", "c", "lower c\n"),
        ] {
            fs::write(m.path(liar), b"rewritten\n").unwrap();
            assert_eq!(fs::read_to_string(m.path(honest)).unwrap(), body);
            assert_eq!(fs::read_to_string(m.path(liar)).unwrap(), "rewritten\n");
            fs::write(m.path(liar), format!("upper {liar}\n")).unwrap();
            eprintln!(
                "{test}: liar first {liar_first}: inode of {honest} {}, of its liar {}",
                ino(honest),
                ino(liar)
            );
        }
        assert_alive(&m);
        m.unmount();
    }
    h.assert_outside_untouched();
}

use std::os::unix::fs::PermissionsExt;
