//! Crash safety: `kill -9` of the daemon at random moments during a storm of copy-ups (chmod of
//! 256 KiB lower files), renames, creates and unlinks; then `umount -l`, a new mount of the same
//! layers, and a check of every object against the log of completed operations: each is in its
//! old or its new state (only the operation in flight may be either), no copied-up file is
//! short, and the work dir holds no leftovers. Fixed seeds; `PLYFS_CRASH_ROUNDS=N` runs longer.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a name holds: its content and permission bits.
#[derive(Clone, Debug, PartialEq)]
struct State {
    content: Vec<u8>,
    mode: u32,
}

type Model = BTreeMap<String, State>;

#[derive(Clone, Debug)]
enum Op {
    Chmod(String, u32),
    Rename(String, String),
    Create(String, Vec<u8>),
    Unlink(String),
}

impl Op {
    fn run(&self, mnt: &Path) -> std::io::Result<()> {
        match self {
            Op::Chmod(n, m) => fs::set_permissions(mnt.join(n), fs::Permissions::from_mode(*m)),
            Op::Rename(a, b) => fs::rename(mnt.join(a), mnt.join(b)),
            Op::Create(n, c) => fs::write(mnt.join(n), c),
            Op::Unlink(n) => fs::remove_file(mnt.join(n)),
        }
    }

    /// The model after the operation.
    fn apply(&self, model: &Model) -> Model {
        let mut m = model.clone();
        match self {
            Op::Chmod(n, mode) => m.get_mut(n).expect("exists").mode = *mode,
            Op::Rename(a, b) => {
                let s = m.remove(a).expect("exists");
                m.insert(b.clone(), s);
            }
            Op::Create(n, c) => {
                m.insert(
                    n.clone(),
                    State {
                        content: c.clone(),
                        mode: 0o644,
                    },
                );
            }
            Op::Unlink(n) => {
                m.remove(n);
            }
        }
        m
    }
}

/// A random operation that is valid in `model`.
fn pick(rng: &mut Rng, model: &Model, serial: u64) -> Op {
    let names: Vec<&String> = model.keys().collect();
    let some = |rng: &mut Rng| names[rng.below(names.len())].clone();
    match rng.below(10) {
        _ if names.is_empty() => Op::Create(format!("new{serial}"), vec![b'c'; 1000]),
        0..=3 => Op::Chmod(some(rng), [0o600, 0o640, 0o644, 0o755][rng.below(4)]),
        4..=5 => {
            let a = some(rng);
            Op::Rename(a, format!("r{serial}"))
        }
        6..=7 => Op::Create(
            format!("new{serial}"),
            format!("created {serial} ").repeat(200).into_bytes(),
        ),
        _ => Op::Unlink(some(rng)),
    }
}

/// The state of the mount, for the names the model could have.
fn observe(mnt: &Path) -> Model {
    let mut out = Model::new();
    for e in fs::read_dir(mnt).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let md = fs::symlink_metadata(e.path()).unwrap();
        out.insert(
            name,
            State {
                content: fs::read(e.path()).unwrap(),
                mode: md.permissions().mode() & 0o7777,
            },
        );
    }
    out
}

/// Whether `seen` is what `op` in flight may leave from `before`: before, after, or (for a
/// create) the new name holding a prefix of its content.
fn allowed(before: &Model, op: Option<&Op>, seen: &Model) -> bool {
    if seen == before {
        return true;
    }
    let Some(op) = op else { return false };
    if *seen == op.apply(before) {
        return true;
    }
    if let Op::Create(n, c) = op {
        let mut partial = before.clone();
        if let Some(s) = seen.get(n) {
            if c.starts_with(&s.content) {
                partial.insert(n.clone(), s.clone());
                return partial == *seen;
            }
        }
    }
    false
}

