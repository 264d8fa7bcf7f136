//! FUSE over io_uring (root, /dev/fuse, the kernel's overlay and a fuse module with the
//! `enable_uring` parameter needed; skipped with a printed reason otherwise). The test turns the
//! parameter on for its run and puts it back after. The mounts must then serve their requests
//! through io_uring queues (the `uring_requests` counter of `plyfs.stats`), and through them
//! behave as the kernel's overlay: the random operations of `random_ops.rs`, a read of a big
//! lower file, the listing of a wide directory, xattrs, symlinks and statfs, and data written
//! and read through the daemon (a `noatime` mount: no passthrough).

mod common;

use common::ops::*;
use common::*;
use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// The fuse module's `enable_uring`, on while this lives, back to what it was after; the tests
/// that turn it on take turns.
struct UringOn {
    before: String,
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl UringOn {
    fn new(test: &str) -> Option<UringOn> {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(before) = fs::read_to_string(PARAM) else {
            skip(test, "the fuse module has no enable_uring parameter");
            return None;
        };
        if fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "2") {
            skip(test, "io_uring is disabled (kernel.io_uring_disabled=2)");
            return None;
        }
        if let Err(e) = fs::write(PARAM, "Y") {
            skip(test, &format!("cannot turn on {PARAM}: {e}"));
            return None;
        }
        Some(UringOn {
            before: before.trim().to_string(),
            _turn: turn,
        })
    }
}

impl Drop for UringOn {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, &self.before);
    }
}

