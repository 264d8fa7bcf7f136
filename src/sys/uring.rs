//! FUSE over io_uring, the system side: an io_uring of 128-byte SQEs that owns one FUSE ring
//! entry (a header buffer and a payload buffer), registered with a /dev/fuse connection and then
//! cycled with COMMIT_AND_FETCH: each completion is a request the kernel wrote into the
//! buffers, each commit hands the reply back and asks for the next request.
//!
//! Invariant: the kernel owns the buffers from a submit until its completion; `buffers` (and so
//! plyfs) touches them only in between, which the `&mut self` of the one thread that drives the
//! entry guarantees.

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// `sizeof(struct fuse_uring_req_header)`: the in/out header (128 bytes), the operation's own
/// header (128) and `struct fuse_uring_ent_in_out` (32).
pub const HEADERS_LEN: usize = 288;

/// `FUSE_IO_URING_CMD_REGISTER` and `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`.
const CMD_REGISTER: u32 = 1;
const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `FUSE_URING_IOV_SEGS`: the header buffer and the payload buffer.
const IOV_SEGS: u32 = 2;

const _: () = assert!(std::mem::size_of::<squeue::Entry128>() == 128);

pub struct RingEntry {
    ring: IoUring<squeue::Entry128, cqueue::Entry>,
    qid: u16,
    headers: Box<[u8]>,
    payload: Box<[u8]>,
    /// The two buffers as the kernel reads them at registration.
    iov: Box<[libc::iovec; 2]>,
    dev: Option<Arc<OwnedFd>>,
}

// SAFETY: the iovecs point into the entry's own boxed buffers, which move with it; nothing else
// refers to them. The entry is driven by one thread at a time (`&mut self`).
unsafe impl Send for RingEntry {}

impl RingEntry {
    /// A new io_uring with one entry for queue `qid`, with a payload buffer of `payload_len`
    /// bytes (at least the connection's largest request or reply).
    pub fn new(qid: u16, payload_len: usize) -> io::Result<RingEntry> {
        let ring = IoUring::builder().build(4)?;
        let mut headers = vec![0u8; HEADERS_LEN].into_boxed_slice();
        let mut payload = vec![0u8; payload_len].into_boxed_slice();
        let iov = Box::new([
            libc::iovec {
                iov_base: headers.as_mut_ptr().cast(),
                iov_len: headers.len(),
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            },
        ]);
        Ok(RingEntry {
            ring,
            qid,
            headers,
            payload,
            iov,
            dev: None,
        })
    }

    /// The queue (CPU) the entry serves.
    pub fn qid(&self) -> u16 {
        self.qid
    }

    /// Registers the entry with the connection of `dev` and waits for its first request;
    /// the completion's result (negative errno on failure).
    pub fn register(&mut self, dev: &Arc<OwnedFd>) -> io::Result<i32> {
        self.dev = Some(dev.clone());
        self.submit_and_wait(CMD_REGISTER, 0)
    }

    /// Hands back the reply to request `commit_id` (already in the buffers) and waits for the
    /// next request; the completion's result.
    pub fn commit_and_fetch(&mut self, commit_id: u64) -> io::Result<i32> {
        self.submit_and_wait(CMD_COMMIT_AND_FETCH, commit_id)
    }

    /// The header and payload buffers, between a completion and the next submit.
    pub fn buffers(&mut self) -> (&mut [u8], &mut [u8]) {
        (&mut self.headers, &mut self.payload)
    }

    fn submit_and_wait(&mut self, cmd_op: u32, commit_id: u64) -> io::Result<i32> {
        let dev = self.dev.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        // struct fuse_uring_cmd_req: flags, commit_id, qid.
        let mut cmd = [0u8; 80];
        cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
        cmd[16..18].copy_from_slice(&self.qid.to_ne_bytes());
        let mut sqe = opcode::UringCmd80::new(types::Fd(dev.as_raw_fd()), cmd_op)
            .cmd(cmd)
            .addr(Some(self.iov.as_ptr() as u64))
            .build();
        // SAFETY: `Entry128` is `repr(C)`: the 64-byte `io_uring_sqe` and then 64 bytes of
        // command (asserted 128 bytes above); the SQE's `len`, which the crate's UringCmd80
        // does not set, is the u32 at byte 24. FUSE wants the iovec count there.
        let raw = unsafe { &mut *(&mut sqe as *mut squeue::Entry128).cast::<[u8; 128]>() };
        raw[24..28].copy_from_slice(&IOV_SEGS.to_ne_bytes());
        // SAFETY: the SQE points at `self.iov` and through it at `self.headers` and
        // `self.payload`, all owned by `self` and kept until the completion is reaped below
        // (or, should the wait fail, until the entry is dropped after the connection ends).
        unsafe { self.ring.submission().push(&sqe) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
            if let Some(cqe) = self.ring.completion().next() {
                return Ok(cqe.result());
            }
        }
    }
}
