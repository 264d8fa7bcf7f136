//! NFS export: FUSE file handles taken with `name_to_handle_at` on a plyfs mount decode with
//! `open_by_handle_at` to the same object while cached, after the kernel dropped its caches
//! (the daemon's `LOOKUP(id, ".")` path, checked in its log), after an ancestor rename, after
//! copy-up, after a clean remount and after `kill -9` of the daemon; deleted objects give
//! ESTALE, each next to a positive control in the same pass.

mod common;

use common::*;
use plyfs::sys::handle::{name_to_handle_at, open_by_handle_at, FileHandle};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The FUSE file handle of `path` (not following a symlink).
fn handle(path: &Path) -> FileHandle {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    name_to_handle_at(f.as_fd(), c"", 0)
        .unwrap_or_else(|e| panic!("name_to_handle_at {}: {e}", path.display()))
        .0
}

fn decode(mnt: &Path, h: &FileHandle) -> std::io::Result<File> {
    let m = File::open(mnt)?;
    open_by_handle_at(m.as_fd(), h, libc::O_RDONLY).map(File::from)
}

fn drop_caches() {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop_caches");
}

/// An object whose handle was taken, and what decoding it must give.
struct Obj {
    name: &'static str,
    handle: FileHandle,
    ino: u64,
    /// A file's content, or a directory's sorted entry names joined by ','.
    content: String,
}

fn content_of(f: &mut File, is_dir: bool) -> String {
    if is_dir {
        let mut names: Vec<String> = fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(f)
        ))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
        names.sort();
        names.join(",")
    } else {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    }
}

impl Obj {
    fn take(name: &'static str, path: &Path) -> Obj {
        let md = fs::symlink_metadata(path).unwrap();
        let mut f = File::open(path).unwrap();
        Obj {
            name,
            handle: handle(path),
            ino: md.ino(),
            content: content_of(&mut f, md.is_dir()),
        }
    }

    /// Decodes the handle and checks it is this object, with `content` (when given).
    fn check(&self, mnt: &Path, phase: &str) {
        let mut f = decode(mnt, &self.handle)
            .unwrap_or_else(|e| panic!("{phase}: {} does not decode: {e}", self.name));
        let md = f.metadata().unwrap();
        assert_eq!(
            md.ino(),
            self.ino,
            "{phase}: {} decoded to another inode",
            self.name
        );
        let got = content_of(&mut f, md.is_dir());
        assert_eq!(got, self.content, "{phase}: {} content", self.name);
    }

    fn check_stale(&self, mnt: &Path, phase: &str) {
        match decode(mnt, &self.handle) {
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {}
            Err(e) => panic!("{phase}: deleted {} gave {e}, not ESTALE", self.name),
            Ok(f) => panic!(
                "{phase}: deleted {} still decodes (inode {})",
                self.name,
                f.metadata().unwrap().ino()
            ),
        }
    }
}

struct Setup {
    _tmp: TempDir,
    opts: String,
    mnt: PathBuf,
    log: PathBuf,
}

