//! The daemon's lookup caches, seen through a mount with `timeout=0` (the kernel caches
//! nothing, so every lookup reaches the daemon) and its counters (the `plyfs.stats` xattr of
//! the root): negative lower lookups kept by default and dropped with `drop_negative_lower`;
//! a complete directory answers misses without lower-layer lookups; a small `cache_entries`
//! bounds the caches and evicting a complete directory makes it incomplete.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;

fn stats(mnt: &Path) -> HashMap<String, u64> {
    let v = xattr::get(mnt, "plyfs.stats")
        .expect("getxattr plyfs.stats")
        .expect("plyfs.stats is there");
    String::from_utf8(v)
        .unwrap()
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>, k: &str) -> u64 {
    after[k] - before[k]
}

/// lower: a/ and b/ with 20 files each; upper, work empty.
fn layers(tmp: &TempDir) -> String {
    let (l, u, w) = (tmp.mkdir("lower"), tmp.mkdir("upper"), tmp.mkdir("work"));
    for d in ["a", "b"] {
        fs::create_dir(l.join(d)).unwrap();
        for i in 0..20 {
            fs::write(l.join(format!("{d}/f{i}")), "x").unwrap();
        }
    }
    format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    )
}

fn stat_missing(mnt: &Path, dir: &str, n: usize) {
    for i in 0..n {
        assert!(fs::symlink_metadata(mnt.join(format!("{dir}/missing{i}"))).is_err());
    }
}

#[test]
fn negative_lower_lookups_are_kept_unless_dropped() {
    if !require_root_and_fuse("negative_lower_lookups_are_kept_unless_dropped") {
        return;
    }
    let tmp = TempDir::new("cache-neg");
    let opts = layers(&tmp);
    let mut probes = Vec::new();
    for extra in ["", ",drop_negative_lower"] {
        let m = PlyMount::new(&format!("{opts},timeout=0{extra}"));
        fs::metadata(m.path("a")).unwrap();
        let before = stats(&m.mnt);
        for _ in 0..25 {
            assert!(fs::symlink_metadata(m.path("a/nope")).is_err());
        }
        let after = stats(&m.mnt);
        probes.push((
            delta(&before, &after, "lower_probes"),
            delta(&before, &after, "lower_hits"),
            after["lower_entries"],
        ));
        m.unmount();
    }
    let (kept, dropped) = (probes[0], probes[1]);
    // (Hits also count the kernel's lookups of "a" itself on the way, in both.)
    assert!(
        kept.0 <= 1,
        "kept: one real lookup of the missing name: {kept:?}"
    );
    assert!(
        dropped.0 >= 25,
        "dropped: every lookup reaches the layer: {dropped:?}"
    );
    assert!(
        dropped.2 < kept.2,
        "fewer entries held when dropped: {probes:?}"
    );
}

/// A `timeout=0` mount of `layers` whose directory `a` was just listed (so it is complete);
/// None where the test cannot mount.
fn mount_with_a_listed(test: &str) -> Option<(TempDir, PlyMount)> {
    if !require_root_and_fuse(test) {
        return None;
    }
    let tmp = TempDir::new(test);
    let m = PlyMount::new(&format!("{},timeout=0", layers(&tmp)));
    assert_eq!(fs::read_dir(m.path("a")).unwrap().count(), 20);
    Some((tmp, m))
}

#[test]
fn complete_directories_answer_misses_without_layer_lookups() {
    let Some((_tmp, m)) =
        mount_with_a_listed("complete_directories_answer_misses_without_layer_lookups")
    else {
        return;
    };
    let before = stats(&m.mnt);
    stat_missing(&m.mnt, "a", 50);
    let after = stats(&m.mnt);
    assert_eq!(delta(&before, &after, "lower_probes"), 0, "{after:?}");
    assert_eq!(delta(&before, &after, "complete_hits"), 50, "{after:?}");
    // A name made through the mount is found at once (the directory's version moved).
    fs::write(m.path("a/missing7"), "now here").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("a/missing7")).unwrap(),
        "now here"
    );
    fs::remove_file(m.path("a/f3")).unwrap();
    assert!(fs::symlink_metadata(m.path("a/f3")).is_err());
    assert_eq!(fs::read_dir(m.path("a")).unwrap().count(), 20);
    m.unmount();
}