fn stats(mnt: &Path) -> HashMap<String, u64> {
    let v = xattr::get(mnt, "plyfs.stats").unwrap().unwrap();
    String::from_utf8(v)
        .unwrap()
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Bytes that differ from offset to offset (so a misplaced chunk shows).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// Adds, to the lowest layer, a 3 MiB file, a directory of 3000 names, a symlink and a file with
/// user xattrs.
fn add_lower_data(l: &Layers) {
    let low = l.lowers.last().unwrap();
    fs::write(low.join("big.bin"), pattern(3 << 20, 7)).unwrap();
    let wide = low.join("wide");
    fs::create_dir(&wide).unwrap();
    for i in 0..3000 {
        fs::write(wide.join(format!("entry-with-a-longer-name-{i:05}")), b"").unwrap();
    }
    std::os::unix::fs::symlink("big.bin", low.join("link")).unwrap();
    fs::write(low.join("tagged"), b"x").unwrap();
    xattr::set(low.join("tagged"), "user.a", b"first").unwrap();
    xattr::set(low.join("tagged"), "user.b", &[9u8; 300]).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// For a test against the kernel's overlay: `enable_uring` on, and two identical sets of the
/// demo layers (the kernel's, plyfs's); None (after saying why) where it cannot run.
fn kernel_pair(test: &str) -> Option<(UringOn, Layers, Layers)> {
    if !require_kernel_overlay(test) {
        return None;
    }
    let on = UringOn::new(test)?;
    Some((on, Layers::build("demo", &[]), Layers::build("demo", &[])))
}

#[test]
fn io_uring_reads_lists_and_describes_as_the_kernel_overlay() {
    let test = "io_uring_reads_lists_and_describes_as_the_kernel_overlay";
    let Some((_on, kl, pl)) = kernel_pair(test) else {
        return;
    };
    add_lower_data(&kl);
    add_lower_data(&pl);
    let km = KernelMount::new(&kl.opts);
    let pm = PlyMount::new(&pl.opts);
    let before = stats(&pm.mnt)["uring_requests"];

    // Reads of a lower file (through the daemon: lower files have no passthrough).
    let mut got = Vec::new();
    fs::File::open(pm.path("big.bin"))
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert!(got == pattern(3 << 20, 7), "big.bin read back differs");
    let f = fs::File::open(pm.path("big.bin")).unwrap();
    let mut part = vec![0u8; 10_000];
    f.read_exact_at(&mut part, (1 << 20) - 17).unwrap();
    assert!(part[..] == pattern(3 << 20, 7)[(1 << 20) - 17..][..10_000]);
    drop(f);

    // A listing over many READDIRPLUS replies; symlinks; xattrs; statfs.
    assert_eq!(names(&pm.path("wide")), names(&km.mnt.join("wide")));
    assert_eq!(
        fs::read_link(pm.path("link")).unwrap(),
        fs::read_link(km.mnt.join("link")).unwrap()
    );
    let list = |m: &Path| {
        let mut v: Vec<_> = xattr::list(m.join("tagged")).unwrap().collect();
        v.sort();
        v
    };
    assert_eq!(list(&pm.mnt), list(&km.mnt));
    for name in ["user.a", "user.b", "user.none"] {
        assert_eq!(
            xattr::get(pm.path("tagged"), name).unwrap(),
            xattr::get(km.mnt.join("tagged"), name).unwrap(),
            "{name}"
        );
    }
    let (ps, ks) = (
        nix::sys::statvfs::statvfs(&pm.mnt).unwrap(),
        nix::sys::statvfs::statvfs(&km.mnt).unwrap(),
    );
    assert_eq!(
        (ps.blocks(), ps.block_size(), ps.files()),
        (ks.blocks(), ks.block_size(), ks.files())
    );
    let served = stats(&pm.mnt)["uring_requests"] - before;
    assert!(served > 20, "only {served} requests came through io_uring");
    pm.unmount();

    // Past `plus_entries`, entries listed by name alone: the same names, inode numbers and
    // attributes (the real files'), each found by a lookup of its own.
    let opts = format!("{},plus_entries=100", pl.ro_opts());
    let names_only = PlyMount::new(&opts);
    let wide = names_only.path("wide");
    assert_eq!(names(&wide), names(&km.mnt.join("wide")));
    // Stats by path, after the listings (not reading the directory again).
    let stat_all = |m: &PlyMount| {
        let before = stats(&m.mnt)["uring_requests"];
        for name in names(&km.mnt.join("wide")) {
            fs::symlink_metadata(m.path("wide").join(name)).unwrap();
        }
        stats(&m.mnt)["uring_requests"] - before
    };
    // A name that is not there starts no statahead.
    assert!(fs::symlink_metadata(names_only.path("wide/not-there")).is_err());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(stats(&names_only.mnt)["statahead"], 0);
    // The listing the kernel kept has 2900 entries without attributes: a walk after it
    // looks them up one by one.
    let looked_up = stat_all(&names_only);
    assert!(looked_up >= 2900, "{looked_up} requests for 3000 stats");
    // The first of those lookups set the statahead thread statting the real directory.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stats(&names_only.mnt)["statahead"] < 3000 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(stats(&names_only.mnt)["statahead"], 3000);
    names_only.unmount();

    // Listed a second time, a directory goes in full: a walk after the second listing asks
    // nothing more.
    let listed_twice = PlyMount::new(&opts);
    let wide = listed_twice.path("wide");
    assert_eq!(names(&wide), names(&km.mnt.join("wide")));
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    for (i, e) in fs::read_dir(&wide).unwrap().enumerate() {
        let e = e.unwrap();
        if i % 97 != 0 {
            continue;
        }
        // Against the real file (the kernel's layers were written at another moment).
        let real = pl.lowers.last().unwrap().join("wide").join(e.file_name());
        let (m, k) = (e.metadata().unwrap(), fs::symlink_metadata(real).unwrap());
        assert_eq!(e.ino(), m.ino(), "{:?}: d_ino and st_ino", e.file_name());
        assert_eq!(
            (m.mode(), m.size(), m.mtime()),
            (k.mode(), k.size(), k.mtime())
        );
    }
    let asked = stat_all(&listed_twice);
    assert!(
        asked < 100,
        "{asked} requests for 3000 stats after a full listing"
    );
    // Part of the full listing was looked up ahead of the kernel's reads (`ahead.rs`).
    let ahead = stats(&listed_twice.mnt)["listed_ahead"];
    assert!(ahead > 100, "{ahead} of 3000 entries listed ahead");
    assert_eq!(
        stats(&listed_twice.mnt)["statahead"],
        0,
        "no lookup, no statahead"
    );
    listed_twice.unmount();

    // A reader that stats as it lists gets the rest of the listing in full once its first
    // lookup past the first 100 entries comes in.
    let interleaved = PlyMount::new(&opts);
    let wide = interleaved.path("wide");
    let before = stats(&interleaved.mnt)["uring_requests"];
    for e in fs::read_dir(&wide).unwrap() {
        fs::symlink_metadata(wide.join(e.unwrap().file_name())).unwrap();
    }
    let asked = stats(&interleaved.mnt)["uring_requests"] - before;
    assert!(
        asked < 1500,
        "{asked} requests to list and stat 3000 entries"
    );
    interleaved.unmount();
}

#[test]
fn io_uring_random_operations_match_the_kernel() {
    let test = "io_uring_random_operations_match_the_kernel";
    let Some((_on, kl, pl)) = kernel_pair(test) else {
        return;
    };
    let km = KernelMount::new(&format!("{},index=on,redirect_dir=on", kl.opts));
    let pm = PlyMount::new(&pl.opts);
    let before = stats(&pm.mnt)["uring_requests"];
    let mut rng = Rng(0x0075_7269_6e67);
    for step in 0..200 {
        let op = generate(&mut rng);
        let (k, p) = (apply(&km.mnt, &op), apply(&pm.mnt, &op));
        assert_eq!(p, k, "step {step} {op:?}");
        let (kd, pd) = (dump(&km.mnt), dump(&pm.mnt));
        if kd != pd {
            assert_same_dump(&format!("step {step} {op:?}"), &kd, &pd);
        }
    }
    let served = stats(&pm.mnt)["uring_requests"] - before;
    println!("{test}: {served} requests through io_uring");
    assert!(
        served > 1000,
        "only {served} requests came through io_uring"
    );
    pm.unmount();
    drop(km);
    let expected = dump(&KernelMount::new(&format!("{},index=on,redirect_dir=on", kl.opts)).mnt);
    let kernel_on_plyfs =
        dump(&KernelMount::new(&format!("{},index=on,redirect_dir=on", pl.opts)).mnt);
    assert_same_dump("kernel reading plyfs's layers", &expected, &kernel_on_plyfs);
}

#[test]
fn io_uring_carries_written_data() {
    let test = "io_uring_carries_written_data";
    if !require_root_and_fuse(test) {
        return;
    }
    let Some(_on) = UringOn::new(test) else {
        return;
    };
    let l = Layers::build("demo", &[]);
    // `noatime`: plyfs reads and writes the real files itself, so the data crosses the rings.
    let pm = PlyMount::new(&format!("{},noatime", l.opts));
    let before = stats(&pm.mnt)["uring_requests"];
    let data = pattern(5 << 20, 11);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(pm.path("written"))
        .unwrap();
    // Chunks of odd sizes, some larger than one request (1 MiB).
    let mut at = 0;
    for (i, len) in [1usize, 4095, 65537, 1 << 20, (1 << 20) + 3, 777]
        .iter()
        .cycle()
        .enumerate()
    {
        if at >= data.len() {
            break;
        }
        let end = (at + len + i).min(data.len());
        f.write_all(&data[at..end]).unwrap();
        at = end;
    }
    f.sync_all().unwrap();
    // Rewrite a middle range, then read everything back through the mount and from the upper.
    f.seek(SeekFrom::Start(3_000_001)).unwrap();
    f.write_all(&[0xee; 5000]).unwrap();
    let mut expected = data.clone();
    expected[3_000_001..3_005_001].fill(0xee);
    let mut got = Vec::new();
    let mut r = fs::File::open(pm.path("written")).unwrap();
    r.read_to_end(&mut got).unwrap();
    assert!(got == expected, "data read through the mount differs");
    drop((f, r));
    assert!(fs::read(l.upper.join("written")).unwrap() == expected);
    let served = stats(&pm.mnt)["uring_requests"] - before;
    assert!(served > 10, "only {served} requests came through io_uring");
    pm.unmount();
}

#[test]
fn io_uring_mounts_take_forgets_in_batches() {
    let test = "io_uring_mounts_take_forgets_in_batches";
    if !require_root_and_fuse(test) {
        return;
    }
    let Some(_on) = UringOn::new(test) else {
        return;
    };
    let l = Layers::build("demo", &[]);
    let pm = PlyMount::new(&l.opts);
    let dir = pm.path("many");
    fs::create_dir(&dir).unwrap();
    for i in 0..2000 {
        fs::write(dir.join(format!("f{i:04}")), b"x").unwrap();
    }
    let at_start = stats(&pm.mnt);
    assert!(at_start["uring_requests"] > 2000, "{at_start:?}");
    // Each removed file's inode is forgotten: 2000 forgets, which come through /dev/fuse.
    for i in 0..2000 {
        fs::remove_file(dir.join(format!("f{i:04}"))).unwrap();
    }
    // All of them reach the daemon (its nodes go) ...
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stats(&pm.mnt)["nodes"] > at_start["nodes"] - 2000 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let at_end = stats(&pm.mnt);
    assert_eq!(at_end["nodes"], at_start["nodes"] - 2000, "{at_end:?}");
    // ... gathered into batches: read one by one they were about 2000 reads.
    let reads = at_end["forget_reads"] - at_start["forget_reads"];
    assert!(reads < 500, "{reads} reads of forgets for 2000 files");
    pm.unmount();
}
