//! Limits (root and /dev/fuse needed; skipped with a printed reason otherwise): a lower
//! directory of N entries lists in full and looks up, and a lower tree of N files walks, with
//! the daemon's memory inside the README's bound: at most 64 MiB plus 1 KiB per inode the
//! kernel holds. When the kernel forgets (drop_caches), the node table empties and the heap
//! goes back to the system: resident memory under 64 MiB again, and a second walk peaks no
//! higher than the first. CI: N = 100000; `PLYFS_LIMITS_N=1000000` is the long run (README).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// `VmRSS` and `VmHWM` (peak) of `pid`, in bytes.
fn memory(pid: i32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak (`VmHWM`) of `pid` to its current resident size.
fn reset_peak(pid: i32) {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// The `nodes=` counter of the mount's stats.
fn nodes(mnt: &Path) -> u64 {
    let line = xattr::get(mnt, "plyfs.stats").unwrap().unwrap();
    String::from_utf8(line)
        .unwrap()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("nodes="))
        .and_then(|v| v.parse().ok())
        .expect("nodes= in plyfs.stats")
}

fn drop_caches(what: &str) {
    nix::unistd::sync();
    fs::write("/proc/sys/vm/drop_caches", what).unwrap();
}

/// Drops the kernel's dentries and inodes and waits until plyfs holds at most a few nodes.
fn forget_all(mnt: &Path) -> u64 {
    let start = Instant::now();
    loop {
        drop_caches("2");
        let n = nodes(mnt);
        if n <= 16 || start.elapsed() > Duration::from_secs(20) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn create_empty(p: &Path) {
    fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
}

#[test]
fn huge_directory_and_tree_keep_memory_bounded() {
    let test = "huge_directory_and_tree_keep_memory_bounded";
    if !require_root_and_fuse(test) {
        return;
    }
    let n: u64 = std::env::var("PLYFS_LIMITS_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let tmp = TempDir::new("limits");
    let (lower, upper, work) = (tmp.mkdir("lower"), tmp.mkdir("upper"), tmp.mkdir("work"));
    let wide = lower.join("wide");
    fs::create_dir(&wide).unwrap();
    for i in 0..n {
        create_empty(&wide.join(format!("f{i:07}")));
    }
    let dirs = n.div_ceil(1000);
    for d in 0..dirs {
        let dir = lower.join(format!("tree/d{d:04}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000.min(n - d * 1000) {
            create_empty(&dir.join(format!("f{f:04}")));
        }
    }
    let m = PlyMount::new(&format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    ));
    let pid = *m.pids.first().expect("the daemon's pid");
    let bound = |held: u64| 64 * MIB + held * 1024;
    let report = |what: &str, held: u64| {
        let (rss, peak) = memory(pid);
        println!(
            "{test}: N={n}: {what}: {held} nodes at the peak, peak {} MiB, now {} MiB (bound {} MiB)",
            peak / MIB,
            rss / MIB,
            bound(held) / MIB
        );
        (rss, peak)
    };

    // The huge directory: every name listed once, lookups anywhere in it.
    drop_caches("3");
    let listed = fs::read_dir(m.path("wide")).unwrap().count() as u64;
    assert_eq!(listed, n, "entries listed");
    for i in [0, n / 2, n - 1] {
        let p = m.path(format!("wide/f{i:07}"));
        assert!(
            fs::symlink_metadata(&p).unwrap().is_file(),
            "{}",
            p.display()
        );
    }
    assert_eq!(
        fs::symlink_metadata(m.path("wide/nope"))
            .map_err(|e| e.raw_os_error())
            .err(),
        Some(Some(libc::ENOENT))
    );
    let held = nodes(&m.mnt);
    let (_, peak) = report("after listing wide/", held);
    assert!(peak <= bound(held), "listing: peak {peak} > bound");
    let left = forget_all(&m.mnt);
    assert!(
        left <= 16,
        "the kernel forgot, but plyfs still holds {left} nodes"
    );
    let (rss, _) = report("after the kernel forgot", 0);
    assert!(
        rss <= 64 * MIB,
        "resident {} MiB after forgetting",
        rss / MIB
    );

    // The tree, walked twice with a forget in between: the second walk peaks no higher.
    let mut peaks = Vec::new();
    for round in 0..2 {
        reset_peak(pid);
        let walked = walk(&m.path("tree")).len() as u64;
        assert_eq!(walked, 1 + dirs + n, "entries walked");
        let held = nodes(&m.mnt);
        let (_, peak) = report(&format!("after walk {round}"), held);
        assert!(peak <= bound(held), "walk {round}: peak {peak} > bound");
        peaks.push(peak);
        let left = forget_all(&m.mnt);
        assert!(
            left <= 16,
            "after walk {round} plyfs still holds {left} nodes"
        );
        let (rss, _) = report(&format!("after walk {round} was forgotten"), 0);
        assert!(
            rss <= 64 * MIB,
            "resident {} MiB after forgetting",
            rss / MIB
        );
        assert!(
            rss <= peak / 2 + 16 * MIB,
            "resident {} MiB after forgetting, of a {} MiB peak: the heap was not returned",
            rss / MIB,
            peak / MIB
        );
    }
    assert!(
        peaks[1] <= peaks[0] + peaks[0] / 10 + 8 * MIB,
        "the second walk peaked at {} MiB, the first at {} MiB",
        peaks[1] / MIB,
        peaks[0] / MIB
    );
    m.unmount();
}
