//! One reactor's shared state and its background tasks: the table of open
//! connections, the table of workers, the inbox pump, the sweeper, and the
//! control task that takes the supervisor's messages.
//!
//! Tasks in a reactor (started by [`super::run`]):
//! - one accept loop per listener, spawning a connection task per client;
//! - the inbox pump, which moves worker replies from the layer to the
//!   connection they belong to (the record tag is the connection id), and
//!   delivers the wake-ups the turn's sends held back and the small
//!   messages that found a worker's inbox full;
//! - the sweeper, which enforces every connection's deadline;
//! - the control task (the supervisor's messages).
//!
//! Everything here is `!Send` and lives on this thread: no locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Endpoint, Error as LayerError, SendError, MAX_ENDPOINTS};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{watch, Notify};

use super::cell::{ConnCell, WorkerKey};
use crate::access_log::AccessLog;
use crate::asgi::wire;
use crate::config::Config;
use crate::control::{self, ToReactor, ToSupervisor};
use crate::errors::ConnError;

/// Most inbox messages handled before letting connection tasks run: enough
/// to amortise the wake-up, small enough that writes are not held back.
const PUMP_BATCH: usize = 256;

/// Whether a worker takes new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Serving {
    /// Yes.
    Up,
    /// It has messages waiting that it does not take (the supervisor says):
    /// only when no worker is up.
    Stalled,
    /// Retiring: no new requests; the supervisor hears when this reactor
    /// holds none of its requests.
    Retiring,
    /// Its process is gone; the entry may be reused.
    Gone,
}

/// A worker as one reactor sees it.
struct WorkerRef {
    /// Its id; its inbox is `worker.<id>!`.
    id: u32,
    serving: Serving,
    /// The resolved inbox, once resolved.
    chan: Option<ChannelId>,
    /// Requests this reactor has in flight on it.
    inflight: u32,
    /// When to try resolving its inbox again (the segment lock was busy).
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
    /// The layer's largest message (the first chunk of a request body is
    /// sized to fit beside its scope).
    pub max_message: usize,
    /// Most bytes of replies one connection may have queued (see
    /// [`ConnCell::push_reply`]): the response window and two messages.
    pub reply_limit: usize,
    /// How far a connection reads ahead once its request head is in: enough
    /// for one body chunk (one layer message), and no more, so a client
    /// sending faster than its worker takes cannot fill the server's memory.
    pub read_ahead: usize,
    ep: RefCell<Endpoint>,
    inbox: ChannelId,
    workers: RefCell<Vec<WorkerRef>>,
    conns: RefCell<Conns>,
    /// Small messages (disconnects, credits) that found their worker's inbox
    /// full, in order; the pump sends them as room appears. At most one
    /// credit and one disconnect per request; a worker that stops taking
    /// them is killed by the supervisor's heartbeat, which empties its share.
    owed: RefCell<VecDeque<(WorkerKey, Vec<u8>)>>,
    /// Connections waiting for room in a worker's inbox; woken by the pump.
    space_waiters: RefCell<Vec<Rc<ConnCell>>>,
    /// Worker inboxes found full and not armed yet: the pump asks their
    /// consumers to ring its doorbell when they make room.
    full: RefCell<Vec<ChannelId>>,
    /// Worker inboxes armed since the doorbell last rang: a send that finds
    /// one of them full again waits for the ring, without a new turn.
    armed: RefCell<Vec<ChannelId>>,
    /// The sweeper's period: deadlines are checked this often.
    pub tick: Duration,
    /// The time at the sweeper's last tick (see [`Reactor::deadline_in`]).
    now: Cell<Instant>,
    /// A graceful shutdown began (read on every request: a plain cell).
    shutting_down: Cell<bool>,
    /// The same, for the accept loops and the reactor's main task.
    pub shutdown_tx: watch::Sender<bool>,
    /// Signalled whenever a connection ends.
    pub conn_closed: Notify,
    /// Sends held wake-ups that the pump has not delivered yet.
    flush_scheduled: Cell<bool>,
    /// Something for the pump besides its inbox: a newly full worker inbox
    /// to arm, or waiters to retry (see [`Reactor::kick_pump`]).
    kicked: Cell<bool>,
    /// The sweeper ticked: waiters for room retry even if no doorbell rang.
    ticked: Cell<bool>,
    /// The pump, while it sleeps.
    pump_waker: Cell<Option<Waker>>,
    /// To the supervisor.
    supervisor: control::Sender<ToSupervisor>,
}

