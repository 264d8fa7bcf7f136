//! Random operations, the same on plyfs and on the kernel's overlay (root and /dev/fuse needed;
//! skipped with a printed reason otherwise): a fixed-seed generator picks create, write,
//! truncate, rename, link, unlink, mkdir, rmdir, chmod and setxattr over a small set of names
//! that mixes lower, copied-up and new objects; after every step the errno and the whole
//! visible tree must match. Also symlink, RENAME_EXCHANGE and mkfifo. CI runs a bounded count; `PLYFS_RANDOM_OPS=N` and
//! `PLYFS_RANDOM_SEED=S` run longer (see the README).

mod common;

use common::ops::*;
use common::*;
use std::fs;

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
