//! The binary encoding of ASGI messages on the channel layer.
//!
//! Compact, little-endian, length-prefixed, and decodable without a schema
//! library, so the worker's native module can turn a message into a Python
//! dict field by field (no JSON, no pickle). Every message starts with a kind
//! byte. Messages to a worker carry the *route* of the connection they belong
//! to; messages to a reactor travel on its inbox (`reactor.<k>!`) with the
//! connection id as the record tag, and carry the request number they answer.
//!
//! ```text
//! route      = reactor:u16 conn:u64 req:u32
//! str8       = len:u8 bytes          str16 = len:u16 bytes     bytes32 = len:u32 bytes
//! headers    = count:u16 (name:str16 value:str16)*
//! addr       = 0 | 1 host:str8 port:u16
//!
//! to a worker
//!   1 http.request     route version:u8 scheme:u8 method:str8 path:str16 raw_path:str16
//!                      query:str16 root_path:str16 headers client:addr server:addr
//!                      more_body:u8 body:rest
//!   2 http.request     route more_body:u8 body:rest          (a further body chunk)
//!   3 http.disconnect  route
//!   4 response credit  route consumed:u64   (the client took this much of the response: send more)
//!   5 ping                                   (from the supervisor: take it, that is all)
//! to a reactor
//!  16 http.response.start    req:u32 status:u16 trailers:u8 headers has_body:u8
//!                            [more_body:u8 body:rest]   (the first body chunk may ride along)
//!  17 http.response.body     req:u32 more_body:u8 body:rest
//!  18 http.response.trailers req:u32 more_trailers:u8 headers
//!  19 http.response.pathsend req:u32 path:rest
//!  20 body taken             req:u32   (the app consumed the last request chunk: send more)
//!  21 app error              req:u32 message:rest (the app failed; 500 if nothing was sent)
//!  32 worker died            worker:u32   (from the supervisor)
//!  33 shutdown                               (from the supervisor: stop gracefully)
//! ```
//!
//! `http.disconnect` is sent for every request that ends before its
//! response completes. A request whose response completed gets none: the
//! worker itself answers the app's `receive()` after the response with
//! `http.disconnect`, as the ASGI spec has it.
//!
//! `version` is 0 for HTTP/1.0 and 1 for HTTP/1.1; `scheme` 0 for http, 1 for
//! https. Decoders check every length against the bytes present (a message
//! from a worker is untrusted) and borrow the message: strings and bodies are
//! slices of it and `headers` is a checked [`Headers`] view, so decoding
//! allocates nothing. The server writes `http.request` straight from the
//! parsed request head (`scope::encode_request`, with the writers in [`put`]).

use std::fmt;

/// The version of this encoding. The server gives it to its workers
/// (`RINGWAY_WIRE_VERSION`), and a worker built from another version refuses
/// to start, saying so, instead of misreading messages.
pub const VERSION: u32 = 1;

/// Message kinds.
pub mod kind {
    /// First message of a request: scope and first body chunk.
    pub const HTTP_REQUEST: u8 = 1;
    /// A further request body chunk.
    pub const HTTP_BODY: u8 = 2;
    /// The client went away.
    pub const HTTP_DISCONNECT: u8 = 3;
    /// The reactor wrote more of a response to its client (see [`super::credit`]).
    pub const RESPONSE_CREDIT: u8 = 4;
    /// The supervisor's heartbeat: a worker only has to take it.
    pub const PING: u8 = 5;
    /// `http.response.start`, possibly with the first body chunk.
    pub const RESPONSE_START: u8 = 16;
    /// `http.response.body`.
    pub const RESPONSE_BODY: u8 = 17;
    /// `http.response.trailers`.
    pub const RESPONSE_TRAILERS: u8 = 18;
    /// `http.response.pathsend`.
    pub const RESPONSE_PATHSEND: u8 = 19;
    /// The app consumed the last request body chunk.
    pub const BODY_TAKEN: u8 = 20;
    /// The app failed.
    pub const APP_ERROR: u8 = 21;
    /// A worker process exited (from the supervisor).
    pub const WORKER_DIED: u8 = 32;
    /// Stop accepting and finish in-flight requests (from the supervisor).
    pub const SHUTDOWN: u8 = 33;
}

