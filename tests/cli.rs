//! The `plyfs` command line as containers-storage, mount(8) and people use it: bad input fails
//! before anything is mounted with one `plyfs: ...` line naming the culprit (runs as any user);
//! `--version`/`--help`; and, as root with /dev/fuse, the accepted option spellings (empty
//! options, `\:`, symlinked lowers), the mount.fuse form and `mount -t fuse.plyfs`, the
//! /proc/mounts entry, daemonizing (returns once live, detached stdio, exits on unmount) and `-f`.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A lower dir with one file, a mount point, in a fresh temp dir.
struct Fixture {
    tmp: TempDir,
    lower: PathBuf,
    mnt: PathBuf,
}

fn fixture(tag: &str) -> Fixture {
    let tmp = TempDir::new(tag);
    let lower = tmp.mkdir("lower");
    fs::write(lower.join("hello"), b"hello from the lower\n").unwrap();
    let mnt = tmp.mkdir("mnt");
    Fixture { tmp, lower, mnt }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs plyfs with `args`, which must fail before mounting: exit 1, exactly one stderr line
/// `plyfs: ...` containing every needle, and nothing mounted on `mnt`.
fn assert_fails_before_mount(args: &[&str], mnt: &Path, needles: &[&str]) {
    let out = run_plyfs(args);
    let mounted = is_mounted(mnt);
    if mounted {
        unmount(mnt);
    }
    assert_eq!(
        out.status.code(),
        Some(1),
        "plyfs {args:?}: exit status {} (stderr: {})",
        out.status,
        out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "plyfs {args:?}: want one stderr line, got {:?}",
        out.stderr
    );
    assert!(
        lines[0].starts_with("plyfs: "),
        "plyfs {args:?}: stderr line '{}' does not start with 'plyfs: '",
        lines[0]
    );
    for n in needles {
        assert!(
            lines[0].contains(n),
            "plyfs {args:?}: stderr '{}' does not name '{n}'",
            lines[0]
        );
    }
    assert!(
        !mounted,
        "plyfs {args:?} failed but mounted {}",
        mnt.display()
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input (any user)
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_mount_option_is_named() {
    let f = fixture("unknown-opt");
    let o = format!("lowerdir={},bogus_opt=1", s(&f.lower));
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &["bogus_opt"]);
    let o = format!("lowerdir={},nosuchflag", s(&f.lower));
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &["nosuchflag"]);
}

#[test]
fn unknown_command_line_option_is_named() {
    let f = fixture("unknown-arg");
    let o = format!("lowerdir={}", s(&f.lower));
    assert_fails_before_mount(
        &["--frobnicate", "-o", &o, s(&f.mnt)],
        &f.mnt,
        &["--frobnicate"],
    );
}

#[test]
fn missing_lowerdir() {
    let f = fixture("missing-lower");
    let nope = f.tmp.join("no-such-lower");
    let o = format!("lowerdir={}:{}", s(&f.lower), s(&nope));
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &[s(&nope)]);
    // No lowerdir= at all.
    assert_fails_before_mount(&["-o", "ro", s(&f.mnt)], &f.mnt, &["lowerdir"]);
}

#[test]
fn lowerdir_is_a_file() {
    let f = fixture("lower-file");
    let file = f.lower.join("hello");
    let o = format!("lowerdir={}", s(&file));
    assert_fails_before_mount(
        &["-o", &o, s(&f.mnt)],
        &f.mnt,
        &[s(&file), "not a directory"],
    );
}

#[test]
fn upperdir_without_workdir() {
    let f = fixture("no-work");
    let upper = f.tmp.mkdir("upper");
    let o = format!("lowerdir={},upperdir={}", s(&f.lower), s(&upper));
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &["workdir"]);
}

#[test]
fn workdir_inside_upperdir() {
    let f = fixture("work-in-upper");
    let upper = f.tmp.mkdir("upper");
    let work = f.tmp.mkdir("upper/work");
    let o = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&f.lower),
        s(&upper),
        s(&work)
    );
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &["workdir", "inside"]);
}

