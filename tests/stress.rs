//! Stress under load (root, /dev/fuse and the kernel's overlay needed; skipped with a printed
//! reason otherwise): four writers apply the random-operations generator (`common/ops.rs`) in
//! parallel, each in its own copy of the demo tree, while two readers walk and read the whole
//! mount, on plyfs with `threads=4`, for a bounded time. Then the kernel's overlay, on
//! identical layers, gets each writer's very sequence (in parallel too, with the same
//! readers). Every operation must give the same errno on both and the final trees must be
//! equal (the writers' subtrees are disjoint, so the order between writers does not matter).
//! A writer stuck past a deadline is a deadlock: the test aborts the FUSE connection and fails.
//! Prints ops/s for both. `PLYFS_STRESS_SECS=S` runs longer (CI: 8 s; see the README for a
//! soak run) and `PLYFS_STRESS_SEED=N` picks another seed.

mod common;

use common::ops::*;
use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
const READERS: usize = 2;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The demo layers with the tree copied into `w0`..`w3` of every layer (upper included).
struct StressLayers {
    opts: String,
    _demo: Layers,
}

fn stress_layers() -> StressLayers {
    let demo = Layers::build("demo", &[]);
    let base = demo.dir.mkdir("stress");
    let mut stack = Vec::new();
    for (n, layer) in demo.stack().iter().enumerate() {
        let dst = base.join(format!("layer{n}"));
        for w in 0..WRITERS {
            let wd = dst.join(format!("w{w}"));
            fs::create_dir_all(&wd).unwrap();
            let st = Command::new("cp")
                .arg("-a")
                .arg(layer.join("."))
                .arg(&wd)
                .status()
                .unwrap();
            assert!(st.success(), "cp -a {} {}", layer.display(), wd.display());
        }
        stack.push(dst);
    }
    let work = base.join("work");
    fs::create_dir(&work).unwrap();
    let lowers: Vec<String> = stack[1..].iter().map(|p| p.display().to_string()).collect();
    StressLayers {
        opts: format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            stack[0].display(),
            work.display()
        ),
        _demo: demo,
    }
}

/// One writer's operations, each with its result.
type Done = Vec<(Op, Result<(), i32>)>;

/// What one run did.
struct Run {
    writers: Vec<Done>,
    reader_ops: usize,
    /// errno -> count, for reader operations that failed.
    reader_errors: BTreeMap<i32, usize>,
    elapsed: Duration,
}

impl Run {
    fn writer_ops(&self) -> usize {
        self.writers.iter().map(Vec::len).sum()
    }
}

/// Walks and reads everything under `root` once; counts operations and failures.
fn read_all(root: &Path, ops: &AtomicUsize, errors: &mut BTreeMap<i32, usize>) {
    let mut stack = vec![root.to_path_buf()];
    let mut fail =
        |e: std::io::Error| *errors.entry(e.raw_os_error().unwrap_or(-1)).or_default() += 1;
    while let Some(dir) = stack.pop() {
        ops.fetch_add(1, Ordering::Relaxed);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) => {
                fail(e);
                continue;
            }
        };
        for e in rd {
            let Ok(e) = e else { continue };
            let p = e.path();
            ops.fetch_add(1, Ordering::Relaxed);
            match fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => stack.push(p),
                Ok(md) if md.is_file() => {
                    // O_NONBLOCK|O_NOFOLLOW: the name may have become a fifo or a symlink.
                    let f = fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                        .open(&p);
                    match f {
                        Ok(mut f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                            let mut buf = [0u8; 4096];
                            ops.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = f.read(&mut buf) {
                                fail(e);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => fail(e),
                    }
                }
                Ok(_) => {}
                Err(e) => fail(e),
            }
        }
    }
}

/// The FUSE connection's abort file for the mount at `mnt` (mounting fusectl if needed).
fn abort_connection(mnt: &Path) {
    let dev = fs::metadata(mnt).map(|m| m.dev()).unwrap_or(0);
    let kdev = (libc::major(dev) << 20) | libc::minor(dev);
    let conns = Path::new("/sys/fs/fuse/connections");
    if fs::read_dir(conns)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
    {
        let _ = Command::new("mount")
            .args(["-t", "fusectl", "none"])
            .arg(conns)
            .status();
    }
    let _ = fs::write(conns.join(kdev.to_string()).join("abort"), "1");
}

