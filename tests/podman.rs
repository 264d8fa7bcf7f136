//! plyfs as podman's and buildah's `mount_program`, end to end (`tests/e2e/podman.sh`):
//! a private containers-storage, images built from busybox-static with `.wh.` whiteouts and an
//! opaque dir, a container that changes everything, then diff, mount, export, commit, start,
//! build, buildah, cp and --read-only, each compared with fuse-overlayfs. Skips, saying why,
//! without root and /dev/fuse or without podman, buildah, fuse-overlayfs and busybox
//! (`.ci/run` installs them with `tests/e2e/podman.sh --install-deps`).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn podman_and_buildah_with_plyfs_as_mount_program() {
    let test = "podman_and_buildah_with_plyfs_as_mount_program";
    if !require_root_and_fuse(test) {
        return;
    }
    let missing: Vec<_> = ["podman", "buildah", "fuse-overlayfs", "busybox", "python3"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIP {test}: missing {missing:?} (tests/e2e/podman.sh --install-deps installs them)"
        );
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/podman.sh");
    let out = run_bounded(
        Command::new("bash")
            .arg(script)
            .env("PLYFS", PLYFS)
            .env("E2E_NO_INSTALL", "1")
            .env("E2E_BENCH", "0"),
        Duration::from_secs(1200),
    );
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(out.status.success(), "podman end-to-end checks failed");
    assert!(out.stdout.contains(" passed, 0 failed"));
}