/// Names made through the mount join a complete directory instead of ending its completeness:
/// each is found at once, and the misses after them are still answered from memory.
#[test]
fn creates_keep_a_directory_complete() {
    let Some((_tmp, m)) = mount_with_a_listed("creates_keep_a_directory_complete") else {
        return;
    };
    fs::write(m.path("a/new-file"), "made").unwrap();
    fs::create_dir(m.path("a/new-dir")).unwrap();
    std::os::unix::fs::symlink("new-file", m.path("a/new-link")).unwrap();
    fs::hard_link(m.path("a/f1"), m.path("a/new-hardlink")).unwrap();
    assert_eq!(fs::read_to_string(m.path("a/new-link")).unwrap(), "made");
    assert!(fs::metadata(m.path("a/new-dir")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(m.path("a/new-hardlink")).unwrap(), "x");
    let before = stats(&m.mnt);
    stat_missing(&m.mnt, "a", 30);
    let after = stats(&m.mnt);
    assert_eq!(delta(&before, &after, "complete_hits"), 30, "{after:?}");
    assert_eq!(delta(&before, &after, "lower_probes"), 0, "{after:?}");
    let mut names: Vec<String> = fs::read_dir(m.path("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("new-"))
        .collect();
    names.sort();
    assert_eq!(names, ["new-dir", "new-file", "new-hardlink", "new-link"]);
    m.unmount();
}

/// Unlinks and renames keep a directory complete too: the names gone are not found, the names
/// moved are found where they went, and misses are still answered from memory.
#[test]
fn removes_and_renames_keep_a_directory_complete() {
    let Some((_tmp, m)) = mount_with_a_listed("removes_and_renames_keep_a_directory_complete")
    else {
        return;
    };
    assert_eq!(fs::read_dir(m.path("b")).unwrap().count(), 20);
    fs::remove_file(m.path("a/f1")).unwrap();
    fs::rename(m.path("a/f2"), m.path("a/g2")).unwrap();
    fs::rename(m.path("a/f3"), m.path("b/g3")).unwrap();
    fs::create_dir(m.path("a/sub")).unwrap();
    fs::remove_dir(m.path("a/sub")).unwrap();
    let before = stats(&m.mnt);
    stat_missing(&m.mnt, "a", 30);
    stat_missing(&m.mnt, "b", 30);
    let after = stats(&m.mnt);
    assert_eq!(delta(&before, &after, "complete_hits"), 60, "{after:?}");
    assert_eq!(delta(&before, &after, "lower_probes"), 0, "{after:?}");
    for gone in ["a/f1", "a/f2", "a/f3", "a/sub"] {
        assert!(fs::symlink_metadata(m.path(gone)).is_err(), "{gone}");
    }
    assert_eq!(fs::read_to_string(m.path("a/g2")).unwrap(), "x");
    assert_eq!(fs::read_to_string(m.path("b/g3")).unwrap(), "x");
    assert_eq!(fs::read_dir(m.path("a")).unwrap().count(), 18);
    assert_eq!(fs::read_dir(m.path("b")).unwrap().count(), 21);
    m.unmount();
}

/// A directory made through the mount is complete from the start: lookups of the names then
/// made in it are answered from memory, also where it is made over a removed lower directory
/// (opaque), and a name made in it underneath still shows.
#[test]
fn a_directory_made_through_the_mount_is_complete() {
    let test = "a_directory_made_through_the_mount_is_complete";
    if !require_root_and_fuse(test) {
        return;
    }
    let tmp = TempDir::new(test);
    let opts = layers(&tmp);
    let m = PlyMount::new(&format!("{opts},timeout=0"));
    fs::create_dir(m.path("fresh")).unwrap();
    let before = stats(&m.mnt);
    stat_missing(&m.mnt, "fresh", 30);
    fs::write(m.path("fresh/made"), "made").unwrap();
    stat_missing(&m.mnt, "fresh", 10);
    let after = stats(&m.mnt);
    // 30 misses, the name's lookup and the create's own check of it, and 10 more misses.
    assert_eq!(delta(&before, &after, "complete_hits"), 42, "{after:?}");
    assert_eq!(fs::read_to_string(m.path("fresh/made")).unwrap(), "made");
    // Made again over a removed lower directory: empty, its lower names hidden.
    fs::remove_dir_all(m.path("b")).unwrap();
    fs::create_dir(m.path("b")).unwrap();
    let before = stats(&m.mnt);
    assert!(fs::symlink_metadata(m.path("b/f1")).is_err());
    assert_eq!(delta(&before, &stats(&m.mnt), "complete_hits"), 1);
    assert_eq!(fs::read_dir(m.path("b")).unwrap().count(), 0);
    // Written underneath (the upper-layer watch): the directory stops being complete.
    fs::write(tmp.join("upper/fresh/late"), "late").unwrap();
    assert!(
        within_a_second(|| m.path("fresh/late").exists()),
        "a name made underneath a directory made through the mount is not visible"
    );
    m.unmount();
}

/// Writes do not ask the daemon anything: the kernel asks for `security.capability` before the
/// first write of a file, and (plyfs clearing setuid and setgid itself) remembers a file without
/// it, through passthrough and copy-up alike.
#[test]
fn repeated_writes_ask_for_security_capability_once() {
    if !require_root_and_fuse("repeated_writes_ask_for_security_capability_once") {
        return;
    }
    use std::io::Write;
    let tmp = TempDir::new("cache-killpriv");
    let m = PlyMount::new(&layers(&tmp));
    for name in ["new-log", "a/f1"] {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.path(name))
            .unwrap();
        let before = stats(&m.mnt);
        for i in 0..200 {
            f.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let after = stats(&m.mnt);
        assert!(
            delta(&before, &after, "getxattrs") <= 2,
            "{name}: {} GETXATTRs for 200 writes",
            delta(&before, &after, "getxattrs")
        );
    }
    assert_eq!(
        fs::read_to_string(m.path("new-log"))
            .unwrap()
            .lines()
            .count(),
        200
    );
    let copied = fs::read_to_string(m.path("a/f1")).unwrap();
    assert!(copied.starts_with("xline 0\n") && copied.lines().count() == 200);
    m.unmount();
}

/// A directory probed for many missing names (a search path) is listed once and then answers
/// the next misses from memory, without a listing by anyone; a name made afterwards is found.
#[test]
fn many_misses_make_a_directory_complete() {
    if !require_root_and_fuse("many_misses_make_a_directory_complete") {
        return;
    }
    let tmp = TempDir::new("cache-misses");
    let m = PlyMount::new(&format!("{},timeout=0", layers(&tmp)));
    let before = stats(&m.mnt);
    stat_missing(&m.mnt, "b", 200);
    let after = stats(&m.mnt);
    let (probes, hits) = (
        delta(&before, &after, "lower_probes"),
        delta(&before, &after, "complete_hits"),
    );
    assert!(
        probes <= 40,
        "{probes} lower lookups for 200 misses: {after:?}"
    );
    assert!(hits >= 160, "{hits} misses answered from memory: {after:?}");
    assert!(
        fs::symlink_metadata(m.path("b/f7")).is_ok(),
        "a name it holds"
    );
    fs::write(m.path("b/missing3"), "now here").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("b/missing3")).unwrap(),
        "now here"
    );
    m.unmount();
}

#[test]
fn small_caches_stay_bounded_and_eviction_clears_completeness() {
    if !require_root_and_fuse("small_caches_stay_bounded_and_eviction_clears_completeness") {
        return;
    }
    let tmp = TempDir::new("cache-small");
    let m = PlyMount::new(&format!("{},timeout=0,cache_entries=30", layers(&tmp)));
    fs::read_dir(m.path("a")).unwrap().for_each(drop);
    let s0 = stats(&m.mnt);
    stat_missing(&m.mnt, "a", 10);
    let s1 = stats(&m.mnt);
    assert_eq!(
        delta(&s0, &s1, "complete_hits"),
        10,
        "a is complete: {s1:?}"
    );
    // Completing b (20 names) does not fit beside a (20): a stops being complete.
    fs::read_dir(m.path("b")).unwrap().for_each(drop);
    let s2 = stats(&m.mnt);
    stat_missing(&m.mnt, "a", 10);
    let s3 = stats(&m.mnt);
    assert_eq!(delta(&s2, &s3, "complete_hits"), 0, "a was pruned: {s3:?}");
    assert!(delta(&s2, &s3, "lower_probes") > 0, "{s3:?}");
    stat_missing(&m.mnt, "b", 10);
    let s4 = stats(&m.mnt);
    assert_eq!(
        delta(&s3, &s4, "complete_hits"),
        10,
        "b is complete: {s4:?}"
    );
    for i in 0..200 {
        let _ = fs::symlink_metadata(m.path(format!("b/other{i}")));
    }
    let s5 = stats(&m.mnt);
    assert!(s5["lower_entries"] <= 30, "{s5:?}");
    assert!(s5["complete_names"] <= 30, "{s5:?}");
    m.unmount();
}

/// Polls `check` for up to a second.
fn within_a_second(mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() > end {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn changes_made_in_the_upper_dir_underneath_become_visible() {
    if !require_root_and_fuse("changes_made_in_the_upper_dir_underneath_become_visible") {
        return;
    }
    let tmp = TempDir::new("cache-watch");
    let opts = layers(&tmp);
    let upper = tmp.join("upper");
    let m = PlyMount::new(&opts); // the default timeout: the kernel caches for an hour
                                  // A negative lookup the kernel now caches, then the name made in the upper dir.
    assert!(fs::symlink_metadata(m.path("made")).is_err());
    fs::write(upper.join("made"), "made underneath").unwrap();
    assert!(
        within_a_second(|| fs::read_to_string(m.path("made")).is_ok_and(|s| s == "made underneath")),
        "a name made in the upper dir is not visible within a second"
    );
    // In a merged directory, listed (complete) before.
    assert_eq!(fs::read_dir(m.path("a")).unwrap().count(), 20);
    assert!(fs::symlink_metadata(m.path("a/late")).is_err());
    fs::write(m.path("a/f0"), "copied up").unwrap();
    fs::write(upper.join("a/late"), "late").unwrap();
    assert!(
        within_a_second(|| m.path("a/late").exists()),
        "a name made in a complete merged directory is not visible"
    );
    // Changed and removed underneath.
    fs::write(upper.join("a/f0"), "rewritten underneath, longer").unwrap();
    assert!(within_a_second(
        || fs::read_to_string(m.path("a/f0")).is_ok_and(|s| s == "rewritten underneath, longer")
    ));
    fs::remove_file(upper.join("made")).unwrap();
    assert!(
        within_a_second(|| !m.path("made").exists()),
        "a removed name stays"
    );
    fs::create_dir(upper.join("newdir")).unwrap();
    fs::write(upper.join("newdir/inside"), "in").unwrap();
    assert!(within_a_second(|| m.path("newdir/inside").exists()));
    m.unmount();
}

/// Lookups on several FUSE threads against a storm of invalidations (names made and removed
/// in the upper dir underneath, and through the mount): no deadlock, and the view settles on
/// the upper dir's contents.
#[test]
fn lookups_against_invalidations_do_not_deadlock() {
    if !require_root_and_fuse("lookups_against_invalidations_do_not_deadlock") {
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = TempDir::new("cache-storm");
    let opts = layers(&tmp);
    let upper = tmp.join("upper");
    fs::create_dir(upper.join("storm")).unwrap();
    let m = PlyMount::new(&format!("{opts},threads=4"));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for t in 0..3 {
        let (stop, mnt) = (stop.clone(), m.mnt.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::symlink_metadata(mnt.join(format!("storm/n{}", (n + t) % 40)));
                if n.is_multiple_of(50) {
                    let _ = fs::read_dir(mnt.join("storm")).map(|d| d.count());
                }
                n += 1;
            }
            n
        }));
    }
    {
        let (stop, upper) = (stop.clone(), upper.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = upper.join(format!("storm/n{}", n % 40));
                let _ = if n.is_multiple_of(3) {
                    fs::remove_file(&p)
                } else {
                    fs::write(&p, "x")
                };
                n += 1;
            }
            n
        }));
    }
    {
        let (stop, mnt) = (stop.clone(), m.mnt.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let p = mnt.join(format!("storm/m{}", n % 10));
                let _ = if n.is_multiple_of(2) {
                    fs::write(&p, "y")
                } else {
                    fs::remove_file(&p)
                };
                n += 1;
            }
            n
        }));
    }
    std::thread::sleep(std::time::Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let counts: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let _ = tx.send(counts);
    });
    let counts = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("threads stuck: deadlock");
    eprintln!("operations per thread: {counts:?}");
    let names = |p: &Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(
        within_a_second(|| names(&m.path("storm")) == names(&upper.join("storm"))),
        "the view did not settle: {:?} vs upper {:?}",
        names(&m.path("storm")),
        names(&upper.join("storm"))
    );
    m.unmount();
}

