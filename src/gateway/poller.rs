//! A minimal level-triggered epoll(7) wrapper: the reactor waits on thousands of idle
//! connections with one thread, in O(ready) per wake-up instead of poll(2)'s O(all).
//!
//! libc directly (nix's epoll needs a feature the crate does not enable); every call is
//! checked and every unsafe block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// What to wait for on a descriptor. Errors and hang-ups are always reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
    Both,
    /// Only errors and hang-ups (a connection parked while it waits for a worker).
    None,
}

impl Interest {
    /// The epoll event mask.
    fn bits(self) -> u32 {
        let base = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
        base | match self {
            Interest::Read => (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            Interest::Write => libc::EPOLLOUT as u32,
            Interest::Both => (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLOUT) as u32,
            Interest::None => 0,
        }
    }
}

/// One readiness report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: the peer is gone (reading will say how).
    pub hangup: bool,
}

pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new epoll instance (close-on-exec, so Flower's container never inherits it).
    pub fn new(max_events: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked before use.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let zero = libc::epoll_event { events: 0, u64: 0 };
        Ok(Epoll { fd, events: vec![zero; max_events.max(1)] })
    }

    /// One epoll_ctl call.
    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: interest.bits(), u64: token };
        // SAFETY: `ev` is a valid epoll_event on our stack for the duration of the call; the
        // kernel copies it. `self.fd` is our epoll descriptor; `fd` is checked by the kernel.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Start watching `fd`; its events carry `token`.
    pub fn add(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    /// Stop watching `fd` (before handing it to another thread, or closing it).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, Interest::None)
    }

    /// Wait up to `timeout` and return the ready descriptors. EINTR is an empty wake-up.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<Event>> {
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        let max = self.events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: `self.events` holds `max` initialised epoll_event slots that the kernel may
        // overwrite; the returned count is at most `max`.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.events.as_mut_ptr(), max, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(Vec::new()) } else { Err(e) };
        }
        let n = (n as usize).min(self.events.len());
        Ok(self
            .events
            .iter()
            .take(n)
            .map(|ev| {
                let bits = ev.events;
                Event {
                    token: ev.u64,
                    readable: bits & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                    writable: bits & libc::EPOLLOUT as u32 != 0,
                    hangup: bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_readiness_by_token() {
        let mut ep = Epoll::new(8).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        ep.add(b.as_raw_fd(), 42, Interest::Read).unwrap();
        assert!(ep.wait(Duration::from_millis(10)).unwrap().is_empty());
        a.write_all(b"x").unwrap();
        let evs = ep.wait(Duration::from_secs(5)).unwrap();
        assert_eq!(evs.len(), 1);
        assert!(evs[0].token == 42 && evs[0].readable);
        // Parked: data is pending but not reported; a hang-up still is.
        ep.modify(b.as_raw_fd(), 42, Interest::None).unwrap();
        assert!(ep.wait(Duration::from_millis(10)).unwrap().is_empty());
        drop(a);
        let evs = ep.wait(Duration::from_secs(5)).unwrap();
        assert!(evs.len() == 1 && evs[0].hangup);
        ep.delete(b.as_raw_fd()).unwrap();
        assert!(ep.wait(Duration::from_millis(10)).unwrap().is_empty());
    }
}