/// Why a request could not be handed to a worker.
#[derive(Debug, PartialEq, Eq)]
pub enum DispatchError {
    /// No worker is up.
    NoWorker,
    /// Every worker that is up has a full inbox, or cannot be reached this
    /// instant: wait for room (or a tick) and try again.
    Full,
}

impl Reactor {
    /// A reactor's state, before its tasks start.
    #[allow(clippy::too_many_arguments)] // One place builds it.
    pub fn new(
        k: u16,
        cfg: Arc<Config>,
        log: Option<Arc<AccessLog>>,
        ep: Endpoint,
        inbox: ChannelId,
        workers: &[u32],
        supervisor: control::Sender<ToSupervisor>,
        shutdown_tx: watch::Sender<bool>,
    ) -> Reactor {
        let max_message = ep.segment().geometry().max_message as usize;
        let now = Instant::now();
        Reactor {
            k,
            tick: tick_for(&cfg),
            reply_limit: cfg.response_window + 2 * (max_message + 64),
            read_ahead: super::conn::READ_AHEAD.max(max_message),
            max_message,
            cfg,
            log,
            ep: RefCell::new(ep),
            inbox,
            workers: RefCell::new(
                workers
                    .iter()
                    .map(|&id| WorkerRef {
                        id,
                        serving: Serving::Up,
                        chan: None,
                        inflight: 0,
                        retry_at: now,
                    })
                    .collect(),
            ),
            conns: RefCell::new(Conns::default()),
            owed: RefCell::default(),
            space_waiters: RefCell::default(),
            full: RefCell::default(),
            armed: RefCell::default(),
            now: Cell::new(now),
            shutting_down: Cell::new(false),
            shutdown_tx,
            conn_closed: Notify::new(),
            flush_scheduled: Cell::new(false),
            kicked: Cell::new(false),
            ticked: Cell::new(false),
            pump_waker: Cell::new(None),
            supervisor,
        }
    }

    /// Registers a new connection; returns its id.
    pub fn open_conn(&self, cell: Rc<ConnCell>) -> u64 {
        self.conns.borrow_mut().insert(cell)
    }

