//! One reactor thread: a tokio-uring runtime with its own listeners, its own
//! endpoint on the channel layer and its own inbox (`reactor.<k>!`).
//!
//! Tasks in a reactor:
//! - one accept loop per listener, spawning a connection task per client;
//! - the inbox pump, which moves worker replies from the layer to the
//!   connection they belong to (the record tag is the connection id);
//! - the connection tasks (`conn.rs`).
//!
//! Everything here is `!Send` and lives on this thread: no locks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Endpoint, Error as LayerError, Segment, SendError};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, watch, Notify};

use super::conn;
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

/// A message for a connection task.
pub enum Reply {
    /// A message from its worker.
    Msg(Vec<u8>),
    /// Its worker died.
    WorkerDied,
}

/// A connection, as the pump sees it.
pub struct ConnSlot {
    /// Where replies go.
    pub tx: mpsc::UnboundedSender<Reply>,
    /// The worker holding its current request.
    pub worker: Cell<Option<usize>>,
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
    conns: RefCell<HashMap<u64, Rc<ConnSlot>>>,
    next_conn: Cell<u64>,
    /// `true` once a graceful shutdown began.
    pub shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
    /// Signalled whenever a connection ends.
    conn_closed: Notify,
    /// A flush of held wake-ups is scheduled (see `flusher`).
    flush_scheduled: Cell<bool>,
    flush_needed: Notify,
}

impl Reactor {
    /// Registers a new connection; returns its id and reply receiver.
    pub fn open_conn(&self) -> (u64, Rc<ConnSlot>, mpsc::UnboundedReceiver<Reply>) {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = Rc::new(ConnSlot {
            tx,
            worker: Cell::new(None),
        });
        self.conns.borrow_mut().insert(id, slot.clone());
        (id, slot, rx)
    }

    /// Forgets a connection.
    pub fn close_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
        self.conn_closed.notify_one();
    }

    /// Sends the first message of a request to the least loaded worker that
    /// takes it; returns the worker.
    pub fn dispatch(&self, msg: &[u8]) -> Result<usize, ConnError> {
        let mut workers = self.workers.borrow_mut();
        let mut ep = self.ep.borrow_mut();
        let now = Instant::now();
        let mut order: Vec<usize> = (0..workers.len()).collect();
        order.sort_by_key(|&w| workers[w].inflight);
        for w in order {
            let wr = &mut workers[w];
            if wr.id.is_none() {
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
        Err(ConnError::NoWorker)
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
            self.flush_needed.notify_one();
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
        for c in self.conns.borrow().values() {
            if c.worker.get() == Some(w) {
                let _ = c.tx.send(Reply::WorkerDied);
            }
        }
    }

    fn deliver(&self, tag: &[u8], msg: &[u8]) {
        if tag.is_empty() {
            match wire::decode_to_server(msg) {
                Ok(ToServer::WorkerDied { worker }) => self.worker_died(worker as usize),
                Ok(ToServer::Shutdown) => {
                    let _ = self.shutdown_tx.send(true);
                }
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
        if let Some(c) = self.conns.borrow().get(&conn) {
            let _ = c.tx.send(Reply::Msg(msg.to_vec()));
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

/// Moves replies from the inbox to connections. Sleeps on the endpoint's
/// doorbell only after arming it, so workers ring it only when we sleep.
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
    let mut buf = Vec::new();
    loop {
        let mut n = 0;
        while n < PUMP_BATCH {
            let got = r.ep.borrow_mut().try_receive_id(r.inbox, &mut buf);
            match got {
                Ok(Some(tag_len)) => {
                    r.deliver(&buf[..tag_len], &buf[tag_len..]);
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => eprintln!("ringway: reactor {}: inbox: {e}", r.k),
            }
        }
        if n > 0 {
            tokio::task::yield_now().await;
            continue;
        }
        match r.ep.borrow_mut().arm(&ring) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => {
                eprintln!("ringway: reactor {}: arming the inbox: {e}", r.k);
                return;
            }
        }
        match bell.readable().await {
            Ok(mut g) => {
                r.ep.borrow_mut().drain_bell();
                g.clear_ready();
            }
            Err(e) => {
                eprintln!("ringway: reactor {}: doorbell: {e}", r.k);
                return;
            }
        }
    }
}

/// Delivers the endpoint's held wake-ups once per turn of the runtime: the
/// connection tasks that sent requests in this turn run first (`yield_now`
/// puts this task behind them), so a worker is woken once for all of them.
async fn flusher(r: Rc<Reactor>) {
    loop {
        r.flush_needed.notified().await;
        tokio::task::yield_now().await;
        r.flush_scheduled.set(false);
        r.ep.borrow_mut().flush_wakeups();
    }
}

async fn accept_loop(r: Rc<Reactor>, l: Listener) {
    let mut shutdown = r.shutdown.clone();
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
            let (shutdown_tx, shutdown) = watch::channel(false);
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
                conns: RefCell::new(HashMap::new()),
                next_conn: Cell::new(0),
                shutdown,
                shutdown_tx,
                conn_closed: Notify::new(),
                flush_scheduled: Cell::new(false),
                flush_needed: Notify::new(),
            });
            r.ep.borrow_mut().hold_wakeups(true);
            tokio_uring::spawn(flusher(r.clone()));
            tokio_uring::spawn(pump(r.clone()));
            for l in adopted {
                tokio_uring::spawn(accept_loop(r.clone(), l));
            }
            let _ = ready.send(Ok(()));
            let mut sd = r.shutdown.clone();
            let _ = sd.wait_for(|s| *s).await;
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
