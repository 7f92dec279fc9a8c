//! One client connection: reads requests with the sans-IO parser, hands each
//! to a worker over the layer, and writes the worker's response back.
//!
//! Requests on a connection are served one after another, so pipelined
//! requests are answered in order; bytes of the next request wait in the
//! input buffer. One task serves a connection. It keeps a socket read in
//! flight (the [`Reader`]) and polls it at every point where it waits, so
//! input keeps arriving while a request is with a worker (a client that goes
//! away is noticed); it stops reading at [`READ_AHEAD`] bytes, unless it
//! needs more to finish a head or a body chunk, so a request body waits in
//! the socket while the worker has not taken the last chunk (flow control).
//! The read is never dropped while the connection lives: dropping an
//! in-flight tokio-uring read loses the bytes it may have read.
//!
//! The rest of the reactor reaches the task through its [`ConnCell`]: the
//! inbox pump appends replies to the cell's queue, the sweeper marks a
//! passed deadline, and either wakes the task. Nothing per request allocates
//! a channel, a timer or a task.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::reactor::Reactor;
use super::stream::Stream;
use crate::access_log::Entry;
use crate::asgi::scope::{self, ConnInfo};
use crate::asgi::wire::{self, Route, ToServer};
use crate::date::with_date;
use crate::errors::{status_for, ConnError};
use crate::h1::{
    self, BodyDecoder, BodyEncoder, BodyFraming, Fields, RequestHead, ResponseFraming, Version,
    WithField,
};

/// The `server` header.
pub const SERVER: &[u8] = b"ringway";
/// Largest body chunk sent to a worker in one message (fits the layer's
/// default 64 KiB message with room for the message header).
pub const MAX_CHUNK: usize = 60 * 1024;
/// How many bytes of the next request(s) we read ahead while one is in flight.
pub const READ_AHEAD: usize = 64 * 1024;
/// Size of each socket read.
const READ_SIZE: usize = 16 * 1024;
/// Attempts to queue a body chunk into a full worker inbox before giving up.
const FULL_RETRIES: usize = 10_000;
/// The length that marks "the worker died" in the reply queue.
const WORKER_DIED: u32 = u32::MAX;

/// What a connection is doing; it decides what a passed deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No byte of the next request has arrived. The first request of a
    /// connection must arrive within `--header-timeout`; a kept-alive
    /// connection is closed quietly after `--keep-alive`.
    Idle,
    /// Part of a request head has arrived; the rest must come within
    /// `--header-timeout` of the wait's start (else 408).
    Head,
    /// The request is with a worker that has not started its response; it
    /// must within `--timeout` (else 504, and the worker hears that the
    /// client is gone).
    Waiting,
    /// The response has started and is being relayed; no deadline but the
    /// `--write-timeout` of each write.
    Responding,
}

/// Bytes read from the socket and not yet consumed. Consumed bytes are
/// skipped by an offset and dropped in bulk, so pipelined requests are not
/// moved once per request.
#[derive(Default)]
struct Input {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes; in `0 ..= buf.len()`.
    at: usize,
}