/// Where a request's replies go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The reactor thread that holds the connection.
    pub reactor: u16,
    /// The connection, unique within its reactor.
    pub conn: u64,
    /// The request on that connection (keep-alive connections carry several).
    pub req: u32,
}

/// Bytes of a route on the wire.
pub const ROUTE_LEN: usize = 2 + 8 + 4;

/// The HTTP connection scope of ASGI (www spec 2.5), as a worker decodes it:
/// every field borrows the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `"1.0"` or `"1.1"`, as 0 or 1.
    pub http11: bool,
    /// `https` (from a trusted `X-Forwarded-Proto`) or `http`.
    pub https: bool,
    /// Method, upper case as sent.
    pub method: &'a str,
    /// Percent-decoded path (UTF-8; invalid sequences replaced).
    pub path: &'a str,
    /// The path as sent.
    pub raw_path: &'a [u8],
    /// The query string as sent, without `?`.
    pub query_string: &'a [u8],
    /// `root_path` (the `--root-path` option).
    pub root_path: &'a str,
    /// Lower-cased header names and their values, in order, duplicates kept.
    pub headers: Headers<'a>,
    /// The client's address (after trusted `X-Forwarded-For`).
    pub client: Option<(&'a str, u16)>,
    /// The server's address.
    pub server: Option<(&'a str, u16)>,
}

/// Header fields inside a message (`headers` in the grammar), already
/// checked to be well-formed: iterating cannot fail and allocates nothing.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    /// How many `(name, value)` pairs `bytes` holds.
    count: u16,
    /// The pairs, `name:str16 value:str16` each; every length was checked
    /// against the bytes present when the view was made.
    bytes: &'a [u8],
}

impl<'a> Headers<'a> {
    /// How many fields there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The fields, in order.
    pub fn iter(&self) -> HeadersIter<'a> {
        HeadersIter {
            left: self.count,
            bytes: self.bytes,
        }
    }

    /// Copies the fields into an owned list.
    pub fn to_vec(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect()
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Headers<'_> {}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

impl crate::h1::Fields for Headers<'_> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
    }
}

/// Iterator over [`Headers`].
#[derive(Clone)]
pub struct HeadersIter<'a> {
    left: u16,
    bytes: &'a [u8],
}

impl<'a> HeadersIter<'a> {
    /// Splits a `str16` off the front. The view was checked when it was made.
    fn str16(&mut self) -> &'a [u8] {
        let n = u16::from_le_bytes([self.bytes[0], self.bytes[1]]) as usize;
        let (s, rest) = self.bytes[2..].split_at(n);
        self.bytes = rest;
        s
    }
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name = self.str16();
        Some((name, self.str16()))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

/// A malformed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed layer message: {}", self.0)
    }
}

impl std::error::Error for WireError {}

/// Response credits: how a worker keeps at most a window of response bytes
/// ahead of a client that reads slowly.
///
/// A worker may send response body chunks for a request while the units it
/// has sent and the reactor has not yet reported written stay within the
/// window (`--response-window`, in the worker's environment): it may send a
/// chunk of cost `c` when nothing is outstanding or `outstanding + c <=
/// window`, and otherwise waits for a [`kind::RESPONSE_CREDIT`] message,
/// which carries the units written so far (cumulative, so a late or repeated
/// credit is harmless). A chunk costs its bytes plus [`PER_MESSAGE`], so a
/// stream of tiny chunks is bounded too. The reactor reports after writing
/// at least a quarter of the window since its last report: a worker that
/// waits has more than `window - max_message` outstanding, which is at least
/// a quarter when the window holds two messages, so it always hears back.
/// The reactor treats a worker that overruns its window (by more than one
/// message) as broken: the request fails, and the reactor never buffers more
/// than that for one request.
pub mod credit {
    /// What a chunk costs beyond its bytes (the message and its framing).
    pub const PER_MESSAGE: u64 = 64;

