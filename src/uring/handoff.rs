//! Idle-priority handoff: the io_uring threads run under SCHED_IDLE while their CPUs have
//! nothing else to run, so that a caller woken by a reply stays on the CPU it asked from.
//!
//! Why: a caller blocked in a request is woken by the daemon thread's commit while that thread
//! still runs; the scheduler then moves the caller to another, idle CPU, and on a machine whose
//! idle CPUs halt (a VM without halt polling) that wakeup costs tens of microseconds a request,
//! ten times a LOOKUP's own work. A CPU running only SCHED_IDLE threads counts as idle, so the
//! caller stays, preempts the daemon thread, and the round trip never leaves the CPU, as the
//! kernel's own overlay does its work in the caller.
//!
//! The danger is starvation: a SCHED_IDLE thread gets almost no CPU while a normal task wants
//! it. The guard thread watches each io_uring thread's time spent waiting for a CPU and how
//! often it got one (`/proc/self/task/TID/schedstat`); when any waited more than `CONTENDED` in
//! a tick, in waits of `LONG_WAIT` or more on average, all go back to SCHED_OTHER, and return
//! to SCHED_IDLE after `CALM` without such waits. Short waits are the handoff working: the
//! woken caller runs until its next request while the thread that answered waits its turn (a
//! `rm -rf` adds up to 5 ms of them every 10 ms, each a few hundred microseconds at most),
//! where a thread starved by busy tasks waits milliseconds at a time.
//!
//! Invariants: the guard is the only thread that changes the policy of the io_uring threads
//! after they registered; it holds the tid list's lock only to copy it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::sched;

/// How often the guard looks while requests flow, and while they do not.
const TICK_BUSY: Duration = Duration::from_millis(10);
const TICK_QUIET: Duration = Duration::from_millis(50);
/// Waiting for a CPU this long within one tick, in waits this long on average, is contention.
const CONTENDED: Duration = Duration::from_millis(5);
const LONG_WAIT: Duration = Duration::from_millis(1);
/// Back to SCHED_IDLE after this long without contention.
const CALM: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Handoff {
    tids: Mutex<Vec<i32>>,
}

impl Handoff {
    /// Registers the calling io_uring thread and puts it under SCHED_IDLE, where the guard can
    /// watch it (a kernel without schedstat leaves the threads under SCHED_OTHER).
    pub fn join(&self) {
        let tid = sched::gettid();
        if open_stat(tid).is_none() {
            tracing::info!("no schedstat: io_uring threads stay SCHED_OTHER");
            return;
        }
        if let Err(e) = sched::set_idle(tid, true) {
            tracing::debug!("io_uring thread stays SCHED_OTHER: {e}");
            return;
        }
        self.tids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tid);
    }

    /// Starts the guard thread; `answered` counts the requests the threads answered, to tell
    /// busy ticks from quiet ones.
    pub fn guard(
        self: &Arc<Self>,
        answered: impl Fn() -> u64 + Send + 'static,
    ) -> std::io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("plyfs-handoff".into())
            .spawn(move || me.run(answered))?;
        Ok(())
    }

    fn run(&self, answered_now: impl Fn() -> u64) {
        let mut idle = true;
        let mut calm_since = Instant::now();
        // Each thread's schedstat file, kept open (one pread a tick, not an open and a close),
        // and its counters at the last tick.
        let mut waited: Vec<(i32, std::fs::File, Sched)> = Vec::new();
        let mut answered = answered_now();
        let mut tick = TICK_QUIET;
        loop {
            std::thread::sleep(tick);
            let now = answered_now();
            tick = if now != answered {
                TICK_BUSY
            } else {
                TICK_QUIET
            };
            answered = now;
            let tids = self.tids.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let mut contended = false;
            for tid in &tids {
                match waited.iter_mut().find(|(t, _, _)| t == tid) {
                    Some((_, file, before)) => {
                        let Some(now) = read_stat(file) else {
                            continue;
                        };
                        contended |= now.starved_since(before);
                        *before = now;
                    }
                    None => {
                        if let Some((file, now)) = open_stat(*tid) {
                            waited.push((*tid, file, now));
                        }
                    }
                }
            }
            if contended {
                calm_since = Instant::now();
            }
            let want_idle = !contended && (idle || calm_since.elapsed() >= CALM);
            if want_idle != idle {
                tracing::debug!(idle = want_idle, "io_uring threads' policy");
                for tid in &tids {
                    let _ = sched::set_idle(*tid, want_idle);
                }
                idle = want_idle;
            }
        }
    }
}

/// A thread's scheduling counters: nanoseconds spent runnable but waiting for a CPU, and how
/// many times it got one.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Sched {
    run_delay: u64,
    slices: u64,
}

impl Sched {
    /// Whether the thread waited for CPUs long enough since `before`, in long enough waits, to
    /// be starving.
    fn starved_since(&self, before: &Sched) -> bool {
        let waited = self.run_delay.saturating_sub(before.run_delay);
        let waits = self.slices.saturating_sub(before.slices).max(1);
        waited > CONTENDED.as_nanos() as u64 && waited / waits >= LONG_WAIT.as_nanos() as u64
    }
}

/// The schedstat file of thread `tid` of this process, and its counters now.
fn open_stat(tid: i32) -> Option<(std::fs::File, Sched)> {
    let file = std::fs::File::open(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let now = read_stat(&file)?;
    Some((file, now))
}

/// The counters in an open schedstat file, read anew from its start.
fn read_stat(file: &std::fs::File) -> Option<Sched> {
    let mut buf = [0u8; 96];
    let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, 0).ok()?;
    parse_schedstat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// A schedstat line: time on a CPU, time waiting, timeslices.
fn parse_schedstat(s: &str) -> Option<Sched> {
    let mut f = s.split_whitespace().skip(1);
    Some(Sched {
        run_delay: f.next()?.parse().ok()?,
        slices: f.next()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open schedstat file gives fresh counters at each read.
    #[test]
    fn schedstat_read_again() {
        let Some((file, first)) = open_stat(sched::gettid()) else {
            println!("SKIPPED: no schedstat on this kernel");
            return;
        };
        // Each sleep takes the thread off its CPU and back: one timeslice more.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let second = read_stat(&file).expect("counters");
        assert!(second.slices > first.slices, "{first:?} then {second:?}");
    }

    #[test]
    fn schedstat_fields() {
        let s = Sched {
            run_delay: 456,
            slices: 7,
        };
        assert_eq!(parse_schedstat("123 456 7\n"), Some(s));
        assert_eq!(parse_schedstat("123 456"), None);
    }

    #[test]
    fn many_short_waits_are_no_starvation() {
        let before = Sched {
            run_delay: 0,
            slices: 0,
        };
        let ms = 1_000_000;
        // A ping-pong with the caller: 6 ms waited in 200 waits of 30 us, or in 12 of 500 us
        // (the caller working between requests).
        let handoff = Sched {
            run_delay: 6 * ms,
            slices: 200,
        };
        assert!(!handoff.starved_since(&before));
        let handoff = Sched {
            run_delay: 6 * ms,
            slices: 12,
        };
        assert!(!handoff.starved_since(&before));
        // Starved by busy tasks: 8 ms waited in 4 waits.
        let starved = Sched {
            run_delay: 8 * ms,
            slices: 4,
        };
        assert!(starved.starved_since(&before));
        // Long waits, but little of them in the tick.
        let quiet = Sched {
            run_delay: 3 * ms,
            slices: 1,
        };
        assert!(!quiet.starved_since(&before));
    }
}
