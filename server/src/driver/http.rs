//! A request's exchange with its worker: the scope and body go out, the
//! response comes back and is written to the client.
//!
//! Flow control runs both ways. Request body chunks go one at a time: the
//! next only after the worker says the app took the last ("body taken"),
//! and the socket is not read meanwhile, so a slow app slows its client.
//! Response bodies run on credits ([`crate::asgi::wire::credit`]): the
//! worker keeps at most `--response-window` of a response ahead of what the
//! client has read, and the reactor reports what it wrote, so a slow client
//! slows the app instead of filling the server's memory, and the other
//! requests a worker serves on the same lane are not held up.
//!
//! Every way a request can end before its response completes (a bad body, a
//! limit, an app that broke the protocol, a timeout, the client leaving)
//! sends `http.disconnect` to the worker, so the app never waits in
//! `receive()` for a request that is over.

use std::future::Future;
use std::path::PathBuf;

use super::cell::{replies, Reply, WorkerKey};
use super::conn::{Conn, Outcome, Phase, SERVER};
use super::io::ReadResult;
use super::reactor::DispatchError;
use crate::asgi::scope;
use crate::asgi::wire::{self, credit, ToServer};
use crate::date::with_date;
use crate::errors::ConnError;
use crate::h1::{
    self, BodyDecoder, BodyEncoder, BodyFraming, Fields, RequestHead, ResponseFraming, WithField,
};
use ringway_layer_shm::SendError;

/// Write out the response buffer once it holds this much, even if more
/// replies are queued (one write per reply would cost a system call each).
const WRITE_BATCH: usize = 64 * 1024;

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
    /// Nothing to write yet (a late reply, more trailers to come, or the
    /// body is buffered until the batch ends).
    Nothing,
    /// The response is complete: write out what is buffered.
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

/// Response credits of one request (see [`credit`]).
#[derive(Default)]
struct Credits {
    /// Units of body framed into the write buffer and not yet written.
    buffered: u64,
    /// Units written to the client.
    written: u64,
    /// Units last reported to the worker.
    reported: u64,
}

