//! Waking the loop from another thread (the OneGate publisher, the gateway): an eventfd in the
//! `poll()` set. The thread changes its own shared state (a channel, a mutex), then wakes; the
//! loop turns, so `run_until` conditions are re-checked and [`super::Event::Woken`] is queued.

use nix::errno::Errno;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// The loop's end: the eventfd it polls.
#[derive(Debug)]
pub(super) struct WakeFd(Arc<OwnedFd>);

/// A cheap, clonable handle that makes the supervisor loop turn. `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Waker(Arc<OwnedFd>);

impl WakeFd {
    /// A non-blocking, close-on-exec eventfd (nix's wrapper needs a feature we do not enable).
    pub(super) fn new() -> nix::Result<WakeFd> {
        // SAFETY: eventfd takes an initial value and flags and returns a new fd or -1; the fd is
        // owned by nothing else, so handing it to OwnedFd right after the check is sound.
        let fd = Errno::result(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by eventfd and is not owned elsewhere.
        Ok(WakeFd(Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// A handle for threads, sharing the fd.
    pub(super) fn waker(&self) -> Waker {
        Waker(self.0.clone())
    }

    /// For the poll set.
    pub(super) fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Reset the counter; true if it had been woken.
    pub(super) fn clear(&self) -> bool {
        let mut buf = [0u8; 8];
        matches!(nix::unistd::read(&self.0, &mut buf), Ok(8))
    }
}

impl Waker {
    /// Make the loop turn soon. Never blocks; wakes coalesce.
    pub fn wake(&self) {
        // EAGAIN only when the counter is about to overflow, i.e. a wake is pending anyway.
        let _ = nix::unistd::write(&self.0, &1u64.to_ne_bytes());
    }
}
