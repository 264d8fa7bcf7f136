//! Shared harness for the mount tests: skip checks, unique temp dirs, mount guards for plyfs and
//! the kernel's overlay (always unmounted on drop, even when a test panics), the `plyfs-layers`
//! builder and dumper, and a tree walker for inode invariants.
#![allow(dead_code)]

pub mod ops;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const PLYFS: &str = env!("CARGO_BIN_EXE_plyfs");
pub const PLYFS_LAYERS: &str = env!("CARGO_BIN_EXE_plyfs-layers");

/// The repository's `layers/` directory.
pub fn layers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layers")
}

pub fn skip(test: &str, reason: &str) -> bool {
    let line = format!("SKIPPED: {test}: {reason}");
    eprintln!("{line}");
    println!("{line}");
    false
}

/// True when the test can mount plyfs: running as root with /dev/fuse present. Otherwise prints
/// a `SKIPPED:` line (stderr and stdout) and returns false.
pub fn require_root_and_fuse(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        return skip(test, "not running as root");
    }
    if !Path::new("/dev/fuse").exists() {
        return skip(test, "/dev/fuse is missing");
    }
    true
}

/// Like [`require_root_and_fuse`], and also needs the kernel's `overlay` filesystem (for tests
/// that compare with the kernel).
pub fn require_kernel_overlay(test: &str) -> bool {
    if !require_root_and_fuse(test) {
        return false;
    }
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fss
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        return skip(
            test,
            "the kernel's overlay is absent from /proc/filesystems",
        );
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, unique per process and call; removed on drop
/// (after lazily unmounting anything still mounted below it).
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("plyfs-it-{}-{}-{}", std::process::id(), n, tag));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn join<P: AsRef<Path>>(&self, p: P) -> PathBuf {
        self.path.join(p)
    }

    /// Creates (and returns) a subdirectory.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path.join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Never recurse into a live mount: a leftover mount below would have its layers deleted
        // through it.
        for m in mounts_below(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        if !mounts_below(&self.path).is_empty() {
            eprintln!(
                "warning: mounts left under {}, not removing it",
                self.path.display()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// /proc/mounts
// ---------------------------------------------------------------------------------------------

/// Undoes the octal escapes of /proc/mounts (`\040` for a space ...).
fn unescape_mounts(s: &str) -> OsString {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct {
            Some(d) if b[i] == b'\\' => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    OsString::from(OsStr::from_bytes(&out))
}

/// One line of /proc/mounts.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub options: String,
}

pub fn proc_mounts() -> Vec<MountEntry> {
    let text = fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 4 {
                return None;
            }
            Some(MountEntry {
                source: unescape_mounts(f[0]).to_string_lossy().into_owned(),
                target: PathBuf::from(unescape_mounts(f[1])),
                fstype: f[2].to_string(),
                options: f[3].to_string(),
            })
        })
        .collect()
}

/// The last /proc/mounts entry for `mnt` (the one visible), if any.
pub fn mount_entry(mnt: &Path) -> Option<MountEntry> {
    proc_mounts().into_iter().rev().find(|m| m.target == mnt)
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_entry(mnt).is_some()
}

fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = proc_mounts()
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(dir))
        .collect();
    // Deepest first.
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Unmounts `mnt`: `umount`, then `umount -l` as a fallback. Returns true when it is gone.
pub fn unmount(mnt: &Path) -> bool {
    for _ in 0..3 {
        if !is_mounted(mnt) {
            return true;
        }
        let _ = Command::new("umount")
            .arg(mnt)
            .stderr(Stdio::null())
            .status();
        if !is_mounted(mnt) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = Command::new("umount").arg("-l").arg(mnt).status();
    !is_mounted(mnt)
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Pids of live (non-zombie) processes with an argument equal to `arg`.
pub fn pids_with_arg(arg: &Path) -> Vec<i32> {
    let want = arg.as_os_str().as_bytes();
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == std::process::id() {
            continue;
        }
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if cmd.split(|&b| b == 0).any(|a| a == want) && process_alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// True when `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" of the command name
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive; false on timeout.
pub fn wait_pids_gone(pids: &[i32], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if pids.iter().all(|&p| !process_alive(p)) {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a timeout; kills it when the time is up (and returns None).
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The result of running a command that must end by itself.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with stdout/stderr to files (never pipes: a daemon that keeps them open would
/// hang the test), bounded by `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Outcome {
    let dir = TempDir::new("out");
    let (o, e) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&o).unwrap())
        .stderr(fs::File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_child(&mut child, timeout)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {timeout:?}"));
    Outcome {
        status,
        stdout: fs::read_to_string(&o).unwrap_or_default(),
        stderr: fs::read_to_string(&e).unwrap_or_default(),
    }
}

/// Runs plyfs with `args`, bounded.
pub fn run_plyfs<S: AsRef<OsStr>>(args: &[S]) -> Outcome {
    run_bounded(Command::new(PLYFS).args(args), Duration::from_secs(20))
}

// ---------------------------------------------------------------------------------------------
// Mount guards
// ---------------------------------------------------------------------------------------------

/// A live plyfs mount; unmounted on drop, and the daemon waited for (bounded).
pub struct PlyMount {
    pub mnt: PathBuf,
    pub pids: Vec<i32>,
    /// stderr of the mounting command.
    pub stderr: String,
    _tmp: Option<TempDir>,
}

impl PlyMount {
    /// Mounts `plyfs -o OPTS MNT` on a fresh mount point.
    pub fn new(opts: &str) -> PlyMount {
        let tmp = TempDir::new("mnt");
        let mnt = tmp.mkdir("m");
        let mut m =
            PlyMount::with_args(&[OsStr::new("-o"), OsStr::new(opts), mnt.as_os_str()], &mnt);
        m._tmp = Some(tmp);
        m
    }

    /// Mounts `plyfs -o OPTS MNT` on an existing directory.
    pub fn at(opts: &str, mnt: &Path) -> PlyMount {
        PlyMount::with_args(&[OsStr::new("-o"), OsStr::new(opts), mnt.as_os_str()], mnt)
    }

    /// Runs plyfs with `args` (which must mount on `mnt`), asserts it exits 0 and the mount is
    /// live.
    pub fn with_args<S: AsRef<OsStr>>(args: &[S], mnt: &Path) -> PlyMount {
        PlyMount::with_env(args, mnt, &[])
    }

    /// As `with_args`, with extra environment variables for plyfs (e.g. `PLYFS_LOG`).
    pub fn with_env<S: AsRef<OsStr>>(args: &[S], mnt: &Path, env: &[(&str, &OsStr)]) -> PlyMount {
        let mut cmd = Command::new(PLYFS);
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run_bounded(&mut cmd, Duration::from_secs(20));
        let mounted = is_mounted(mnt);
        let pids = pids_with_arg(mnt);
        let m = PlyMount {
            mnt: mnt.to_path_buf(),
            pids,
            stderr: out.stderr.clone(),
            _tmp: None,
        };
        assert!(
            out.status.success(),
            "plyfs {:?} failed: {}: {}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
            out.status,
            out.stderr
        );
        assert!(
            mounted,
            "plyfs exited 0 but {} is not in /proc/mounts",
            mnt.display()
        );
        m
    }

    pub fn path<P: AsRef<Path>>(&self, p: P) -> PathBuf {
        self.mnt.join(p)
    }

    /// Unmounts now and asserts the daemon exits within 10 s (it takes milliseconds; a loaded
    /// machine has been seen to need more than 5, so a slow exit is reported, not failed).
    pub fn unmount(mut self) {
        let ok = unmount(&self.mnt);
        let pids = std::mem::take(&mut self.pids);
        assert!(ok, "{} still mounted after umount", self.mnt.display());
        let start = Instant::now();
        assert!(
            wait_pids_gone(&pids, Duration::from_secs(10)),
            "plyfs daemon {pids:?} still alive 10 s after umount of {}",
            self.mnt.display()
        );
        if start.elapsed() > Duration::from_secs(2) {
            eprintln!(
                "note: plyfs daemon took {:?} to exit after umount of {}",
                start.elapsed(),
                self.mnt.display()
            );
        }
    }
}

impl Drop for PlyMount {
    fn drop(&mut self) {
        if !unmount(&self.mnt) {
            eprintln!("warning: could not unmount {}", self.mnt.display());
        }
        if !wait_pids_gone(&self.pids, Duration::from_secs(5)) {
            eprintln!(
                "warning: plyfs daemon {:?} of {} still alive after unmount",
                self.pids,
                self.mnt.display()
            );
        }
    }
}

/// A kernel overlay mount; unmounted on drop.
pub struct KernelMount {
    pub mnt: PathBuf,
    _tmp: TempDir,
}

impl KernelMount {
    pub fn new(opts: &str) -> KernelMount {
        let tmp = TempDir::new("kmnt");
        let mnt = tmp.mkdir("m");
        let out = run_bounded(
            Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o", opts])
                .arg(&mnt),
            Duration::from_secs(20),
        );
        let m = KernelMount { mnt, _tmp: tmp };
        assert!(
            out.status.success(),
            "mount -t overlay -o {opts} failed: {}",
            out.stderr
        );
        m
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        if !unmount(&self.mnt) {
            eprintln!("warning: could not unmount {}", self.mnt.display());
        }
    }
}

/// A guard that unmounts an arbitrary mount point (tmpfs ...) on drop.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        unmount(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------------------------

/// A layer set built by `plyfs-layers build` into its own temp dir.
pub struct Layers {
    /// The option string printed by the builder: `lowerdir=...,upperdir=...,workdir=...`.
    pub opts: String,
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub dir: TempDir,
}

impl Layers {
    /// Builds `layers/SET` with the builder's `args` (forms) into a fresh dir.
    pub fn build(set: &str, args: &[&str]) -> Layers {
        let dir = TempDir::new(&format!("set-{set}"));
        let out_dir = dir.join("out");
        let out = run_bounded(
            Command::new(PLYFS_LAYERS)
                .arg("build")
                .args(args)
                .arg(layers_dir().join(set))
                .arg(&out_dir),
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "plyfs-layers build {args:?} {set}: {}: {}",
            out.status,
            out.stderr
        );
        let opts = out.stdout.trim().to_string();
        let mut lowers = Vec::new();
        let (mut upper, mut work) = (PathBuf::new(), PathBuf::new());
        for o in opts.split(',') {
            if let Some(v) = o.strip_prefix("lowerdir=") {
                lowers = v.split(':').map(PathBuf::from).collect();
            } else if let Some(v) = o.strip_prefix("upperdir=") {
                upper = PathBuf::from(v);
            } else if let Some(v) = o.strip_prefix("workdir=") {
                work = PathBuf::from(v);
            }
        }
        assert!(!lowers.is_empty(), "no lowerdir in builder output '{opts}'");
        Layers {
            opts,
            lowers,
            upper,
            work,
            dir,
        }
    }

    /// The options of a lowerdir-only (read-only) mount.
    pub fn ro_opts(&self) -> String {
        self.opts.split(",upperdir=").next().unwrap().to_string()
    }

    /// All layers, topmost first: the upper, then the lowers.
    pub fn stack(&self) -> Vec<PathBuf> {
        std::iter::once(self.upper.clone())
            .chain(self.lowers.iter().cloned())
            .collect()
    }
}

/// `plyfs-layers dump DIR`, one string per line.
pub fn dump(dir: &Path) -> Vec<String> {
    let out = run_bounded(
        Command::new(PLYFS_LAYERS).arg("dump").arg(dir),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "plyfs-layers dump {}: {}: {}",
        dir.display(),
        out.status,
        out.stderr
    );
    out.stdout.lines().map(str::to_string).collect()
}

/// Panics with the lines only in one of the dumps when they differ.
pub fn assert_same_dump(what: &str, expected: &[String], actual: &[String]) {
    if expected == actual {
        return;
    }
    let exp: std::collections::BTreeSet<&String> = expected.iter().collect();
    let act: std::collections::BTreeSet<&String> = actual.iter().collect();
    let mut diff = String::new();
    for l in exp.difference(&act) {
        diff.push_str(&format!("- {l}\n"));
    }
    for l in act.difference(&exp) {
        diff.push_str(&format!("+ {l}\n"));
    }
    if diff.is_empty() {
        diff.push_str("(same lines, different order or repeats)\n");
    }
    panic!(
        "{what}: dumps differ (- kernel/expected, + plyfs; {} vs {} lines):\n{diff}",
        expected.len(),
        actual.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Walker
// ---------------------------------------------------------------------------------------------

/// What the walker records for each path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub dev: u64,
    pub ino: u64,
    /// d_ino from the parent's readdir (for the root: its own st_ino).
    pub d_ino: u64,
    pub is_dir: bool,
}

/// Walks the tree under `root` without following symlinks. Keys are paths relative to `root`
/// (the root is ""). Panics when an entry that readdir lists cannot be lstat'ed.
pub fn walk(root: &Path) -> BTreeMap<PathBuf, Ids> {
    let mut out = BTreeMap::new();
    let md = fs::symlink_metadata(root).unwrap_or_else(|e| panic!("lstat {}: {e}", root.display()));
    out.insert(
        PathBuf::new(),
        Ids {
            dev: md.dev(),
            ino: md.ino(),
            d_ino: md.ino(),
            is_dir: true,
        },
    );
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd = fs::read_dir(&dir).unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|err| panic!("readdir {}: {err}", dir.display()));
            let child = rel.join(e.file_name());
            let md = fs::symlink_metadata(root.join(&child))
                .unwrap_or_else(|err| panic!("lstat {}: {err}", root.join(&child).display()));
            out.insert(
                child.clone(),
                Ids {
                    dev: md.dev(),
                    ino: md.ino(),
                    d_ino: e.ino(),
                    is_dir: md.is_dir(),
                },
            );
            if md.is_dir() {
                stack.push(child);
            }
        }
    }
    out
}

/// Reads a whole pipe/file to EOF on a thread; `Some(bytes)` if EOF came within `timeout`.
pub fn read_to_eof_within<R: Read + Send + 'static>(
    mut r: R,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx.recv_timeout(timeout).ok()
}

/// Whether command `cmd` is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// xorshift64*: a small deterministic generator for the randomized tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
