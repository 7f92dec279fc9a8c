//! One reactor thread: a tokio-uring runtime with its own listeners, its own
//! endpoint on the channel layer and its own inbox (`reactor.<k>!`).
//!
//! Tasks in a reactor:
//! - one accept loop per listener, spawning a connection task (`conn.rs`)
//!   per client;
//! - the inbox pump, which moves worker replies from the layer to the
//!   connection they belong to (the record tag is the connection id);
//!   it also delivers the wake-ups that the turn's sends held back;
//! - the sweeper, which enforces every connection's deadline.
//!
//! Everything here is `!Send` and lives on this thread: no locks.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Endpoint, Error as LayerError, Segment, SendError};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{watch, Notify};

use super::conn::{self, ConnCell};
use super::listen::StdListener;
use super::stream::Listener;
use crate::access_log::AccessLog;
use crate::asgi::wire::{self, ToServer};
use crate::config::Config;
use crate::errors::ConnError;

/// Most inbox messages handled before letting connection tasks run: enough
/// to amortise the wake-up, small enough that writes are not held back.
const PUMP_BATCH: usize = 256;

/// What a reactor needs from the process.
pub struct Shared {
    /// Options.
    pub cfg: Arc<Config>,
    /// The channel layer.
    pub seg: Segment,
    /// The access log, if enabled.
    pub log: Option<Arc<AccessLog>>,
}

/// A worker as one reactor sees it.
struct WorkerRef {
    /// Its inbox, `worker.<w>!`.
    ring: String,
    /// The resolved inbox, while the worker is up.
    id: Option<ChannelId>,
    /// Requests this reactor has in flight on it.
    inflight: u32,
    /// When to try resolving a down worker's inbox again.
    retry_at: Instant,
}

/// The open connections of a reactor, by slot. A connection id is its slot
/// in the low 32 bits and the slot's generation in the high 32, so a late
/// reply for a closed connection never reaches the next one in its slot, and
/// finding a connection is an index, not a hash.
#[derive(Default)]
pub struct Conns {
    slots: Vec<Slot>,
    /// Slots without a connection.
    free: Vec<u32>,
    /// Connections open.
    live: usize,
}

#[derive(Default)]
struct Slot {
    /// Bumped every time the slot is given out.
    gen: u32,
    cell: Option<Rc<ConnCell>>,
}

impl Conns {
    /// Adds a connection; returns its id.
    pub fn insert(&mut self, cell: Rc<ConnCell>) -> u64 {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.gen = slot.gen.wrapping_add(1);
        slot.cell = Some(cell);
        self.live += 1;
        (u64::from(slot.gen) << 32) | u64::from(index)
    }

    /// The connection with this id, if it is still open.
    pub fn get(&self, id: u64) -> Option<&Rc<ConnCell>> {
        let slot = self.slots.get((id & u64::from(u32::MAX)) as usize)?;
        if u64::from(slot.gen) != id >> 32 {
            return None;
        }
        slot.cell.as_ref()
    }

    /// Removes a connection (an id that is not open is ignored).
    pub fn remove(&mut self, id: u64) {
        if self.get(id).is_none() {
            return;
        }
        let index = (id & u64::from(u32::MAX)) as u32;
        self.slots[index as usize].cell = None;
        self.free.push(index);
        self.live -= 1;
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The open connections.
    pub fn iter(&self) -> impl Iterator<Item = &Rc<ConnCell>> {
        self.slots.iter().filter_map(|s| s.cell.as_ref())
    }
}

/// Per-thread reactor state.
pub struct Reactor {
    /// This reactor's number.
    pub k: u16,
    /// Options.
    pub cfg: Arc<Config>,
    /// Access log.
    pub log: Option<Arc<AccessLog>>,
    ep: RefCell<Endpoint>,
    inbox: ChannelId,
    workers: RefCell<Vec<WorkerRef>>,
    conns: RefCell<Conns>,
    /// The sweeper's period: deadlines are checked this often.
    pub tick: Duration,
    /// The time at the sweeper's last tick (see [`Reactor::deadline_in`]).
    now: Cell<Instant>,
    /// A graceful shutdown began (read on every request: a plain cell).
    shutting_down: Cell<bool>,
    /// The same, for the accept loops and the reactor's main task.
    shutdown_tx: watch::Sender<bool>,
    /// Signalled whenever a connection ends.
    conn_closed: Notify,
    /// Sends held wake-ups that the pump has not delivered yet.
    flush_scheduled: Cell<bool>,
    /// The pump, while it sleeps.
    pump_waker: Cell<Option<Waker>>,
}

impl Reactor {
    /// Registers a new connection; returns its id.
    pub fn open_conn(&self, cell: Rc<ConnCell>) -> u64 {
        self.conns.borrow_mut().insert(cell)
    }