#[test]
fn mount_point_inside_a_layer() {
    // A mount point inside a layer would make plyfs look up through its own mount.
    let f = fixture("mnt-in-lower");
    let lower2 = f.tmp.mkdir("lower2");
    let mnt = f.tmp.mkdir("lower2/deep/mnt");
    let o = format!("lowerdir={}:{}", s(&f.lower), s(&lower2));
    assert_fails_before_mount(
        &["-o", &o, s(&mnt)],
        &mnt,
        &["mount point", "inside", s(&lower2)],
    );
    let (upper, work) = (f.tmp.mkdir("upper"), f.tmp.mkdir("work"));
    let mnt = f.tmp.mkdir("upper/mnt");
    let o = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&f.lower),
        s(&upper),
        s(&work)
    );
    assert_fails_before_mount(&["-o", &o, s(&mnt)], &mnt, &["mount point", "inside"]);
}

/// A daemon without CAP_DAC_OVERRIDE (a plain user, no user namespace) cannot use a work dir of
/// mode 0, as the kernel makes it: plyfs opens the one it owns to itself (0700) and goes on to
/// the mount, which then depends on /dev/fuse (on CI, only root may open it).
#[test]
fn an_unprivileged_owner_gets_a_work_dir_of_its_own() {
    let test = "an_unprivileged_owner_gets_a_work_dir_of_its_own";
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !nix::unistd::geteuid().is_root() {
        skip(test, "not running as root (it runs plyfs as another user)");
        return;
    }
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args);
        run_bounded(&mut c, Duration::from_secs(20))
    };
    if !as_nobody(&["test", "-x", PLYFS]).status.success() {
        skip(
            test,
            "no setpriv, or user 65534 cannot run the plyfs binary",
        );
        return;
    }
    let f = fixture("unprivileged-work");
    let (upper, work) = (f.tmp.mkdir("upper"), f.tmp.mkdir("work"));
    fs::set_permissions(&f.tmp.path, fs::Permissions::from_mode(0o755)).unwrap();
    for d in [&f.lower, &upper, &work, &f.mnt] {
        std::os::unix::fs::chown(d, Some(65534), Some(65534)).unwrap();
    }
    let o = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&f.lower),
        s(&upper),
        s(&work)
    );
    let out = as_nobody(&[PLYFS, "-o", &o, s(&f.mnt)]);
    if is_mounted(&f.mnt) {
        unmount(&f.mnt);
    } else {
        assert!(
            !out.stderr.contains(s(&work)),
            "plyfs as a plain user stopped at its work dir: {}",
            out.stderr
        );
    }
    let w = fs::metadata(work.join("work")).unwrap();
    assert_eq!((w.uid(), w.mode() & 0o7777), (65534, 0o700));
}

#[test]
fn mount_point_missing() {
    let f = fixture("no-mnt");
    let mnt = f.tmp.join("no-such-mnt");
    let o = format!("lowerdir={}", s(&f.lower));
    assert_fails_before_mount(&["-o", &o, s(&mnt)], &mnt, &[s(&mnt)]);
}

#[test]
fn version_and_help() {
    let v = run_plyfs(&["--version"]);
    assert!(v.status.success(), "--version: {}", v.status);
    assert!(
        v.stdout.contains(env!("CARGO_PKG_VERSION")),
        "--version prints no version: {:?}",
        v.stdout
    );
    let h = run_plyfs(&["--help"]);
    assert!(h.status.success(), "--help: {}", h.status);
    assert!(
        h.stdout.contains("lowerdir") && h.stdout.contains("upperdir"),
        "--help: {:?}",
        h.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Root: accepted spellings
// ---------------------------------------------------------------------------------------------

#[test]
fn upper_and_work_on_different_filesystems() {
    if !require_root_and_fuse("upper_and_work_on_different_filesystems") {
        return;
    }
    let f = fixture("xdev");
    let upper = f.tmp.mkdir("upper");
    let fsdir = f.tmp.mkdir("tmpfs");
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "plyfs-test-tmpfs"])
        .arg(&fsdir)
        .status()
        .unwrap();
    assert!(st.success(), "mount tmpfs");
    let _guard = MountGuard(fsdir.clone());
    let work = fsdir.join("work");
    fs::create_dir(&work).unwrap();
    let o = format!(
        "lowerdir={},upperdir={},workdir={}",
        s(&f.lower),
        s(&upper),
        s(&work)
    );
    assert_fails_before_mount(&["-o", &o, s(&f.mnt)], &f.mnt, &["different filesystems"]);
}

