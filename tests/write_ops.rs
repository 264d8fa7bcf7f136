//! Changing operations through plyfs compared with the kernel's overlay (root and /dev/fuse
//! needed; skipped with a printed reason otherwise): the same operations run on both, over fresh
//! copies of the same layers; every operation's result (errno) must match, the visible trees
//! must match after every step, and the upper directories must match at the end (overlay.origin
//! values are compared for presence only: they hold file handles of different copies; the
//! kernel's own `impure` and `uuid` markers are not compared). Then each upper directory is
//! mounted by the other implementation, which must show the same tree. The kernel is mounted
//! with `redirect_dir=on`, plyfs's default (this kernel's own default is `follow`).

mod common;

use common::*;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

type Op = (&'static str, fn(&Path) -> io::Result<()>);

fn outcome(r: io::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// The upper-dir dump with the parts that legitimately differ masked.
fn mask_upper(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.split(' ')
                .filter(|t| !t.contains(".overlay.impure=") && !t.contains(".overlay.uuid="))
                .map(|t| match t.split_once(".overlay.origin=") {
                    Some((ns, _)) => format!("{ns}.overlay.origin=*"),
                    None => t.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Kernel mount options for the layers of `l`, with plyfs's default redirect_dir=on.
fn kopts(l: &Layers) -> String {
    format!("{},redirect_dir=on", l.opts)
}

/// A mount of the kernel's overlay or of plyfs over `l`; unmounted when dropped (held only for
/// that).
#[allow(dead_code)]
enum Mounted {
    Kernel(KernelMount),
    Ply(PlyMount),
}

/// Mounts the kernel's overlay (`kernel`) or plyfs over `l`, with `extra` options.
fn mount_either(kernel: bool, l: &Layers, extra: &str) -> (Mounted, std::path::PathBuf) {
    if kernel {
        let m = KernelMount::new(&format!("{}{extra}", kopts(l)));
        let mnt = m.mnt.clone();
        (Mounted::Kernel(m), mnt)
    } else {
        let m = PlyMount::new(&format!("{}{extra}", l.opts));
        let mnt = m.mnt.clone();
        (Mounted::Ply(m), mnt)
    }
}

fn run_differential(test: &str, set: &str, ops: &[Op]) {
    if !require_kernel_overlay(test) {
        return;
    }
    let kl = Layers::build(set, &[]);
    let pl = Layers::build(set, &[]);
    {
        let km = KernelMount::new(&kopts(&kl));
        let pm = PlyMount::new(&pl.opts);
        for (name, op) in ops {
            let k = outcome(op(&km.mnt));
            let p = outcome(op(&pm.mnt));
            assert_eq!(
                p, k,
                "{test}: '{name}' gave {p:?} on plyfs, {k:?} on the kernel"
            );
            assert_same_dump(
                &format!("{test}: view after '{name}' (kernel vs plyfs)"),
                &dump(&km.mnt),
                &dump(&pm.mnt),
            );
        }
        pm.unmount();
    }
    assert_same_dump(
        &format!("{test}: upper dirs (kernel vs plyfs)"),
        &mask_upper(&dump(&kl.upper)),
        &mask_upper(&dump(&pl.upper)),
    );
    // Each upper dir, mounted by the other implementation, shows the same tree.
    let expected = {
        let km = KernelMount::new(&kopts(&kl));
        dump(&km.mnt)
    };
    let kernel_on_plyfs = {
        let km = KernelMount::new(&kopts(&pl));
        dump(&km.mnt)
    };
    assert_same_dump(
        &format!("{test}: kernel's view of plyfs's upper dir"),
        &expected,
        &kernel_on_plyfs,
    );
    let plyfs_on_kernel = {
        let pm = PlyMount::new(&kl.opts);
        dump(&pm.mnt)
    };
    assert_same_dump(
        &format!("{test}: plyfs's view of the kernel's upper dir"),
        &expected,
        &plyfs_on_kernel,
    );
}

fn append(p: &Path, data: &[u8]) -> io::Result<()> {
    fs::OpenOptions::new().append(true).open(p)?.write_all(data)
}

fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn chown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
}

fn rename_flags(from: &Path, to: &Path, flags: RenameFlags) -> io::Result<()> {
    renameat2(AT_FDCWD, from, AT_FDCWD, to, flags).map_err(io::Error::from)
}

#[test]
fn copy_up_on_change() {
    run_differential(
        "copy_up_on_change",
        "demo",
        &[
            ("append to a lower file", |m| {
                append(&m.join("etc/passwd"), b"x:1:1::/:/bin/sh\n")
            }),
            ("chmod a lower file", |m| chmod(&m.join("etc/group"), 0o600)),
            ("chown a lower file", |m| {
                chown(&m.join("etc/hostname"), 5, 6)
            }),
            ("chown a lower symlink", |m| chown(&m.join("bin/sh"), 7, 8)),
            ("truncate a lower file", |m| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(m.join("usr/lib/libapp.so"))?
                    .set_len(100)
            }),
            ("utimes a lower dir", |m| {
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
                fs::File::open(m.join("usr/share"))?.set_modified(t)
            }),
            ("setxattr on a lower file", |m| {
                xattr::set(m.join("etc/os-release"), "user.k", b"v")
            }),
            ("removexattr on a lower file", |m| {
                xattr::remove(m.join("etc/os-release"), "user.origin")
            }),
            ("copy up a sparse lower file", |m| {
                append(&m.join("usr/share/misc/sparse.img"), b"!")
            }),
            ("copy up a setuid file keeps the bit", |m| {
                chown(&m.join("bin/su"), 0, 0)
            }),
            ("write a deep lower file (parents copied up)", |m| {
                append(&m.join("usr/share/doc/busybox/README"), b"more\n")
            }),
        ],
    );
}

#[test]
fn create_and_make() {
    run_differential(
        "create_and_make",
        "demo",
        &[
            ("create in a lower dir", |m| {
                fs::write(m.join("etc/new.conf"), b"new\n")
            }),
            ("create existing", |m| {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(m.join("etc/passwd"))
                    .map(drop)
            }),
            ("mkdir nested", |m| {
                fs::create_dir_all(m.join("srv/www/html"))
            }),
            ("file in the new dir", |m| {
                fs::write(m.join("srv/www/html/index.html"), b"<p>\n")
            }),
            ("file with bits a umask of 022 takes", |m| {
                // The daemon's own umask must not take what the caller's left.
                let file = m.join("srv/www/html/shared");
                let st = std::process::Command::new("sh")
                    .args(["-c", "umask 0 && touch \"$1\"", "sh"])
                    .arg(&file)
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("touch: {st}")))
                }
            }),
            ("symlink", |m| symlink("../etc/passwd", m.join("srv/pw"))),
            ("fifo", |m| {
                nix::unistd::mkfifo(
                    &m.join("run/fifo2"),
                    nix::sys::stat::Mode::from_bits_truncate(0o640),
                )
                .map_err(io::Error::from)
            }),
            ("a char device 0/0 (a whiteout's form) is refused", |m| {
                nix::sys::stat::mknod(
                    &m.join("run/wh"),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    0,
                )
                .map_err(io::Error::from)
            }),
            ("create over a whiteout", |m| {
                fs::write(m.join("etc/motd"), b"back\n")
            }),
            ("mkdir over a whiteout is opaque", |m| {
                fs::create_dir(m.join("var/cache"))
            }),
            ("mkdir existing", |m| fs::create_dir(m.join("etc"))),
            ("hard link to a lower file", |m| {
                fs::hard_link(m.join("usr/lib/libc.so.6"), m.join("usr/lib/libc.hard"))
            }),
            ("hard link to a dir", |m| {
                fs::hard_link(m.join("etc"), m.join("etc2"))
            }),
        ],
    );
}