impl Input {
    fn bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.at
    }

    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.at += n;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
    }

    fn append(&mut self, data: &[u8]) {
        // Drop what was consumed once it is most of the buffer: each byte is
        // moved at most once more.
        if self.at > 0 && self.at >= self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

/// What a socket read gives back: the result and the buffer.
type ReadResult = (io::Result<usize>, Vec<u8>);

/// Starts a read of `stream` into `buf`'s spare capacity. tokio-uring's read
/// future has no name, so [`Reader`] is generic over what this returns.
async fn read_op(stream: Rc<Stream>, buf: Vec<u8>) -> ReadResult {
    stream.read(buf).await
}

/// The read side of a connection.
struct Reader<F> {
    /// The read in flight (`None` between reads). Each read's future is
    /// written into this one box: reading allocates once per connection.
    op: Pin<Box<Option<F>>>,
    /// Makes a read's future ([`read_op`]; something else in tests).
    start: fn(Rc<Stream>, Vec<u8>) -> F,
    /// The read buffer while no read is in flight (one buffer, reused).
    spare: Option<Vec<u8>>,
    /// What was read and not yet consumed.
    input: Input,
    /// The socket reached its end (or failed): nothing more will come.
    eof: bool,
    /// Reads are started while `input` holds fewer bytes than this.
    limit: usize,
}

impl<F: Future<Output = ReadResult>> Reader<F> {
    fn new(start: fn(Rc<Stream>, Vec<u8>) -> F) -> Self {
        Reader {
            op: Box::pin(None),
            start,
            spare: None,
            input: Input::default(),
            eof: false,
            limit: usize::MAX,
        }
    }

    /// Whether a new read should start.
    fn may_read(&self) -> bool {
        self.op.is_none() && !self.eof && self.input.len() < self.limit
    }

    /// Takes a finished read's result: bytes, or the end.
    fn complete(&mut self, res: io::Result<usize>, mut buf: Vec<u8>) {
        match res {
            Ok(n) if n > 0 => {
                self.input.append(&buf[..n]);
                buf.clear();
                self.spare = Some(buf);
            }
            _ => self.eof = true,
        }
    }

    /// Drives the read: finishes the one in flight, starts the next while
    /// allowed. Returns whether anything arrived.
    fn poll(&mut self, stream: &Rc<Stream>, cx: &mut Context<'_>) -> bool {
        let mut arrived = false;
        loop {
            let done = match self.op.as_mut().as_pin_mut() {
                Some(op) => match op.poll(cx) {
                    Poll::Pending => return arrived,
                    Poll::Ready(r) => Some(r),
                },
                None => None,
            };
            if let Some((res, buf)) = done {
                self.op.set(None);
                self.complete(res, buf);
                arrived = true;
            }
            if !self.may_read() {
                return arrived;
            }
            let buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(READ_SIZE));
            self.op.set(Some((self.start)(stream.clone(), buf)));
        }
    }
}

/// A connection's state that the rest of the reactor reaches: the inbox
/// pump, the sweeper and the supervisor's messages (all on one thread:
/// cells, no locks).
pub struct ConnCell {
    /// Replies from the worker in arrival order, `[len:u32 LE][message]`
    /// each; a `len` of [`WORKER_DIED`] (no message) says the worker died.
    replies: RefCell<Vec<u8>>,
    /// The worker holding the current request.
    pub worker: Cell<Option<usize>>,
    /// When the current deadline passes (`None`: no deadline).
    deadline: Cell<Option<Instant>>,
    /// The sweeper found `deadline` passed; cleared by a new deadline.
    expired: Cell<bool>,
    /// Bumped by every [`ConnCell::notify`]: the connection task sleeps only
    /// if nothing happened since it last looked.
    events: Cell<u64>,
    /// The connection task's waker (kept: notifying wakes it by reference).
    task: Cell<Option<Waker>>,
}