    /// Forgets a connection.
    pub fn close_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(id);
        self.conn_closed.notify_one();
    }

    /// Whether a graceful shutdown began.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// The deadline for something that must happen within `d` from now, on
    /// the sweeper's clock: rounded up by a tick, so that with the sweeper's
    /// own lateness it passes between `d` and `d + 2 * tick` from now, never
    /// early. Reads no clock.
    pub fn deadline_in(&self, d: Duration) -> Instant {
        self.now.get() + d + self.tick
    }

    /// Sends the first message of a request to the least loaded worker that
    /// takes it; returns the worker.
    pub fn dispatch(&self, msg: &[u8]) -> Result<usize, ConnError> {
        let mut workers = self.workers.borrow_mut();
        let mut ep = self.ep.borrow_mut();
        // Workers tried so far, by bit (there are at most 48; see config.rs).
        let mut tried = 0u64;
        loop {
            let Some(w) = (0..workers.len())
                .filter(|&w| tried & (1 << w) == 0)
                .min_by_key(|&w| workers[w].inflight)
            else {
                return Err(ConnError::NoWorker);
            };
            tried |= 1 << w;
            let wr = &mut workers[w];
            if wr.id.is_none() {
                let now = Instant::now();
                if now < wr.retry_at {
                    continue;
                }
                match ep.channel(&wr.ring) {
                    Ok(id) => wr.id = Some(id),
                    Err(_) => {
                        wr.retry_at = now + Duration::from_millis(20);
                        continue;
                    }
                }
            }
            match ep.send_id(wr.id.expect("resolved"), b"", msg) {
                Ok(()) => {
                    wr.inflight += 1;
                    self.wake_later();
                    return Ok(w);
                }
                Err(SendError::Full) => continue,
                Err(SendError::Other(e)) => {
                    if !matches!(e, LayerError::NoReceiver(_)) {
                        eprintln!("ringway: reactor {}: sending to {}: {e}", self.k, wr.ring);
                    }
                    wr.id = None;
                }
            }
        }
    }

    /// Sends a further message of a request to its worker. `Full` is retried
    /// by the caller; any other failure means the worker is gone.
    pub fn send_to(&self, w: usize, msg: &[u8]) -> Result<(), SendError> {
        let id = self.workers.borrow()[w]
            .id
            .ok_or(SendError::Other(LayerError::NoReceiver(String::new())))?;
        let sent = self.ep.borrow_mut().send_id(id, b"", msg);
        match &sent {
            Ok(()) => self.wake_later(),
            // A full inbox: make sure its worker is awake to drain it.
            Err(SendError::Full) => self.ep.borrow_mut().flush_wakeups(),
            Err(_) => {}
        }
        sent
    }

    /// Schedules one flush of the held wake-ups after the tasks that are
    /// ready now have run: the requests they send wake each worker once.
    fn wake_later(&self) {
        if !self.flush_scheduled.replace(true) {
            if let Some(w) = self.pump_waker.take() {
                w.wake();
            }
        }
    }

    /// A request on worker `w` finished (or failed).
    pub fn request_done(&self, w: usize) {
        if let Some(wr) = self.workers.borrow_mut().get_mut(w) {
            wr.inflight = wr.inflight.saturating_sub(1);
        }
    }

    fn worker_died(&self, w: usize) {
        if let Some(wr) = self.workers.borrow_mut().get_mut(w) {
            wr.id = None;
            wr.inflight = 0;
            wr.retry_at = Instant::now();
        }
        for c in self.conns.borrow().iter() {
            if c.worker.get() == Some(w) {
                c.worker_died();
            }
        }
    }

    fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        let _ = self.shutdown_tx.send(true);
        // Idle connections close now; busy ones notice when they finish.
        for c in self.conns.borrow().iter() {
            c.notify();
        }
    }

    fn deliver(&self, tag: &[u8], msg: &[u8]) {
        if tag.is_empty() {
            match wire::decode_to_server(msg) {
                Ok(ToServer::WorkerDied { worker }) => self.worker_died(worker as usize),
                Ok(ToServer::Shutdown) => self.begin_shutdown(),
                other => eprintln!(
                    "ringway: reactor {}: unexpected control message {other:?}",
                    self.k
                ),
            }
            return;
        }
        let Ok(conn) = <[u8; 8]>::try_from(tag).map(u64::from_le_bytes) else {
            eprintln!(
                "ringway: reactor {}: reply with a {}-byte tag dropped",
                self.k,
                tag.len()
            );
            return;
        };
        // A reply for a connection that has closed is dropped.
        if let Some(c) = self.conns.borrow().get(conn) {
            c.push_reply(msg);
        }
    }
}