    /// The cost of a body chunk of `len` bytes.
    pub fn cost(len: usize) -> u64 {
        len as u64 + PER_MESSAGE
    }

    /// Whether a chunk of cost `c` may be sent with `outstanding` units not
    /// yet reported written, under `window`.
    pub fn may_send(outstanding: u64, c: u64, window: u64) -> bool {
        outstanding == 0 || outstanding + c <= window
    }

    /// Whether the reactor should report `written` units to the worker,
    /// having reported `reported` before.
    pub fn should_report(written: u64, reported: u64, window: u64) -> bool {
        written - reported >= window / 4
    }
}

// ----- writing ---------------------------------------------------------------

/// Field writers in the grammar's terms, for the encoders here and for
/// `scope::encode_request`, which writes `http.request` straight from a
/// parsed request head.
pub mod put {
    use super::Route;

    /// `route`.
    pub fn route(out: &mut Vec<u8>, r: Route) {
        out.extend_from_slice(&r.reactor.to_le_bytes());
        out.extend_from_slice(&r.conn.to_le_bytes());
        out.extend_from_slice(&r.req.to_le_bytes());
    }

    /// `str8`, cut at 255 bytes.
    pub fn str8(out: &mut Vec<u8>, s: &[u8]) {
        let n = s.len().min(u8::MAX as usize);
        out.push(n as u8);
        out.extend_from_slice(&s[..n]);
    }

    /// `str16`, cut at 65,535 bytes.
    pub fn str16(out: &mut Vec<u8>, s: &[u8]) {
        let n = s.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&s[..n]);
    }

    /// A `str16` holding UTF-8 that `write` appends to `out` (the caller
    /// needs no buffer of its own). Text longer than 65,535 bytes is cut at
    /// the last character boundary before that, so it stays UTF-8.
    pub fn text16_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        write(out);
        let mut n = out.len() - at - 2;
        if n > u16::MAX as usize {
            n = u16::MAX as usize;
            // A UTF-8 continuation byte is 0b10xx_xxxx: back up to a lead byte.
            while n > 0 && (out[at + 2 + n] & 0xc0) == 0x80 {
                n -= 1;
            }
            out.truncate(at + 2 + n);
        }
        out[at..at + 2].copy_from_slice(&(n as u16).to_le_bytes());
    }

    /// `headers`, at most 65,535 of them.
    pub fn headers<'h>(out: &mut Vec<u8>, headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        let mut n = 0u16;
        for (k, v) in headers {
            if n == u16::MAX {
                break;
            }
            str16(out, k);
            str16(out, v);
            n += 1;
        }
        out[at..at + 2].copy_from_slice(&n.to_le_bytes());
    }

    /// `addr`.
    pub fn addr(out: &mut Vec<u8>, a: Option<(&str, u16)>) {
        match a {
            None => out.push(0),
            Some((host, port)) => {
                out.push(1);
                str8(out, host.as_bytes());
                out.extend_from_slice(&port.to_le_bytes());
            }
        }
    }
}

/// Encodes a further request body chunk.
pub fn encode_body(out: &mut Vec<u8>, route: Route, body: &[u8], more_body: bool) {
    out.clear();
    out.push(kind::HTTP_BODY);
    put::route(out, route);
    out.push(u8::from(more_body));
    out.extend_from_slice(body);
}

/// Encodes `http.disconnect`.
pub fn encode_disconnect(out: &mut Vec<u8>, route: Route) {
    out.clear();
    out.push(kind::HTTP_DISCONNECT);
    put::route(out, route);
}

/// Encodes a response credit: `consumed` (in [`credit`] units) of the
/// response to the request on `route` has been written to its client.
pub fn encode_credit(out: &mut Vec<u8>, route: Route, consumed: u64) {
    out.clear();
    out.push(kind::RESPONSE_CREDIT);
    put::route(out, route);
    out.extend_from_slice(&consumed.to_le_bytes());
}

