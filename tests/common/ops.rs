//! The random-operations generator shared by `random_ops.rs` (one sequence, plyfs beside the
//! kernel's overlay after every step) and `stress.rs` (one sequence per worker, in parallel,
//! each in its own copy of the tree): paths over the demo layers' names, and `apply`, which
//! returns the errno an operation gave.

use super::Rng;
use std::fs;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A random element of `xs`.
pub fn pick_of<'a>(rng: &mut Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.below(xs.len())]
}

/// Names from the demo layers (lower files, dirs, hard links, whiteouts) and new ones.
pub const PATHS: &[&str] = &[
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
pub enum Op {
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

pub fn generate(rng: &mut Rng) -> Op {
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

pub fn apply(root: &Path, op: &Op) -> Result<(), i32> {
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

impl Op {
    /// The same operation on the paths under `dir` (symlink targets stay as they are).
    pub fn under(&self, dir: &str) -> Op {
        let j = |p: &String| format!("{dir}/{p}");
        match self {
            Op::Create(p, d) => Op::Create(j(p), d.clone()),
            Op::Write(p, o, d) => Op::Write(j(p), *o, d.clone()),
            Op::Truncate(p, n) => Op::Truncate(j(p), *n),
            Op::Rename(a, b) => Op::Rename(j(a), j(b)),
            Op::Link(a, b) => Op::Link(j(a), j(b)),
            Op::Unlink(p) => Op::Unlink(j(p)),
            Op::Mkdir(p) => Op::Mkdir(j(p)),
            Op::Rmdir(p) => Op::Rmdir(j(p)),
            Op::Chmod(p, m) => Op::Chmod(j(p), *m),
            Op::SetXattr(p, v) => Op::SetXattr(j(p), v.clone()),
            Op::Symlink(t, p) => Op::Symlink(t.clone(), j(p)),
            Op::Exchange(a, b) => Op::Exchange(j(a), j(b)),
            Op::Mkfifo(p) => Op::Mkfifo(j(p)),
        }
    }
}
