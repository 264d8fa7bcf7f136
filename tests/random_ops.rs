//! Random operations, the same on plyfs and on the kernel's overlay (root and /dev/fuse needed;
//! skipped with a printed reason otherwise): a fixed-seed generator picks create, write,
//! truncate, rename, link, unlink, mkdir, rmdir, chmod and setxattr over a small set of names
//! that mixes lower, copied-up and new objects; after every step the errno and the whole
//! visible tree must match. Also symlink, RENAME_EXCHANGE and mkfifo. CI runs a bounded count; `PLYFS_RANDOM_OPS=N` and
//! `PLYFS_RANDOM_SEED=S` run longer (see the README).

mod common;

use common::*;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `Rng::pick` for this test.
fn pick_of<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Names from the demo layers (lower files, dirs, hard links, whiteouts) and new ones.
const PATHS: &[&str] = &[
    "etc/passwd",
    "etc/group",
    "etc/motd",
    "etc/conf",
    "etc/conf/app.conf",
    "bin/busybox",
    "bin/bb-link",
    "bin/sh",
    "usr/lib",
    "usr/lib/libz.so.1.2.13",
    "usr/share/doc",
    "var/cache",
    "home/app",
    "home/app/.profile",
    "n1",
    "n2",
    "d1",
    "d1/n3",
    "d1/d2",
    "d1/d2/n4",
    "etc/n5",
    "usr/share/doc/n6",
];

#[derive(Debug, Clone)]
enum Op {
    Create(String, Vec<u8>),
    Write(String, u64, Vec<u8>),
    Truncate(String, u64),
    Rename(String, String),
    Link(String, String),
    Unlink(String),
    Mkdir(String),
    Rmdir(String),
    Chmod(String, u32),
    SetXattr(String, String),
    Symlink(String, String),
    Exchange(String, String),
    Mkfifo(String),
}

fn generate(rng: &mut Rng) -> Op {
    let p = |rng: &mut Rng| pick_of(rng, PATHS).to_string();
    let data = |rng: &mut Rng| {
        let n = rng.below(64);
        (0..n)
            .map(|i| b'a' + ((i + rng.below(26)) % 26) as u8)
            .collect::<Vec<u8>>()
    };
    match rng.below(13) {
        0 => {
            let (a, d) = (p(rng), data(rng));
            Op::Create(a, d)
        }
        1 => {
            let (a, off, d) = (p(rng), rng.below(300) as u64, data(rng));
            Op::Write(a, off, d)
        }
        2 => {
            let (a, n) = (p(rng), rng.below(200) as u64);
            Op::Truncate(a, n)
        }
        3 => Op::Rename(p(rng), p(rng)),
        4 => Op::Link(p(rng), p(rng)),
        5 => Op::Unlink(p(rng)),
        6 => Op::Mkdir(p(rng)),
        7 => Op::Rmdir(p(rng)),
        8 => {
            let (a, m) = (p(rng), [0o600, 0o644, 0o755, 0o700, 0o4755][rng.below(5)]);
            Op::Chmod(a, m)
        }
        9 => {
            let (a, v) = (p(rng), format!("v{}", rng.below(100)));
            Op::SetXattr(a, v)
        }
        10 => Op::Symlink(p(rng), p(rng)),
        11 => Op::Exchange(p(rng), p(rng)),
        _ => Op::Mkfifo(p(rng)),
    }
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let j = |p: &str| -> PathBuf { root.join(p) };
    // O_NONBLOCK: opening a fifo for writing fails with ENXIO instead of waiting for a reader.
    let open = |p: &str, create: bool| {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create(create)
            .truncate(create)
            .custom_flags(libc::O_NONBLOCK)
            .open(j(p))
    };
    let r: io::Result<()> = match op {
        Op::Create(p, d) => open(p, true).and_then(|mut f| f.write_all(d)),
        Op::Write(p, off, d) => open(p, false).and_then(|mut f| {
            f.seek(SeekFrom::Start(*off))?;
            f.write_all(d)
        }),
        Op::Truncate(p, n) => open(p, false).and_then(|f| f.set_len(*n)),
        Op::Rename(a, b) => fs::rename(j(a), j(b)),
        Op::Link(a, b) => fs::hard_link(j(a), j(b)),
        Op::Unlink(p) => fs::remove_file(j(p)),
        Op::Mkdir(p) => fs::create_dir(j(p)),
        Op::Rmdir(p) => fs::remove_dir(j(p)),
        Op::Chmod(p, m) => {
            // chmod follows symlinks; the layers' symlinks point outside the tree.
            match fs::symlink_metadata(j(p)) {
                Ok(md) if md.file_type().is_symlink() => Ok(()),
                _ => fs::set_permissions(j(p), fs::Permissions::from_mode(*m)),
            }
        }
        Op::SetXattr(p, v) => xattr::set(j(p), "user.r", v.as_bytes()),
        Op::Symlink(target, p) => std::os::unix::fs::symlink(target, j(p)),
        Op::Exchange(a, b) => nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &j(a),
            nix::fcntl::AT_FDCWD,
            &j(b),
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(io::Error::from),
        Op::Mkfifo(p) => {
            nix::unistd::mkfifo(&j(p), nix::sys::stat::Mode::from_bits_truncate(0o644))
                .map_err(io::Error::from)
        }
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
fn random_operations_match_the_kernel() {
    let test = "random_operations_match_the_kernel";
    if !require_kernel_overlay(test) {
        return;
    }
    let count: usize = std::env::var("PLYFS_RANDOM_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("PLYFS_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x005e_ed0f_91f5);
    println!("random operations: {count} ops, seed {seed}");
    let kl = Layers::build("demo", &[]);
    let pl = Layers::build("demo", &[]);
    let km = KernelMount::new(&format!("{},index=on,redirect_dir=on", kl.opts));
    let pm = PlyMount::new(&pl.opts);
    let mut rng = Rng(seed | 1);
    let mut history = Vec::new();
    for step in 0..count {
        let op = generate(&mut rng);
        history.push(op.clone());
        let k = apply(&km.mnt, &op);
        let p = apply(&pm.mnt, &op);
        let last: Vec<String> = history
            .iter()
            .rev()
            .take(8)
            .map(|o| format!("{o:?}"))
            .collect();
        if p != k {
            // The whole history, for replaying a failure by hand.
            let all: Vec<String> = history.iter().map(|o| format!("{o:?}")).collect();
            let _ = fs::write(
                std::env::temp_dir().join("plyfs-random-ops.failed"),
                all.join("\n"),
            );
        }
        assert_eq!(
            p, k,
            "step {step} {op:?}: plyfs {p:?}, kernel {k:?} (seed {seed}; last ops, newest first: {last:#?})"
        );
        let (kd, pd) = (dump(&km.mnt), dump(&pm.mnt));
        if kd != pd {
            assert_same_dump(
                &format!("step {step} {op:?} (seed {seed}; last ops, newest first: {last:#?})"),
                &kd,
                &pd,
            );
        }
    }
    pm.unmount();
    drop(km);
    // The kernel reads what plyfs wrote to the same view.
    let expected = dump(&KernelMount::new(&format!("{},index=on,redirect_dir=on", kl.opts)).mnt);
    let kernel_on_plyfs =
        dump(&KernelMount::new(&format!("{},index=on,redirect_dir=on", pl.opts)).mnt);
    assert_same_dump(
        "kernel reading plyfs's layers after the run",
        &expected,
        &kernel_on_plyfs,
    );
}