impl Default for ConnCell {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnCell {
    /// A cell for a new connection.
    pub fn new() -> Self {
        ConnCell {
            replies: RefCell::default(),
            worker: Cell::new(None),
            deadline: Cell::new(None),
            expired: Cell::new(false),
            events: Cell::new(0),
            task: Cell::new(None),
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

    /// Queues a reply from the worker (the inbox pump).
    pub fn push_reply(&self, msg: &[u8]) {
        let mut q = self.replies.borrow_mut();
        q.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        q.extend_from_slice(msg);
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

    /// Sets (or clears) the deadline.
    fn set_deadline(&self, d: Option<Instant>) {
        self.deadline.set(d);
        self.expired.set(false);
    }

    /// Remembers the running task's waker so that [`ConnCell::notify`] wakes it.
    fn register(&self, cx: &Context<'_>) {
        match self.task.take() {
            Some(w) if w.will_wake(cx.waker()) => self.task.set(Some(w)),
            _ => self.task.set(Some(cx.waker().clone())),
        }
    }

    /// Moves the queued replies into `batch` (which must be empty), leaving
    /// `batch`'s old buffer to the queue: no copy, no allocation.
    fn take_replies(&self, batch: &mut Vec<u8>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut *self.replies.borrow_mut(), batch);
    }

    /// Drops the queued replies (all of them belong to earlier requests).
    fn clear_replies(&self) {
        self.replies.borrow_mut().clear();
    }
}

/// Where a response is.
enum Resp {
    /// Waiting for `http.response.start`.
    NotStarted,
    /// Head written; body chunks are being written.
    Body {
        /// Frames the body.
        enc: BodyEncoder,
        /// The app announced trailers.
        trailers: bool,
    },
    /// Body complete; waiting for trailers.
    Trailers {
        /// Frames the end of the body.
        enc: BodyEncoder,
        /// Trailer fields so far.
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Complete.
    Done,
}

/// What the connection must do after handling a reply. Replies are handled
/// without waiting for anything; the I/O they call for is done by the loop
/// that relays them.
enum Step {
    /// Nothing (a late reply, more trailers to come).
    Nothing,
    /// Write out `wbuf`; the response goes on.
    Write,
    /// Write out `wbuf`; the response is complete.
    Finish,
    /// Stream this file as the body (`http.response.pathsend`).
    SendFile(PathBuf),
    /// The worker took the last request body chunk: send the next.
    SendBody,
}

/// Where the request body is.
struct BodyIn {
    dec: BodyDecoder,
    /// Decoded but not yet sent to the worker.
    pending: Vec<u8>,
    /// We sent a chunk with `more_body` and wait for the worker to take it.
    awaiting_taken: bool,
    /// The last chunk (`more_body: false`) was sent.
    all_sent: bool,
}

impl BodyIn {
    /// The decoder can go on only with more bytes from the socket.
    fn needs_bytes(&self) -> bool {
        !self.awaiting_taken && !self.all_sent && self.pending.is_empty() && !self.dec.is_done()
    }
}

/// One request's exchange with its worker, as the replies see it.
struct Exchange<'h> {
    head: &'h RequestHead,
    is_head: bool,
    /// Whether the connection may stay open, as far as known.
    keep_alive: bool,
    resp: Resp,
    body: BodyIn,
    /// The worker.
    w: usize,
}

/// What the access log gets to know about a request, filled in as it goes.
struct Outcome {
    /// Status sent (0: none yet).
    status: u16,
    /// Body bytes sent.
    bytes: u64,
    /// The response headers, copied only when there is an access log.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Conn<F> {
    r: Rc<Reactor>,
    id: u64,
    cell: Rc<ConnCell>,
    stream: Rc<Stream>,
    rd: Reader<F>,
    info: ConnInfo,
    phase: Phase,
    req_no: u32,
    /// Response bytes to write.
    wbuf: Vec<u8>,
    /// The message being sent to the worker (reused).
    msg: Vec<u8>,
    /// Replies being handled, taken from the cell (reused).
    batch: Vec<u8>,
}

/// Serves one connection until it closes.
pub async fn serve(
    r: Rc<Reactor>,
    stream: Stream,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) {
    let cell = Rc::new(ConnCell::new());
    let id = r.open_conn(cell.clone());
    let stream = Rc::new(stream);
    let mut c = Conn {
        info: ConnInfo::new(peer, local, &r.cfg.forwarded_allow),
        r: r.clone(),
        id,
        cell,
        stream: stream.clone(),
        rd: Reader::new(read_op),
        phase: Phase::Idle,
        req_no: 0,
        wbuf: Vec::with_capacity(4096),
        msg: Vec::new(),
        batch: Vec::new(),
    };
    c.run().await;
    // Closing anyway: what the read in flight may still bring is not wanted.
    drop(c);
    stream.shutdown(std::net::Shutdown::Both);
    r.close_conn(id);
}

/// Writes `n` in decimal into `buf`; returns the digits.
fn decimal(mut n: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

impl<F: Future<Output = ReadResult>> Conn<F> {
    async fn run(&mut self) {
        // One head for all the connection's requests: its buffers are reused.
        let mut head = RequestHead::default();
        loop {
            match self.read_head(&mut head).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    let t0 = self.r.log.as_ref().map(|_| Instant::now());
                    self.fail(&e, None, t0).await;
                    return;
                }
            }
            self.req_no = self.req_no.wrapping_add(1);
            if !self.request(&head).await {
                return;
            }
        }
    }

    /// Waits until input arrives or the cell is notified after its count was
    /// `seen`, reading meanwhile.
    async fn wait(&mut self, seen: u64) {
        let (rd, stream, cell) = (&mut self.rd, &self.stream, &self.cell);
        poll_fn(|cx| {
            if rd.poll(stream, cx) || cell.events.get() != seen {
                Poll::Ready(())
            } else {
                cell.register(cx);
                Poll::Pending
            }
        })
        .await
    }

    /// Enters `phase` with the deadline it has, counted from now.
    fn enter(&mut self, phase: Phase) {
        let cfg = &self.r.cfg;
        let limit = match phase {
            Phase::Idle if self.req_no > 0 => Some(cfg.keep_alive),
            Phase::Idle | Phase::Head => Some(cfg.header_timeout),
            Phase::Waiting => Some(cfg.timeout),
            Phase::Responding => None,
        };
        self.phase = phase;
        self.cell.set_deadline(limit.map(|l| self.r.deadline_in(l)));
    }

    /// Reads the next request head into `head`. `Ok(false)`: the connection
    /// should close quietly (client gone, idle keep-alive timeout, shutdown).
    async fn read_head(&mut self, head: &mut RequestHead) -> Result<bool, ConnError> {
        // A head may be as long as the limits allow: the parser refuses
        // what is too long, so reading need not stop before.
        self.rd.limit = usize::MAX;
        self.enter(Phase::Idle);
        // Both deadlines count from the start of the wait.
        let head_deadline = self.r.deadline_in(self.r.cfg.header_timeout);
        loop {
            let seen = self.cell.events.get();
            let input = &mut self.rd.input;
            if input.len() > 0 {
                if let Some(n) = h1::parse_head_into(input.bytes(), &self.r.cfg.limits, head)? {
                    input.consume(n);
                    return Ok(true);
                }
            }
            let idle = input.len() == 0;
            // Shutting down: serve a request that already arrived (its
            // client saw no `connection: close` yet), else close.
            if idle && self.r.shutting_down() {
                return Ok(false);
            }
            if self.rd.eof {
                return Ok(false);
            }
            if !idle && self.phase == Phase::Idle {
                self.phase = Phase::Head;
                self.cell.set_deadline(Some(head_deadline));
            }
            if self.cell.expired.get() {
                return if idle {
                    Ok(false)
                } else {
                    Err(ConnError::HeaderTimeout)
                };
            }
            self.wait(seen).await;
        }
    }

    /// Writes `wbuf` out, within --write-timeout, reading meanwhile.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let cell = self.cell.clone();
        let saved = cell.deadline.get();
        cell.set_deadline(Some(self.r.deadline_in(self.r.cfg.write_timeout)));
        let buf = std::mem::take(&mut self.wbuf);
        let (rd, stream) = (&mut self.rd, &self.stream);
        let mut write = pin!(stream.write_all(buf));
        // The write, unless the sweeper says the deadline passed first (the
        // dropped write is cancelled; the connection closes).
        let done = poll_fn(|cx| {
            if let Poll::Ready(r) = write.as_mut().poll(cx) {
                return Poll::Ready(Some(r));
            }
            rd.poll(stream, cx);
            if cell.expired.get() {
                return Poll::Ready(None);
            }
            cell.register(cx);
            Poll::Pending
        })
        .await;
        cell.set_deadline(saved);
        match done {
            Some((Ok(()), mut buf)) => {
                buf.clear();
                self.wbuf = buf;
                Ok(())
            }
            Some((Err(_), _)) => Err(ConnError::ClientGone),
            None => Err(ConnError::WriteTimeout),
        }
    }