#[test]
fn empty_options_ignored() {
    if !require_root_and_fuse("empty_options_ignored") {
        return;
    }
    let f = fixture("empty-opts");
    let o = format!(",,lowerdir={},,", s(&f.lower));
    let m = PlyMount::at(&o, &f.mnt);
    assert_eq!(
        fs::read(m.path("hello")).unwrap(),
        b"hello from the lower\n"
    );
    drop(m);
    let o = format!("lowerdir={},", s(&f.lower));
    let m = PlyMount::at(&o, &f.mnt);
    assert!(m.path("hello").exists());
}

#[test]
fn escaped_colon_in_lowerdir() {
    if !require_root_and_fuse("escaped_colon_in_lowerdir") {
        return;
    }
    let f = fixture("colon");
    let colon = f.tmp.mkdir("with:colon");
    fs::write(colon.join("in-colon-dir"), b"colon\n").unwrap();
    let o = format!("lowerdir={}:{}", s(&colon).replace(':', "\\:"), s(&f.lower));
    let m = PlyMount::at(&o, &f.mnt);
    assert_eq!(fs::read(m.path("in-colon-dir")).unwrap(), b"colon\n");
    assert!(m.path("hello").exists(), "the second lower is merged too");
}

#[test]
fn symlinked_lowerdir_followed() {
    if !require_root_and_fuse("symlinked_lowerdir_followed") {
        return;
    }
    let f = fixture("symlink-lower");
    let link = f.tmp.join("lower-link");
    symlink(&f.lower, &link).unwrap();
    let m = PlyMount::at(&format!("lowerdir={}", s(&link)), &f.mnt);
    assert_eq!(
        fs::read(m.path("hello")).unwrap(),
        b"hello from the lower\n"
    );
    assert!(fs::symlink_metadata(&m.mnt).unwrap().is_dir());
}

#[test]
fn mount_fuse_form_shows_source() {
    if !require_root_and_fuse("mount_fuse_form_shows_source") {
        return;
    }
    let f = fixture("mount-fuse-form");
    let src = format!("plyfs-src-{}", std::process::id());
    let o = format!("lowerdir={}", s(&f.lower));
    let m = PlyMount::with_args(&[src.as_str(), s(&f.mnt), "-o", &o], &f.mnt);
    let e = mount_entry(&m.mnt).unwrap();
    assert_eq!(e.source, src, "/proc/mounts source");
    assert!(m.path("hello").exists());
    drop(m);
    // fsname= wins.
    let o = format!("lowerdir={},fsname=my-fsname", s(&f.lower));
    let m = PlyMount::at(&o, &f.mnt);
    assert_eq!(mount_entry(&m.mnt).unwrap().source, "my-fsname");
    drop(m);
    // Neither: "plyfs".
    let m = PlyMount::at(&format!("lowerdir={}", s(&f.lower)), &f.mnt);
    assert_eq!(mount_entry(&m.mnt).unwrap().source, "plyfs");
}

#[test]
fn proc_mounts_type_is_fuse_plyfs() {
    if !require_root_and_fuse("proc_mounts_type_is_fuse_plyfs") {
        return;
    }
    let f = fixture("fstype");
    let m = PlyMount::at(&format!("lowerdir={}", s(&f.lower)), &f.mnt);
    let e = mount_entry(&m.mnt).unwrap();
    assert_eq!(
        e.fstype, "fuse.plyfs",
        "/proc/mounts type of a plyfs mount (line: {e:?})"
    );
}