#[test]
fn remove() {
    run_differential(
        "remove",
        "demo",
        &[
            ("unlink a lower file", |m| {
                fs::remove_file(m.join("bin/ping"))
            }),
            ("unlink it again", |m| fs::remove_file(m.join("bin/ping"))),
            ("unlink a dir", |m| fs::remove_file(m.join("etc"))),
            ("rmdir a non-empty merged dir", |m| {
                fs::remove_dir(m.join("home/app"))
            }),
            ("rm -r a lower tree", |m| {
                fs::remove_dir_all(m.join("usr/share/doc"))
            }),
            ("empty a merged dir", |m| {
                fs::remove_file(m.join("home/app/.profile"))
            }),
            ("rmdir the emptied dir", |m| {
                fs::remove_dir(m.join("home/app"))
            }),
            ("mkdir it again: empty", |m| {
                fs::create_dir(m.join("home/app"))
            }),
            ("create then unlink an upper file", |m| {
                fs::write(m.join("tmp/t"), b"t")?;
                fs::remove_file(m.join("tmp/t"))
            }),
            ("replace a lower file with a dir", |m| {
                fs::remove_file(m.join("etc/group"))?;
                fs::create_dir(m.join("etc/group"))
            }),
            ("rmdir a file", |m| fs::remove_dir(m.join("etc/passwd"))),
            ("remove one of two upper links, use the other", |m| {
                fs::write(m.join("tmp/h1"), b"h")?;
                fs::hard_link(m.join("tmp/h1"), m.join("tmp/h2"))?;
                fs::remove_file(m.join("tmp/h1"))?;
                append(&m.join("tmp/h2"), b"2")?;
                chmod(&m.join("tmp/h2"), 0o640)
            }),
            ("rename over one of two links, use the other", |m| {
                fs::write(m.join("tmp/r1"), b"r")?;
                fs::hard_link(m.join("tmp/r1"), m.join("tmp/r2"))?;
                fs::write(m.join("tmp/other"), b"o")?;
                fs::rename(m.join("tmp/other"), m.join("tmp/r1"))?;
                append(&m.join("tmp/r2"), b"2")
            }),
        ],
    );
}

#[test]
fn rename_dirs_with_redirects() {
    run_differential(
        "rename_dirs_with_redirects",
        "demo",
        &[
            ("rename a merged dir in place", |m| {
                fs::rename(m.join("etc"), m.join("etc.old"))
            }),
            ("read through the redirect", |m| {
                fs::read(m.join("etc.old/passwd")).map(drop)
            }),
            ("rename a lower-only dir across dirs", |m| {
                fs::rename(m.join("usr/share/doc"), m.join("var/doc"))
            }),
            ("rename a dir inside a moved dir", |m| {
                fs::rename(m.join("var/doc/busybox"), m.join("var/bb"))
            }),
            ("write in the twice-moved dir", |m| {
                fs::write(m.join("var/bb/NEW"), b"n")
            }),
            ("move a moved dir back", |m| {
                fs::rename(m.join("etc.old"), m.join("etc"))
            }),
            ("make the old name again", |m| {
                fs::create_dir(m.join("usr/share/doc"))
            }),
            ("rename a merged dir over an empty dir", |m| {
                fs::create_dir(m.join("newhome"))?;
                fs::rename(m.join("home"), m.join("newhome"))
            }),
            ("remove a moved tree", |m| {
                fs::remove_dir_all(m.join("var/doc"))
            }),
            ("exchange two merged dirs", |m| {
                rename_flags(
                    &m.join("bin"),
                    &m.join("root"),
                    RenameFlags::RENAME_EXCHANGE,
                )?;
                fs::read(m.join("root/busybox")).map(drop)
            }),
            ("exchange a merged dir with a new one", |m| {
                fs::create_dir(m.join("fresh"))?;
                fs::write(m.join("fresh/x"), b"x")?;
                rename_flags(
                    &m.join("fresh"),
                    &m.join("home"),
                    RenameFlags::RENAME_EXCHANGE,
                )
            }),
            (
                "move a merged dir into another, then rename it there",
                |m| {
                    fs::rename(m.join("usr/lib"), m.join("var/lib2"))?;
                    fs::rename(m.join("var/lib2"), m.join("var/lib3"))?;
                    fs::read(m.join("var/lib3/libc.so.6")).map(drop)
                },
            ),
        ],
    );
}

#[test]
fn rename() {
    run_differential(
        "rename",
        "demo",
        &[
            ("rename a lower file", |m| {
                fs::rename(m.join("etc/shadow"), m.join("etc/shadow2"))
            }),
            ("rename over a lower file", |m| {
                fs::rename(m.join("etc/hostname"), m.join("etc/group"))
            }),
            ("rename across dirs", |m| {
                fs::rename(m.join("etc/passwd"), m.join("root/passwd"))
            }),
            ("rename an upper dir", |m| {
                fs::create_dir_all(m.join("new/a/b"))?;
                fs::write(m.join("new/a/b/f"), b"f")?;
                fs::rename(m.join("new/a"), m.join("new/c"))
            }),
            ("rename a merged dir (redirect)", |m| {
                fs::rename(m.join("app/releases"), m.join("app/rel"))
            }),
            ("rename onto a whiteout", |m| {
                fs::rename(m.join("etc/os-release"), m.join("etc/motd"))
            }),
            ("noreplace onto existing", |m| {
                rename_flags(
                    &m.join("etc/shadow2"),
                    &m.join("etc/group"),
                    RenameFlags::RENAME_NOREPLACE,
                )
            }),
            ("noreplace onto free name", |m| {
                rename_flags(
                    &m.join("etc/shadow2"),
                    &m.join("etc/shadow3"),
                    RenameFlags::RENAME_NOREPLACE,
                )
            }),
            ("exchange two lower files", |m| {
                rename_flags(
                    &m.join("bin/su"),
                    &m.join("bin/wall"),
                    RenameFlags::RENAME_EXCHANGE,
                )
            }),
            ("exchange with a missing name", |m| {
                rename_flags(
                    &m.join("bin/su"),
                    &m.join("bin/none"),
                    RenameFlags::RENAME_EXCHANGE,
                )
            }),
            ("rename a dir over a file", |m| {
                fs::rename(m.join("new/c"), m.join("etc/group"))
            }),
            ("rename a file over a non-empty dir", |m| {
                fs::rename(m.join("etc/group"), m.join("new"))
            }),
        ],
    );
}