/// A borrowed descriptor for `AsyncFd` (the endpoint owns the doorbell).
struct BellFd(RawFd);

impl AsRawFd for BellFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The reactor's side of the layer, one task per reactor: moves replies
/// from the inbox to connections, and delivers the wake-ups that requests
/// sent in a turn of the runtime held back, once per turn.
///
/// While replies keep coming it looks at the inbox once per turn (each look
/// drains up to [`PUMP_BATCH`]); with nothing to do it arms the inbox and
/// sleeps on the endpoint's doorbell, so workers ring it only when the
/// reactor sleeps, and wakes for it or for wake-ups to deliver. Delivering
/// them always waits for the runtime's next look at I/O (`yield_now`): the
/// connection tasks that send requests in a turn run first, so a worker is
/// woken once for all of them, and only if it sleeps.
async fn pump(r: Rc<Reactor>) {
    let fd = match r.ep.borrow_mut().wait_fd() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("ringway: reactor {}: no doorbell: {e}", r.k);
            return;
        }
    };
    // SAFETY: the doorbell descriptor belongs to the endpoint in `r`, which
    // this task keeps alive (and open) for as long as `bell` exists.
    let bell = match unsafe { AsyncFd::register_with_interest(BellFd(fd), Interest::READABLE) } {
        Ok(b) => b,
        Err(e) => {
            let e = e.into_parts().1;
            eprintln!("ringway: reactor {}: cannot watch the doorbell: {e}", r.k);
            return;
        }
    };
    let ring = format!("reactor.{}!", r.k);
    loop {
        // Wake-ups held by the sends of the turns before this look.
        if r.flush_scheduled.replace(false) {
            r.ep.borrow_mut().flush_wakeups();
        }
        // One batch: one claim and one clock read for all of it.
        let got =
            r.ep.borrow_mut()
                .try_receive_many(r.inbox, PUMP_BATCH, |tag, msg| r.deliver(tag, msg));
        match got {
            Ok(0) => {}
            Ok(_) => {
                // Let the connections write what arrived, then look again.
                tokio::task::yield_now().await;
                continue;
            }
            Err(e) => {
                eprintln!("ringway: reactor {}: inbox: {e}", r.k);
                tokio::task::yield_now().await;
                continue;
            }
        }
        match r.ep.borrow_mut().arm(&ring) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                eprintln!("ringway: reactor {}: arming the inbox: {e}", r.k);
                return;
            }
        }
        let rang = poll_fn(|cx| {
            if r.flush_scheduled.get() {
                return Poll::Ready(Ok(false));
            }
            match bell.poll_read_ready(cx) {
                Poll::Ready(Ok(mut g)) => {
                    r.ep.borrow_mut().drain_bell();
                    g.clear_ready();
                    Poll::Ready(Ok(true))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => {
                    r.pump_waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            }
        })
        .await;
        match rang {
            Ok(true) => {}
            // Wake-ups to deliver: after the tasks that are ready now.
            Ok(false) => tokio::task::yield_now().await,
            Err(e) => {
                eprintln!("ringway: reactor {}: doorbell: {e}", r.k);
                return;
            }
        }
    }
}

/// Enforces deadlines: every `tick`, marks the connections whose deadline
/// has passed and wakes them; each decides what its deadline meant (408,
/// 504, a dropped writer, an idle close). One timer per reactor instead of
/// several registrations per request; the price is `tick` of slack.
async fn sweeper(r: Rc<Reactor>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + r.tick, r.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        r.now.set(now);
        for c in r.conns.borrow().iter() {
            c.check_deadline(now);
        }
    }
}

/// The sweeper's period for these options: an eighth of the shortest
/// timeout, between 1 ms and 250 ms. A deadline passes at most two ticks
/// late (a quarter of the shortest timeout); with the defaults (5 s
/// keep-alive) the sweeper wakes four times a second.
pub fn tick_for(cfg: &Config) -> Duration {
    let shortest = [
        cfg.keep_alive,
        cfg.header_timeout,
        cfg.timeout,
        cfg.write_timeout,
    ]
    .into_iter()
    .min()
    .unwrap_or(Duration::from_secs(1));
    (shortest / 8).clamp(Duration::from_millis(1), Duration::from_millis(250))
}