/// Encodes the supervisor's ping.
pub fn encode_ping(out: &mut Vec<u8>) {
    out.clear();
    out.push(kind::PING);
}

/// Encodes `http.response.start`, with the first body chunk if given.
pub fn encode_start(
    out: &mut Vec<u8>,
    req: u32,
    status: u16,
    headers: &[(Vec<u8>, Vec<u8>)],
    trailers: bool,
    body: Option<(&[u8], bool)>,
) {
    out.clear();
    out.push(kind::RESPONSE_START);
    out.extend_from_slice(&req.to_le_bytes());
    out.extend_from_slice(&status.to_le_bytes());
    out.push(u8::from(trailers));
    put::headers(out, headers.iter().map(|(k, v)| (&k[..], &v[..])));
    match body {
        None => out.push(0),
        Some((b, more)) => {
            out.push(1);
            out.push(u8::from(more));
            out.extend_from_slice(b);
        }
    }
}

/// Sets the request number of an encoded reply (every reply starts with
/// `kind req:u32`), so a worker can reuse one encoded response.
pub fn set_reply_req(msg: &mut [u8], req: u32) {
    msg[1..5].copy_from_slice(&req.to_le_bytes());
}

/// Encodes `http.response.body`.
pub fn encode_response_body(out: &mut Vec<u8>, req: u32, body: &[u8], more_body: bool) {
    out.clear();
    out.push(kind::RESPONSE_BODY);
    out.extend_from_slice(&req.to_le_bytes());
    out.push(u8::from(more_body));
    out.extend_from_slice(body);
}

/// Encodes `http.response.trailers`.
pub fn encode_trailers(out: &mut Vec<u8>, req: u32, headers: &[(Vec<u8>, Vec<u8>)], more: bool) {
    out.clear();
    out.push(kind::RESPONSE_TRAILERS);
    out.extend_from_slice(&req.to_le_bytes());
    out.push(u8::from(more));
    put::headers(out, headers.iter().map(|(k, v)| (&k[..], &v[..])));
}

/// Encodes `http.response.pathsend`.
pub fn encode_pathsend(out: &mut Vec<u8>, req: u32, path: &[u8]) {
    out.clear();
    out.push(kind::RESPONSE_PATHSEND);
    out.extend_from_slice(&req.to_le_bytes());
    out.extend_from_slice(path);
}

/// Encodes "the app took the last body chunk".
pub fn encode_body_taken(out: &mut Vec<u8>, req: u32) {
    out.clear();
    out.push(kind::BODY_TAKEN);
    out.extend_from_slice(&req.to_le_bytes());
}

/// Encodes "the app failed".
pub fn encode_app_error(out: &mut Vec<u8>, req: u32, message: &str) {
    out.clear();
    out.push(kind::APP_ERROR);
    out.extend_from_slice(&req.to_le_bytes());
    out.extend_from_slice(message.as_bytes());
}

/// Encodes "shut down gracefully".
pub fn encode_shutdown(out: &mut Vec<u8>) {
    out.clear();
    out.push(kind::SHUTDOWN);
}

/// Encodes "worker `w` died".
pub fn encode_worker_died(out: &mut Vec<u8>, worker: u32) {
    out.clear();
    out.push(kind::WORKER_DIED);
    out.extend_from_slice(&worker.to_le_bytes());
}

// ----- reading ---------------------------------------------------------------