/// An object keeps its st_ino through copy-up, and after a remount (the id comes from
/// overlay.origin, as the kernel's st_ino does); readdir's d_ino still equals st_ino.
#[test]
fn inode_numbers_survive_copy_up_and_remount() {
    let test = "inode_numbers_survive_copy_up_and_remount";
    if !require_root_and_fuse(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let pl = Layers::build("demo", &[]);
    let paths = [
        "etc/passwd",
        "etc",
        "usr/lib/libz.so",
        "usr/share/doc/busybox/README",
        "var/log",
    ];
    let before: Vec<u64> = {
        let pm = PlyMount::new(&pl.opts);
        let inos: Vec<u64> = paths
            .iter()
            .map(|p| fs::symlink_metadata(pm.mnt.join(p)).unwrap().ino())
            .collect();
        append(&pm.mnt.join("etc/passwd"), b"x\n").unwrap();
        chown(&pm.mnt.join("usr/lib/libz.so"), 1, 1).unwrap();
        append(&pm.mnt.join("usr/share/doc/busybox/README"), b"y\n").unwrap();
        fs::write(pm.mnt.join("var/log/new"), b"n").unwrap();
        for (p, ino) in paths.iter().zip(&inos) {
            assert_eq!(
                fs::symlink_metadata(pm.mnt.join(p)).unwrap().ino(),
                *ino,
                "{p} after copy-up"
            );
        }
        pm.unmount();
        inos
    };
    let pm = PlyMount::new(&pl.opts);
    for (p, ino) in paths.iter().zip(&before) {
        assert_eq!(
            fs::symlink_metadata(pm.mnt.join(p)).unwrap().ino(),
            *ino,
            "{p} after remount"
        );
    }
    for (path, ids) in walk(&pm.mnt) {
        assert_eq!(ids.d_ino, ids.ino, "d_ino != st_ino for {}", path.display());
    }
    assert!(
        xattr::get(pl.upper.join("etc"), "trusted.overlay.impure")
            .unwrap()
            .is_some(),
        "a directory holding copied-up objects is marked impure, as the kernel does"
    );
}

/// Hard links of a lower file stay one inode through copy-up (the index, as the kernel's
/// `index=on`): after changing one link, every link shows the change, with the same st_ino and
/// the union's st_nlink, also after a remount, and the kernel reads plyfs's layers the same way
/// (and the reverse). Which names end up linked in the upper dir may differ (FUSE changes
/// attributes by inode, not by name), so the upper dirs are not compared.
#[test]
fn hard_links_survive_copy_up() {
    let test = "hard_links_survive_copy_up";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let ops: &[Op] = &[
        ("chmod one link", |m| chmod(&m.join("bin/busybox"), 0o700)),
        ("append through the other", |m| {
            append(&m.join("bin/bb-link"), b"x")
        }),
        ("a third link", |m| {
            fs::hard_link(m.join("bin/bb-link"), m.join("bin/bb3"))
        }),
        ("unlink the first", |m| {
            fs::remove_file(m.join("bin/busybox"))
        }),
    ];
    let kl = Layers::build("demo", &[]);
    let pl = Layers::build("demo", &[]);
    let kopts = format!("{},index=on,redirect_dir=on", kl.opts);
    let pkopts = format!("{},index=on,redirect_dir=on", pl.opts);
    let stats = |m: &Path| -> Vec<(String, u64, u32)> {
        ["bin/busybox", "bin/bb-link", "bin/bb3"]
            .iter()
            .filter_map(|p| {
                fs::symlink_metadata(m.join(p))
                    .ok()
                    .map(|md| (p.to_string(), md.ino(), md.nlink() as u32))
            })
            .collect()
    };
    let ino_of = |m: &Path| fs::symlink_metadata(m.join("bin/bb-link")).unwrap().ino();
    {
        let km = KernelMount::new(&kopts);
        let pm = PlyMount::new(&pl.opts);
        let p_ino = ino_of(&pm.mnt);
        for (name, op) in ops {
            assert_eq!(outcome(op(&pm.mnt)), outcome(op(&km.mnt)), "{name}");
            assert_same_dump(
                &format!("{test}: after '{name}'"),
                &dump(&km.mnt),
                &dump(&pm.mnt),
            );
            let (k, p) = (stats(&km.mnt), stats(&pm.mnt));
            let knl: Vec<_> = k.iter().map(|(n, _, l)| (n, l)).collect();
            let pnl: Vec<_> = p.iter().map(|(n, _, l)| (n, l)).collect();
            assert_eq!(pnl, knl, "st_nlink after '{name}'");
            assert!(
                p.iter().all(|(_, i, _)| *i == p_ino),
                "one st_ino for every link: {p:?}"
            );
        }
        pm.unmount();
        let pm = PlyMount::new(&pl.opts);
        assert_eq!(ino_of(&pm.mnt), p_ino, "st_ino after remount");
        assert_same_dump(
            &format!("{test}: after remount"),
            &dump(&km.mnt),
            &dump(&pm.mnt),
        );
        pm.unmount();
    }
    let expected = dump(&KernelMount::new(&kopts).mnt);
    assert_same_dump(
        &format!("{test}: kernel (index=on) reading plyfs's layers"),
        &expected,
        &dump(&KernelMount::new(&pkopts).mnt),
    );
    assert_same_dump(
        &format!("{test}: plyfs reading the kernel's layers"),
        &expected,
        &dump(&PlyMount::new(&kl.opts).mnt),
    );
}

/// A full upper filesystem: a copy-up that does not fit fails with ENOSPC and leaves the lower
/// file as it was and nothing in the work dir; a write that does not fit fails with ENOSPC and
/// keeps what was written; a mount removes what a crash left in the work dir.
#[test]
fn enospc_loses_nothing() {
    let test = "enospc_loses_nothing";
    if !require_root_and_fuse(test) {
        return;
    }
    let base = TempDir::new("enospc");
    let lower = base.mkdir("lower");
    let small = base.mkdir("small");
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(lower.join("big"), &big).unwrap();
    fs::write(lower.join("small"), b"small\n").unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _tmpfs = MountGuard(small.clone());
    let (upper, work) = (small.join("upper"), small.join("work"));
    fs::create_dir(&upper).unwrap();
    fs::create_dir_all(work.join("work/#leftover-dir")).unwrap();
    fs::write(work.join("work/#leftover"), b"half a copy").unwrap();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    let pm = PlyMount::new(&opts);
    assert_eq!(
        fs::read_dir(work.join("work")).unwrap().count(),
        0,
        "the mount removed the work dir's leftovers"
    );
    let err = chmod(&pm.mnt.join("big"), 0o600).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert_eq!(
        fs::read(pm.mnt.join("big")).unwrap(),
        big,
        "the lower file is intact"
    );
    let mode = fs::metadata(pm.mnt.join("big"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644, "the failed chmod changed nothing");
    assert_eq!(
        fs::read_dir(work.join("work")).unwrap().count(),
        0,
        "no temp file left"
    );
    assert!(
        !upper.join("big").exists(),
        "no half copy in the upper layer"
    );
    // A write that does not fit.
    let mut f = fs::File::create(pm.mnt.join("fill")).unwrap();
    let chunk = vec![7u8; 256 << 10];
    let mut written = 0usize;
    let err = loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => written += chunk.len(),
            Err(e) => break e,
        }
        assert!(written < 8 << 20, "a 2 MiB filesystem took {written} bytes");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    drop(f);
    let kept = fs::read(pm.mnt.join("fill")).unwrap();
    assert!(
        kept.len() >= written && kept.iter().all(|b| *b == 7),
        "what was written stays"
    );
    fs::remove_file(pm.mnt.join("fill")).unwrap();
    // The kernel sends RELEASE after close() returns, so plyfs may still hold the real file
    // open for a moment, and its blocks with it: wait for the space to come back.
    let free = || nix::sys::statvfs::statvfs(&small).map_or(0, |s| s.blocks_available());
    for _ in 0..100 {
        if free() > 16 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // With room again, the copy-up of a small file works.
    chmod(&pm.mnt.join("small"), 0o600).unwrap();
    assert_eq!(fs::read(pm.mnt.join("small")).unwrap(), b"small\n");
    pm.unmount();
}

/// A directory renamed on one mount, whose upper layer then becomes a lower layer of the next
/// mount (as unionmount-testsuite's --ov=3 does), and is moved again: the new absolute redirect
/// leads to the old layer's relative one, which must apply to that path (chained redirects).
#[test]
fn redirects_across_stacked_layers() {
    let test = "redirects_across_stacked_layers";
    if !require_kernel_overlay(test) {
        return;
    }
    let run = |l: &Layers,
               kernel: bool,
               step: fn(&Path) -> io::Result<()>,
               upper: &Path,
               work: &Path,
               lowers: &str|
     -> Vec<String> {
        let opts = format!(
            "lowerdir={lowers},upperdir={},workdir={},redirect_dir=on",
            upper.display(),
            work.display()
        );
        let _ = l;
        // The view is taken on a fresh mount: a lookup through the redirects, not nodes that
        // remember what they found before the move.
        if kernel {
            step(&KernelMount::new(&opts).mnt).unwrap();
            dump(&KernelMount::new(&opts).mnt)
        } else {
            let m = PlyMount::new(&opts);
            step(&m.mnt).unwrap();
            m.unmount();
            let m = PlyMount::new(&opts);
            let d = dump(&m.mnt);
            m.unmount();
            d
        }
    };
    let mut views = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let lowers: Vec<String> = l.lowers.iter().map(|p| p.display().to_string()).collect();
        run(
            &l,
            kernel,
            |m| fs::rename(m.join("etc"), m.join("etc2")),
            &l.upper,
            &l.work,
            &lowers.join(":"),
        );
        let (u2, w2) = (l.dir.mkdir("upper2"), l.dir.mkdir("work2"));
        let stacked = format!("{}:{}", l.upper.display(), lowers.join(":"));
        let view = run(
            &l,
            kernel,
            |m| {
                fs::rename(m.join("etc2"), m.join("usr/etc3"))?;
                fs::rename(m.join("usr/etc3"), m.join("usr/etc4"))
            },
            &u2,
            &w2,
            &stacked,
        );
        assert!(
            view.iter().any(|line| line.starts_with("usr/etc4/passwd ")),
            "{view:?}"
        );
        views.push(view);
    }
    assert_same_dump(&format!("{test}: kernel vs plyfs"), &views[0], &views[1]);
}

/// A write by an unprivileged user clears setuid (and group-executable setgid), as POSIX and the
/// kernel's overlay do; the copy-up of such a file by root keeps the bits.
#[test]
fn unprivileged_write_clears_setuid() {
    let test = "unprivileged_write_clears_setuid";
    if !require_kernel_overlay(test) {
        return;
    }
    if std::process::Command::new("setpriv")
        .arg("--help")
        .output()
        .is_err()
    {
        println!("SKIPPED: {test}: needs setpriv (util-linux)");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let prep: Op = ("make world-writable setuid and setgid files", |m| {
        chmod(&m.join("bin/su"), 0o4777)?;
        chmod(&m.join("bin/wall"), 0o2777)
    });
    let mut modes = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        (prep.1)(&mnt).unwrap();
        let before: Vec<u32> = ["bin/su", "bin/wall"]
            .iter()
            .map(|p| fs::metadata(mnt.join(p)).unwrap().mode() & 0o7777)
            .collect();
        assert_eq!(before, vec![0o4777, 0o2777], "root's chmod keeps the bits");
        for f in ["bin/su", "bin/wall"] {
            let st = std::process::Command::new("setpriv")
                .args(["--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c"])
                .arg(format!("echo x >> '{}'", mnt.join(f).display()))
                .status()
                .unwrap();
            assert!(st.success(), "write as uid 1000 to {f}");
        }
        let after: Vec<u32> = ["bin/su", "bin/wall"]
            .iter()
            .map(|p| fs::metadata(mnt.join(p)).unwrap().mode() & 0o7777)
            .collect();
        modes.push(after);
    }
    assert_eq!(
        modes[1], modes[0],
        "plyfs vs kernel: modes after an unprivileged write"
    );
    assert_eq!(modes[1], vec![0o777, 0o777], "setuid and setgid cleared");
}

/// `u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---` as a `system.posix_acl_default` value.
fn default_acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 7, 1000),
        (4, 5, u32::MAX),
        (0x10, 7, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// New objects inherit their directory's default ACL (mode masked by it, umask ignored), the
/// umask applies elsewhere, and chmod keeps the ACL in step, as on the kernel's overlay.
#[test]
fn posix_acls() {
    run_differential(
        "posix_acls",
        "demo",
        &[
            ("set a default ACL on a lower dir", |m| {
                xattr::set(m.join("tmp"), "system.posix_acl_default", &default_acl())
            }),
            ("create a file under it", |m| {
                fs::write(m.join("tmp/f"), b"f")
            }),
            ("mkdir under it", |m| fs::create_dir(m.join("tmp/d"))),
            ("create in the inheriting dir", |m| {
                fs::write(m.join("tmp/d/g"), b"g")
            }),
            ("chmod keeps the ACL in step", |m| {
                chmod(&m.join("tmp/f"), 0o640)
            }),
            ("create where there is no default ACL", |m| {
                fs::write(m.join("etc/plain"), b"p")
            }),
            ("remove the default ACL", |m| {
                xattr::remove(m.join("tmp"), "system.posix_acl_default")
            }),
            ("create after it went", |m| fs::write(m.join("tmp/h"), b"h")),
        ],
    );
}

/// A file open for reading while another open writes it (which copies it up): the write works,
/// and the reader sees the new data, as on the kernel's overlay (before, FUSE passthrough of the
/// lower file made the writer's open fail with EIO).
#[test]
fn reader_open_across_copy_up() {
    let test = "reader_open_across_copy_up";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::io::Read;
    use std::os::unix::fs::FileExt;
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        let reader = fs::File::open(mnt.join("etc/hostname")).unwrap();
        let mut before = vec![0u8; 64];
        let n = reader.read_at(&mut before, 0).unwrap();
        before.truncate(n);
        let mut w = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(mnt.join("etc/hostname"))
            .expect("open for writing while a reader has it open");
        w.write_all(b"changed\n").unwrap();
        drop(w);
        let mut after = vec![0u8; 64];
        let n = reader.read_at(&mut after, 0).unwrap();
        after.truncate(n);
        let mut again = String::new();
        fs::File::open(mnt.join("etc/hostname"))
            .unwrap()
            .read_to_string(&mut again)
            .unwrap();
        // A reader of a file that is renamed over keeps its own file.
        let keep = fs::File::open(mnt.join("etc/group")).unwrap();
        fs::write(mnt.join("etc/group.new"), b"new group\n").unwrap();
        fs::rename(mnt.join("etc/group.new"), mnt.join("etc/group")).unwrap();
        let mut old = vec![0u8; 8];
        keep.read_at(&mut old, 0).unwrap();
        seen.push((before, after, again, old));
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert_eq!(seen[1].1, b"changed\n", "the reader sees the new data");
}

/// An open file whose last name went away (pjdfstest unlink/14): fstat, fchmod, fchown and
/// ftruncate still work on it, for a file made in the upper layer and for a lower one copied up
/// by its open; and `chown(f, -1, -1)` still changes ctime (pjdfstest chown/00). As the kernel.
#[test]
fn open_unlinked_files_and_empty_chown() {
    let test = "open_unlinked_files_and_empty_chown";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        let mut got = Vec::new();
        fs::write(mnt.join("new"), b"new file\n").unwrap();
        for name in ["new", "etc/hostname"] {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(mnt.join(name))
                .unwrap();
            fs::remove_file(mnt.join(name)).unwrap();
            let r = |e: nix::Result<()>| e.map_err(|e| e as i32);
            let st = f.metadata().map_err(|e| e.raw_os_error());
            got.push(format!("{name}: fstat {:?}", st.map(|m| m.nlink())));
            let fchmod =
                nix::sys::stat::fchmod(f.as_fd(), nix::sys::stat::Mode::from_bits_truncate(0o600));
            got.push(format!("{name}: fchmod {:?}", r(fchmod)));
            let fchown =
                nix::unistd::fchown(f.as_fd(), Some(nix::unistd::Uid::from_raw(65534)), None);
            got.push(format!("{name}: fchown {:?}", r(fchown)));
            got.push(format!(
                "{name}: ftruncate {:?}",
                r(nix::unistd::ftruncate(f.as_fd(), 3))
            ));
            let st = f.metadata().map_err(|e| e.raw_os_error());
            got.push(format!(
                "{name}: after {:?}",
                st.map(|m| (m.nlink(), m.mode() & 0o777, m.uid(), m.len()))
            ));
        }
        fs::write(mnt.join("owned"), b"x").unwrap();
        let before = fs::metadata(mnt.join("owned")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        nix::unistd::chown(&mnt.join("owned"), None, None).unwrap();
        let after = fs::metadata(mnt.join("owned")).unwrap();
        got.push(format!(
            "chown -1 -1 changes ctime: {}",
            (after.ctime(), after.ctime_nsec()) != (before.ctime(), before.ctime_nsec())
        ));
        seen.push(got);
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert!(seen[0]
        .iter()
        .any(|l| l == "chown -1 -1 changes ctime: true"));
}

/// ext4 hands a new object the inode number of one just unlinked, sometimes before the kernel
/// has forgotten the old one: the new object must be itself, not the old node (xfstests
/// generic/013: "Not a directory" from a directory that took a file's inode number, and
/// "Directory not empty" in the `rm -rf` after fsstress). The race is narrow through a mount
/// (this rarely hits it); `namei::tests::a_reused_node_id_gets_a_new_node` pins the rule.
#[test]
fn reused_inode_numbers_are_new_objects() {
    let test = "reused_inode_numbers_are_new_objects";
    if !require_root_and_fuse(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    for extra in ["", ",nfs_export=off"] {
        let l = Layers::build("demo", &[]);
        let m = PlyMount::new(&format!("{}{extra}", l.opts));
        fs::create_dir(m.path("w")).unwrap();
        let (mut reused, mut n) = (0, 0);
        while n < 600 && reused < 40 {
            let f = m.path(format!("w/f{n}"));
            fs::write(&f, format!("file {n}")).unwrap();
            let ino = fs::metadata(&f).unwrap().ino();
            fs::remove_file(&f).unwrap();
            let (d, g) = (m.path(format!("w/d{n}")), m.path(format!("w/g{n}")));
            if n % 2 == 0 {
                fs::create_dir(&d).unwrap();
                reused += usize::from(fs::metadata(&d).unwrap().ino() == ino);
                assert_eq!(
                    fs::read_dir(&d).map(|r| r.count()).ok(),
                    Some(0),
                    "{extra}: d{n}"
                );
                fs::remove_dir(&d).unwrap();
            } else {
                fs::write(&g, format!("new {n}")).unwrap();
                reused += usize::from(fs::metadata(&g).unwrap().ino() == ino);
                assert_eq!(
                    fs::read_to_string(&g).unwrap(),
                    format!("new {n}"),
                    "{extra}"
                );
                fs::remove_file(&g).unwrap();
            }
            n += 1;
        }
        eprintln!("{extra}: {reused} inode numbers reused in {n} rounds");
        fs::remove_dir(m.path("w")).expect("rm -rf must leave nothing behind");
        m.unmount();
    }
}

/// On a `noatime` mount, reading a file does not change its atime (xfstests generic/120), as on
/// the kernel's overlay; for a lower file and for an upper one (which plyfs may pass through).
#[test]
fn noatime_mounts_keep_atime() {
    let test = "noatime_mounts_keep_atime";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let (_mounted, mnt) = mount_either(kernel, &l, ",noatime");
        fs::write(mnt.join("upper-file"), "upper").unwrap();
        let mut got = Vec::new();
        for name in ["upper-file", "etc/hostname"] {
            let p = mnt.join(name);
            let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &p,
                &old,
                &nix::sys::time::TimeSpec::UTIME_OMIT,
                nix::sys::stat::UtimensatFlags::FollowSymlink,
            )
            .unwrap();
            fs::read(&p).unwrap();
            got.push((name, fs::metadata(&p).unwrap().atime()));
        }
        seen.push(got);
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert!(seen[0].iter().all(|(_, a)| *a == 1_000_000));
}

/// On a `strictatime` mount every read of an upper file updates its atime, also a second read
/// that relatime skips (atime already newer than mtime and ctime); without it, it does not
/// (xfstests generic/003). As on the kernel's overlay.
#[test]
fn strictatime_updates_atime_on_every_read() {
    let test = "strictatime_updates_atime_on_every_read";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    for opts in ["", ",strictatime"] {
        let mut seen = Vec::new();
        for kernel in [true, false] {
            let l = Layers::build("demo", &[]);
            let (_mounted, mnt) = mount_either(kernel, &l, opts);
            let p = mnt.join("upper-file");
            fs::write(&p, "upper").unwrap();
            // Past the clock tick of the write: this first read updates atime on any mount.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            fs::read(&p).unwrap();
            let first = fs::metadata(&p).unwrap().atime();
            std::thread::sleep(std::time::Duration::from_millis(1100));
            fs::read(&p).unwrap();
            seen.push(fs::metadata(&p).unwrap().atime() > first);
        }
        assert_eq!(
            seen[1], seen[0],
            "{opts:?}: second read updated atime, plyfs vs kernel"
        );
        assert_eq!(
            seen[1],
            opts == ",strictatime",
            "{opts:?}: second read updated atime"
        );
    }
}

/// Copy-up of a lower file whose data ends before its size (a trailing hole) keeps its size and
/// data, as on the kernel's overlay, and the hole (plyfs sets the size only where the data does
/// not reach it; the kernel copies the first 1 MiB chunk whole, so its blocks are not compared).
#[test]
fn copy_up_keeps_a_trailing_hole() {
    let test = "copy_up_keeps_a_trailing_hole";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let f = l.lowers[0].join("trailing-hole");
        fs::write(&f, b"data").unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        chmod(&mnt.join("trailing-hole"), 0o600).unwrap();
        let up = fs::metadata(l.upper.join("trailing-hole")).unwrap();
        let data = fs::read(mnt.join("trailing-hole")).unwrap();
        if !kernel {
            assert!(
                up.blocks() < 64,
                "the hole was filled: {} blocks",
                up.blocks()
            );
        }
        seen.push((
            up.len(),
            data[..4].to_vec(),
            data[4..].iter().all(|&b| b == 0),
        ));
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert_eq!(seen[1], (8 << 20, b"data".to_vec(), true));
}

/// An ioctl the real file does not know, such as `isatty()`'s TCGETS (every Python `open`
/// asks), fails with ENOTTY as on the kernel's overlay, and plyfs answers it quietly: fuser's
/// default logged a warning for each one.
#[test]
fn unknown_ioctls_give_enotty_quietly() {
    let test = "unknown_ioctls_give_enotty_quietly";
    if !require_kernel_overlay(test) {
        return;
    }
    let isatty = |mnt: &Path| {
        let lower = fs::File::open(mnt.join("etc/hostname")).unwrap();
        let new = fs::File::create(mnt.join("new-file")).unwrap();
        (nix::unistd::isatty(&lower), nix::unistd::isatty(&new))
    };
    let l = Layers::build("demo", &[]);
    let k = KernelMount::new(&kopts(&l));
    let kernel = isatty(&k.mnt);
    drop(k);
    let l = Layers::build("demo", &[]);
    let log = l.dir.join("daemon.log");
    let mnt = l.dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = PlyMount::with_env(
        &[
            std::ffi::OsStr::new("-o"),
            std::ffi::OsStr::new(&l.opts),
            mnt.as_os_str(),
        ],
        &mnt,
        &[("PLYFS_LOG_FILE", log.as_os_str())],
    );
    let plyfs = isatty(&mnt);
    m.unmount();
    assert_eq!(plyfs, kernel, "plyfs vs kernel");
    assert_eq!(plyfs, (Ok(false), Ok(false)));
    let logged = fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("ioctl"), "the daemon logged:\n{logged}");
}

/// `O_DIRECT` I/O that plyfs does itself (a lower file, which is read without passthrough; a
/// setgid file without group execute opened for writing, see `killpriv.rs`) works as on the
/// kernel's overlay: FUSE hands plyfs unaligned buffers, so plyfs does it buffered (xfstests
/// generic/355 got EINVAL).
#[test]
fn direct_io_through_the_daemon() {
    let test = "direct_io_through_the_daemon";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    // The layers' own filesystem must take O_DIRECT (tmpfs before Linux 6.6 does not).
    let probe = TempDir::new("odirect");
    fs::write(probe.join("f"), b"x").unwrap();
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(probe.join("f"))
    {
        println!("SKIP {test}: the temp dir's filesystem refuses O_DIRECT ({e})");
        return;
    }
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        let mut buf = vec![0u8; 3 * 4096];
        let at = buf.as_ptr().align_offset(4096);
        let block = &mut buf[at..at + 4096];
        let read = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(mnt.join("etc/hostname"))
            .and_then(|mut f| f.read(block));
        let p = mnt.join("sgid-file");
        fs::write(&p, "x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o2644)).unwrap();
        block.fill(b'd');
        let write = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&p)
            .and_then(|mut f| f.write(block));
        let len = fs::metadata(&p).map(|m| m.len()).ok();
        seen.push(format!("read {read:?} write {write:?} size {len:?}"));
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert!(seen[1].contains("write Ok(4096)"), "{}", seen[1]);
}

/// `uidmapping=`/`gidmapping=` (containers-storage form) show stored container ids as host
/// ids and store a chown's host ids back as container ids; `squash_to_root` and
/// `squash_to_uid`/`squash_to_gid` show every object as owned by one id and store nothing.
#[test]
fn owner_mapping_and_squashing() {
    let test = "owner_mapping_and_squashing";
    if !require_root_and_fuse(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let l = Layers::build("demo", &[]);
    let upper = l.upper.clone();
    let owner = |p: &Path| {
        let m = fs::symlink_metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    {
        let m = PlyMount::new(&format!(
            "{},uidmapping=:0:1000:1:1:200000:65536,gidmapping=:0:1000:1:1:200000:65536",
            l.opts
        ));
        assert_eq!(owner(&m.path("etc/passwd")), (1000, 1000), "stored 0:0");
        assert_eq!(owner(&m.path("etc/shadow")), (1000, 200041), "stored 0:42");
        chown(&m.path("etc/hostname"), 200005, 1000).unwrap();
        assert_eq!(owner(&m.path("etc/hostname")), (200005, 1000));
        assert_eq!(
            owner(&upper.join("etc/hostname")),
            (6, 0),
            "stored as container ids: host 200005 is container 6"
        );
        m.unmount();
    }
    {
        let m = PlyMount::new(&format!("{},squash_to_root", l.opts));
        assert_eq!(owner(&m.path("etc/hostname")), (0, 0));
        assert_eq!(owner(&m.path("etc/shadow")), (0, 0));
        m.unmount();
    }
    let m = PlyMount::new(&format!("{},squash_to_uid=33,squash_to_gid=44", l.opts));
    assert_eq!(owner(&m.path("etc/passwd")), (33, 44));
    assert_eq!(owner(&upper.join("etc/hostname")), (6, 0), "nothing stored");
    m.unmount();
}

/// A copy-up does not change its directory's times, in the view or in the upper dir, after a
/// remount too (as the kernel's overlay; podman diff and commit read them).
#[test]
fn copy_up_keeps_the_directory_times() {
    let test = "copy_up_keeps_the_directory_times";
    if !require_kernel_overlay(test) {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mut seen = Vec::new();
    for kernel in [true, false] {
        let l = Layers::build("demo", &[]);
        let old = nix::sys::time::TimeSpec::new(1_500_000_000, 0);
        for d in ["etc", "usr/lib"] {
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &l.lowers[0].join(d),
                &old,
                &old,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        let mnt_times = |mnt: &Path| {
            ["etc", "usr/lib"]
                .map(|d| fs::metadata(mnt.join(d)).unwrap().mtime())
                .to_vec()
        };
        let (_mounted, mnt) = mount_either(kernel, &l, "");
        chmod(&mnt.join("etc/hostname"), 0o600).unwrap();
        append(&mnt.join("usr/lib/libz.so.1.2.13"), b"x").unwrap();
        let upper = ["etc", "usr/lib"]
            .map(|d| fs::metadata(l.upper.join(d)).unwrap().mtime())
            .to_vec();
        seen.push((mnt_times(&mnt), upper));
    }
    assert_eq!(seen[1], seen[0], "plyfs vs kernel");
    assert_eq!(seen[0].1, vec![1_500_000_000; 2]);
}

/// In a user namespace (rootless podman runs plyfs as its uid 0 there), trusted.* xattrs are
/// not allowed: plyfs falls back to user.overlay.* by itself, and changes in lower dirs work.
#[test]
fn user_namespace_falls_back_to_user_xattrs() {
    let test = "user_namespace_falls_back_to_user_xattrs";
    if !require_root_and_fuse(test) {
        return;
    }
    let l = Layers::build("demo", &[]);
    let mnt = TempDir::new("userns");
    let script = format!(
        "{PLYFS} -o {opts} {m} && ln -s /proc/mounts {m}/etc/x && echo more >> {m}/etc/group \
         && rm {m}/etc/os-release && tail -1 {m}/etc/group; r=$?; umount {m}; exit $r",
        opts = l.opts,
        m = mnt.path.display()
    );
    let out = run_bounded(
        std::process::Command::new("unshare").args(["-Urm", "sh", "-c", &script]),
        std::time::Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "in a user namespace: {}{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(out.stdout, "more\n");
    let impure = xattr::get(l.upper.join("etc"), "user.overlay.impure").unwrap();
    assert_eq!(
        impure.as_deref(),
        Some(&b"y"[..]),
        "user.overlay.* in the upper dir"
    );
    let st = fs::symlink_metadata(l.upper.join("etc/os-release")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&st.file_type()),
        "a whiteout"
    );
}

/// Runs `script` as root of a new user and mount namespace (`unshare -Urm`: only root is mapped,
/// no file handles can be opened there, trusted.* xattrs are refused), bounded in time; its
/// stdout, or a panic with what it printed.
fn in_user_namespace(what: &str, script: &str) -> String {
    let out = run_bounded(
        std::process::Command::new("unshare").args(["-Urm", "sh", "-c", script]),
        std::time::Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{what} in a user namespace: {}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// In a user namespace plyfs cannot open a copy's `overlay.origin` by its handle; a hard link to
/// a lower file (which copies it up) must still be one inode: both names show the lower file's
/// inode number, the same size and link count after a write through one of them, and keep
/// showing one inode number after a rename and a remount.
#[test]
fn user_namespace_hard_link_to_a_lower_file() {
    let test = "user_namespace_hard_link_to_a_lower_file";
    if !require_root_and_fuse(test) {
        return;
    }
    let t = TempDir::new("userns-link");
    for d in ["l1/etc", "l2/etc", "u", "w", "m"] {
        t.mkdir(d);
    }
    fs::write(t.join("l2/etc/f"), "lower line\n").unwrap();
    fs::write(t.join("l1/etc/t"), "t\n").unwrap();
    let lower_ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(t.join("l2/etc/f")).unwrap());
    let mount = format!(
        "{PLYFS} -o lowerdir={d}/l1:{d}/l2,upperdir={d}/u,workdir={d}/w,nodev {d}/m",
        d = t.path.display()
    );
    let st = "stat -c '%n %i %h %s'";
    let script = format!(
        "set -e; {mount}; cd {m}; {st} etc/f; ln etc/f g; echo appended >> etc/f; \
         echo \"g: $(tr '\\n' '|' < g)\"; {st} etc/f g; rm g; {st} etc/f; ln etc/f g; \
         mv etc/f etc/f2; cd /; umount {m}; {mount}; cd {m}; {st} g etc/f2; cd /; umount {m}",
        m = t.join("m").display()
    );
    let out = in_user_namespace("link, append, unlink, rename, remount", &script);
    let expected = [
        format!("etc/f {lower_ino} 1 11"),
        "g: lower line|appended|".to_string(),
        format!("etc/f {lower_ino} 2 20"),
        format!("g {lower_ino} 2 20"),
        format!("etc/f {lower_ino} 1 20"),
        format!("g {lower_ino} 2 20"),
        format!("etc/f2 {lower_ino} 2 20"),
    ];
    assert_eq!(out.lines().collect::<Vec<_>>(), expected, "{out}");
}

/// Runs `script` as root of a new user and mount namespace that maps ids 0..65535 to the same
/// host ids (as rootless podman's maps the user's subordinate ids; `unshare -Ur` maps root only),
/// bounded in time; its stdout, or a panic with what it printed. The test process, root outside,
/// writes the maps once `unshare` made the namespace, then lets the script go on.
fn in_wide_user_namespace(what: &str, script: &str) -> String {
    use std::process::{Command, Stdio};
    let out = TempDir::new("wide-ns-out");
    let (o, e) = (out.join("stdout"), out.join("stderr"));
    let mut child = Command::new("unshare")
        .args(["-Um", "sh", "-c", &format!("read go && {{\n{script}\n}}")])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .spawn()
        .expect("unshare");
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let pid = child.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while ns(&pid) == ns("self") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for map in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{pid}/{map}"), "0 0 65536\n")
            .unwrap_or_else(|e| panic!("{what}: writing {map}: {e}"));
    }
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_child(&mut child, std::time::Duration::from_secs(60))
        .unwrap_or_else(|| panic!("{what}: did not finish within a minute"));
    let (stdout, stderr) = (
        fs::read_to_string(&o).unwrap_or_default(),
        fs::read_to_string(&e).unwrap_or_default(),
    );
    assert!(status.success(), "{what}: {stdout}{stderr}");
    stdout
}

/// Owner overrides in a user namespace (rootless): a container id the namespace cannot map
/// (here `uidmapping=` stores container id 1000 as 100000, beyond the namespace's 65536 ids)
/// cannot be given to the real upper file, so plyfs keeps it in `user.containers.override_stat`
/// and shows it; it survives a remount. Values containers-storage wrote on lower files (owner,
/// mode, a regular file standing for a device) are shown, a malformed one is ignored, and the
/// names can be neither read nor set through the mount.
#[test]
fn user_namespace_owner_overrides() {
    let test = "user_namespace_owner_overrides";
    if !require_root_and_fuse(test) {
        return;
    }
    let t = TempDir::new("userns-override");
    for d in ["l/d", "u", "w", "m"] {
        t.mkdir(d);
    }
    let lower = |name: &str, value: Option<&str>| {
        let p = t.join("l").join(name);
        if !p.exists() {
            fs::write(&p, "x\n").unwrap();
        }
        if let Some(v) = value {
            xattr::set(&p, "user.containers.override_stat", v.as_bytes()).unwrap();
        }
    };
    lower("f", None);
    lower("cs", Some("100000:100000:04711:file"));
    lower("d", Some("7:8:0700:dir"));
    lower("bad", Some("garbage"));
    lower("dev", Some("0:5:0620:char-1-3"));
    let m = t.join("m");
    let ids = "0:0:1000:100000:1000:1";
    let mount = format!(
        "{PLYFS} -o lowerdir={d}/l,upperdir={d}/u,workdir={d}/w,uidmapping={ids},gidmapping={ids} \
         {m}",
        d = t.path.display(),
        m = m.display()
    );
    let st = "stat -c '%n %u:%g %a %F'";
    let script = format!(
        "set -e; {mount}; cd {m}; {st} f cs d bad; stat -c '%n %F %t:%T' dev
         chown 1000:1000 f; {st} f; chmod 640 f; {st} f; chown 5:5 cs; {st} cs
         getfattr -n user.containers.override_stat f 2>/dev/null || echo hidden
         getfattr -d -m - f cs d | grep -c override_stat || true
         setfattr -n user.containers.override_stat -v 0:0:0777 f 2>/dev/null || echo refused
         mkdir new; chown 1000:1000 new
         setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo y > new/x'; {st} new/x
         cd /; umount {m}; {mount}; {st} {m}/f {m}/cs {m}/new/x; umount {m}",
        m = m.display()
    );
    let out = in_wide_user_namespace("chown, chmod, create, remount", &script);
    let expected = [
        "f 0:0 644 regular file",
        "cs 1000:1000 4711 regular file",
        "d 7:8 700 directory",
        "bad 0:0 644 regular file",
        "dev character special file 1:3",
        "f 1000:1000 644 regular file",
        "f 1000:1000 640 regular file",
        "cs 5:5 711 regular file",
        "hidden",
        "0",
        "refused",
        "new/x 1000:1000 644 regular file",
    ];
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got[..12], expected[..12], "{out}");
    assert_eq!(
        got[12..],
        [
            format!("{}/f 1000:1000 640 regular file", m.display()),
            format!("{}/cs 5:5 711 regular file", m.display()),
            format!("{}/new/x 1000:1000 644 regular file", m.display()),
        ],
        "after a remount: {out}"
    );
    // In the upper layer: the real owner is the namespace's root, the override the stored one.
    let upper = |name: &str| {
        let v = xattr::get(t.join("u").join(name), "user.containers.override_stat").unwrap();
        String::from_utf8(v.unwrap_or_default()).unwrap()
    };
    assert_eq!(upper("f"), "100000:100000:0640");
    assert_eq!(upper("new/x"), "100000:100000:0644");
    assert_eq!(
        upper("cs"),
        "5:5:0711:file",
        "copied up with its lower's, then changed"
    );
    let meta = fs::metadata(t.join("u/f")).unwrap();
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&meta),
            meta.permissions().mode() & 0o7777
        ),
        (0, 0o644),
        "the real file is unchanged"
    );
}

/// A file made over an upper whiteout in the other forms plyfs reads (an xattr whiteout at the
/// name, an aufs `.wh.` file beside it) takes the whiteout's place: the name shows the new
/// file, and the upper dir holds the file and no whiteout for it (plyfs only: the kernel's
/// overlay does not read these forms in the upper dir). The demo set's top layer, which holds
/// the whiteout of etc/motd, is mounted as the upper dir.
#[test]
fn create_over_other_whiteout_forms() {
    if !require_root_and_fuse("create_over_other_whiteout_forms") {
        return;
    }
    for form in ["xattr", "aufs"] {
        let l = Layers::build("demo", &[&format!("--whiteout={form}")]);
        let (top, base) = (&l.lowers[0], &l.lowers[1]);
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.display(),
            top.display(),
            l.work.display()
        );
        let pm = PlyMount::new(&opts);
        let motd = pm.mnt.join("etc/motd");
        assert!(!motd.exists(), "{form}: the whiteout hides etc/motd");
        fs::write(&motd, b"back\n").unwrap();
        assert_eq!(fs::read(&motd).unwrap(), b"back\n", "{form}: read back");
        drop(pm);
        let upper = top.join("etc/motd");
        let meta = fs::symlink_metadata(&upper).unwrap();
        assert!(meta.is_file() && meta.len() == 5, "{form}: upper etc/motd");
        let names: Vec<String> = xattr::list(&upper)
            .unwrap()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.ends_with("overlay.whiteout")),
            "{form}: the new file keeps a whiteout xattr: {names:?}"
        );
        assert!(
            !top.join("etc/.wh.motd").exists(),
            "{form}: the aufs whiteout stayed beside the new file"
        );
    }
}
