//! One client connection: reads requests with the sans-IO parser, hands each
//! to a worker over the layer, and writes the worker's response back.
//!
//! Requests on a connection are served one after another, so pipelined
//! requests are answered in order; bytes of the next request wait in the read
//! buffer. A reader task keeps the socket read while a request is in flight
//! (to notice a client that goes away), but stops when the read-ahead buffer
//! is full or the worker has not yet taken the last body chunk: that is the
//! request body's flow control.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout, Instant as TokioInstant};

use super::reactor::{ConnSlot, Reactor, Reply};
use super::stream::Stream;
use crate::access_log::Entry;
use crate::asgi::scope::{self, ConnInfo};
use crate::asgi::wire::{self, Route, ToServer};
use crate::date::with_date;
use crate::errors::{status_for, ConnError};
use crate::h1::{
    self, BodyDecoder, BodyEncoder, BodyFraming, RequestHead, ResponseFraming, Version,
};

/// The `server` header.
pub const SERVER: &[u8] = b"ringway";
/// Largest body chunk sent to a worker in one message (fits the layer's
/// default 64 KiB message with room for the message header).
pub const MAX_CHUNK: usize = 60 * 1024;
/// How many bytes of the next request(s) we read ahead while one is in flight.
const READ_AHEAD: usize = 64 * 1024;
/// Size of each socket read.
const READ_SIZE: usize = 16 * 1024;
/// Attempts to queue a body chunk into a full worker inbox before giving up.
const FULL_RETRIES: usize = 10_000;

/// What the reader task saw.
enum ReadEvent {
    Data(Vec<u8>),
    Closed,
}

