//! NFS re-export through a real NFS server: nfs-ganesha's VFS backend exporting a plyfs mount,
//! in a private network namespace on loopback (`tests/nfs/ganesha.sh` does the work and
//! prints each check). Skips, saying why, without root and /dev/fuse or without ganesha, the
//! libnfs tools, rpcbind, unshare and python3 (`.ci/run` installs them).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn ganesha_reexports_plyfs_and_handles_survive_a_restart() {
    let test = "ganesha_reexports_plyfs_and_handles_survive_a_restart";
    if !require_root_and_fuse(test) {
        return;
    }
    let missing: Vec<_> = [
        "ganesha.nfsd",
        "rpcbind",
        "nfs-ls",
        "nfs-cat",
        "nfs-cp",
        "unshare",
        "ip",
        "python3",
    ]
    .into_iter()
    .filter(|c| !have(c))
    .collect();
    if !missing.is_empty() {
        eprintln!("SKIP {test}: missing {missing:?} (apt-get install nfs-ganesha nfs-ganesha-vfs rpcbind libnfs-utils iproute2 python3)");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nfs/ganesha.sh");
    let out = run_bounded(
        Command::new("bash").arg(script).arg(PLYFS),
        Duration::from_secs(240),
    );
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success(),
        "the NFS re-export checks failed:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains(" passed, 0 failed"));
}
