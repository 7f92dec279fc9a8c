//! `ringway._native.Worker`: a worker process's attachment to the channel
//! layer. It takes its inbox `worker.<id>!`, turns what arrives into Python
//! events (the scope built straight from the wire bytes, see
//! [`crate::decode`]), and encodes replies into the reactors' inboxes.
//!
//! Sends never block the caller. A reply that finds its reactor's inbox
//! full waits, in order, in an outbox that [`Worker::flush`] empties as room
//! appears (the consumer rings the doorbell when it makes room: `arm_space`).
//! What the outbox can hold is bounded by the flow control above it: a
//! request's response body waits for credits (`--response-window`), and its
//! request body for "body taken". One endpoint serves every thread of the
//! worker behind a mutex that is never held across a wait.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Mutex;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use ringway_layer_shm::{ChannelId, Endpoint, Error as LayerError, Segment, SendError};
use ringway_server::asgi::wire::{self, Route, ToWorker};

use crate::decode::{self, Interned};

/// Event kinds, as the first item of each event tuple.
pub mod event {
    /// `(REQUEST, key, scope, body, more_body)`.
    pub const REQUEST: u8 = 0;
    /// `(BODY, key, body, more_body)`.
    pub const BODY: u8 = 1;
    /// `(DISCONNECT, key)`.
    pub const DISCONNECT: u8 = 2;
    /// `(CREDIT, key, consumed)`.
    pub const CREDIT: u8 = 3;
}

/// A request's key for Python: its route packed into one integer
/// (`conn << 48 | reactor << 32 | req`), hashable and cheap.
pub fn key(r: Route) -> u128 {
    (u128::from(r.conn) << 48) | (u128::from(r.reactor) << 32) | u128::from(r.req)
}

/// The route a key packs.
pub fn route(key: u128) -> Route {
    Route {
        conn: (key >> 48) as u64,
        reactor: (key >> 32) as u16,
        req: key as u32,
    }
}

struct Inner {
    /// The layer's largest message: longer bodies go in parts.
    max_message: usize,
    ep: Endpoint,
    inbox: ChannelId,
    /// Its name, `worker.<id>!`.
    inbox_name: String,
    /// Reactor inboxes by reactor number, once resolved.
    reactors: Vec<Option<ChannelId>>,
    /// Replies waiting for room: reactor, connection tag, message.
    outbox: VecDeque<(u16, u64, Vec<u8>)>,
    /// Bytes in `outbox`.
    queued: usize,
    /// Reusable encoding buffer.
    msg: Vec<u8>,
    /// Reusable receive buffer: `[len:u32][message]` per message.
    batch: Vec<u8>,
}

impl Inner {
    fn reactor(&mut self, k: u16) -> Result<ChannelId, LayerError> {
        let k = k as usize;
        if self.reactors.len() <= k {
            self.reactors.resize(k + 1, None);
        }
        if let Some(id) = self.reactors[k] {
            return Ok(id);
        }
        let id = self.ep.channel(&format!("reactor.{k}!"))?;
        self.reactors[k] = Some(id);
        Ok(id)
    }

