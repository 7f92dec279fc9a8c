//! One client connection: reads requests with the sans-IO parser, hands
//! each to a worker ([`super::http`] relays the exchange), and fails the
//! ones that must fail with the status [`crate::errors::status_for`] picks.
//!
//! Requests on a connection are served one after another, so pipelined
//! requests are answered in order; bytes of the next request wait in the
//! input buffer. One task serves a connection. It keeps a socket read in
//! flight (the [`Reader`]) and polls it at every point where it waits, so
//! input keeps arriving while a request is with a worker; it stops reading
//! at [`READ_AHEAD`] bytes, unless it needs more to finish a head or a body
//! chunk, so a request body waits in the socket while the worker has not
//! taken the last chunk (flow control).
//!
//! The rest of the reactor reaches the task through its [`ConnCell`]: the
//! inbox pump queues replies, the sweeper marks a passed deadline, and
//! either wakes the task. Nothing per request allocates a channel, a timer
//! or a task.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use super::cell::ConnCell;
use super::io::{read_op, shrink, ReadResult, Reader};
use super::reactor::Reactor;
use super::stream::Stream;
use crate::access_log::Entry;
use crate::asgi::scope::ConnInfo;
use crate::asgi::wire::Route;
use crate::date::with_date;
use crate::errors::{status_for, ConnError};
use crate::h1::{self, HeadParser, RequestHead, Version};

/// The `server` header.
pub const SERVER: &[u8] = b"ringway";
/// How many bytes of the next request(s) we read ahead while one is in flight.
pub const READ_AHEAD: usize = 64 * 1024;
/// How long a connection closed with request bytes still coming keeps
/// reading (and dropping) them, so the client sees the response instead of
/// a reset (a lingering close, RFC 9112 §9.6).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// What a connection is doing; it decides what a passed deadline means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// No byte of the next request has arrived. The first request of a
    /// connection must arrive within `--header-timeout`; a kept-alive
    /// connection is closed quietly after `--keep-alive`.
    Idle,
    /// Part of a request head has arrived; the rest must come within
    /// `--header-timeout` of the wait's start (else 408).
    Head,
    /// The request is with a worker (or waits for room in one) that has not
    /// started its response; it must within `--timeout` (else 504, or 503
    /// if no worker ever took it).
    Waiting,
    /// The response has started and is being relayed; no deadline but the
    /// `--write-timeout` of each write.
    Responding,
}

/// What the access log gets to know about a request, filled in as it goes.
pub(super) struct Outcome {
    /// Status sent (0: none yet).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The response headers, copied only when there is an access log.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A connection and the buffers it reuses from request to request.
pub(super) struct Conn<F> {
    pub r: Rc<Reactor>,
    pub id: u64,
    pub cell: Rc<ConnCell>,
    pub stream: Rc<Stream>,
    pub rd: Reader<F>,
    pub info: ConnInfo,
    pub phase: Phase,
    pub req_no: u32,
    /// Response bytes to write.
    pub wbuf: Vec<u8>,
    /// The message being sent to the worker (reused).
    pub msg: Vec<u8>,
    /// Replies being handled, taken from the cell (reused).
    pub batch: Vec<u8>,
    /// Reads request heads incrementally: each byte is examined a bounded
    /// number of times however the head arrives.
    heads: HeadParser,
    /// The connection ends after a response while the client may still be
    /// sending the request: close gracefully ([`Conn::linger`]).
    pub linger: bool,
}

/// Serves one connection until it closes.
pub async fn serve(
    r: Rc<Reactor>,
    stream: Stream,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) {
    let cell = Rc::new(ConnCell::new(r.reply_limit));
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
        heads: HeadParser::new(),
        linger: false,
    };
    c.run().await;
    if c.linger && !c.rd.eof {
        c.linger().await;
    }
    // Closing anyway: what the read in flight may still bring is not wanted.
    drop(c);
    stream.shutdown(std::net::Shutdown::Both);
    r.close_conn(id);
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

    /// RFC 9112 §9.6: "If a server performs an immediate close of a TCP
    /// connection, there is a significant risk that the client will not be
    /// able to read the last HTTP response. If the server receives additional
    /// data from the client on a fully closed connection, such as another
    /// request sent by the client before receiving the server's response,
    /// the server's TCP stack will send a reset packet to the client". So:
    /// shut down our side, then read and drop what the client still sends,
    /// until it closes or [`LINGER`] passes.
    async fn linger(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write);
        self.cell.set_deadline(Some(self.r.deadline_in(LINGER)));
        loop {
            let seen = self.cell.events.get();
            let n = self.rd.input.len();
            self.rd.input.consume(n);
            if self.rd.eof || self.cell.expired.get() {
                return;
            }
            self.wait(seen).await;
        }
    }

    /// Waits until input arrives or the cell is notified after its count was
    /// `seen`, reading meanwhile.
    pub(super) async fn wait(&mut self, seen: u64) {
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
    pub(super) fn enter(&mut self, phase: Phase) {
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
            if !input.is_empty() {
                if let Some(n) = self.heads.parse(input.bytes(), &self.r.cfg.limits, head)? {
                    input.consume(n);
                    return Ok(true);
                }
            }
            let idle = input.is_empty();
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

    /// Writes `wbuf` out, reading meanwhile. The client must take some of
    /// it every `--write-timeout`: the deadline moves with each write that
    /// makes progress, so a slow reader is fine and a stopped one is not.
    pub(super) async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let cell = self.cell.clone();
        let saved = cell.deadline();
        let mut buf = std::mem::take(&mut self.wbuf);
        let mut at = 0;
        let result = loop {
            cell.set_deadline(Some(self.r.deadline_in(self.r.cfg.write_timeout)));
            let (rd, stream) = (&mut self.rd, &self.stream);
            let mut write = pin!(stream.write(buf, at));
            // The write, unless the sweeper says the deadline passed first
            // (the dropped write is cancelled; the connection closes).
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
            match done {
                Some((Ok(n), b)) if n > 0 => {
                    buf = b;
                    at += n;
                    if at == buf.len() {
                        break Ok(buf);
                    }
                }
                Some(_) => break Err(ConnError::ClientGone),
                None => break Err(ConnError::WriteTimeout),
            }
        };
        cell.set_deadline(saved);
        let mut buf = result?;
        buf.clear();
        self.wbuf = buf;
        Ok(())
    }

    /// Answers a failed request (if nothing was sent yet) and logs it.
    async fn fail(&mut self, e: &ConnError, head: Option<&RequestHead>, t0: Option<Instant>) {
        match e {
            ConnError::ClientGone | ConnError::WriteTimeout => {}
            ConnError::Proto(_) | ConnError::HeaderTimeout => {}
            _ => elog!(
                "ringway: {} {}: {e}",
                self.info.peer_host,
                head.map_or("-", |h| h.method.as_str())
            ),
        }
        if let Some(status) = status_for(e) {
            self.linger = true;
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
        // One large request or response grew these: give the memory back.
        shrink(&mut self.wbuf);
        shrink(&mut self.msg);
        shrink(&mut self.batch);
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
                        elog!(
                            "ringway: {} {}: {e} (after the response started; closing)",
                            self.info.peer_host,
                            head.method
                        );
                    }
                    self.access_log(Some(head), &out, t0);
                }
                false
            }
        }
    }

    /// The route of the current request.
    pub(super) fn route(&self) -> Route {
        Route {
            reactor: self.r.k,
            conn: self.id,
            req: self.req_no,
        }
    }
}
