//! The `plyfs` command: parse the command line, check the layers, mount, and serve requests,
//! in the foreground or as a daemon.
//!
//! Invariants: nothing is mounted or written before the configuration is valid. Without `-f`
//! the parent exits 0 only after the daemon reports the mount live (the FUSE handshake is done);
//! a failure is one line on stderr and a non-zero exit. The daemon detaches its standard streams
//! and exits when the mount goes away. `fork` happens while the process has one thread.

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;

use plyfs::config::{self, Action, Config};
use plyfs::fs::PlyFs;
use plyfs::ovl::Ovl;
use plyfs::sys;

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("plyfs: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: &[OsString]) -> Result<()> {
    match config::parse_args(args)? {
        Action::Version => {
            println!("plyfs version {}", env!("CARGO_PKG_VERSION"));
            println!("FUSE library version 3.x (fuser)");
            Ok(())
        }
        Action::Help => {
            print!("{}", config::USAGE);
            Ok(())
        }
        Action::Mount(cfg) => mount(&cfg),
    }
}

fn init_tracing(cfg: &Config) {
    let default = if cfg.debug { "debug" } else { "warn" };
    let filter = std::env::var("PLYFS_LOG").unwrap_or_else(|_| default.to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false);
    // A daemon has no stderr: PLYFS_LOG_FILE keeps its log.
    match std::env::var_os("PLYFS_LOG_FILE").map(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
    }) {
        Some(Ok(f)) => builder.with_writer(std::sync::Mutex::new(f)).init(),
        _ => builder.with_writer(std::io::stderr).init(),
    }
}

/// Raises the open-file limit: the node table holds one `O_PATH` fd per directory the kernel
/// holds. Up to the system's `nr_open` where allowed (root), else to the hard limit.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(n) = nr_open {
        if setrlimit(Resource::RLIMIT_NOFILE, n, n).is_ok() {
            return;
        }
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

type Mounted = (fuser::Session<PlyFs>, std::sync::Arc<Ovl>);

fn session(cfg: &Config) -> Result<Mounted> {
    let ovl = std::sync::Arc::new(Ovl::new(cfg)?);
    if cfg.uring {
        // Made before the mount: INIT asks for io_uring only when they all exist.
        *ovl.uring.lock().unwrap_or_else(|e| e.into_inner()) = plyfs::uring::prepare(cfg.threads);
    }
    let ops = plyfs::ops::Ops { ovl: ovl.clone() };
    let session = plyfs::mount::mount(PlyFs::new(ops.clone()), cfg)?;
    let dev = std::sync::Arc::new(
        session
            .as_fd()
            .try_clone_to_owned()
            .context("cannot duplicate /dev/fuse")?,
    );
    let _ = ovl.dev.set(dev.clone());
    ovl.notify
        .start(session.notifier())
        .context("cannot start the notify worker")?;
    let queues = ovl.uring.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(queues) = queues {
        plyfs::uring::serve(queues, ops, dev, cfg.uring_idle)
            .context("cannot start the io_uring threads")?;
    }
    Ok((session, ovl))
}

/// The terminating signals, blocked in the calling thread before any other thread exists, so
/// that every thread inherits the mask and only `handle_signals`' thread receives them.
fn block_signals() -> Result<SigSet> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block()?;
    Ok(set)
}

/// One thread waits for the terminating signals and unmounts, so the session ends cleanly.
fn handle_signals(mountpoint: &Path, set: SigSet) -> Result<()> {
    let mnt = mountpoint.to_path_buf();
    std::thread::Builder::new()
        .name("plyfs-signals".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                tracing::info!(?sig, "unmounting");
                if nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).is_err() {
                    let _ = std::process::Command::new("fusermount3")
                        .arg("-u")
                        .arg("-z")
                        .arg(&mnt)
                        .status();
                }
            }
        })?;
    Ok(())
}

fn serve(cfg: &Config, (session, ovl): Mounted, signals: SigSet) -> Result<()> {
    handle_signals(&cfg.mountpoint, signals)?;
    plyfs::watch::Watch::start(ovl);
    session.run().context("FUSE session failed")
}

fn mount(cfg: &Config) -> Result<()> {
    cfg.validate()?;
    sys::mem::tune_heap();
    raise_nofile_limit();
    let signals = block_signals()?;
    if cfg.foreground {
        init_tracing(cfg);
        let s = session(cfg)?;
        return serve(cfg, s, signals);
    }
    let (mut rd, wr) = std::io::pipe().context("pipe")?;
    match sys::process::fork().context("fork")? {
        Some(_child) => {
            drop(wr);
            let mut msg = String::new();
            rd.read_to_string(&mut msg)
                .context("waiting for the daemon")?;
            match msg.strip_prefix("ok") {
                Some(_) => Ok(()),
                None if msg.is_empty() => bail!("the daemon exited before the mount was live"),
                None => Err(anyhow!(msg)),
            }
        }
        None => {
            drop(rd);
            daemon(cfg, wr, signals)
        }
    }
}

/// The daemon side of the fork: mount, report to the parent, detach, serve.
fn daemon(cfg: &Config, mut report: std::io::PipeWriter, signals: SigSet) -> Result<()> {
    let _ = nix::unistd::setsid();
    let s = match session(cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = write!(report, "{e:#}");
            std::process::exit(1);
        }
    };
    sys::process::detach_stdio().context("detaching the standard streams")?;
    init_tracing(cfg);
    let _ = report.write_all(b"ok");
    drop(report);
    if let Err(e) = serve(cfg, s, signals) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    Ok(())
}