async fn read_loop(stream: Rc<Stream>, tx: mpsc::Sender<ReadEvent>) {
    loop {
        let (res, buf) = stream.read(Vec::with_capacity(READ_SIZE)).await;
        let ev = match res {
            Ok(0) | Err(_) => ReadEvent::Closed,
            Ok(_) => ReadEvent::Data(buf),
        };
        let closed = matches!(ev, ReadEvent::Closed);
        if tx.send(ev).await.is_err() || closed {
            return;
        }
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

struct Conn {
    r: Rc<Reactor>,
    id: u64,
    slot: Rc<ConnSlot>,
    stream: Rc<Stream>,
    rx: mpsc::UnboundedReceiver<Reply>,
    events: mpsc::Receiver<ReadEvent>,
    buf: Vec<u8>,
    eof: bool,
    info: ConnInfo,
    remote: String,
    req_no: u32,
    wbuf: Vec<u8>,
    msg: Vec<u8>,
}

/// Serves one connection until it closes.
pub async fn serve(
    r: Rc<Reactor>,
    stream: Stream,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
) {
    let (id, slot, rx) = r.open_conn();
    let stream = Rc::new(stream);
    let (ev_tx, events) = mpsc::channel(1);
    let reader = tokio_uring::spawn(read_loop(stream.clone(), ev_tx));
    let mut c = Conn {
        r: r.clone(),
        id,
        slot,
        stream: stream.clone(),
        rx,
        events,
        buf: Vec::new(),
        eof: false,
        remote: peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string()),
        info: ConnInfo { peer, local },
        req_no: 0,
        wbuf: Vec::with_capacity(4096),
        msg: Vec::new(),
    };
    c.run().await;
    reader.abort();
    stream.shutdown(std::net::Shutdown::Both);
    r.close_conn(id);
}

impl Conn {
    async fn run(&mut self) {
        loop {
            let head = match self.read_head().await {
                Ok(Some(h)) => h,
                Ok(None) => return,
                Err(e) => {
                    self.fail(&e, None, Instant::now()).await;
                    return;
                }
            };
            self.req_no = self.req_no.wrapping_add(1);
            if !self.request(head).await {
                return;
            }
        }
    }

    fn on_read(&mut self, ev: Option<ReadEvent>) {
        match ev {
            Some(ReadEvent::Data(d)) => self.buf.extend_from_slice(&d),
            _ => self.eof = true,
        }
    }

    /// Reads the next request head. `Ok(None)`: the connection should close
    /// quietly (client gone, idle keep-alive timeout, shutdown).
    async fn read_head(&mut self) -> Result<Option<RequestHead>, ConnError> {
        let waited_from = TokioInstant::now();
        let mut shutdown = self.r.shutdown.clone();
        loop {
            if !self.buf.is_empty() {
                if let Some((head, n)) = h1::parse_head(&self.buf, &self.r.cfg.limits)? {
                    self.buf.drain(..n);
                    return Ok(Some(head));
                }
            }
            let idle = self.buf.is_empty();
            if idle && *shutdown.borrow() {
                // Shutting down: serve a request that already arrived (its
                // client saw no `connection: close` yet), else close.
                match self.events.try_recv() {
                    Ok(ev) => {
                        self.on_read(Some(ev));
                        continue;
                    }
                    Err(_) => return Ok(None),
                }
            }
            if self.eof {
                return Ok(None);
            }
            // An idle keep-alive connection gets --keep-alive; a request that
            // has started arriving must complete within --header-timeout.
            let limit = if idle && self.req_no > 0 {
                self.r.cfg.keep_alive
            } else {
                self.r.cfg.header_timeout
            };
            tokio::select! {
                ev = self.events.recv() => self.on_read(ev),
                _ = sleep_until(waited_from + limit) => {
                    return if idle { Ok(None) } else { Err(ConnError::HeaderTimeout) };
                }
                _ = shutdown.wait_for(|s| *s), if idle => return Ok(None),
            }
        }
    }

    /// Writes `wbuf` out, within --write-timeout.
    async fn flush(&mut self) -> Result<(), ConnError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        match timeout(self.r.cfg.write_timeout, self.stream.write_all(buf)).await {
            Ok((Ok(()), mut buf)) => {
                buf.clear();
                self.wbuf = buf;
                Ok(())
            }
            Ok((Err(_), _)) => Err(ConnError::ClientGone),
            Err(_) => Err(ConnError::WriteTimeout),
        }
    }

    /// Answers a failed request (if nothing was sent yet) and logs it.
    async fn fail(&mut self, e: &ConnError, head: Option<&RequestHead>, t0: Instant) {
        match e {
            ConnError::ClientGone | ConnError::WriteTimeout => {}
            ConnError::Proto(_) | ConnError::HeaderTimeout => {}
            _ => eprintln!(
                "ringway: {} {}: {e}",
                self.remote,
                head.map_or("-", |h| h.method.as_str())
            ),
        }
        if let Some(status) = status_for(e) {
            self.wbuf.clear();
            let resp = with_date(|d| h1::encode::error_response(status, d, SERVER));
            self.wbuf.extend_from_slice(&resp);
            let _ = self.flush().await;
            self.access_log(head, status, 0, &[], t0);
        }
    }

    fn access_log(
        &self,
        head: Option<&RequestHead>,
        status: u16,
        bytes: u64,
        resp_headers: &[(Vec<u8>, Vec<u8>)],
        t0: Instant,
    ) {
        let Some(log) = &self.r.log else { return };
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
            remote: &self.remote,
            method,
            target,
            protocol,
            status,
            bytes,
            request_headers: req_headers,
            response_headers: resp_headers,
            elapsed: t0.elapsed(),
        });
    }

    /// Serves one request; returns whether the connection stays open.
    async fn request(&mut self, head: RequestHead) -> bool {
        let t0 = Instant::now();
        let mut status = 0u16;
        let mut bytes = 0u64;
        let mut resp_headers = Vec::new();
        let result = self
            .exchange(&head, &mut status, &mut bytes, &mut resp_headers)
            .await;
        if let Some(w) = self.slot.worker.take() {
            self.r.request_done(w);
        }
        match result {
            Ok(keep_alive) => {
                self.access_log(Some(&head), status, bytes, &resp_headers, t0);
                keep_alive
            }
            Err(e) => {
                if status == 0 {
                    self.fail(&e, Some(&head), t0).await;
                } else {
                    // The response had started: all we can do is close.
                    if !matches!(e, ConnError::ClientGone | ConnError::WriteTimeout) {
                        eprintln!(
                            "ringway: {} {}: {e} (after the response started; closing)",
                            self.remote, head.method
                        );
                    }
                    self.access_log(Some(&head), status, bytes, &resp_headers, t0);
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

    /// Moves request body bytes from the read buffer to the worker, one
    /// chunk at a time (the next only after the worker took the last).
    async fn pump_body(&mut self, body: &mut BodyIn, w: usize) -> Result<(), ConnError> {
        if body.awaiting_taken || body.all_sent {
            return Ok(());
        }
        if !body.dec.is_done() {
            let n = body.dec.decode(&self.buf, &mut body.pending)?;
            self.buf.drain(..n);
        }
        if body.pending.is_empty() && !body.dec.is_done() {
            return Ok(());
        }
        let take = body.pending.len().min(MAX_CHUNK);
        let more = !(body.dec.is_done() && body.pending.len() == take);
        let route = self.route();
        let mut msg = std::mem::take(&mut self.msg);
        wire::encode_body(&mut msg, route, &body.pending[..take], more);
        self.msg = msg;
        body.pending.drain(..take);
        self.send_to_worker(w).await?;
        body.awaiting_taken = more;
        body.all_sent = !more;
        Ok(())
    }

    /// Sends the request to a worker and relays its response. Returns whether
    /// the connection may stay open.
    async fn exchange(
        &mut self,
        head: &RequestHead,
        status: &mut u16,
        bytes: &mut u64,
        resp_headers: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<bool, ConnError> {
        let cfg = self.r.cfg.clone();
        let is_head = head.method == "HEAD";
        let mut keep_alive = head.keep_alive;
        let mut body = BodyIn {
            dec: BodyDecoder::with_limits(head.body, &cfg.limits),
            pending: Vec::new(),
            awaiting_taken: false,
            all_sent: false,
        };
        if head.expect_continue && head.body != BodyFraming::Empty {
            self.wbuf.extend_from_slice(h1::encode::CONTINUE);
            self.flush().await?;
        }
        let n = body.dec.decode(&self.buf, &mut body.pending)?;
        self.buf.drain(..n);
        let take = body.pending.len().min(MAX_CHUNK);
        let more = !(body.dec.is_done() && body.pending.len() == take);
        let scope = scope::build(head, &self.info, &cfg.root_path, &cfg.forwarded_allow);
        let mut msg = std::mem::take(&mut self.msg);
        wire::encode_request(&mut msg, self.route(), &scope, &body.pending[..take], more);
        body.pending.drain(..take);
        let dispatched = self.r.dispatch(&msg);
        self.msg = msg;
        let w = dispatched?;
        self.slot.worker.set(Some(w));
        body.awaiting_taken = more;
        body.all_sent = !more;

        let deadline = TokioInstant::now() + cfg.timeout;
        let mut resp = Resp::NotStarted;
        let outcome = loop {
            let need_bytes = !body.awaiting_taken
                && !body.all_sent
                && body.pending.is_empty()
                && !body.dec.is_done();
            let want_read = !self.eof && (need_bytes || self.buf.len() < READ_AHEAD);
            let not_started = matches!(resp, Resp::NotStarted);
            tokio::select! {
                biased;
                m = self.rx.recv() => match m {
                    Some(Reply::Msg(bytes_in)) => {
                        match self.on_reply(&bytes_in, head, is_head, &mut keep_alive, &mut resp, &mut body, w, status, bytes, resp_headers).await {
                            Ok(true) => break Ok(()),
                            Ok(false) => {}
                            Err(e) => break Err(e),
                        }
                    }
                    Some(Reply::WorkerDied) => break Err(ConnError::WorkerDied),
                    None => break Err(ConnError::WorkerDied),
                },
                ev = self.events.recv(), if want_read => {
                    self.on_read(ev);
                    if self.eof {
                        break Err(ConnError::ClientGone);
                    }
                    self.pump_body(&mut body, w).await?;
                }
                _ = sleep_until(deadline), if not_started => break Err(ConnError::ResponseTimeout),
            }
        };
        if let Err(e) = outcome {
            if matches!(
                e,
                ConnError::ClientGone | ConnError::ResponseTimeout | ConnError::WriteTimeout
            ) {
                let mut msg = std::mem::take(&mut self.msg);
                wire::encode_disconnect(&mut msg, self.route());
                let _ = self.r.send_to(w, &msg);
                self.msg = msg;
            }
            return Err(e);
        }
        // A body the app never read keeps the connection from being reused.
        Ok(keep_alive && body.dec.is_done() && body.pending.is_empty())
    }

    /// Handles one message from the worker; `Ok(true)` when the response is
    /// complete.
    #[allow(clippy::too_many_arguments)]
    async fn on_reply(
        &mut self,
        raw: &[u8],
        head: &RequestHead,
        is_head: bool,
        keep_alive: &mut bool,
        resp: &mut Resp,
        body: &mut BodyIn,
        w: usize,
        status: &mut u16,
        bytes: &mut u64,
        resp_headers: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<bool, ConnError> {
        let msg = wire::decode_to_server(raw).map_err(|e| ConnError::App(e.to_string()))?;
        if msg.req() != Some(self.req_no) {
            return Ok(false); // a late reply to an earlier request on this connection
        }
        let app = |what: &str| Err(ConnError::App(what.to_owned()));
        match msg {
            ToServer::Start {
                status: st,
                mut headers,
                trailers,
                body: first,
                ..
            } => {
                if !matches!(resp, Resp::NotStarted) {
                    return app("http.response.start sent twice");
                }
                // The whole body came with the start: say how long it is, so
                // the client needs neither chunked framing nor a close.
                if let Some((whole, false)) = first {
                    let has_length = headers
                        .iter()
                        .any(|(k, _)| k.eq_ignore_ascii_case(b"content-length"));
                    let bodyless =
                        st < 200 || st == 204 || st == 304 || (is_head && whole.is_empty());
                    if !has_length && !trailers && !bodyless {
                        headers.push((
                            b"content-length".to_vec(),
                            whole.len().to_string().into_bytes(),
                        ));
                    }
                }
                // After SIGTERM, every response says `connection: close`.
                let ka_in = *keep_alive && !*self.r.shutdown.borrow();
                let (framing, ka) = with_date(|d| {
                    h1::encode_head(
                        &mut self.wbuf,
                        head.version,
                        is_head,
                        ka_in,
                        st,
                        &headers,
                        trailers,
                        d,
                        SERVER,
                    )
                })
                .map_err(|e| ConnError::App(format!("invalid response: {e}")))?;
                *keep_alive = ka;
                *status = st;
                *resp_headers = headers;
                let trailers = trailers && framing == ResponseFraming::Chunked;
                *resp = Resp::Body {
                    enc: BodyEncoder::new(framing),
                    trailers,
                };
                if let Some((chunk, more)) = first {
                    return self.on_body(chunk, more, resp, bytes).await;
                }
                self.flush().await?;
                Ok(false)
            }
            ToServer::Body {
                body: chunk,
                more_body,
                ..
            } => match resp {
                Resp::Body { .. } => self.on_body(chunk, more_body, resp, bytes).await,
                Resp::NotStarted => app("http.response.body before http.response.start"),
                _ => app("http.response.body after the body ended"),
            },
            ToServer::Trailers { headers, more, .. } => match std::mem::replace(resp, Resp::Done) {
                Resp::Trailers {
                    mut enc,
                    mut fields,
                } => {
                    fields.extend(headers);
                    if more {
                        *resp = Resp::Trailers { enc, fields };
                        return Ok(false);
                    }
                    enc.finish(&fields, &mut self.wbuf)
                        .map_err(|e| ConnError::App(e.to_string()))?;
                    self.flush().await?;
                    Ok(true)
                }
                _ => app(
                    "http.response.trailers without trailers announced, or before the body ended",
                ),
            },
            ToServer::PathSend { path, .. } => {
                if !matches!(resp, Resp::Body { .. }) {
                    return app("http.response.pathsend without http.response.start");
                }
                let path = std::path::PathBuf::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path),
                );
                self.send_file(&path, resp, bytes).await
            }
            ToServer::BodyTaken { .. } => {
                body.awaiting_taken = false;
                self.pump_body(body, w).await?;
                Ok(false)
            }
            ToServer::AppError { message, .. } => Err(ConnError::App(
                String::from_utf8_lossy(message).into_owned(),
            )),
            ToServer::WorkerDied { .. } | ToServer::Shutdown => Ok(false),
        }
    }

    async fn on_body(
        &mut self,
        chunk: &[u8],
        more: bool,
        resp: &mut Resp,
        bytes: &mut u64,
    ) -> Result<bool, ConnError> {
        let Resp::Body { enc, trailers } = resp else {
            unreachable!("checked by the caller")
        };
        enc.encode(chunk, &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        *bytes += chunk.len() as u64;
        if more {
            self.flush().await?;
            return Ok(false);
        }
        if *trailers {
            let enc = std::mem::replace(enc, BodyEncoder::new(ResponseFraming::NoBody));
            *resp = Resp::Trailers {
                enc,
                fields: Vec::new(),
            };
            self.flush().await?;
            return Ok(false);
        }
        enc.finish(&[], &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        *resp = Resp::Done;
        self.flush().await?;
        Ok(true)
    }

    /// `http.response.pathsend`: streams a file as the whole body.
    async fn send_file(
        &mut self,
        path: &std::path::Path,
        resp: &mut Resp,
        bytes: &mut u64,
    ) -> Result<bool, ConnError> {
        let file = tokio_uring::fs::File::open(path)
            .await
            .map_err(|e| ConnError::App(format!("pathsend {}: {e}", path.display())))?;
        let mut pos = 0u64;
        loop {
            let (res, buf) = file.read_at(Vec::with_capacity(64 * 1024), pos).await;
            let n = res.map_err(|e| ConnError::App(format!("pathsend {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            if let Resp::Body { enc, .. } = resp {
                enc.encode(&buf, &mut self.wbuf)
                    .map_err(|e| ConnError::App(e.to_string()))?;
            }
            *bytes += n as u64;
            self.flush().await?;
        }
        let _ = file.close().await;
        self.on_body(&[], false, resp, bytes).await
    }
}