    /// Answers a failed request (if nothing was sent yet) and logs it.
    async fn fail(&mut self, e: &ConnError, head: Option<&RequestHead>, t0: Option<Instant>) {
        match e {
            ConnError::ClientGone | ConnError::WriteTimeout => {}
            ConnError::Proto(_) | ConnError::HeaderTimeout => {}
            _ => eprintln!(
                "ringway: {} {}: {e}",
                self.info.peer_host,
                head.map_or("-", |h| h.method.as_str())
            ),
        }
        if let Some(status) = status_for(e) {
            self.wbuf.clear();
            let resp = with_date(|d| h1::encode::error_response(status, d, SERVER));
            self.wbuf.extend_from_slice(&resp);
            let _ = self.flush().await;
            let out = Outcome {
                status,
                bytes: 0,
                headers: Vec::new(),
            };
            self.access_log(head, &out, t0);
        }
    }

    fn access_log(&self, head: Option<&RequestHead>, out: &Outcome, t0: Option<Instant>) {
        let (Some(log), Some(t0)) = (&self.r.log, t0) else {
            return;
        };
        let (method, target, protocol, req_headers) = match head {
            Some(h) => (
                h.method.as_str(),
                h.target.as_slice(),
                if h.version == Version::Http11 {
                    "HTTP/1.1"
                } else {
                    "HTTP/1.0"
                },
                h.headers.as_slice(),
            ),
            None => ("-", &b"-"[..], "-", &[][..]),
        };
        log.log(&Entry {
            remote: &self.info.peer_host,
            method,
            target,
            protocol,
            status: out.status,
            bytes: out.bytes,
            request_headers: req_headers,
            response_headers: &out.headers,
            elapsed: t0.elapsed(),
        });
    }