/// Runs the writers (`plans`: a sequence per writer, or `None` to generate for `secs` from
/// `seed`) and the readers on `mnt`; fails on a deadlock.
fn stress(mnt: &Path, plans: Option<Vec<Vec<Op>>>, secs: u64, seed: u64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let reader_ops = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut writers: Vec<JoinHandle<Done>> = Vec::new();
    for w in 0..WRITERS {
        let (mnt, plan) = (mnt.to_path_buf(), plans.as_ref().map(|p| p[w].clone()));
        writers.push(std::thread::spawn(move || {
            let dir = format!("w{w}");
            let mut done = Vec::new();
            match plan {
                Some(ops) => {
                    for op in ops {
                        let r = apply(&mnt, &op);
                        done.push((op, r));
                    }
                }
                None => {
                    let mut rng = Rng((seed + w as u64) | 1);
                    while Instant::now() < deadline {
                        // No fifos: a reader's open of one would change a writer's ENXIO.
                        let op = match generate(&mut rng) {
                            Op::Mkfifo(p) => Op::Mkdir(p),
                            op => op,
                        }
                        .under(&dir);
                        let r = apply(&mnt, &op);
                        done.push((op, r));
                    }
                }
            }
            done
        }));
    }
    let readers: Vec<JoinHandle<BTreeMap<i32, usize>>> = (0..READERS)
        .map(|_| {
            let (mnt, stop, ops) = (mnt.to_path_buf(), stop.clone(), reader_ops.clone());
            std::thread::spawn(move || {
                let mut errors = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    read_all(&mnt, &ops, &mut errors);
                }
                errors
            })
        })
        .collect();
    let limit = deadline + Duration::from_secs(120);
    while !writers.iter().all(JoinHandle::is_finished) {
        if Instant::now() > limit {
            abort_connection(mnt);
            panic!(
                "writers on {} still running 120 s after their deadline: deadlock (connection aborted)",
                mnt.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writers: Vec<_> = writers.into_iter().map(|h| h.join().unwrap()).collect();
    let mut reader_errors = BTreeMap::new();
    for h in readers {
        for (e, n) in h.join().unwrap() {
            *reader_errors.entry(e).or_default() += n;
        }
    }
    Run {
        writers,
        reader_ops: reader_ops.load(Ordering::Relaxed),
        reader_errors,
        elapsed,
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-3)
}

#[test]
fn parallel_writers_and_readers_match_the_kernel() {
    let test = "parallel_writers_and_readers_match_the_kernel";
    if !require_kernel_overlay(test) {
        return;
    }
    let secs: u64 = env_or("PLYFS_STRESS_SECS", 8);
    let seed: u64 = env_or("PLYFS_STRESS_SEED", 0x57_7e55);
    let (pl, kl) = (stress_layers(), stress_layers());
    let pm = PlyMount::new(&format!("{},threads=4", pl.opts));
    let daemon = pm.pids.clone();
    let p = stress(&pm.mnt, None, secs, seed);
    assert!(
        daemon.iter().all(|pid| process_alive(*pid)),
        "the plyfs daemon died under load"
    );
    let plans: Vec<Vec<Op>> = p
        .writers
        .iter()
        .map(|w| w.iter().map(|(op, _)| op.clone()).collect())
        .collect();
    let km = KernelMount::new(&format!("{},index=on,redirect_dir=on", kl.opts));
    let k = stress(&km.mnt, Some(plans), 0, seed);
    println!(
        "{test}: seed {seed}, {secs} s: plyfs {} writer ops ({:.0}/s) and {} reader ops ({:.0}/s); \
         kernel {:.0} writer ops/s and {:.0} reader ops/s on the same sequences; reader errors: \
         plyfs {:?}, kernel {:?}",
        p.writer_ops(),
        rate(p.writer_ops(), p.elapsed),
        p.reader_ops,
        rate(p.reader_ops, p.elapsed),
        rate(k.writer_ops(), k.elapsed),
        rate(k.reader_ops, k.elapsed),
        p.reader_errors,
        k.reader_errors
    );
    assert!(p.writer_ops() > 100, "only {} writer ops", p.writer_ops());
    for (w, (pw, kw)) in p.writers.iter().zip(&k.writers).enumerate() {
        for (i, ((op, pr), (_, kr))) in pw.iter().zip(kw).enumerate() {
            assert_eq!(
                pr, kr,
                "writer {w} op {i} {op:?}: plyfs {pr:?}, kernel {kr:?}"
            );
        }
    }
    for bad in [libc::EIO, libc::ESTALE, libc::ENOTCONN] {
        assert!(
            !p.reader_errors.contains_key(&bad),
            "readers got errno {bad}: {:?}",
            p.reader_errors
        );
    }
    let (pd, kd) = (dump(&pm.mnt), dump(&km.mnt));
    assert_same_dump("the trees after the stress", &kd, &pd);
    pm.unmount();
}