/// The mount.fuse helper: `PLYFS_TEST_MOUNT_FUSE` (a helper outside /sbin, run directly the way
/// mount(8) runs it), else one that mount(8) finds.
fn find_mount_fuse() -> Option<(PathBuf, bool)> {
    if let Some(p) = std::env::var_os("PLYFS_TEST_MOUNT_FUSE") {
        return Some((PathBuf::from(p), true));
    }
    ["/sbin", "/usr/sbin", "/bin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .flat_map(|d| ["mount.fuse3", "mount.fuse"].map(|n| Path::new(d).join(n)))
        .find(|p| p.exists())
        .map(|p| (p, false))
}

/// `fusermount3`: `PLYFS_TEST_FUSERMOUNT3` or the one in PATH.
fn fusermount3() -> Option<PathBuf> {
    let p = std::env::var_os("PLYFS_TEST_FUSERMOUNT3")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fusermount3"));
    let ok = Command::new(&p)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    ok.then_some(p)
}

#[test]
fn mount_t_fuse_plyfs() {
    if !require_root_and_fuse("mount_t_fuse_plyfs") {
        return;
    }
    let Some((helper, direct)) = find_mount_fuse() else {
        let line = "SKIPPED: mount_t_fuse_plyfs: needs /sbin/mount.fuse3 or mount.fuse (not found)";
        eprintln!("{line}");
        println!("{line}");
        return;
    };
    // mount.fuse3 runs the helper under a fixed secure PATH: plyfs must be installed there
    // (.ci/run installs the build into /usr/local/bin), and be this very build.
    let built = fs::read(PLYFS).unwrap();
    let installed = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ]
    .iter()
    .map(|d| Path::new(d).join("plyfs"))
    .find(|p| p.exists());
    match &installed {
        Some(p) if fs::read(p).ok().as_ref() == Some(&built) => {}
        other => {
            let line = format!(
                "SKIPPED: mount_t_fuse_plyfs: plyfs on the secure PATH is {other:?}, not this build \
                 (install target/release/plyfs into /usr/local/bin, as .ci/run does)"
            );
            eprintln!("{line}");
            println!("{line}");
            return;
        }
    }
    let f = fixture("mount-t");
    let path = std::env::var("PATH").unwrap_or_default();
    let src = format!("plyfs-mount-t-{}", std::process::id());
    let opts = format!("lowerdir={}", s(&f.lower));
    let mut cmd = if direct {
        // What mount(8) runs for `mount -t fuse.plyfs SRC MNT -o OPTS`.
        let mut c = Command::new(&helper);
        c.arg(&src)
            .arg(&f.mnt)
            .args(["-o", &opts, "-t", "fuse.plyfs"]);
        c
    } else {
        let mut c = Command::new("mount");
        c.args(["-t", "fuse.plyfs", &src])
            .arg(&f.mnt)
            .args(["-o", &opts]);
        c
    };
    let out = run_bounded(cmd.env("PATH", path), Duration::from_secs(20));
    let _g = MountGuard(f.mnt.clone());
    let pids = pids_with_arg(&f.mnt);
    assert!(
        out.status.success(),
        "mount -t fuse.plyfs (helper {}): {}: {}",
        helper.display(),
        out.status,
        out.stderr
    );
    let e = mount_entry(&f.mnt).expect("mounted");
    assert_eq!(e.source, src);
    assert_eq!(
        fs::read(f.mnt.join("hello")).unwrap(),
        b"hello from the lower\n"
    );
    assert!(unmount(&f.mnt));
    assert!(wait_pids_gone(&pids, Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------------------------
// Root: daemon life cycle
// ---------------------------------------------------------------------------------------------

#[test]
fn returns_only_once_mounted() {
    if !require_root_and_fuse("returns_only_once_mounted") {
        return;
    }
    let f = fixture("live");
    let o = format!("lowerdir={}", s(&f.lower));
    for _ in 0..3 {
        let out = run_plyfs(&["-o", &o, s(&f.mnt)]);
        let _g = MountGuard(f.mnt.clone());
        // Immediately: no sleeping, no retry.
        let mounted = is_mounted(&f.mnt);
        let content = fs::read(f.mnt.join("hello"));
        assert!(
            out.status.success(),
            "plyfs: {}: {}",
            out.status,
            out.stderr
        );
        assert!(
            mounted,
            "plyfs returned before the mount was in /proc/mounts"
        );
        assert_eq!(
            content.unwrap(),
            b"hello from the lower\n",
            "file not readable right after plyfs returned"
        );
        assert!(out.stderr.is_empty(), "stderr on success: {}", out.stderr);
    }
}

#[test]
fn daemon_exits_after_umount() {
    if !require_root_and_fuse("daemon_exits_after_umount") {
        return;
    }
    let f = fixture("exit-umount");
    let m = PlyMount::at(&format!("lowerdir={}", s(&f.lower)), &f.mnt);
    assert_eq!(m.pids.len(), 1, "daemon processes found: {:?}", m.pids);
    m.unmount();
}

#[test]
fn daemon_exits_after_lazy_umount() {
    if !require_root_and_fuse("daemon_exits_after_lazy_umount") {
        return;
    }
    let f = fixture("exit-umount-l");
    let m = PlyMount::at(&format!("lowerdir={}", s(&f.lower)), &f.mnt);
    let pids = m.pids.clone();
    assert_eq!(pids.len(), 1, "daemon processes found: {pids:?}");
    let st = Command::new("umount")
        .arg("-l")
        .arg(&f.mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        wait_pids_gone(&pids, Duration::from_secs(5)),
        "daemon {pids:?} alive 5 s after umount -l"
    );
}

#[test]
fn daemon_exits_after_fusermount3() {
    if !require_root_and_fuse("daemon_exits_after_fusermount3") {
        return;
    }
    let Some(fusermount3) = fusermount3() else {
        let line = "SKIPPED: daemon_exits_after_fusermount3: needs fusermount3 (not found)";
        eprintln!("{line}");
        println!("{line}");
        return;
    };
    let f = fixture("exit-fusermount");
    let m = PlyMount::at(&format!("lowerdir={}", s(&f.lower)), &f.mnt);
    let pids = m.pids.clone();
    let st = Command::new(&fusermount3)
        .arg("-u")
        .arg(&f.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u");
    assert!(!is_mounted(&f.mnt));
    assert!(
        wait_pids_gone(&pids, Duration::from_secs(5)),
        "daemon {pids:?} alive 5 s after fusermount3 -u"
    );
}

#[test]
fn daemon_stdio_detached() {
    if !require_root_and_fuse("daemon_stdio_detached") {
        return;
    }
    let f = fixture("stdio");
    let mut child = Command::new(PLYFS)
        .args(["-o", &format!("lowerdir={}", s(&f.lower))])
        .arg(&f.mnt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdin = child.stdin.take().unwrap();
    let status = wait_child(&mut child, Duration::from_secs(20));
    let _g = MountGuard(f.mnt.clone());
    assert!(
        status.is_some_and(|s| s.success()),
        "plyfs parent: {status:?}"
    );
    let started = Instant::now();
    let err = read_to_eof_within(stderr, Duration::from_secs(3));
    let out = read_to_eof_within(stdout, Duration::from_secs(3));
    assert!(
        err.is_some(),
        "the daemon keeps the stderr pipe open ({:?} after the parent exited)",
        started.elapsed()
    );
    assert!(out.is_some(), "the daemon keeps the stdout pipe open");
    assert_eq!(err.unwrap(), b"", "stderr of a successful mount");
    // stdin: the daemon must not hold the read end either; nothing to check portably beyond
    // not blocking, so just close it.
    drop(stdin);
    assert!(is_mounted(&f.mnt), "the mount went away with the parent");
    assert_eq!(
        fs::read(f.mnt.join("hello")).unwrap(),
        b"hello from the lower\n"
    );
}

#[test]
fn foreground_stays_and_sigterm_unmounts() {
    if !require_root_and_fuse("foreground_stays_and_sigterm_unmounts") {
        return;
    }
    let f = fixture("foreground");
    let mut child = Command::new(PLYFS)
        .args(["-f", "-o", &format!("lowerdir={}", s(&f.lower))])
        .arg(&f.mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _g = MountGuard(f.mnt.clone());
    let end = Instant::now() + Duration::from_secs(10);
    while !is_mounted(&f.mnt) && Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("plyfs -f exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(is_mounted(&f.mnt), "plyfs -f did not mount within 10 s");
    assert_eq!(
        fs::read(f.mnt.join("hello")).unwrap(),
        b"hello from the lower\n"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "plyfs -f must stay in the foreground"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = wait_child(&mut child, Duration::from_secs(5));
    assert!(st.is_some(), "plyfs -f still running 5 s after SIGTERM");
    assert!(!is_mounted(&f.mnt), "still mounted after SIGTERM");
}