    /// Sends `self.msg` for `r`, behind whatever waits in the outbox.
    fn send(&mut self, r: Route) -> PyResult<()> {
        if self.outbox.is_empty() {
            let id = self.reactor(r.reactor).map_err(layer_err)?;
            match self.ep.send_id(id, &r.conn.to_le_bytes(), &self.msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full) => {}
                // The segment lock is busy (a first send takes a lane): later.
                Err(SendError::Other(LayerError::LockBusy)) => {}
                Err(SendError::Other(e)) => {
                    self.reactors[r.reactor as usize] = None;
                    return Err(layer_err(e));
                }
            }
        }
        self.queued += self.msg.len();
        self.outbox
            .push_back((r.reactor, r.conn, std::mem::take(&mut self.msg)));
        Ok(())
    }

    /// Sends `body` as `http.response.body` messages of at most a layer
    /// message each; the last carries `more_body`. Returns the units sent.
    fn body_parts(&mut self, r: Route, body: &[u8], more_body: bool) -> PyResult<u64> {
        // kind, request number and more_body flag beside the bytes.
        let part = self.max_message - 6;
        let mut units = 0;
        let mut rest = body;
        loop {
            let (chunk, after) = rest.split_at(rest.len().min(part));
            let mut msg = std::mem::take(&mut self.msg);
            wire::encode_response_body(&mut msg, r.req, chunk, more_body || !after.is_empty());
            self.msg = msg;
            self.send(r)?;
            units += wire::credit::cost(chunk.len());
            if after.is_empty() {
                return Ok(units);
            }
            rest = after;
        }
    }

    /// Sends what waits in the outbox, in order, until a reactor's inbox is
    /// full (then arms it: its reactor rings the doorbell when it makes
    /// room). Delivers held wake-ups. Returns whether the outbox is empty.
    fn flush(&mut self) -> PyResult<bool> {
        while let Some(&(k, conn, _)) = self.outbox.front() {
            let id = self.reactor(k).map_err(layer_err)?;
            let msg = &self.outbox.front().expect("front").2;
            match self.ep.send_id(id, &conn.to_le_bytes(), msg) {
                Ok(()) => {
                    let (_, _, m) = self.outbox.pop_front().expect("front");
                    self.queued -= m.len();
                }
                Err(SendError::Full) => {
                    self.ep.flush_wakeups();
                    if self.ep.arm_space(id).map_err(layer_err)? {
                        continue;
                    }
                    return Ok(false);
                }
                Err(SendError::Other(LayerError::LockBusy)) => {
                    self.ep.flush_wakeups();
                    return Ok(false);
                }
                Err(SendError::Other(e)) => {
                    // That reactor is gone (the server is stopping): what
                    // was meant for it cannot be delivered.
                    self.reactors[k as usize] = None;
                    let (_, _, m) = self.outbox.pop_front().expect("front");
                    self.queued -= m.len();
                    if !matches!(e, LayerError::NoReceiver(_)) {
                        return Err(layer_err(e));
                    }
                }
            }
        }
        self.ep.flush_wakeups();
        Ok(true)
    }
}

fn layer_err(e: LayerError) -> PyErr {
    PyOSError::new_err(format!("channel layer: {e}"))
}

/// See the module documentation.
#[pyclass(frozen, module = "ringway._native")]
pub struct Worker {
    inner: Mutex<Inner>,
    /// The doorbell's descriptor (owned by the endpoint).
    fd: RawFd,
    strings: Interned,
}

impl Worker {
    fn lock(&self) -> PyResult<std::sync::MutexGuard<'_, Inner>> {
        self.inner
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the worker's endpoint is poisoned"))
    }
}

#[pymethods]
impl Worker {
    /// Opens the segment at `segment` and takes the inbox `worker.<id>!`.
    #[new]
    fn new(py: Python<'_>, segment: &str, worker_id: u32) -> PyResult<Self> {
        let seg = Segment::open(segment)
            .map_err(|e| PyOSError::new_err(format!("opening {segment}: {e}")))?;
        let mut ep = seg.endpoint().map_err(layer_err)?;
        let inbox_name = format!("worker.{worker_id}!");
        let inbox = ep.own_channel(&inbox_name).map_err(layer_err)?;
        let fd = ep.wait_fd().map_err(layer_err)?;
        ep.hold_wakeups(true);
        let max_message = seg.geometry().max_message as usize;
        Ok(Worker {
            inner: Mutex::new(Inner {
                max_message,
                ep,
                inbox,
                inbox_name,
                reactors: Vec::new(),
                outbox: VecDeque::new(),
                queued: 0,
                msg: Vec::new(),
                batch: Vec::new(),
            }),
            fd,
            strings: Interned::new(py),
        })
    }

    /// The doorbell: readable after [`Worker::arm`] once a message arrives
    /// (or a full reactor inbox has room again).
    fn fileno(&self) -> RawFd {
        self.fd
    }

