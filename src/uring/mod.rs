//! FUSE over io_uring: the kernel hands each CPU's requests to a queue of that CPU, served by
//! daemon threads pinned to it, so a request and its reply wake threads on the caller's own CPU
//! instead of another one (the cost of a /dev/fuse round trip on a machine whose idle CPUs
//! sleep). fuser keeps the connection (mount, INIT, notifications, FORGET and INTERRUPT, which
//! the kernel never sends through the queues); this module serves everything else, through the
//! same handlers (`ops.rs`).
//!
//! The kernel blocks every request once INIT granted io_uring until each possible CPU's queue
//! has an entry, so the rings are made before the mount (`prepare`) and io_uring is asked for
//! only when they all exist; a failed registration makes the kernel fall back to /dev/fuse.
//!
//! Invariant: one thread per ring entry; a thread touches its entry's buffers only between a
//! completion and its next commit, and takes no lock of its own (the handlers' locks are theirs).

mod abi;
mod dispatch;
mod handoff;
mod reply;

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::ops::Ops;
use crate::sys::uring::RingEntry;
use handoff::Handoff;

/// The largest WRITE plyfs accepts and READ it answers (`max_write`, `max_readahead`): one
/// payload buffer of the ring holds either.
pub const MAX_WRITE: usize = 1 << 20;

/// The rings made ready before the mount: for each possible CPU, `per_queue` entries.
pub struct Queues {
    entries: Vec<RingEntry>,
}

/// The CPUs the kernel may run a task on (its queues are one per possible CPU).
fn possible_cpus() -> usize {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    parse_cpu_list(list.trim()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    })
}

/// The number of CPUs of a list like `0-3` or `0,2-5`: one past the highest.
fn parse_cpu_list(list: &str) -> Option<usize> {
    let mut top = None;
    for part in list.split(',') {
        let last = part.rsplit('-').next()?.trim().parse::<usize>().ok()?;
        top = top.max(Some(last + 1));
    }
    top
}

/// Makes the rings: `threads` spread over the possible CPUs, at least one a CPU. None when
/// io_uring does not work here (disabled, or too little locked memory): the mount then uses
/// /dev/fuse alone.
pub fn prepare(threads: usize) -> Option<Queues> {
    let cpus = possible_cpus();
    let per_queue = (threads / cpus).max(1);
    let mut entries = Vec::with_capacity(cpus * per_queue);
    for qid in 0..cpus {
        for _ in 0..per_queue {
            match RingEntry::new(qid as u16, MAX_WRITE) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    tracing::warn!("io_uring unavailable, requests through /dev/fuse: {e}");
                    return None;
                }
            }
        }
    }
    Some(Queues { entries })
}

/// Starts one thread per entry, each pinned to its queue's CPU, registering its entry with the
/// connection of `dev` and serving requests until the connection ends; with `idle`, under the
/// idle-priority handoff (`handoff.rs`).
pub fn serve(queues: Queues, ops: Ops, dev: Arc<OwnedFd>, idle: bool) -> std::io::Result<()> {
    let handoff = idle.then(|| Arc::new(Handoff::default()));
    if let Some(h) = &handoff {
        let ovl = ops.ovl.clone();
        h.guard(move || ovl.caches.stats.uring_requests.load(Ordering::Relaxed))?;
    }
    for (i, entry) in queues.entries.into_iter().enumerate() {
        let (ops, dev, handoff) = (ops.clone(), dev.clone(), handoff.clone());
        std::thread::Builder::new()
            .name(format!("plyfs-uring{i}"))
            .spawn(move || run(entry, &ops, &dev, handoff.as_deref()))?;
    }
    Ok(())
}

thread_local! {
    /// On io_uring threads: the CPU the thread is pinned to, and how many CPUs there are.
    static PINNED: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

fn set_affinity(cpus: impl IntoIterator<Item = usize>) -> bool {
    let mut set = nix::sched::CpuSet::new();
    for cpu in cpus {
        if set.set(cpu).is_err() {
            return false;
        }
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

fn pin_to(cpu: usize) {
    // A CPU that is possible but offline refuses: the thread then runs anywhere.
    if set_affinity([cpu]) {
        PINNED.set(Some((cpu, possible_cpus())));
    }
}

/// Runs `f`, work that waits on the disk (a copy-up), free to move to any CPU, and pins the
/// thread back after: the wake-up at the end of each wait then goes to whichever CPU is awake
/// rather than to the pinned one, asleep by then. A no-op on threads that are not pinned.
pub fn unpinned<R>(f: impl FnOnce() -> R) -> R {
    let Some((cpu, cpus)) = PINNED.get() else {
        return f();
    };
    let freed = set_affinity(0..cpus);
    let r = f();
    if freed {
        set_affinity([cpu]);
    }
    r
}

/// One entry's thread: register, then answer each request and fetch the next.
fn run(mut entry: RingEntry, ops: &Ops, dev: &Arc<OwnedFd>, handoff: Option<&Handoff>) {
    pin_to(entry.qid() as usize);
    if let Some(h) = handoff {
        h.join();
    }
    let mut res = entry.register(dev);
    // The kernel takes registrations only once INIT is done; fuser's handshake has returned
    // by now, but a retry costs little.
    for _ in 0..100 {
        if !matches!(res, Ok(r) if r == -libc::EAGAIN) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        res = entry.register(dev);
    }
    let mut out = reply::Out::default();
    loop {
        match res {
            Ok(0) => {}
            Ok(r) => {
                // ENOTCONN or ECANCELED when the connection ends; anything else is logged.
                if r != -libc::ENOTCONN && r != -libc::ECANCELED {
                    tracing::error!(qid = entry.qid(), "io_uring FUSE entry failed: {r}");
                }
                break;
            }
            Err(e) => {
                tracing::error!(qid = entry.qid(), "io_uring wait failed: {e}");
                break;
            }
        }
        let (headers, payload) = entry.buffers();
        let commit_id = dispatch::handle(ops, headers, payload, &mut out);
        let served = &ops.ovl.caches.stats.uring_requests;
        served.fetch_add(1, Ordering::Relaxed);
        res = entry.commit_and_fetch(commit_id);
    }
    // The kernel may still refer to the buffers until the connection is gone: never freed.
    std::mem::forget(entry);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0,2-5"), Some(6));
        assert_eq!(parse_cpu_list(""), None);
    }
}