/// A bounds-checked cursor over a message.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(WireError(format!(
                "{what}: needs {n} bytes at offset {}, message has {}",
                self.at,
                self.buf.len()
            ))),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn flag(&mut self, what: &str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(WireError(format!("{what}: flag value {v}"))),
        }
    }
    fn u16(&mut self, what: &str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self, what: &str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self, what: &str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }
    fn str8(&mut self, what: &str) -> Result<&'a [u8], WireError> {
        let n = self.u8(what)? as usize;
        self.take(n, what)
    }
    fn str16(&mut self, what: &str) -> Result<&'a [u8], WireError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn utf8(&mut self, s: &'a [u8], what: &str) -> Result<&'a str, WireError> {
        std::str::from_utf8(s).map_err(|_| WireError(format!("{what}: not UTF-8")))
    }
    fn route(&mut self) -> Result<Route, WireError> {
        Ok(Route {
            reactor: self.u16("route")?,
            conn: self.u64("route")?,
            req: self.u32("route")?,
        })
    }
    /// Checks every length of a `headers` field once and returns a view that
    /// iterates it without checks.
    fn headers(&mut self) -> Result<Headers<'a>, WireError> {
        let count = self.u16("header count")?;
        // Each header takes at least 4 bytes: refuse counts the message cannot hold.
        if count as usize * 4 > self.buf.len() - self.at {
            return Err(WireError(format!(
                "{count} headers in {} bytes",
                self.buf.len() - self.at
            )));
        }
        let start = self.at;
        for _ in 0..count {
            self.str16("header name")?;
            self.str16("header value")?;
        }
        Ok(Headers {
            count,
            bytes: &self.buf[start..self.at],
        })
    }
    fn addr(&mut self) -> Result<Option<(&'a str, u16)>, WireError> {
        if !self.flag("address")? {
            return Ok(None);
        }
        let host = self.str8("address host")?;
        let host = self.utf8(host, "address host")?;
        Ok(Some((host, self.u16("address port")?)))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at..];
        self.at = self.buf.len();
        s
    }
    fn end(&self, what: &str) -> Result<(), WireError> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(WireError(format!(
                "{what}: {} trailing bytes",
                self.buf.len() - self.at
            )))
        }
    }
}

/// A message for a worker, decoded (borrowing the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToWorker<'a> {
    /// The start of a request.
    Request {
        /// Reply route.
        route: Route,
        /// The scope.
        scope: Scope<'a>,
        /// First body chunk.
        body: &'a [u8],
        /// More body follows.
        more_body: bool,
    },
    /// A further body chunk.
    Body {
        /// Reply route.
        route: Route,
        /// The chunk.
        body: &'a [u8],
        /// More body follows.
        more_body: bool,
    },
    /// The client disconnected.
    Disconnect {
        /// Reply route.
        route: Route,
    },
    /// The client took more of the response.
    Credit {
        /// The request.
        route: Route,
        /// Response units written to the client so far (see [`credit`]).
        consumed: u64,
    },
    /// The supervisor's heartbeat.
    Ping,
}

/// The kind and route of a message for a worker, without decoding the rest:
/// all a worker that answers every request alike needs.
pub fn peek_to_worker(msg: &[u8]) -> Result<(u8, Route), WireError> {
    let mut r = Reader { buf: msg, at: 0 };
    let k = r.u8("kind")?;
    match k {
        kind::HTTP_REQUEST | kind::HTTP_BODY | kind::HTTP_DISCONNECT | kind::RESPONSE_CREDIT => {
            Ok((k, r.route()?))
        }
        kind::PING => Ok((
            k,
            Route {
                reactor: 0,
                conn: 0,
                req: 0,
            },
        )),
        k => Err(WireError(format!("unknown kind {k} for a worker"))),
    }
}