/// One request's exchange with its worker, as the replies see it.
struct Exchange<'h> {
    head: &'h RequestHead,
    is_head: bool,
    /// Whether the connection may stay open, as far as known.
    keep_alive: bool,
    resp: Resp,
    body: BodyIn,
    credits: Credits,
    /// Some of the response reached the socket: a failure can only close
    /// the connection now (before, the client gets an error status).
    started: bool,
    /// The worker.
    w: WorkerKey,
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
    /// Sends the request to a worker and relays its response. Returns whether
    /// the connection may stay open.
    pub(super) async fn exchange(
        &mut self,
        head: &RequestHead,
        out: &mut Outcome,
    ) -> Result<bool, ConnError> {
        let r = self.r.clone();
        // From here on the socket is read only so far ahead (the head was
        // read under the head limits).
        self.rd.limit = r.read_ahead;
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
        // The scope first (with the flag byte for more_body last), then as
        // much of the body as fits beside it in one layer message.
        let route = self.route();
        scope::encode_request_scope(
            &mut self.msg,
            route,
            head,
            &self.info,
            &r.cfg.root_path,
            &r.cfg.forwarded_allow,
        );
        // The layer's messages are sized for the largest scope the limits
        // allow (see `supervisor::layer_config`); this is the safety net.
        if self.msg.len() > r.max_message {
            return Err(ConnError::ScopeTooLarge(self.msg.len()));
        }
        let take = body.pending.len().min(r.max_message - self.msg.len());
        let more = !(body.dec.is_done() && body.pending.len() == take);
        scope::finish_request(&mut self.msg, &body.pending[..take], more);
        body.pending.drain(..take);
        // Whatever is queued answers earlier requests.
        self.cell.clear_replies();
        self.enter(Phase::Waiting);
        let w = self.dispatch().await?;
        self.cell.worker.set(Some(w));
        body.awaiting_taken = more;
        body.all_sent = !more;
        let mut x = Exchange {
            head,
            is_head: head.method == "HEAD",
            keep_alive: head.keep_alive,
            resp: Resp::NotStarted,
            body,
            credits: Credits::default(),
            started: false,
            w,
        };
        let mut batch = std::mem::take(&mut self.batch);
        let relayed = self.relay(&mut x, &mut batch, out).await;
        batch.clear();
        self.batch = batch;
        if let Err(e) = relayed {
            if !x.started {
                // A head framed but never written is no response yet.
                self.wbuf.clear();
                out.status = 0;
            }
            // The app learns the request is over, whatever ended it (a dead
            // worker needs no telling).
            if e != ConnError::WorkerDied {
                let route = self.route();
                wire::encode_disconnect(&mut self.msg, route);
                r.send_or_owe(w, &self.msg);
            }
            return Err(e);
        }
        // A body the app never read keeps the connection from being reused
        // (and the close lingers, so the client reads the response).
        let body_read = x.body.dec.is_done() && x.body.pending.is_empty();
        self.linger |= !body_read;
        Ok(x.keep_alive && body_read)
    }

    /// Hands the request in `msg` to a worker, waiting for room while every
    /// worker's inbox is full, up to the request's deadline.
    async fn dispatch(&mut self) -> Result<WorkerKey, ConnError> {
        loop {
            let seen = self.cell.events.get();
            match self.r.dispatch(&self.msg) {
                Ok(w) => return Ok(w),
                Err(DispatchError::NoWorker) => return Err(ConnError::NoWorker),
                Err(DispatchError::Full) => {}
            }
            if self.cell.expired.get() {
                return Err(ConnError::NoWorker);
            }
            if self.rd.failed {
                return Err(ConnError::ClientGone);
            }
            self.r.wait_for_room(&self.cell);
            self.wait(seen).await;
        }
    }

    /// Sends `msg` (a further message of the request) to its worker, waiting
    /// for room while its inbox is full. A worker that stops taking messages
    /// is killed by the supervisor's heartbeat, which ends the wait.
    async fn send_to_worker(&mut self, w: WorkerKey) -> Result<(), ConnError> {
        loop {
            let seen = self.cell.events.get();
            match self.r.send_to(w, &self.msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full) => {}
                Err(_) => return Err(ConnError::WorkerDied),
            }
            if self.cell.expired.get() && self.phase == Phase::Waiting {
                return Err(ConnError::ResponseTimeout);
            }
            if self.rd.failed {
                return Err(ConnError::ClientGone);
            }
            self.r.wait_for_room(&self.cell);
            self.wait(seen).await;
        }
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
    async fn pump_body(&mut self, body: &mut BodyIn, w: WorkerKey) -> Result<(), ConnError> {
        if body.awaiting_taken || body.all_sent {
            return Ok(());
        }
        self.decode_body(body)?;
        if body.pending.is_empty() && !body.dec.is_done() {
            if self.rd.eof {
                // The client ended its side before the body did.
                return Err(ConnError::ClientGone);
            }
            return Ok(());
        }
        let take = body.pending.len().min(self.r.max_message - 64);
        let more = !(body.dec.is_done() && body.pending.len() == take);
        let route = self.route();
        wire::encode_body(&mut self.msg, route, &body.pending[..take], more);
        body.pending.drain(..take);
        self.send_to_worker(w).await?;
        body.awaiting_taken = more;
        body.all_sent = !more;
        Ok(())
    }

    /// Writes out the response buffer, then reports the body it held to the
    /// worker if a report is due.
    async fn write_out(&mut self, x: &mut Exchange<'_>) -> Result<(), ConnError> {
        if !self.wbuf.is_empty() && !matches!(x.resp, Resp::NotStarted) {
            x.started = true;
        }
        self.flush().await?;
        let c = &mut x.credits;
        c.written += std::mem::take(&mut c.buffered);
        let window = self.r.cfg.response_window as u64;
        if matches!(x.resp, Resp::Body { .. })
            && credit::should_report(c.written, c.reported, window)
        {
            c.reported = c.written;
            let (route, written) = (self.route(), c.written);
            wire::encode_credit(&mut self.msg, route, written);
            self.r.send_or_owe(x.w, &self.msg);
        }
        Ok(())
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
            let mut finished = false;
            let mut send_body = false;
            for reply in replies(batch) {
                let msg = match reply {
                    Reply::Message(m) => m,
                    Reply::WorkerDied => return Err(ConnError::WorkerDied),
                    Reply::Overrun => {
                        return Err(ConnError::App(format!(
                            "the worker sent more than --response-window ({} bytes) ahead of the client",
                            self.r.cfg.response_window
                        )))
                    }
                };
                match self.on_reply(msg, x, out)? {
                    Step::Nothing => {}
                    Step::Finish => {
                        finished = true;
                        break;
                    }
                    Step::SendFile(path) => {
                        // Boxed: a rare path whose future would otherwise
                        // make every request's future larger.
                        Box::pin(self.send_file(&path, x, out)).await?;
                        finished = true;
                        break;
                    }
                    Step::SendBody => send_body = true,
                }
                if self.wbuf.len() >= WRITE_BATCH {
                    self.write_out(x).await?;
                }
            }
            batch.clear();
            self.write_out(x).await?;
            if finished {
                return Ok(());
            }
            if send_body {
                self.pump_body(&mut x.body, x.w).await?;
            }
            // More of the body may have arrived. (If nothing could be sent,
            // the wait below lasts until more arrives.)
            if x.body.needs_bytes() {
                self.pump_body(&mut x.body, x.w).await?;
            }
            if self.cell.expired.get() && self.phase == Phase::Waiting {
                return Err(ConnError::ResponseTimeout);
            }
            // A reset is the client gone: the app hears of it now. The end
            // of the input is not: a client that half-closed after its
            // request still gets its response (the end only matters while
            // the body is incomplete, in `pump_body`). A client that closes
            // fully is found when a write to it fails, or at --timeout.
            if self.rd.failed {
                return Err(ConnError::ClientGone);
            }
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
                // An informational response (103 Early Hints): written as
                // one, and the final response is still to come.
                if (100..200).contains(&st) {
                    if trailers || first.is_some() {
                        return app("a 1xx http.response.start carries no body or trailers");
                    }
                    h1::encode_informational(&mut self.wbuf, x.head.version, st, &headers)
                        .map_err(|e| ConnError::App(format!("invalid response: {e}")))?;
                    return Ok(Step::Nothing);
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
                    Some((chunk, more)) => self.on_body(chunk, more, x, out),
                    None => Ok(Step::Nothing),
                }
            }
            ToServer::Body {
                body: chunk,
                more_body,
                ..
            } => match x.resp {
                Resp::Body { .. } => self.on_body(chunk, more_body, x, out),
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
                        // Kept until the last trailers message: bounded as a
                        // request head is.
                        let size: usize = fields.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
                        if size > self.r.cfg.limits.request_head {
                            return app("http.response.trailers: more trailer fields than --limit-request-head holds");
                        }
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
            ToServer::WorkerDied { .. } | ToServer::Shutdown => {
                app("a control message from a worker")
            }
        }
    }

    /// Frames a body chunk into `wbuf`.
    fn on_body(
        &mut self,
        chunk: &[u8],
        more: bool,
        x: &mut Exchange<'_>,
        out: &mut Outcome,
    ) -> Result<Step, ConnError> {
        let Resp::Body { enc, trailers } = &mut x.resp else {
            unreachable!("checked by the caller")
        };
        enc.encode(chunk, &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        out.bytes += chunk.len() as u64;
        x.credits.buffered += credit::cost(chunk.len());
        if more {
            return Ok(Step::Nothing);
        }
        if *trailers {
            let enc = std::mem::replace(enc, BodyEncoder::new(ResponseFraming::NoBody));
            x.resp = Resp::Trailers {
                enc,
                fields: Vec::new(),
            };
            return Ok(Step::Nothing);
        }
        enc.finish(&[], &mut self.wbuf)
            .map_err(|e| ConnError::App(e.to_string()))?;
        x.resp = Resp::Done;
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
        x.started = true;
        self.flush().await?;
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
        self.on_body(&[], false, x, out).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