    /// Forgets a connection.
    pub fn close_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(id);
        self.conn_closed.notify_one();
    }

    /// How many connections are open.
    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
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

    /// Resolves worker `i`'s inbox if need be; `None` if it cannot be now
    /// (the segment lock is busy: this reactor never waits for it).
    fn resolve(&self, ep: &mut Endpoint, wr: &mut WorkerRef) -> Option<ChannelId> {
        if wr.chan.is_none() {
            let now = Instant::now();
            if now < wr.retry_at {
                return None;
            }
            match ep.channel(&format!("worker.{}!", wr.id)) {
                Ok(id) => wr.chan = Some(id),
                Err(_) => {
                    wr.retry_at = now + Duration::from_millis(20);
                    return None;
                }
            }
        }
        wr.chan
    }

    /// Remembers that `chan` was full, for the pump to arm.
    fn note_full(&self, chan: ChannelId) {
        let mut full = self.full.borrow_mut();
        if !full.contains(&chan) && !self.armed.borrow().contains(&chan) {
            full.push(chan);
            drop(full);
            self.kick_pump();
        }
    }

    /// Sends the first message of a request to the least loaded worker that
    /// takes it (a stalled worker only when none is up); returns the worker.
    pub fn dispatch(&self, msg: &[u8]) -> Result<WorkerKey, DispatchError> {
        let mut workers = self.workers.borrow_mut();
        let mut ep = self.ep.borrow_mut();
        // Workers tried so far, by bit: the table never holds more entries
        // than the layer has endpoints (Gone entries are reused).
        let mut tried = [0u64; MAX_ENDPOINTS / 64];
        let untried = |tried: &[u64], i: usize| tried[i / 64] & (1 << (i % 64)) == 0;
        let mut full = false;
        loop {
            let pick = |want: Serving| {
                (0..workers.len().min(MAX_ENDPOINTS))
                    .filter(|&i| untried(&tried, i) && workers[i].serving == want)
                    .min_by_key(|&i| workers[i].inflight)
            };
            let Some(i) = pick(Serving::Up).or_else(|| pick(Serving::Stalled)) else {
                return Err(if full {
                    DispatchError::Full
                } else {
                    DispatchError::NoWorker
                });
            };
            tried[i / 64] |= 1 << (i % 64);
            let wr = &mut workers[i];
            let Some(chan) = self.resolve(&mut ep, wr) else {
                // Not resolvable this instant (the segment lock is busy, or
                // the worker has not taken its inbox yet): worth a retry.
                full = true;
                continue;
            };
            match ep.send_id(chan, b"", msg) {
                Ok(()) => {
                    wr.inflight += 1;
                    drop(ep);
                    self.wake_later();
                    return Ok(WorkerKey {
                        index: i,
                        id: wr.id,
                    });
                }
                Err(SendError::Full) => {
                    full = true;
                    self.note_full(chan);
                }
                // The first send into an inbox takes a lane, which needs the
                // segment lock: try again soon, and another worker now.
                Err(SendError::Other(LayerError::LockBusy)) => {
                    full = true;
                    wr.retry_at = Instant::now() + Duration::from_millis(20);
                }
                Err(SendError::Other(e)) => {
                    if !matches!(e, LayerError::NoReceiver(_)) {
                        elog!(
                            "ringway: reactor {}: sending to worker.{}!: {e}",
                            self.k,
                            wr.id
                        );
                    }
                    wr.chan = None;
                }
            }
        }
    }

    /// Sends a further message of a request to its worker. `Full` means
    /// wait for room ([`Reactor::wait_for_room`]); any other failure means
    /// the worker is gone.
    pub fn send_to(&self, w: WorkerKey, msg: &[u8]) -> Result<(), SendError> {
        let chan = {
            let workers = self.workers.borrow();
            match workers.get(w.index) {
                Some(wr) if wr.id == w.id && wr.serving != Serving::Gone => wr.chan,
                _ => None,
            }
        };
        let Some(chan) = chan else {
            return Err(SendError::Other(LayerError::NoReceiver(format!(
                "worker.{}!",
                w.id
            ))));
        };
        let sent = self.ep.borrow_mut().send_id(chan, b"", msg);
        match sent {
            Ok(()) => {
                self.wake_later();
                Ok(())
            }
            // A full inbox: make sure its worker is awake to drain it.
            Err(SendError::Full) => {
                self.ep.borrow_mut().flush_wakeups();
                self.note_full(chan);
                Err(SendError::Full)
            }
            // The segment lock is busy (a first send takes a lane): as good
            // as full for now; the sweeper wakes waiters to try again.
            Err(SendError::Other(LayerError::LockBusy)) => Err(SendError::Full),
            Err(e) => Err(e),
        }
    }

    /// Sends a small message that must not be lost (a disconnect, a credit)
    /// to worker `w`: now, or by the pump once its inbox has room. A worker
    /// that is gone needs neither.
    pub fn send_or_owe(&self, w: WorkerKey, msg: &[u8]) {
        if !self.owed.borrow().iter().any(|(k, _)| *k == w) {
            match self.send_to(w, msg) {
                Err(SendError::Full) => {}
                _ => return,
            }
        }
        let mut owed = self.owed.borrow_mut();
        // A credit replaces an older one for the same request (credits are
        // totals): at most one credit and one disconnect per request wait.
        if msg.first() == Some(&wire::kind::RESPONSE_CREDIT) {
            let route = &msg[1..1 + wire::ROUTE_LEN];
            if let Some(old) = owed.iter_mut().find(|(k, m)| {
                *k == w
                    && m.first() == Some(&wire::kind::RESPONSE_CREDIT)
                    && &m[1..1 + wire::ROUTE_LEN] == route
            }) {
                old.1.clear();
                old.1.extend_from_slice(msg);
                return;
            }
        }
        // Behind what this worker is owed already, to keep the order.
        owed.push_back((w, msg.to_vec()));
    }

    /// Registers `cell` to be woken when a worker's inbox may have room: when
    /// the inbox's worker rings the pump's doorbell after taking messages
    /// (the send that found it full noted it for the pump to arm), or at the
    /// sweeper's next tick (a send that found the segment lock busy, or a
    /// worker not reachable yet, has no doorbell to wait for).
    pub fn wait_for_room(&self, cell: &Rc<ConnCell>) {
        if !cell.waits_for_room.replace(true) {
            self.space_waiters.borrow_mut().push(cell.clone());
        }
    }

    /// Schedules one flush of the held wake-ups after the tasks that are
    /// ready now have run: the requests they send wake each worker once.
    fn wake_later(&self) {
        if !self.flush_scheduled.replace(true) {
            self.wake_pump();
        }
    }

    /// Makes the pump take a turn even if its doorbell is quiet: to arm a
    /// newly full inbox, or to let waiters for room try again.
    fn kick_pump(&self) {
        if !self.kicked.replace(true) {
            self.wake_pump();
        }
    }

    fn wake_pump(&self) {
        if let Some(w) = self.pump_waker.take() {
            w.wake();
        }
    }

    /// A request on worker `w` finished (or failed).
    pub fn request_done(&self, w: WorkerKey) {
        let mut workers = self.workers.borrow_mut();
        let Some(wr) = workers.get_mut(w.index).filter(|wr| wr.id == w.id) else {
            return;
        };
        wr.inflight = wr.inflight.saturating_sub(1);
        if wr.inflight == 0 && wr.serving == Serving::Retiring {
            self.supervisor.send(ToSupervisor::Drained {
                reactor: self.k,
                id: wr.id,
            });
        }
    }

    /// Acts on a message from the supervisor.
    fn control(&self, m: ToReactor) {
        let mut workers = self.workers.borrow_mut();
        let find = |workers: &Vec<WorkerRef>, id| workers.iter().position(|w| w.id == id);
        match m {
            ToReactor::WorkerUp { id } => {
                let wr = WorkerRef {
                    id,
                    serving: Serving::Up,
                    chan: None,
                    inflight: 0,
                    retry_at: Instant::now(),
                };
                match workers.iter().position(|w| w.serving == Serving::Gone) {
                    Some(i) => workers[i] = wr,
                    None => workers.push(wr),
                }
            }
            ToReactor::Retire { id } => {
                if let Some(i) = find(&workers, id) {
                    let wr = &mut workers[i];
                    wr.serving = Serving::Retiring;
                    if wr.inflight == 0 {
                        self.supervisor.send(ToSupervisor::Drained {
                            reactor: self.k,
                            id,
                        });
                    }
                }
            }
            ToReactor::Stalled { id, stalled } => {
                if let Some(i) = find(&workers, id) {
                    let wr = &mut workers[i];
                    match (wr.serving, stalled) {
                        (Serving::Up, true) => wr.serving = Serving::Stalled,
                        (Serving::Stalled, false) => wr.serving = Serving::Up,
                        _ => {}
                    }
                }
            }
            ToReactor::WorkerDied { id } => {
                if let Some(i) = find(&workers, id) {
                    let wr = &mut workers[i];
                    wr.serving = Serving::Gone;
                    wr.chan = None;
                    wr.inflight = 0;
                    drop(workers);
                    let key = WorkerKey { index: i, id };
                    self.owed.borrow_mut().retain(|(k, _)| *k != key);
                    for c in self.conns.borrow().iter() {
                        if c.worker.get() == Some(key) {
                            c.worker_died();
                        }
                    }
                }
            }
            ToReactor::Shutdown => {
                drop(workers);
                self.begin_shutdown();
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
        let Ok(conn) = <[u8; 8]>::try_from(tag).map(u64::from_le_bytes) else {
            // Control messages never travel through the layer: anything
            // without a connection tag is a worker's mistake.
            elog!(
                "ringway: reactor {}: dropped a {}-byte message with a {}-byte tag",
                self.k,
                msg.len(),
                tag.len()
            );
            return;
        };
        // A reply for a connection that has closed is dropped.
        if let Some(c) = self.conns.borrow().get(conn) {
            c.push_reply(msg);
        }
    }

    /// Sends what the pump owes workers, in order per worker, until an
    /// inbox is full. Returns whether something is still owed.
    fn pay_owed(&self) -> bool {
        let mut owed = self.owed.borrow_mut();
        let mut blocked: Vec<WorkerKey> = Vec::new();
        let mut i = 0;
        while i < owed.len() {
            let key = owed[i].0;
            if blocked.contains(&key) {
                i += 1;
                continue;
            }
            match self.send_to(key, &owed[i].1) {
                Err(SendError::Full) => {
                    blocked.push(key);
                    i += 1;
                }
                // Sent, or the worker is gone (then nothing is owed).
                _ => {
                    owed.remove(i);
                }
            }
        }
        !owed.is_empty()
    }
}

/// A borrowed descriptor for `AsyncFd` (the endpoint owns the doorbell).
struct BorrowedFd(RawFd);

impl AsRawFd for BorrowedFd {
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
///
/// Returns only if the inbox cannot be watched: then the reactor cannot
/// serve, and the caller stops the server.
pub async fn pump(r: Rc<Reactor>) -> String {
    let fd = match r.ep.borrow_mut().wait_fd() {
        Ok(fd) => fd,
        Err(e) => return format!("no doorbell: {e}"),
    };
    // SAFETY: the doorbell descriptor belongs to the endpoint in `r`, which
    // this task keeps alive (and open) for as long as `bell` exists.
    let bell = match unsafe { AsyncFd::register_with_interest(BorrowedFd(fd), Interest::READABLE) }
    {
        Ok(b) => b,
        Err(e) => return format!("cannot watch the doorbell: {}", e.into_parts().1),
    };
    let ring = format!("reactor.{}!", r.k);
    let mut reported: Option<String> = None;
    // Waiters for room retry after a doorbell ring (room may have been
    // made), a sweeper tick, or when an armed inbox turned out to have room.
    let mut retry_waiters = false;
    loop {
        // Wake-ups held by the sends of the turns before this look.
        if r.flush_scheduled.replace(false) {
            r.ep.borrow_mut().flush_wakeups();
        }
        let owing = !r.owed.borrow().is_empty() && r.pay_owed();
        // Connections waiting for room try again (they wait again, and note
        // the inbox full again, if it still is).
        let waiting = !r.space_waiters.borrow().is_empty();
        if std::mem::take(&mut retry_waiters) | r.ticked.replace(false) {
            for c in r.space_waiters.borrow_mut().drain(..) {
                c.waits_for_room.set(false);
                c.notify();
            }
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
            // The inbox itself is gone (a worker flushed the layer): this
            // reactor can never hear from a worker again.
            Err(e @ LayerError::NoReceiver(_)) => return format!("its inbox is gone: {e}"),
            Err(e) => {
                // Reported once per kind of failure, not every turn; and
                // then the pump sleeps as if the inbox were empty (a failure
                // that does not go away must not make it spin).
                let text = e.to_string();
                if reported.as_deref() != Some(text.as_str()) {
                    elog!("ringway: reactor {}: inbox: {text}", r.k);
                    reported = Some(text);
                }
            }
        }
        // Someone waits for room in a full worker inbox: ask its worker to
        // ring the doorbell when it takes messages; if there is room
        // already, look again after the other tasks ran.
        let mut room = false;
        if owing || waiting {
            let full = std::mem::take(&mut *r.full.borrow_mut());
            for chan in full {
                // A gone inbox: its waiters learn that when they retry.
                if r.ep.borrow_mut().arm_space(chan).unwrap_or(true) {
                    room = true;
                } else {
                    r.armed.borrow_mut().push(chan);
                }
            }
        } else {
            // Nobody waits for room any more.
            r.full.borrow_mut().clear();
        }
        if room {
            retry_waiters = true;
            tokio::task::yield_now().await;
            continue;
        }
        match r.ep.borrow_mut().arm(&ring) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => return format!("arming the inbox: {e}"),
        }
        let rang = poll_fn(|cx| {
            // Wake-ups to deliver, or a kick.
            if r.flush_scheduled.get() || r.kicked.replace(false) {
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
            // Replies, or room in an armed inbox (the doorbell is shared).
            Ok(true) => {
                r.armed.borrow_mut().clear();
                retry_waiters = true;
            }
            // Wake-ups to deliver: after the tasks that are ready now.
            Ok(false) => tokio::task::yield_now().await,
            Err(e) => return format!("doorbell: {e}"),
        }
    }
}

/// Takes the supervisor's messages as they come.
pub async fn control_task(r: Rc<Reactor>, rx: control::Receiver<ToReactor>) {
    // SAFETY: the bell's descriptor is owned by `rx`, which this task keeps
    // alive for as long as `fd` exists.
    let fd = match unsafe {
        AsyncFd::register_with_interest(BorrowedFd(rx.bell().as_raw_fd()), Interest::READABLE)
    } {
        Ok(fd) => fd,
        Err(e) => {
            r.supervisor.send(ToSupervisor::Fatal {
                reactor: r.k,
                why: format!("cannot watch the control queue: {}", e.into_parts().1),
            });
            return;
        }
    };
    loop {
        for m in rx.drain() {
            r.control(m);
        }
        match fd.readable().await {
            Ok(mut g) => g.clear_ready(),
            Err(e) => {
                r.supervisor.send(ToSupervisor::Fatal {
                    reactor: r.k,
                    why: format!("control queue: {e}"),
                });
                return;
            }
        }
    }
}

/// Enforces deadlines: every `tick`, marks the connections whose deadline
/// has passed and wakes them; each decides what its deadline meant (408,
/// 504, a dropped writer, an idle close). One timer per reactor instead of
/// several registrations per request; the price is `tick` of slack.
pub async fn sweeper(r: Rc<Reactor>) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + r.tick, r.tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = Instant::now();
        r.now.set(now);
        for c in r.conns.borrow().iter() {
            c.check_deadline(now);
        }
        // The pump takes a turn every tick even if its doorbell stayed
        // quiet: waiters for room retry (a send that found the segment lock
        // busy has no doorbell to wait for), and a wake-up a buggy worker
        // lost (by scribbling the waiter bits) costs a tick, not a hang.
        r.ticked.set(true);
        r.kick_pump();
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

/// What [`ConnError`] a dispatch failure is once the request gives up.
impl From<DispatchError> for ConnError {
    fn from(_: DispatchError) -> Self {
        ConnError::NoWorker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_the_old_id() {
        let cell = || Rc::new(ConnCell::new(1 << 20));
        let mut conns = Conns::default();
        let a = conns.insert(cell());
        let b = conns.insert(cell());
        assert_ne!(a, b);
        assert_eq!(conns.len(), 2);
        conns.remove(a);
        assert!(conns.get(a).is_none());
        let c = conns.insert(cell());
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
