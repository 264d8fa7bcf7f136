//! Kernel cache invalidations (FUSE notify): queued by whoever learns that the kernel's entries
//! or attributes went stale, and sent by one worker thread.
//!
//! Invariants: `queue` never blocks and takes no lock of the overlay, so it can be called from
//! anywhere; the worker holds no lock while it writes a notification to /dev/fuse (a
//! notification sent from inside a request handler, or under a lock a handler needs, can
//! deadlock against the kernel, which may be waiting for that handler). Before the session is
//! up (and in unit tests) queued invalidations wait in the channel.
//!
//! Hazard: the kernel takes the directory's inode lock, uninterruptibly, to drop an entry. If
//! the daemon is killed while such a notification waits for a lock that a process holds while
//! it waits for a reply from this daemon, the notifying thread never dies, so /dev/fuse stays
//! open and both wait for ever (until `echo 1 > /sys/fs/fuse/connections/N/abort`). So entries
//! are only invalidated for names that another program changed in the upper dir; attribute
//! invalidations (the common case: writes through passthrough files) take no lock.

use std::ffi::OsString;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use fuser::INodeNo;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inval {
    /// Drop the kernel's entry (positive or negative) for `name` in directory `parent`.
    Entry { parent: u64, name: OsString },
    /// Drop the kernel's cached attributes of `ino`.
    Inode { ino: u64 },
}

pub struct Notify {
    tx: Sender<Inval>,
    rx: Mutex<Option<Receiver<Inval>>>,
}

impl Default for Notify {
    fn default() -> Self {
        let (tx, rx) = channel();
        Notify {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Notify {
    pub fn queue(&self, inval: Inval) {
        let _ = self.tx.send(inval);
    }

    /// Starts the worker that sends what is queued through `notifier` (once).
    pub fn start(&self, notifier: fuser::Notifier) -> std::io::Result<()> {
        let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("plyfs-notify".into())
            .spawn(move || {
                for inval in rx {
                    let res = match &inval {
                        Inval::Entry { parent, name } => {
                            notifier.inval_entry(INodeNo(*parent), name)
                        }
                        // Attributes only (offset -1): no page locks.
                        Inval::Inode { ino } => notifier.inval_inode(INodeNo(*ino), -1, 0),
                    };
                    // ENOENT: the kernel did not have it cached, which is fine.
                    match res {
                        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                            tracing::debug!(?inval, %e, "invalidation not sent")
                        }
                        _ => tracing::trace!(?inval, "invalidated"),
                    }
                }
            })?;
        Ok(())
    }
}