/// Decodes a message for a worker.
pub fn decode_to_worker(msg: &[u8]) -> Result<ToWorker<'_>, WireError> {
    let mut r = Reader { buf: msg, at: 0 };
    match r.u8("kind")? {
        kind::HTTP_REQUEST => {
            let route = r.route()?;
            let http11 = r.flag("http_version")?;
            let https = r.flag("scheme")?;
            let method = r.str8("method")?;
            let method = r.utf8(method, "method")?;
            let path = r.str16("path")?;
            let path = r.utf8(path, "path")?;
            let raw_path = r.str16("raw_path")?;
            let query_string = r.str16("query_string")?;
            let root_path = r.str16("root_path")?;
            let root_path = r.utf8(root_path, "root_path")?;
            let headers = r.headers()?;
            let client = r.addr()?;
            let server = r.addr()?;
            let more_body = r.flag("more_body")?;
            Ok(ToWorker::Request {
                route,
                scope: Scope {
                    http11,
                    https,
                    method,
                    path,
                    raw_path,
                    query_string,
                    root_path,
                    headers,
                    client,
                    server,
                },
                body: r.rest(),
                more_body,
            })
        }
        kind::HTTP_BODY => {
            let route = r.route()?;
            let more_body = r.flag("more_body")?;
            Ok(ToWorker::Body {
                route,
                body: r.rest(),
                more_body,
            })
        }
        kind::HTTP_DISCONNECT => {
            let route = r.route()?;
            r.end("http.disconnect")?;
            Ok(ToWorker::Disconnect { route })
        }
        kind::RESPONSE_CREDIT => {
            let route = r.route()?;
            let consumed = r.u64("consumed")?;
            r.end("response credit")?;
            Ok(ToWorker::Credit { route, consumed })
        }
        kind::PING => {
            r.end("ping")?;
            Ok(ToWorker::Ping)
        }
        k => Err(WireError(format!("unknown kind {k} for a worker"))),
    }
}

/// A message for a reactor, decoded (borrowing the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToServer<'a> {
    /// `http.response.start`.
    Start {
        /// Request answered.
        req: u32,
        /// Status code.
        status: u16,
        /// Headers.
        headers: Headers<'a>,
        /// Trailers will follow.
        trailers: bool,
        /// First body chunk and `more_body`, if it rode along.
        body: Option<(&'a [u8], bool)>,
    },
    /// `http.response.body`.
    Body {
        /// Request answered.
        req: u32,
        /// The chunk.
        body: &'a [u8],
        /// More body follows.
        more_body: bool,
    },
    /// `http.response.trailers`.
    Trailers {
        /// Request answered.
        req: u32,
        /// Trailer fields.
        headers: Headers<'a>,
        /// More trailers follow.
        more: bool,
    },
    /// `http.response.pathsend`.
    PathSend {
        /// Request answered.
        req: u32,
        /// File to send.
        path: &'a [u8],
    },
    /// The app took the last body chunk.
    BodyTaken {
        /// Request.
        req: u32,
    },
    /// The app failed.
    AppError {
        /// Request.
        req: u32,
        /// What happened.
        message: &'a [u8],
    },
    /// A worker died.
    WorkerDied {
        /// Which.
        worker: u32,
    },
    /// Shut down gracefully.
    Shutdown,
}

impl ToServer<'_> {
    /// The request a reply answers (`None` for control messages).
    pub fn req(&self) -> Option<u32> {
        match self {
            ToServer::Start { req, .. }
            | ToServer::Body { req, .. }
            | ToServer::Trailers { req, .. }
            | ToServer::PathSend { req, .. }
            | ToServer::BodyTaken { req }
            | ToServer::AppError { req, .. } => Some(*req),
            ToServer::WorkerDied { .. } | ToServer::Shutdown => None,
        }
    }
}

