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
//! it. The guard thread watches each io_uring thread's time spent waiting for a CPU
//! (`/proc/self/task/TID/schedstat`); when any waited more than `CONTENDED` in a tick, all go
//! back to SCHED_OTHER, and return to SCHED_IDLE after `CALM` without such waits.
//!
//! Invariants: the guard is the only thread that changes the policy of the io_uring threads
//! after they registered; it holds the tid list's lock only to copy it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::sched;

/// How often the guard looks while requests flow, and while they do not.
const TICK_BUSY: Duration = Duration::from_millis(10);
const TICK_QUIET: Duration = Duration::from_millis(50);
/// Waiting for a CPU this long within one tick is contention.
const CONTENDED: Duration = Duration::from_millis(2);
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
        if run_delay(tid).is_none() {
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
        let mut waited: Vec<(i32, u64)> = Vec::new();
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
                let Some(delay) = run_delay(*tid) else {
                    continue;
                };
                match waited.iter_mut().find(|(t, _)| t == tid) {
                    Some((_, before)) => {
                        contended |= delay.saturating_sub(*before) > CONTENDED.as_nanos() as u64;
                        *before = delay;
                    }
                    None => waited.push((*tid, delay)),
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

/// Nanoseconds thread `tid` of this process has spent runnable but waiting for a CPU.
fn run_delay(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    parse_schedstat(&s)
}

/// The second field of a schedstat line: time on a CPU, time waiting, timeslices.
fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_wait_field() {
        assert_eq!(parse_schedstat("123 456 7\n"), Some(456));
        assert_eq!(parse_schedstat("123"), None);
    }
}