    /// Serves one request; returns whether the connection stays open.
    async fn request(&mut self, head: &RequestHead) -> bool {
        // The clock is read for the access log only.
        let t0 = self.r.log.as_ref().map(|_| Instant::now());
        let mut out = Outcome {
            status: 0,
            bytes: 0,
            headers: Vec::new(),
        };
        let result = self.exchange(head, &mut out).await;
        if let Some(w) = self.cell.worker.take() {
            self.r.request_done(w);
        }
        match result {
            Ok(keep_alive) => {
                self.access_log(Some(head), &out, t0);
                keep_alive
            }
            Err(e) => {
                if out.status == 0 {
                    self.fail(&e, Some(head), t0).await;
                } else {
                    // The response had started: all we can do is close.
                    if !matches!(e, ConnError::ClientGone | ConnError::WriteTimeout) {
                        eprintln!(
                            "ringway: {} {}: {e} (after the response started; closing)",
                            self.info.peer_host, head.method
                        );
                    }
                    self.access_log(Some(head), &out, t0);
                }
                false
            }
        }
    }

    fn route(&self) -> Route {
        Route {
            reactor: self.r.k,
            conn: self.id,
            req: self.req_no,
        }
    }

    /// Queues a further message for the request's worker, retrying briefly
    /// while its inbox is full.
    async fn send_to_worker(&mut self, w: usize) -> Result<(), ConnError> {
        for _ in 0..FULL_RETRIES {
            match self.r.send_to(w, &self.msg) {
                Ok(()) => return Ok(()),
                Err(ringway_layer_shm::SendError::Full) => tokio::task::yield_now().await,
                Err(_) => return Err(ConnError::WorkerDied),
            }
        }
        Err(ConnError::NoWorker)
    }

    /// Decodes what the input holds of the body into `body.pending`.
    fn decode_body(&mut self, body: &mut BodyIn) -> Result<(), ConnError> {
        if body.dec.is_done() {
            return Ok(());
        }
        let input = &mut self.rd.input;
        let n = body.dec.decode(input.bytes(), &mut body.pending)?;
        input.consume(n);
        Ok(())
    }

    /// Moves request body bytes from the input to the worker, one chunk at a
    /// time (the next only after the worker took the last).
    async fn pump_body(&mut self, body: &mut BodyIn, w: usize) -> Result<(), ConnError> {
        if body.awaiting_taken || body.all_sent {
            return Ok(());
        }
        self.decode_body(body)?;
        if body.pending.is_empty() && !body.dec.is_done() {
            return Ok(());
        }
        let take = body.pending.len().min(MAX_CHUNK);
        let more = !(body.dec.is_done() && body.pending.len() == take);
        let route = self.route();
        wire::encode_body(&mut self.msg, route, &body.pending[..take], more);
        body.pending.drain(..take);
        self.send_to_worker(w).await?;
        body.awaiting_taken = more;
        body.all_sent = !more;
        Ok(())
    }