/// With `watch=off` nothing tells the kernel: a negative entry it caches stays (the control for
/// the test above, and what the option promises).
#[test]
fn watch_off_leaves_the_kernel_cache_alone() {
    if !require_root_and_fuse("watch_off_leaves_the_kernel_cache_alone") {
        return;
    }
    let tmp = TempDir::new("cache-nowatch");
    let opts = layers(&tmp);
    let m = PlyMount::new(&format!("{opts},watch=off"));
    assert!(fs::symlink_metadata(m.path("made")).is_err());
    fs::write(tmp.join("upper/made"), "made underneath").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        fs::symlink_metadata(m.path("made")).is_err(),
        "the kernel's negative entry was dropped without the watch"
    );
    m.unmount();
}

#[test]
fn a_listing_too_large_for_the_cache_leaves_it_alone() {
    let test = "a_listing_too_large_for_the_cache_leaves_it_alone";
    if !require_root_and_fuse(test) {
        return;
    }
    let tmp = TempDir::new(test);
    let opts = layers(&tmp);
    // 22 entries (with . and ..): more than a quarter of 40 cache entries, not of 16384.
    for (extra, floods) in [(",cache_entries=40", true), ("", false)] {
        let m = PlyMount::new(&format!("{opts},timeout=0{extra}"));
        fs::metadata(m.path("a")).unwrap();
        let before = stats(&m.mnt);
        // READDIRPLUS looks each of the 20 entries up.
        assert_eq!(fs::read_dir(m.path("a")).unwrap().count(), 20);
        let listed = stats(&m.mnt);
        assert!(delta(&before, &listed, "lower_probes") >= 20, "{listed:?}");
        let added = delta(&before, &listed, "lower_entries");
        if floods {
            assert_eq!(added, 0, "the listing bypassed the small cache");
            // A lookup of its own is cached as before.
            fs::metadata(m.path("a/f3")).unwrap();
            assert_eq!(stats(&m.mnt)["lower_entries"], listed["lower_entries"] + 1);
        } else {
            assert!(added >= 20, "the listing filled the cache: {listed:?}");
        }
        m.unmount();
    }
}
