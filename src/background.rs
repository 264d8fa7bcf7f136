//! A background thread fed through a bounded queue, for work a request handler hands off and
//! never waits for (`statahead.rs`, `ahead.rs`).
//!
//! Invariants: the thread starts with the first job; `send` never blocks and takes no lock (a
//! full queue, or a thread that could not start, drops the job, which is always work that
//! someone else does anyway or nobody needs); the thread ends with the process.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;

pub struct Background<T> {
    name: &'static str,
    /// Jobs that may wait for the thread.
    room: usize,
    /// Whether the thread runs under SCHED_IDLE (only on a CPU nothing else wants).
    idle: bool,
    queue: OnceLock<SyncSender<T>>,
}

impl<T: Send + 'static> Background<T> {
    pub const fn new(name: &'static str, room: usize, idle: bool) -> Background<T> {
        Background {
            name,
            room,
            idle,
            queue: OnceLock::new(),
        }
    }

    /// Queues `job`; the first one starts the thread, which runs `work` on each job in turn
    /// (later calls' `work` is not used). False when the job was dropped.
    pub fn send<F: FnMut(T) + Send + 'static>(&self, job: T, mut work: F) -> bool {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = sync_channel::<T>(self.room);
            let idle = self.idle;
            // Without the thread the receiver is gone and every job is dropped.
            let _ = std::thread::Builder::new()
                .name(self.name.into())
                .spawn(move || {
                    if idle {
                        let _ = crate::sys::sched::set_idle(crate::sys::sched::gettid(), true);
                    }
                    for job in rx {
                        work(job);
                    }
                });
            tx
        });
        queue.try_send(job).is_ok()
    }
}