    /// Sends the request to a worker and relays its response. Returns whether
    /// the connection may stay open.
    async fn exchange(&mut self, head: &RequestHead, out: &mut Outcome) -> Result<bool, ConnError> {
        let r = self.r.clone();
        let mut body = BodyIn {
            dec: BodyDecoder::with_limits(head.body, &r.cfg.limits),
            pending: Vec::new(),
            awaiting_taken: false,
            all_sent: false,
        };
        if head.expect_continue && head.body != BodyFraming::Empty {
            self.wbuf.extend_from_slice(h1::encode::CONTINUE);
            self.flush().await?;
        }
        self.decode_body(&mut body)?;
        let take = body.pending.len().min(MAX_CHUNK);
        let more = !(body.dec.is_done() && body.pending.len() == take);
        let route = self.route();
        scope::encode_request(
            &mut self.msg,
            route,
            head,
            &self.info,
            &r.cfg.root_path,
            &r.cfg.forwarded_allow,
            &body.pending[..take],
            more,
        );
        body.pending.drain(..take);
        // Whatever is queued answers earlier requests.
        self.cell.clear_replies();
        let w = r.dispatch(&self.msg)?;
        self.cell.worker.set(Some(w));
        self.enter(Phase::Waiting);
        body.awaiting_taken = more;
        body.all_sent = !more;
        let mut x = Exchange {
            head,
            is_head: head.method == "HEAD",
            keep_alive: head.keep_alive,
            resp: Resp::NotStarted,
            body,
            w,
        };
        let mut batch = std::mem::take(&mut self.batch);
        let relayed = self.relay(&mut x, &mut batch, out).await;
        batch.clear();
        self.batch = batch;
        if let Err(e) = relayed {
            if matches!(
                e,
                ConnError::ClientGone | ConnError::ResponseTimeout | ConnError::WriteTimeout
            ) {
                let route = self.route();
                wire::encode_disconnect(&mut self.msg, route);
                let _ = r.send_to(w, &self.msg);
            }
            return Err(e);
        }
        // A body the app never read keeps the connection from being reused.
        Ok(x.keep_alive && x.body.dec.is_done() && x.body.pending.is_empty())
    }

    /// Relays the worker's replies until the response is complete, moving
    /// the request body along as the worker takes it.
    async fn relay(
        &mut self,
        x: &mut Exchange<'_>,
        batch: &mut Vec<u8>,
        out: &mut Outcome,
    ) -> Result<(), ConnError> {
        loop {
            let seen = self.cell.events.get();
            self.cell.take_replies(batch);
            let mut at = 0;
            while at < batch.len() {
                let len = u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes"));
                at += 4;
                if len == WORKER_DIED {
                    return Err(ConnError::WorkerDied);
                }
                let msg = &batch[at..at + len as usize];
                at += len as usize;
                match self.on_reply(msg, x, out)? {
                    Step::Nothing => {}
                    Step::Write => self.flush().await?,
                    Step::Finish => return self.flush().await,
                    Step::SendFile(path) => {
                        // Boxed: a rare path whose future would otherwise
                        // make every request's future larger.
                        Box::pin(self.send_file(&path, x, out)).await?;
                        return self.flush().await;
                    }
                    Step::SendBody => self.pump_body(&mut x.body, x.w).await?,
                }
            }
            batch.clear();
            if self.rd.eof {
                return Err(ConnError::ClientGone);
            }
            // More of the body may have arrived. (If nothing could be sent,
            // the wait below lasts until more arrives.)
            if x.body.needs_bytes() {
                self.pump_body(&mut x.body, x.w).await?;
            }
            if self.cell.expired.get() && self.phase == Phase::Waiting {
                return Err(ConnError::ResponseTimeout);
            }
            // Read ahead up to READ_AHEAD, or as far as the body decoder
            // needs to make a chunk.
            self.rd.limit = if x.body.needs_bytes() {
                usize::MAX
            } else {
                READ_AHEAD
            };
            self.wait(seen).await;
        }
    }