async fn accept_loop(r: Rc<Reactor>, l: Listener) {
    let mut shutdown = r.shutdown_tx.subscribe();
    loop {
        tokio::select! {
            res = l.accept() => match res {
                Ok((stream, peer, local)) => {
                    tokio_uring::spawn(conn::serve(r.clone(), stream, peer, local));
                }
                Err(e) => {
                    eprintln!("ringway: reactor {}: accept: {e}", r.k);
                    // Out of descriptors: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Runs reactor `k` until a graceful shutdown completes. Reports readiness
/// (or why it could not start) through `ready`.
pub fn run(
    k: u16,
    listeners: Vec<StdListener>,
    shared: Arc<Shared>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    tokio_uring::builder()
        .entries(1024)
        // COOP_TASKRUN: completions do not interrupt a running reactor with an
        // IPI; it picks them up when it next enters the kernel, which it does
        // constantly. (Same setting as the ceiling in bench/.)
        .uring_builder(tokio_uring::uring_builder().setup_coop_taskrun())
        .start(async move {
            let setup = (|| {
                let mut ep = shared
                    .seg
                    .endpoint()
                    .map_err(|e| format!("attaching to the layer: {e}"))?;
                let inbox = ep
                    .own_channel(&format!("reactor.{k}!"))
                    .map_err(|e| format!("creating the inbox: {e}"))?;
                let adopted = listeners
                    .into_iter()
                    .map(Listener::adopt)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("adopting listeners: {e}"))?;
                Ok::<_, String>((ep, inbox, adopted))
            })();
            let (ep, inbox, adopted) = match setup {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready.send(Err(format!("reactor {k}: {e}")));
                    return;
                }
            };
            let (shutdown_tx, mut shutdown) = watch::channel(false);
            let workers = (0..shared.cfg.workers)
                .map(|w| WorkerRef {
                    ring: format!("worker.{w}!"),
                    id: None,
                    inflight: 0,
                    retry_at: Instant::now(),
                })
                .collect();
            let r = Rc::new(Reactor {
                k,
                cfg: shared.cfg.clone(),
                log: shared.log.clone(),
                ep: RefCell::new(ep),
                inbox,
                workers: RefCell::new(workers),
                conns: RefCell::new(Conns::default()),
                tick: tick_for(&shared.cfg),
                now: Cell::new(Instant::now()),
                shutting_down: Cell::new(false),
                shutdown_tx,
                conn_closed: Notify::new(),
                flush_scheduled: Cell::new(false),
                pump_waker: Cell::new(None),
            });
            r.ep.borrow_mut().hold_wakeups(true);
            tokio_uring::spawn(pump(r.clone()));
            tokio_uring::spawn(sweeper(r.clone()));
            for l in adopted {
                tokio_uring::spawn(accept_loop(r.clone(), l));
            }
            let _ = ready.send(Ok(()));
            let _ = shutdown.wait_for(|s| *s).await;
            // Graceful: no new connections; in-flight requests get until the deadline.
            let deadline = tokio::time::Instant::now() + shared.cfg.graceful_timeout;
            while !r.conns.borrow().is_empty() {
                tokio::select! {
                    _ = r.conn_closed.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let mut conns = Conns::default();
        let a = conns.insert(Rc::new(ConnCell::new()));
        let b = conns.insert(Rc::new(ConnCell::new()));
        assert_ne!(a, b);
        assert_eq!(conns.len(), 2);
        conns.remove(a);
        assert!(conns.get(a).is_none());
        let c = conns.insert(Rc::new(ConnCell::new()));
        // Same slot, new generation: a late reply for `a` finds nothing.
        assert_eq!(c & 0xffff_ffff, a & 0xffff_ffff);
        assert_ne!(c, a);
        assert!(conns.get(a).is_none());
        assert!(conns.get(c).is_some() && conns.get(b).is_some());
        // Removing a stale id does not remove the slot's new connection.
        conns.remove(a);
        assert!(conns.get(c).is_some());
        assert_eq!((conns.len(), conns.iter().count()), (2, 2));
        conns.remove(b);
        conns.remove(c);
        assert!(conns.is_empty());
        assert!(conns.get(u64::MAX).is_none());
    }

    #[test]
    fn the_sweeper_ticks_at_an_eighth_of_the_shortest_timeout() {
        let mut cfg = Config::default();
        assert_eq!(tick_for(&cfg), Duration::from_millis(250));
        cfg.header_timeout = Duration::from_millis(300);
        assert_eq!(tick_for(&cfg), Duration::from_micros(37_500));
        cfg.timeout = Duration::from_micros(10);
        assert_eq!(tick_for(&cfg), Duration::from_millis(1));
    }
}
