//! Scheduling policy of the daemon's own threads (`uring/handoff.rs`).
//!
//! Invariant: only threads of this process are changed, by their thread ids.

use std::io;

/// The calling thread's id.
pub fn gettid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Puts thread `tid` under SCHED_IDLE (`idle`) or back under SCHED_OTHER.
pub fn set_idle(tid: i32, idle: bool) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    let policy = if idle {
        libc::SCHED_IDLE
    } else {
        libc::SCHED_OTHER
    };
    // SAFETY: sched_setscheduler reads `param`, which lives across the call; a tid that is
    // gone gives ESRCH.
    let r = unsafe { libc::sched_setscheduler(tid, policy, &param) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