#[test]
fn kill_9_during_a_storm_loses_nothing() {
    if !require_root_and_fuse("kill_9_during_a_storm_loses_nothing") {
        return;
    }
    let rounds: usize = std::env::var("PLYFS_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let tmp = TempDir::new("crash");
    let (l, u, w) = (tmp.mkdir("lower"), tmp.mkdir("upper"), tmp.mkdir("work"));
    let mnt = tmp.mkdir("mnt");
    let mut model = Model::new();
    // Lower files that are not copied up yet, added between mounts (a lower layer does not
    // change under a mount), so that every round has copy-ups to interrupt.
    let add_lower = |model: &mut Model, round: usize| {
        for i in 0..12 {
            let content: Vec<u8> = (0..256 * 1024)
                .map(|b| ((b * 7 + i + round * 13) % 251) as u8)
                .collect();
            let name = format!("f{round}-{i:02}");
            fs::write(l.join(&name), &content).unwrap();
            fs::set_permissions(l.join(&name), fs::Permissions::from_mode(0o644)).unwrap();
            model.insert(
                name,
                State {
                    content,
                    mode: 0o644,
                },
            );
        }
    };
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.display(),
        u.display(),
        w.display()
    );
    let mut rng = Rng(0x5eed_c0de);
    let mut serial = 0u64;
    let (mut ops_done, mut in_flight_kills) = (0, 0);
    for round in 0..rounds {
        add_lower(&mut model, round);
        let m = PlyMount::at(&opts, &mnt);
        let leftovers: Vec<_> = fs::read_dir(w.join("work")).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: work dir not cleaned: {leftovers:?}"
        );
        let seen = observe(&mnt);
        assert_eq!(seen, model, "round {round}: the state after the remount");
        // The operations, run by a thread; the log says which completed.
        let log: Arc<Mutex<(Vec<Op>, Option<Op>)>> = Arc::default();
        let worker = {
            let (log, mnt) = (log.clone(), mnt.clone());
            let (mut sim, mut wrng, base) = (model.clone(), Rng(rng.next() | 1), serial);
            std::thread::spawn(move || {
                for n in 0.. {
                    let op = pick(&mut wrng, &sim, base + n);
                    log.lock().unwrap().1 = Some(op.clone());
                    if op.run(&mnt).is_err() {
                        return n; // the daemon is gone
                    }
                    sim = op.apply(&sim);
                    let mut g = log.lock().unwrap();
                    g.0.push(op);
                    g.1 = None;
                }
                unreachable!()
            })
        };
        std::thread::sleep(Duration::from_millis(20 + rng.below(300) as u64));
        for &pid in &m.pids {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        assert!(wait_pids_gone(&m.pids, Duration::from_secs(10)));
        serial += worker.join().unwrap() + 1;
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&mnt)
            .status();
        drop(m);
        let (done, in_flight) = std::mem::take(&mut *log.lock().unwrap());
        ops_done += done.len();
        in_flight_kills += usize::from(in_flight.is_some());
        for op in &done {
            model = op.apply(&model);
        }
        // Look at the result through a fresh mount.
        let m = PlyMount::at(&opts, &mnt);
        let leftovers: Vec<_> = fs::read_dir(w.join("work")).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: leftovers in the work dir: {leftovers:?}"
        );
        let seen = observe(&mnt);
        assert!(
            allowed(&model, in_flight.as_ref(), &seen),
            "round {round}: after {} completed operations and {in_flight:?} in flight, the mount \
             shows a state that is neither old nor new:\n{}",
            done.len(),
            diff(&model, &seen)
        );
        model = seen;
        m.unmount();
    }
    eprintln!("{rounds} kills survived: {ops_done} operations completed, {in_flight_kills} killed mid-operation");
}

fn diff(want: &Model, seen: &Model) -> String {
    let mut out = String::new();
    for (n, s) in want {
        match seen.get(n) {
            None => out += &format!("  missing {n}\n"),
            Some(t) if t != s => {
                out += &format!(
                    "  {n}: want {} bytes mode {:o}, see {} bytes mode {:o}\n",
                    s.content.len(),
                    s.mode,
                    t.content.len(),
                    t.mode
                )
            }
            _ => {}
        }
    }
    for n in seen.keys().filter(|n| !want.contains_key(*n)) {
        out += &format!("  unexpected {n}\n");
    }
    out
}
