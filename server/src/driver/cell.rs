//! A connection's state that the rest of its reactor reaches: the inbox pump
//! queues replies, the sweeper marks a passed deadline, the control task
//! fails the request of a worker that died; each then wakes the
//! connection's task. All on one thread: cells, no locks.

use std::cell::{Cell, RefCell};
use std::task::{Context, Waker};
use std::time::Instant;

/// A worker as a connection names it: its place in the reactor's table and
/// its id (so a place reused by a newer worker is not mistaken for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerKey {
    /// Index in the reactor's worker table.
    pub index: usize,
    /// The worker's id (`worker.<id>!`).
    pub id: u32,
}

/// One entry of a [`ConnCell`]'s reply queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// A message from the worker.
    Message(&'a [u8]),
    /// The worker died: the request fails (after the replies before it).
    WorkerDied,
    /// The worker sent more than its response window allows: the request
    /// fails (replies after this were dropped).
    Overrun,
}

/// Queue entry lengths with a meaning of their own.
const WORKER_DIED: u32 = u32::MAX;
const OVERRUN: u32 = u32::MAX - 1;

/// See the module documentation.
pub struct ConnCell {
    /// Replies in arrival order, `[len:u32 LE][message]` each; the lengths
    /// [`WORKER_DIED`] and [`OVERRUN`] (no message) are events. At most
    /// `limit` bytes.
    replies: RefCell<Vec<u8>>,
    /// Most bytes the reply queue may hold; a reply beyond it is dropped
    /// and the queue ends with [`Reply::Overrun`].
    limit: usize,
    /// The queue ends with an overrun: later replies are dropped too.
    overrun: Cell<bool>,
    /// The worker holding the current request.
    pub worker: Cell<Option<WorkerKey>>,
    /// When the current deadline passes (`None`: no deadline).
    deadline: Cell<Option<Instant>>,
    /// The sweeper found `deadline` passed; cleared by a new deadline.
    pub expired: Cell<bool>,
    /// Bumped by every [`ConnCell::notify`]: the connection task sleeps only
    /// if nothing happened since it last looked.
    pub events: Cell<u64>,
    /// The connection task's waker (kept: notifying wakes it by reference).
    task: Cell<Option<Waker>>,
    /// The connection is on its reactor's list of waiters for room.
    pub waits_for_room: Cell<bool>,
}

impl ConnCell {
    /// A cell whose reply queue holds at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        ConnCell {
            replies: RefCell::default(),
            limit,
            overrun: Cell::new(false),
            worker: Cell::new(None),
            deadline: Cell::new(None),
            expired: Cell::new(false),
            events: Cell::new(0),
            task: Cell::new(None),
            waits_for_room: Cell::new(false),
        }
    }

    /// Wakes the connection task (something it may wait for happened).
    pub fn notify(&self) {
        self.events.set(self.events.get().wrapping_add(1));
        let task = self.task.take();
        if let Some(w) = &task {
            w.wake_by_ref();
        }
        self.task.set(task);
    }

    /// Queues a reply from the worker (the inbox pump). A worker that keeps
    /// to its response window never reaches the limit; one that does not
    /// gets its request failed instead of the reactor's memory filled.
    pub fn push_reply(&self, msg: &[u8]) {
        if self.overrun.get() {
            return;
        }
        let mut q = self.replies.borrow_mut();
        if q.len() + 4 + msg.len() > self.limit {
            q.extend_from_slice(&OVERRUN.to_le_bytes());
            self.overrun.set(true);
        } else {
            q.extend_from_slice(&(msg.len() as u32).to_le_bytes());
            q.extend_from_slice(msg);
        }
        drop(q);
        self.notify();
    }

    /// The worker holding the current request died: fails it after the
    /// replies that came before.
    pub fn worker_died(&self) {
        self.replies
            .borrow_mut()
            .extend_from_slice(&WORKER_DIED.to_le_bytes());
        self.notify();
    }

    /// Marks the connection if its deadline passed by `now` (the sweeper).
    pub fn check_deadline(&self, now: Instant) {
        if !self.expired.get() && self.deadline.get().is_some_and(|d| d <= now) {
            self.expired.set(true);
            self.notify();
        }
    }

    /// The deadline now.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.get()
    }

    /// Sets (or clears) the deadline.
    pub fn set_deadline(&self, d: Option<Instant>) {
        self.deadline.set(d);
        self.expired.set(false);
    }

    /// Remembers the running task's waker so that [`ConnCell::notify`] wakes it.
    pub fn register(&self, cx: &Context<'_>) {
        match self.task.take() {
            Some(w) if w.will_wake(cx.waker()) => self.task.set(Some(w)),
            _ => self.task.set(Some(cx.waker().clone())),
        }
    }

    /// Moves the queued replies into `batch` (which must be empty), leaving
    /// `batch`'s old buffer to the queue: no copy, no allocation. Read them
    /// with [`replies`].
    pub fn take_replies(&self, batch: &mut Vec<u8>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut *self.replies.borrow_mut(), batch);
        self.overrun.set(false);
    }

    /// Drops the queued replies (all of them belong to earlier requests),
    /// and the queue's memory if one large response grew it.
    pub fn clear_replies(&self) {
        let mut q = self.replies.borrow_mut();
        q.clear();
        super::io::shrink(&mut q);
        self.overrun.set(false);
    }
}