impl Setup {
    /// lower: d1/d2/d3/{f,keep,gone}, d1/d2/dd/, d1/lf, hl; upper and work empty.
    fn new() -> Setup {
        let tmp = TempDir::new("export");
        let (l, u, w) = (tmp.mkdir("lower"), tmp.mkdir("upper"), tmp.mkdir("work"));
        fs::create_dir_all(l.join("d1/d2/d3")).unwrap();
        fs::create_dir_all(l.join("d1/d2/dd")).unwrap();
        fs::write(l.join("d1/d2/d3/f"), "f-data\n").unwrap();
        fs::write(l.join("d1/d2/d3/keep"), "keep\n").unwrap();
        fs::write(l.join("d1/d2/d3/gone"), "gone\n").unwrap();
        fs::write(l.join("d1/lf"), "lf\n").unwrap();
        fs::write(l.join("hl"), "hl\n").unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            l.display(),
            u.display(),
            w.display()
        );
        let mnt = tmp.mkdir("mnt");
        let log = tmp.join("plyfs.log");
        Setup {
            _tmp: tmp,
            opts,
            mnt,
            log,
        }
    }

    fn mount(&self) -> PlyMount {
        PlyMount::with_env(
            &[
                OsStr::new("-o"),
                OsStr::new(&self.opts),
                self.mnt.as_os_str(),
            ],
            &self.mnt,
            &[
                ("PLYFS_LOG", OsStr::new("plyfs::reconnect=debug")),
                ("PLYFS_LOG_FILE", self.log.as_os_str()),
            ],
        )
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Asserts the kernel asked the daemon for each of `objs` by id alone (`LOOKUP(id, ".")`,
    /// logged as `decoded`) since the log was last cut, and cuts it. (Whether the daemon then
    /// still had the node, because the kernel's FORGET had not reached it yet, is its business;
    /// `assert_rebuilt` checks the record was used.)
    fn assert_decoded(&self, objs: &[&Obj]) {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        for obj in objs {
            let line = format!("decoded id={}", obj.ino);
            assert!(
                log.lines().any(|l| l.ends_with(&line)),
                "{} was not decoded through LOOKUP(id, \".\"); log:\n{log}",
                obj.name
            );
        }
        fs::write(&self.log, "").unwrap();
    }

    /// Drops the kernel's caches and decodes `obj`, again (up to 5 times) until the daemon's
    /// log shows the kernel asked for it by id: on a loaded machine a drop_caches can leave an
    /// inode in use for a moment.
    fn check_cold(&self, obj: &Obj, phase: &str) {
        let line = format!("decoded id={}", obj.ino);
        for _ in 0..5 {
            drop_caches();
            obj.check(&self.mnt, phase);
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            if log.lines().any(|l| l.ends_with(&line)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts the daemon found `obj` again from the export record alone.
    fn assert_rebuilt(&self, obj: &Obj) {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            log.contains(&format!("reconnecting id={} ", obj.ino)),
            "{} was not found again from the record; log:\n{log}",
            obj.name
        );
    }
}

#[test]
fn handles_decode_after_drop_caches_rename_copy_up_and_delete() {
    if !require_root_and_fuse("handles_decode_after_drop_caches_rename_copy_up_and_delete") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    fs::create_dir_all(s.p("new/sub")).unwrap();
    fs::write(s.p("new/sub/g"), "upper\n").unwrap();
    fs::write(s.p("new/sub/gone2"), "x\n").unwrap();
    let d3 = Obj::take("lower nested dir d3", &s.p("d1/d2/d3"));
    let f = Obj::take("lower nested file f", &s.p("d1/d2/d3/f"));
    let lf = Obj::take("lower file lf", &s.p("d1/lf"));
    let sub = Obj::take("upper dir sub", &s.p("new/sub"));
    let g = Obj::take("upper file g", &s.p("new/sub/g"));
    let keep = Obj::take("lower file keep", &s.p("d1/d2/d3/keep"));
    let gone = Obj::take("lower file gone", &s.p("d1/d2/d3/gone"));
    let gone2 = Obj::take("upper file gone2", &s.p("new/sub/gone2"));
    let dd = Obj::take("lower dir dd", &s.p("d1/d2/dd"));
    let live = [&d3, &f, &lf, &sub, &g, &keep];

    for o in live.iter().chain([&gone, &gone2, &dd].iter()) {
        o.check(&s.mnt, "cached");
    }

    for o in live.iter().chain([&gone, &gone2, &dd].iter()) {
        s.check_cold(o, "after drop_caches");
    }
    s.assert_decoded(&[&d3, &f, &sub, &g]);

    // Ancestor renames: a lower dir (moves with a redirect) and an upper one.
    fs::rename(s.p("d1"), s.p("e1")).unwrap();
    fs::rename(s.p("new"), s.p("newer")).unwrap();
    drop_caches();
    for o in live {
        o.check(&s.mnt, "after ancestor renames");
    }
    let fd = decode(&s.mnt, &d3.handle).unwrap();
    assert_eq!(
        fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap(),
        s.p("e1/d2/d3"),
        "the decoded directory is connected at its new place"
    );
    drop(fd);

    // Copy-up: the handle taken on the lower file now names the upper copy.
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("e1/d2/d3/f"))
        .and_then(|mut w| std::io::Write::write_all(&mut w, b"more\n"))
        .unwrap();
    fs::set_permissions(
        s.p("e1/lf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let f = Obj {
        content: "f-data\nmore\n".into(),
        ..f
    };
    for o in [&f, &lf] {
        s.check_cold(o, "after copy-up");
    }
    s.assert_decoded(&[&f, &lf]);
    assert_eq!(
        decode(&s.mnt, &lf.handle)
            .unwrap()
            .metadata()
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );

    // Deleted objects: ESTALE, next to live ones that still decode.
    fs::remove_file(s.p("e1/d2/d3/gone")).unwrap();
    fs::remove_file(s.p("newer/sub/gone2")).unwrap();
    fs::remove_dir(s.p("e1/d2/dd")).unwrap();
    drop_caches();
    for o in [&gone, &gone2, &dd] {
        o.check_stale(&s.mnt, "after delete");
    }
    let d3 = Obj {
        content: "f,keep".into(),
        ..d3
    };
    let sub = Obj {
        content: "g".into(),
        ..sub
    };
    for o in [&d3, &f, &keep, &sub, &g] {
        o.check(&s.mnt, "positive control after delete");
    }
    m.unmount();
}

#[test]
fn handles_survive_remount_and_kill() {
    if !require_root_and_fuse("handles_survive_remount_and_kill") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    fs::create_dir_all(s.p("new/sub")).unwrap();
    fs::write(s.p("new/sub/g"), "upper\n").unwrap();
    fs::write(s.p("d1/lf"), "lf copied up\n").unwrap();
    fs::rename(s.p("d1/d2"), s.p("d1/moved")).unwrap();
    let objs = [
        Obj::take("lower nested dir d3", &s.p("d1/moved/d3")),
        Obj::take("lower nested file f", &s.p("d1/moved/d3/f")),
        Obj::take("copied-up file lf", &s.p("d1/lf")),
        Obj::take("upper dir sub", &s.p("new/sub")),
        Obj::take("upper file g", &s.p("new/sub/g")),
    ];
    let gone = Obj::take("lower file gone", &s.p("d1/moved/d3/gone"));
    fs::remove_file(s.p("d1/moved/d3/gone")).unwrap();
    let objs = objs.map(|o| match o.name {
        "lower nested dir d3" => Obj {
            content: "f,keep".into(),
            ..o
        },
        _ => o,
    });
    m.unmount();

    let m = s.mount();
    for o in &objs {
        s.check_cold(o, "after a clean remount");
    }
    gone.check_stale(&s.mnt, "after a clean remount");
    s.assert_rebuilt(&objs[0]);
    s.assert_decoded(&objs.iter().collect::<Vec<_>>());

    // kill -9 right after more changes, then `umount -l` and a new daemon.
    fs::rename(s.p("new"), s.p("renamed")).unwrap();
    for &pid in &m.pids {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    assert!(wait_pids_gone(&m.pids, Duration::from_secs(5)));
    std::process::Command::new("umount")
        .arg("-l")
        .arg(&s.mnt)
        .status()
        .unwrap();
    drop(m);
    fs::write(&s.log, "").unwrap();
    let m = s.mount();
    for o in &objs {
        s.check_cold(o, "after kill -9 and a new mount");
    }
    s.assert_rebuilt(&objs[0]);
    s.assert_decoded(&objs.iter().collect::<Vec<_>>());
    gone.check_stale(&s.mnt, "after kill -9 and a new mount");
    assert!(s.p("renamed/sub/g").exists());
    m.unmount();
}

#[test]
fn hard_links_decode_to_one_inode() {
    if !require_root_and_fuse("hard_links_decode_to_one_inode") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    fs::create_dir(s.p("other")).unwrap();
    fs::hard_link(s.p("hl"), s.p("other/hl2")).unwrap();
    let a = Obj::take("link hl", &s.p("hl"));
    let b = Obj::take("link other/hl2", &s.p("other/hl2"));
    assert_eq!(a.handle, b.handle, "one inode, one handle");
    drop_caches();
    a.check(&s.mnt, "after drop_caches");
    fs::remove_file(s.p("other/hl2")).unwrap();
    drop_caches();
    a.check(&s.mnt, "after the other link went away");
    fs::remove_file(s.p("hl")).unwrap();
    drop_caches();
    a.check_stale(&s.mnt, "after the last link went away");
    m.unmount();
}

/// Renames of a directory's ancestors race decodes of its handle: every decode gives that
/// directory or ESTALE, never another one, and the test ends (no hang).
#[test]
fn decodes_racing_ancestor_renames() {
    if !require_root_and_fuse("decodes_racing_ancestor_renames") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    let d3 = Obj::take("d3", &s.p("d1/d2/d3"));
    let stop = Arc::new(AtomicBool::new(false));
    let renamer = {
        let (stop, mnt) = (stop.clone(), s.mnt.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let names = [
                ("d1", "x1"),
                ("x1/d2", "x1/y2"),
                ("x1/y2", "x1/d2"),
                ("x1", "d1"),
            ];
            while !stop.load(Ordering::Relaxed) {
                let (a, b) = names[(n % 4) as usize];
                fs::rename(mnt.join(a), mnt.join(b)).unwrap();
                n += 1;
            }
            n
        })
    };
    let (mut ok, mut stale, mut n) = (0, 0, 0);
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end {
        if n % 2 == 0 {
            drop_caches();
        }
        n += 1;
        match decode(&s.mnt, &d3.handle) {
            Ok(f) => {
                assert_eq!(
                    f.metadata().unwrap().ino(),
                    d3.ino,
                    "decoded another directory"
                );
                ok += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => stale += 1,
            Err(e) => panic!("decode gave {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let renames = renamer.join().unwrap();
    eprintln!("{n} decodes ({ok} ok, {stale} ESTALE) against {renames} renames");
    assert!(ok > 0, "no decode succeeded");
    let log = fs::read_to_string(&s.log).unwrap_or_default();
    let cold = log.matches(&format!("reconnecting id={} ", d3.ino)).count();
    eprintln!("{cold} of them reconnected from the id alone");
    assert!(cold > 0, "the race never took the uncached path");
    assert!(renames > 10, "the renames did not run");
    d3.check(&s.mnt, "after the race");
    m.unmount();
}

/// A lowerdir-only mount keeps its record in memory: handles decode after the kernel forgot
/// them. With `nfs_export=off` they do not (the kernel has no way to ask), as the option says.
#[test]
fn read_only_mounts_decode_and_export_off_does_not() {
    if !require_root_and_fuse("read_only_mounts_decode_and_export_off_does_not") {
        return;
    }
    let s = Setup::new();
    let lower = s._tmp.join("lower");
    for (opts, decodes) in [
        (format!("lowerdir={}", lower.display()), true),
        (format!("{},nfs_export=off", s.opts), false),
    ] {
        let m = PlyMount::with_env(
            &[OsStr::new("-o"), OsStr::new(&opts), s.mnt.as_os_str()],
            &s.mnt,
            &[],
        );
        let d3 = Obj::take("d3", &s.p("d1/d2/d3"));
        let f = Obj::take("f", &s.p("d1/d2/d3/f"));
        d3.check(&s.mnt, &opts);
        for o in [&d3, &f] {
            // drop_caches stops early when the system is busy (other tests in parallel), and
            // a cached inode decodes without export: one drop that evicts it is enough.
            let mut tries = 5;
            loop {
                drop_caches();
                match decode(&s.mnt, &o.handle) {
                    Ok(_) if decodes => o.check(&s.mnt, &opts),
                    Ok(_) if !decodes && tries > 1 => {
                        tries -= 1;
                        continue;
                    }
                    Err(e) if !decodes && e.raw_os_error() == Some(libc::ESTALE) => {}
                    other => panic!("{opts}: {} decoded to {other:?}", o.name),
                }
                break;
            }
        }
        m.unmount();
    }
}

/// An upper inode number reused by a new file: the old handle is ESTALE (its generation no
/// longer matches), the new file's handle decodes to the new file.
#[test]
fn reused_inode_numbers_get_a_new_generation() {
    if !require_root_and_fuse("reused_inode_numbers_get_a_new_generation") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    fs::create_dir(s.p("dir")).unwrap();
    fs::write(s.p("dir/old"), "old\n").unwrap();
    let old = Obj::take("old", &s.p("dir/old"));
    fs::remove_file(s.p("dir/old")).unwrap();
    let mut reused = None;
    for i in 0..50 {
        let p = s.p(&format!("dir/new{i}"));
        fs::write(&p, "new\n").unwrap();
        if fs::metadata(&p).unwrap().ino() == old.ino {
            reused = Some(p);
            break;
        }
    }
    let Some(p) = reused else {
        eprintln!(
            "SKIP part: ext4 did not reuse inode {} in 50 creates",
            old.ino
        );
        drop_caches();
        old.check_stale(&s.mnt, "deleted, not reused");
        m.unmount();
        return;
    };
    let new = Obj::take("new file on the reused inode number", &p);
    assert_eq!(new.ino, old.ino);
    assert_ne!(new.handle, old.handle, "the generation tells them apart");
    for o in [&old, &new] {
        drop_caches();
        if std::ptr::eq(o, &old) {
            o.check_stale(&s.mnt, "reused inode number");
        } else {
            o.check(&s.mnt, "reused inode number");
        }
    }
    m.unmount();
}

/// A FUSE file handle (`fuse_encode_fh`: node id high and low words, generation; type 0x81).
fn fuse_handle(id: u64, generation: u32) -> FileHandle {
    let words = [(id >> 32) as u32, id as u32, generation];
    FileHandle {
        handle_type: 0x81,
        bytes: words.iter().flat_map(|w| w.to_ne_bytes()).collect(),
    }
}

/// Hostile handles (random ids and generations, ids next to real ones, real ids with wrong
/// generations, deleted objects) and a scribbled-over export record: every decode is ESTALE
/// (or another errno the kernel gives for a malformed handle) or the very object the id names,
/// never another one; the daemon survives all of it.
#[test]
fn hostile_handles_give_estale_or_the_right_object() {
    if !require_root_and_fuse("hostile_handles_give_estale_or_the_right_object") {
        return;
    }
    let s = Setup::new();
    let m = s.mount();
    fs::create_dir_all(s.p("up/a/b")).unwrap();
    for i in 0..20 {
        fs::write(s.p(&format!("up/a/b/f{i}")), format!("{i}\n")).unwrap();
    }
    fs::write(s.p("d1/lf"), "copied up\n").unwrap();
    let deleted = Obj::take("deleted", &s.p("up/a/b/f0"));
    fs::remove_file(s.p("up/a/b/f0")).unwrap();
    let tree = walk(&s.mnt);
    let real: Vec<(u64, FileHandle)> = tree
        .keys()
        .map(|rel| (tree[rel].ino, handle(&s.mnt.join(rel))))
        .collect();
    m.unmount();

    // Scribble over the record slots of some real ids (and the rest of the file stays).
    let record = s._tmp.join("work/plyfs-export/fs0");
    let f = fs::OpenOptions::new().write(true).open(&record).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    use std::os::unix::fs::FileExt;
    let mut scribbled = Vec::new();
    for (i, (ino, _)) in real.iter().enumerate() {
        if i % 3 == 0 {
            let junk: Vec<u8> = (0..64).map(|_| next() as u8).collect();
            f.write_at(&junk, ino * 64).unwrap();
            scribbled.push(*ino);
        } else if i % 3 == 1 {
            // A well-formed slot that points elsewhere: magic, directory, a handle of the root.
            let mut slot = [0u8; 64];
            slot[..4].copy_from_slice(b"PLY1");
            slot[4] = if next() % 2 == 0 { 1 } else { 2 };
            slot[16..24].copy_from_slice(&(next() % 4096).to_le_bytes());
            f.write_at(&slot, ino * 64).unwrap();
        }
    }
    drop(f);

    let m = s.mount();
    let by_ino: std::collections::HashMap<u64, &PathBuf> =
        tree.iter().map(|(p, ids)| (ids.ino, p)).collect();
    let mut handles: Vec<FileHandle> = Vec::new();
    for (ino, h) in &real {
        handles.push(h.clone());
        let gen = u32::from_ne_bytes(h.bytes[8..12].try_into().unwrap());
        handles.push(fuse_handle(*ino, gen.wrapping_add(1)));
        handles.push(fuse_handle(ino + 1, gen));
        handles.push(fuse_handle(ino.wrapping_sub(1), 0));
        handles.push(fuse_handle(ino | 1 << 63, gen));
    }
    handles.push(deleted.handle.clone());
    for _ in 0..1500 {
        let id = match next() % 4 {
            0 => next(),
            1 => next() % 100_000_000,
            2 => ((next() % 4) << 56) | (next() % 20_000_000),
            _ => 1,
        };
        handles.push(fuse_handle(id, next() as u32 % 3));
    }
    let (mut ok, mut stale) = (0, 0);
    for (i, h) in handles.iter().enumerate() {
        if i % 250 == 0 {
            drop_caches();
        }
        let id = (u64::from(u32::from_ne_bytes(h.bytes[0..4].try_into().unwrap())) << 32)
            | u64::from(u32::from_ne_bytes(h.bytes[4..8].try_into().unwrap()));
        match decode(&s.mnt, h) {
            Ok(f) => {
                let ino = f.metadata().unwrap().ino();
                assert_eq!(ino, id, "handle of id {id} decoded to inode {ino}");
                assert!(
                    by_ino.contains_key(&ino) || ino == 1,
                    "id {id} decoded to an object that is not in the tree"
                );
                ok += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => stale += 1,
            Err(e) => panic!("handle of id {id}: {e}"),
        }
    }
    eprintln!(
        "{} hostile or real handles: {ok} decoded to their own object, {stale} ESTALE ({} slots scribbled)",
        handles.len(),
        scribbled.len()
    );
    assert!(
        ok >= real.len() / 3,
        "real handles with intact slots must decode"
    );
    deleted.check_stale(&s.mnt, "after the fuzz");
    assert!(s.p("up/a/b/f1").exists(), "the daemon still serves");
    m.unmount();
}