    /// Handles one message from the worker.
    fn on_reply(
        &mut self,
        raw: &[u8],
        x: &mut Exchange<'_>,
        out: &mut Outcome,
    ) -> Result<Step, ConnError> {
        let msg = wire::decode_to_server(raw).map_err(|e| ConnError::App(e.to_string()))?;
        if msg.req() != Some(self.req_no) {
            // A late reply to an earlier request on this connection.
            return Ok(Step::Nothing);
        }
        let app = |what: &str| Err(ConnError::App(what.to_owned()));
        match msg {
            ToServer::Start {
                status: st,
                headers,
                trailers,
                body: first,
                ..
            } => {
                if !matches!(x.resp, Resp::NotStarted) {
                    return app("http.response.start sent twice");
                }
                // The whole body came with the start: say how long it is, so
                // the client needs neither chunked framing nor a close.
                let mut digits = [0u8; 20];
                let mut extra = None;
                if let Some((whole, false)) = first {
                    let has_length = headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
                    let bodyless =
                        st < 200 || st == 204 || st == 304 || (x.is_head && whole.is_empty());
                    if !has_length && !trailers && !bodyless {
                        extra = Some((&b"content-length"[..], decimal(whole.len(), &mut digits)));
                    }
                }
                let fields = WithField {
                    fields: &headers,
                    extra,
                };
                // After SIGTERM, every response says `connection: close`.
                let ka_in = x.keep_alive && !self.r.shutting_down();
                let (framing, ka) = with_date(|d| {
                    h1::encode_head(
                        &mut self.wbuf,
                        x.head.version,
                        x.is_head,
                        ka_in,
                        st,
                        &fields,
                        trailers,
                        d,
                        SERVER,
                    )
                })
                .map_err(|e| ConnError::App(format!("invalid response: {e}")))?;
                x.keep_alive = ka;
                out.status = st;
                if self.r.log.is_some() {
                    out.headers = fields
                        .fields()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect();
                }
                self.enter(Phase::Responding);
                let trailers = trailers && framing == ResponseFraming::Chunked;
                x.resp = Resp::Body {
                    enc: BodyEncoder::new(framing),
                    trailers,
                };
                match first {
                    Some((chunk, more)) => self.on_body(chunk, more, &mut x.resp, out),
                    None => Ok(Step::Write),
                }
            }
            ToServer::Body {
                body: chunk,
                more_body,
                ..
            } => match x.resp {
                Resp::Body { .. } => self.on_body(chunk, more_body, &mut x.resp, out),
                Resp::NotStarted => app("http.response.body before http.response.start"),
                _ => app("http.response.body after the body ended"),
            },
            ToServer::Trailers { headers, more, .. } => {
                match std::mem::replace(&mut x.resp, Resp::Done) {
                    Resp::Trailers {
                        mut enc,
                        mut fields,
                    } => {
                        fields.extend(headers.iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
                        if more {
                            x.resp = Resp::Trailers { enc, fields };
                            return Ok(Step::Nothing);
                        }
                        enc.finish(&fields, &mut self.wbuf)
                            .map_err(|e| ConnError::App(e.to_string()))?;
                        Ok(Step::Finish)
                    }
                    _ => app(
                        "http.response.trailers without trailers announced, or before the body ended",
                    ),
                }
            }
            ToServer::PathSend { path, .. } => {
                if !matches!(x.resp, Resp::Body { .. }) {
                    return app("http.response.pathsend without http.response.start");
                }
                Ok(Step::SendFile(PathBuf::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path),
                )))
            }
            ToServer::BodyTaken { .. } => {
                x.body.awaiting_taken = false;
                Ok(Step::SendBody)
            }
            ToServer::AppError { message, .. } => Err(ConnError::App(
                String::from_utf8_lossy(message).into_owned(),
            )),
            ToServer::WorkerDied { .. } | ToServer::Shutdown => Ok(Step::Nothing),
        }
    }