    /// Asks for the doorbell to ring when a message arrives. Returns `True`
    /// if one is there already (then receive instead of waiting).
    fn arm(&self) -> PyResult<bool> {
        let mut g = self.lock()?;
        let g = &mut *g;
        g.ep.arm(&g.inbox_name).map_err(layer_err)
    }

    /// Empties the doorbell after it became readable.
    fn drain_bell(&self) -> PyResult<()> {
        self.lock()?.ep.drain_bell();
        Ok(())
    }

    /// Blocks (without the GIL) until the doorbell rings or `timeout`
    /// seconds pass (`None`: no limit). Arms first; returns at once if a
    /// message is waiting. For threads; an event loop watches `fileno()`.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        if self.arm()? {
            return Ok(());
        }
        let fd = self.fd;
        let ms = timeout.map_or(-1, |t| {
            (t.max(0.0) * 1000.0).ceil().min(i32::MAX as f64) as i32
        });
        py.detach(|| {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; EINTR just returns early.
            unsafe { libc::poll(&mut p, 1, ms) };
        });
        self.drain_bell()
    }

    /// Takes up to `max` messages from the inbox and returns them as events
    /// (see [`event`]). Pings are taken and dropped.
    #[pyo3(signature = (max=64))]
    fn receive<'py>(&self, py: Python<'py>, max: usize) -> PyResult<Bound<'py, PyList>> {
        let mut g = self.lock()?;
        let g = &mut *g;
        let mut batch = std::mem::take(&mut g.batch);
        batch.clear();
        let got = g.ep.try_receive_many(g.inbox, max, |_tag, msg| {
            batch.extend_from_slice(&(msg.len() as u32).to_le_bytes());
            batch.extend_from_slice(msg);
        });
        let events = PyList::empty(py);
        let result = got.map_err(layer_err).and_then(|_| {
            let mut at = 0;
            while at < batch.len() {
                let len =
                    u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes")) as usize;
                let msg = &batch[at + 4..at + 4 + len];
                at += 4 + len;
                let m = wire::decode_to_worker(msg)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                let ev: Option<Bound<'py, PyTuple>> = match m {
                    ToWorker::Request {
                        route,
                        scope,
                        body,
                        more_body,
                    } => Some(PyTuple::new(
                        py,
                        [
                            event::REQUEST.into_pyobject(py)?.into_any(),
                            key(route).into_pyobject(py)?.into_any(),
                            decode::scope(py, &self.strings, &scope)?.into_any(),
                            PyBytes::new(py, body).into_any(),
                            pyo3::types::PyBool::new(py, more_body)
                                .to_owned()
                                .into_any(),
                        ],
                    )?),
                    ToWorker::Body {
                        route,
                        body,
                        more_body,
                    } => Some(PyTuple::new(
                        py,
                        [
                            event::BODY.into_pyobject(py)?.into_any(),
                            key(route).into_pyobject(py)?.into_any(),
                            PyBytes::new(py, body).into_any(),
                            pyo3::types::PyBool::new(py, more_body)
                                .to_owned()
                                .into_any(),
                        ],
                    )?),
                    ToWorker::Disconnect { route } => Some(PyTuple::new(
                        py,
                        [
                            event::DISCONNECT.into_pyobject(py)?.into_any(),
                            key(route).into_pyobject(py)?.into_any(),
                        ],
                    )?),
                    ToWorker::Credit { route, consumed } => Some(PyTuple::new(
                        py,
                        [
                            event::CREDIT.into_pyobject(py)?.into_any(),
                            key(route).into_pyobject(py)?.into_any(),
                            consumed.into_pyobject(py)?.into_any(),
                        ],
                    )?),
                    ToWorker::Ping => None,
                };
                if let Some(ev) = ev {
                    events.append(ev)?;
                }
            }
            Ok(())
        });
        g.batch = batch;
        result.map(|()| events)
    }

    /// Sends `http.response.start` for request `key`, with the first body
    /// chunk if `body` is given. A body longer than a layer message goes in
    /// parts. Returns the response units sent (see `credit` in the wire
    /// docs: bytes plus `CREDIT_PER_MESSAGE` per message).
    #[pyo3(signature = (key, status, headers, trailers=false, body=None, more_body=false))]
    fn start(
        &self,
        key: u128,
        status: u16,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        trailers: bool,
        body: Option<&[u8]>,
        more_body: bool,
    ) -> PyResult<u64> {
        let r = route(key);
        let mut g = self.lock()?;
        let mut msg = std::mem::take(&mut g.msg);
        // The head alone, to see what room it leaves for the body.
        wire::encode_start(
            &mut msg,
            r.req,
            status,
            &headers,
            trailers,
            Some((b"", false)),
        );
        if msg.len() > g.max_message {
            g.msg = msg;
            return Err(PyValueError::new_err(format!(
                "http.response.start: {} bytes of headers is more than a layer message holds ({})",
                g.msg.len(),
                g.max_message
            )));
        }
        let room = g.max_message - msg.len();
        let Some(body) = body else {
            wire::encode_start(&mut msg, r.req, status, &headers, trailers, None);
            g.msg = msg;
            g.send(r)?;
            return Ok(0);
        };
        let (first, rest) = body.split_at(body.len().min(room));
        wire::encode_start(
            &mut msg,
            r.req,
            status,
            &headers,
            trailers,
            Some((first, more_body || !rest.is_empty())),
        );
        g.msg = msg;
        g.send(r)?;
        let mut units = wire::credit::cost(first.len());
        if !rest.is_empty() {
            units += g.body_parts(r, rest, more_body)?;
        }
        Ok(units)
    }

    /// Sends `http.response.body` for request `key` (in parts if it is
    /// longer than a layer message). Returns the response units sent.
    #[pyo3(signature = (key, body, more_body=false))]
    fn body(&self, key: u128, body: &[u8], more_body: bool) -> PyResult<u64> {
        let r = route(key);
        self.lock()?.body_parts(r, body, more_body)
    }

    /// Sends `http.response.trailers` for request `key`.
    #[pyo3(signature = (key, headers, more_trailers=false))]
    fn trailers(
        &self,
        key: u128,
        headers: Vec<(Vec<u8>, Vec<u8>)>,
        more_trailers: bool,
    ) -> PyResult<()> {
        let r = route(key);
        let mut g = self.lock()?;
        let mut msg = std::mem::take(&mut g.msg);
        wire::encode_trailers(&mut msg, r.req, &headers, more_trailers);
        g.msg = msg;
        g.send(r)
    }

    /// Sends `http.response.pathsend` for request `key`.
    fn pathsend(&self, key: u128, path: &str) -> PyResult<()> {
        let r = route(key);
        let mut g = self.lock()?;
        let mut msg = std::mem::take(&mut g.msg);
        wire::encode_pathsend(&mut msg, r.req, path.as_bytes());
        g.msg = msg;
        g.send(r)
    }

    /// Tells the reactor the app took the last request body chunk of `key`.
    fn body_taken(&self, key: u128) -> PyResult<()> {
        let r = route(key);
        let mut g = self.lock()?;
        let mut msg = std::mem::take(&mut g.msg);
        wire::encode_body_taken(&mut msg, r.req);
        g.msg = msg;
        g.send(r)
    }

    /// Reports that the app failed on request `key` (500 if nothing was
    /// sent yet; the connection closes otherwise).
    fn app_error(&self, key: u128, message: &str) -> PyResult<()> {
        let r = route(key);
        let mut g = self.lock()?;
        let mut msg = std::mem::take(&mut g.msg);
        wire::encode_app_error(&mut msg, r.req, message);
        g.msg = msg;
        g.send(r)
    }

    /// Sends what waits for room and delivers held wake-ups. Returns `True`
    /// if nothing waits any more (else the doorbell rings when there is room).
    fn flush(&self) -> PyResult<bool> {
        self.lock()?.flush()
    }

    /// Bytes of replies waiting for room.
    fn pending(&self) -> PyResult<usize> {
        Ok(self.lock()?.queued)
    }
}