/// Decodes a message for a reactor.
pub fn decode_to_server(msg: &[u8]) -> Result<ToServer<'_>, WireError> {
    let mut r = Reader { buf: msg, at: 0 };
    match r.u8("kind")? {
        kind::RESPONSE_START => {
            let req = r.u32("req")?;
            let status = r.u16("status")?;
            let trailers = r.flag("trailers")?;
            let headers = r.headers()?;
            let body = if r.flag("has_body")? {
                let more = r.flag("more_body")?;
                Some((r.rest(), more))
            } else {
                r.end("http.response.start")?;
                None
            };
            Ok(ToServer::Start {
                req,
                status,
                headers,
                trailers,
                body,
            })
        }
        kind::RESPONSE_BODY => {
            let req = r.u32("req")?;
            let more_body = r.flag("more_body")?;
            Ok(ToServer::Body {
                req,
                body: r.rest(),
                more_body,
            })
        }
        kind::RESPONSE_TRAILERS => {
            let req = r.u32("req")?;
            let more = r.flag("more_trailers")?;
            let headers = r.headers()?;
            r.end("http.response.trailers")?;
            Ok(ToServer::Trailers { req, headers, more })
        }
        kind::RESPONSE_PATHSEND => {
            let req = r.u32("req")?;
            Ok(ToServer::PathSend {
                req,
                path: r.rest(),
            })
        }
        kind::BODY_TAKEN => {
            let req = r.u32("req")?;
            r.end("body taken")?;
            Ok(ToServer::BodyTaken { req })
        }
        kind::APP_ERROR => {
            let req = r.u32("req")?;
            Ok(ToServer::AppError {
                req,
                message: r.rest(),
            })
        }
        kind::WORKER_DIED => {
            let worker = r.u32("worker")?;
            r.end("worker died")?;
            Ok(ToServer::WorkerDied { worker })
        }
        kind::SHUTDOWN => {
            r.end("shutdown")?;
            Ok(ToServer::Shutdown)
        }
        k => Err(WireError(format!("unknown kind {k} for a reactor"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asgi::scope::{encode_request, ConnInfo, ForwardedAllow};
    use crate::h1::{BodyFraming, RequestHead, Version};

    /// An encoded `http.request`, as the server writes it.
    fn request(out: &mut Vec<u8>, route: Route) {
        let head = RequestHead {
            method: "POST".into(),
            target: b"/x?y".to_vec(),
            path: b"/x".to_vec(),
            query: b"y".to_vec(),
            version: Version::Http11,
            headers: vec![(b"host".to_vec(), b"example".to_vec())],
            body: BodyFraming::Empty,
            keep_alive: true,
            expect_continue: false,
        };
        let allow = ForwardedAllow::None;
        let conn = ConnInfo::new(Some("127.0.0.1:5555".parse().unwrap()), None, &allow);
        encode_request(out, route, &head, &conn, "", &allow, b"", false);
    }

    #[test]
    fn peek_reads_only_kind_and_route() {
        let mut out = Vec::new();
        let route = Route {
            reactor: 1,
            conn: u64::MAX - 1,
            req: 9,
        };
        request(&mut out, route);
        assert_eq!(peek_to_worker(&out).unwrap(), (kind::HTTP_REQUEST, route));
        encode_disconnect(&mut out, route);
        assert_eq!(
            peek_to_worker(&out).unwrap(),
            (kind::HTTP_DISCONNECT, route)
        );
        assert!(peek_to_worker(&out[..5]).is_err());
        assert!(peek_to_worker(&[kind::RESPONSE_START; 15]).is_err());
    }

    #[test]
    fn body_and_disconnect_round_trip() {
        let mut out = Vec::new();
        let route = Route {
            reactor: 0,
            conn: 9,
            req: 1,
        };
        encode_body(&mut out, route, b"chunk", false);
        assert_eq!(
            decode_to_worker(&out).unwrap(),
            ToWorker::Body {
                route,
                body: b"chunk",
                more_body: false
            }
        );
        encode_disconnect(&mut out, route);
        assert_eq!(
            decode_to_worker(&out).unwrap(),
            ToWorker::Disconnect { route }
        );
    }

    #[test]
    fn responses_round_trip() {
        let mut out = Vec::new();
        let h = vec![
            (b"content-type".to_vec(), b"text/plain".to_vec()),
            (b"x-empty".to_vec(), Vec::new()),
        ];
        encode_start(&mut out, 4, 200, &h, false, Some((b"Hello", false)));
        match decode_to_server(&out).unwrap() {
            ToServer::Start {
                req: 4,
                status: 200,
                headers,
                trailers: false,
                body: Some((b"Hello", false)),
            } => assert_eq!((headers.len(), headers.to_vec()), (2, h.clone())),
            other => panic!("{other:?}"),
        }
        encode_start(&mut out, 4, 204, &[], true, None);
        assert!(matches!(
            decode_to_server(&out).unwrap(),
            ToServer::Start {
                status: 204,
                trailers: true,
                body: None,
                headers,
                ..
            } if headers.is_empty()
        ));
        encode_response_body(&mut out, 4, b"more", true);
        assert_eq!(
            decode_to_server(&out).unwrap(),
            ToServer::Body {
                req: 4,
                body: b"more",
                more_body: true
            }
        );
        encode_trailers(&mut out, 4, &h, false);
        match decode_to_server(&out).unwrap() {
            ToServer::Trailers {
                req: 4,
                headers,
                more: false,
            } => assert_eq!(headers.to_vec(), h),
            other => panic!("{other:?}"),
        }
        encode_pathsend(&mut out, 4, b"/tmp/x");
        assert_eq!(
            decode_to_server(&out).unwrap(),
            ToServer::PathSend {
                req: 4,
                path: b"/tmp/x"
            }
        );
        encode_body_taken(&mut out, 4);
        assert_eq!(
            decode_to_server(&out).unwrap(),
            ToServer::BodyTaken { req: 4 }
        );
        encode_app_error(&mut out, 4, "boom");
        assert_eq!(
            decode_to_server(&out).unwrap(),
            ToServer::AppError {
                req: 4,
                message: b"boom"
            }
        );
        encode_worker_died(&mut out, 2);
        assert_eq!(
            decode_to_server(&out).unwrap(),
            ToServer::WorkerDied { worker: 2 }
        );
        encode_shutdown(&mut out);
        assert_eq!(decode_to_server(&out).unwrap(), ToServer::Shutdown);
    }

    #[test]
    fn a_reused_reply_gets_its_request_number_replaced() {
        let mut out = Vec::new();
        encode_start(&mut out, 1, 200, &[], false, Some((b"x", false)));
        set_reply_req(&mut out, 77);
        assert_eq!(decode_to_server(&out).unwrap().req(), Some(77));
        encode_response_body(&mut out, 1, b"x", false);
        set_reply_req(&mut out, 78);
        assert_eq!(decode_to_server(&out).unwrap().req(), Some(78));
    }

    #[test]
    fn every_truncation_of_a_message_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        request(
            &mut out,
            Route {
                reactor: 1,
                conn: 2,
                req: 3,
            },
        );
        // Shorter prefixes: either an error, or (for the body) fewer bytes.
        for n in 0..out.len() {
            assert!(
                decode_to_worker(&out[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let h = vec![(b"a".to_vec(), b"b".to_vec())];
        encode_start(&mut out, 1, 200, &h, false, None);
        for n in 0..out.len() {
            assert!(
                decode_to_server(&out[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn hostile_counts_and_flags_are_rejected() {
        // A start message claiming 65535 headers in 3 bytes.
        let mut msg = vec![
            kind::RESPONSE_START,
            1,
            0,
            0,
            0,
            200,
            0,
            0,
            0xff,
            0xff,
            0,
            0,
            0,
        ];
        assert!(decode_to_server(&msg).unwrap_err().0.contains("headers"));
        // Two headers whose second value runs past the end.
        msg = vec![kind::RESPONSE_START, 1, 0, 0, 0, 200, 0, 0, 2, 0];
        msg.extend_from_slice(&[1, 0, b'a', 1, 0, b'b', 1, 0, b'c', 9, 0, b'd', 0]);
        assert!(decode_to_server(&msg)
            .unwrap_err()
            .0
            .contains("header value"));
        msg = vec![kind::RESPONSE_BODY, 1, 0, 0, 0, 7];
        assert!(decode_to_server(&msg).unwrap_err().0.contains("flag"));
        assert!(decode_to_server(&[99])
            .unwrap_err()
            .0
            .contains("unknown kind"));
        assert!(decode_to_server(&[]).is_err());
    }
}