    /// Frames a body chunk into `wbuf`.
    fn on_body(
        &mut self,
        chunk: &[u8],
        more: bool,
        resp: &mut Resp,
        out: &mut Outcome,
    ) -> Result<Step, ConnError> {
        let Resp::Body { enc, trailers } = resp else {
            unreachable!("checked by the caller")
        };
        enc.encode(chunk, &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        out.bytes += chunk.len() as u64;
        if more {
            return Ok(Step::Write);
        }
        if *trailers {
            let enc = std::mem::replace(enc, BodyEncoder::new(ResponseFraming::NoBody));
            *resp = Resp::Trailers {
                enc,
                fields: Vec::new(),
            };
            return Ok(Step::Write);
        }
        enc.finish(&[], &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        *resp = Resp::Done;
        Ok(Step::Finish)
    }

    /// `http.response.pathsend`: streams a file as the whole body; leaves
    /// the end of the body in `wbuf`.
    async fn send_file(
        &mut self,
        path: &std::path::Path,
        x: &mut Exchange<'_>,
        out: &mut Outcome,
    ) -> Result<(), ConnError> {
        let file = tokio_uring::fs::File::open(path)
            .await
            .map_err(|e| ConnError::App(format!("pathsend {}: {e}", path.display())))?;
        let mut pos = 0u64;
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            let (res, b) = file.read_at(buf, pos).await;
            buf = b;
            let n = res.map_err(|e| ConnError::App(format!("pathsend {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            if let Resp::Body { enc, .. } = &mut x.resp {
                enc.encode(&buf, &mut self.wbuf)
                    .map_err(|e| ConnError::App(e.to_string()))?;
            }
            buf.clear();
            out.bytes += n as u64;
            self.flush().await?;
        }
        let _ = file.close().await;
        self.on_body(&[], false, &mut x.resp, out).map(|_| ())
    }
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
        let cell = ConnCell::new();
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
        let cell = ConnCell::new();
        let seen = cell.events.get();
        // Something happens while the task is busy (no waker registered):
        // the count moves, so its next wait returns at once.
        cell.push_reply(b"late");
        assert_ne!(cell.events.get(), seen);
    }

    #[test]
    fn replies_and_a_worker_death_keep_their_order() {
        let cell = ConnCell::new();
        cell.push_reply(b"one");
        cell.worker_died();
        cell.push_reply(b"");
        let mut batch = Vec::new();
        cell.take_replies(&mut batch);
        let mut expected = Vec::new();
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(b"one");
        expected.extend_from_slice(&WORKER_DIED.to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(batch, expected);
        // The queue kept the (empty) buffer it was given.
        assert!(cell.replies.borrow().is_empty());
    }

    #[test]
    fn reading_stops_at_the_limit_and_at_the_end() {
        let mut rd = Reader::new(|_, buf| std::future::ready((Ok(0), buf)));
        assert!(rd.may_read());
        rd.limit = 10;
        rd.complete(Ok(10), vec![0; 10]);
        assert!(!rd.may_read(), "the limit is reached");
        rd.input.consume(1);
        assert!(rd.may_read());
        assert_eq!(rd.spare.as_ref().map(Vec::len), Some(0), "buffer kept");
        rd.complete(Ok(0), Vec::new());
        assert!(rd.eof && !rd.may_read());
    }

    #[test]
    fn input_is_consumed_by_offset_and_compacted_in_bulk() {
        let mut input = Input::default();
        input.append(b"GET /a\r\n\r\nGET /b\r\n\r\nGET");
        input.consume(10);
        assert_eq!(input.bytes(), b"GET /b\r\n\r\nGET");
        assert_eq!(input.at, 10);
        input.consume(10);
        // Most of the buffer is consumed: the next append moves the rest.
        input.append(b" /c\r\n\r\n");
        assert_eq!((input.at, input.bytes()), (0, &b"GET /c\r\n\r\n"[..]));
        input.consume(input.len());
        assert_eq!((input.at, input.buf.len()), (0, 0));
    }

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(13, &mut b), b"13");
        assert_eq!(
            decimal(usize::MAX, &mut b),
            usize::MAX.to_string().as_bytes()
        );
    }
}
