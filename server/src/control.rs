//! Messages between the supervisor (the main thread) and the reactor threads
//! of the server process.
//!
//! They never travel through the channel layer: a worker can write anything
//! into shared memory, so a "stop" or "worker died" read from the layer could
//! be forged by a buggy worker. In-process channels cannot. Each side has an
//! [`std::sync::mpsc`] queue and an eventfd ([`Bell`]) that the sender rings
//! after queueing, which the receiver watches in its event loop (`poll(2)`
//! for the supervisor, the runtime's readiness for a reactor). Neither side
//! ever blocks on the other: the queues are unbounded but carry one message
//! per worker event, not per request.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;

/// What the supervisor tells a reactor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToReactor {
    /// Worker `id` is ready (its inbox is `worker.<id>!`): send it requests.
    WorkerUp {
        /// The worker's id (unique for the server's life).
        id: u32,
    },
    /// Send worker `id` no new requests; answer [`ToSupervisor::Drained`]
    /// once this reactor has none of its requests in flight.
    Retire {
        /// The worker.
        id: u32,
    },
    /// Worker `id` has messages waiting that it does not take (stopped, or
    /// its event loop is stuck): prefer the others while `stalled`.
    Stalled {
        /// The worker.
        id: u32,
        /// Whether it is stalled (false: it took messages again).
        stalled: bool,
    },
    /// Worker `id`'s process exited: fail what it held (502) and forget it.
    WorkerDied {
        /// The worker.
        id: u32,
    },
    /// Stop accepting, let in-flight requests finish (up to
    /// `--graceful-timeout`), then return.
    Shutdown,
}

/// What a reactor tells the supervisor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToSupervisor {
    /// The reactor started (or could not).
    Started {
        /// Which reactor.
        reactor: u16,
        /// Why it could not start.
        result: Result<(), String>,
    },
    /// The reactor holds no request of retiring worker `id` any more.
    Drained {
        /// Which reactor.
        reactor: u16,
        /// The worker.
        id: u32,
    },
    /// The reactor cannot go on (its inbox broke): the server must stop.
    Fatal {
        /// Which reactor.
        reactor: u16,
        /// What happened.
        why: String,
    },
    /// The reactor thread ended (after a graceful shutdown, or a panic).
    Finished {
        /// Which reactor.
        reactor: u16,
    },
}

/// An eventfd used as a doorbell: `ring` makes it readable, `drain` resets it.
#[derive(Debug)]
pub struct Bell(OwnedFd);

impl Bell {
    /// A new non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Bell> {
        // SAFETY: plain syscall; the descriptor is owned by the Bell.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Bell(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the bell readable (never blocks: the counter saturating is the
    /// only way a write could, and it would take 2^64 rings).
    pub fn ring(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the bell after it became readable.
    pub fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN (already drained) is fine.
        unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Bell {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// The sending half of a queue with its bell.
pub struct Sender<T> {
    tx: mpsc::Sender<T>,
    bell: Arc<Bell>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> Sender<T> {
    /// Queues `msg` and rings the bell. A receiver that is gone is ignored
    /// (the process is stopping).
    pub fn send(&self, msg: T) {
        if self.tx.send(msg).is_ok() {
            self.bell.ring();
        }
    }
}

/// The receiving half: watch [`Receiver::bell`], then [`Receiver::drain`].
pub struct Receiver<T> {
    rx: mpsc::Receiver<T>,
    bell: Arc<Bell>,
}

impl<T> Receiver<T> {
    /// The descriptor that becomes readable when something was queued.
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Resets the bell, then takes everything queued (in that order, so a
    /// message queued meanwhile rings again and is not missed).
    pub fn drain(&self) -> Vec<T> {
        self.bell.drain();
        self.rx.try_iter().collect()
    }
}

/// A queue whose receiver is woken through an eventfd.
pub fn channel<T>() -> io::Result<(Sender<T>, Receiver<T>)> {
    let bell = Arc::new(Bell::new()?);
    let (tx, rx) = mpsc::channel();
    Ok((
        Sender {
            tx,
            bell: bell.clone(),
        },
        Receiver { rx, bell },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_queued_message_rings_the_bell_until_drained() {
        let (tx, rx) = channel().unwrap();
        assert!(!readable(rx.bell().as_raw_fd()));
        tx.send(ToReactor::WorkerUp { id: 7 });
        tx.clone().send(ToReactor::Shutdown);
        assert!(readable(rx.bell().as_raw_fd()));
        assert_eq!(
            rx.drain(),
            vec![ToReactor::WorkerUp { id: 7 }, ToReactor::Shutdown]
        );
        assert!(!readable(rx.bell().as_raw_fd()));
        assert!(rx.drain().is_empty());
    }
}