/// The entries of a batch taken with [`ConnCell::take_replies`].
pub fn replies(batch: &[u8]) -> impl Iterator<Item = Reply<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(batch.get(at..at + 4)?.try_into().expect("4 bytes"));
        at += 4;
        Some(match len {
            WORKER_DIED => Reply::WorkerDied,
            OVERRUN => Reply::Overrun,
            n => {
                let msg = &batch[at..at + n as usize];
                at += n as usize;
                Reply::Message(msg)
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    /// A waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn a_passed_deadline_marks_the_connection_and_wakes_its_task_once() {
        let cell = ConnCell::new(1 << 20);
        let (count, waker) = counting();
        cell.register(&Context::from_waker(&waker));
        let t = Instant::now();
        cell.set_deadline(Some(t + Duration::from_millis(100)));
        let seen = cell.events.get();
        cell.check_deadline(t + Duration::from_millis(99));
        assert!(!cell.expired.get());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        cell.check_deadline(t + Duration::from_millis(100));
        assert!(cell.expired.get());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_ne!(cell.events.get(), seen);
        // Later sweeps do not wake it again for the same deadline.
        cell.check_deadline(t + Duration::from_millis(300));
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        // A new deadline clears the mark; no deadline never expires.
        cell.set_deadline(None);
        assert!(!cell.expired.get());
        cell.check_deadline(t + Duration::from_secs(3600));
        assert!(!cell.expired.get());
    }

    #[test]
    fn a_notification_with_no_task_waiting_is_still_seen() {
        let cell = ConnCell::new(1 << 20);
        let seen = cell.events.get();
        // Something happens while the task is busy (no waker registered):
        // the count moves, so its next wait returns at once.
        cell.push_reply(b"late");
        assert_ne!(cell.events.get(), seen);
    }

    #[test]
    fn replies_and_a_worker_death_keep_their_order() {
        let cell = ConnCell::new(1 << 20);
        cell.push_reply(b"one");
        cell.worker_died();
        cell.push_reply(b"");
        let mut batch = Vec::new();
        cell.take_replies(&mut batch);
        let got: Vec<Reply<'_>> = replies(&batch).collect();
        assert_eq!(
            got,
            vec![
                Reply::Message(b"one"),
                Reply::WorkerDied,
                Reply::Message(b"")
            ]
        );
        // The queue kept the (empty) buffer it was given.
        assert!(cell.replies.borrow().is_empty());
    }

    #[test]
    fn replies_beyond_the_limit_are_dropped_and_reported_once() {
        let cell = ConnCell::new(20);
        cell.push_reply(b"0123456789"); // 14 bytes queued
        cell.push_reply(b"0123"); // 8 more would be 22: dropped
        cell.push_reply(b"x"); // dropped too, though it would fit
        let mut batch = Vec::new();
        cell.take_replies(&mut batch);
        let got: Vec<Reply<'_>> = replies(&batch).collect();
        assert_eq!(got, vec![Reply::Message(b"0123456789"), Reply::Overrun]);
        assert!(batch.len() <= 20);
        // Taken: the next request starts clean.
        cell.push_reply(b"x");
        let mut batch = Vec::new();
        cell.take_replies(&mut batch);
        assert_eq!(
            replies(&batch).collect::<Vec<_>>(),
            vec![Reply::Message(b"x")]
        );
    }
}
