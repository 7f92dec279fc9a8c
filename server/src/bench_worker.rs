//! The built-in Rust workers (`--bench-worker hello|echo`): worker processes
//! that answer requests over the layer, for tests and benchmarks without
//! Python. They speak the same messages, status lines and response credits
//! the Python worker does.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Endpoint, Segment, SendError};

use crate::asgi::wire::{self, credit, Route, ToWorker};
use crate::config::BenchWorker;
use crate::status::{Status, StatusWriter};
use crate::supervisor::env;

const HELLO: &[u8] = b"Hello, world!";

/// Environment variables only the built-in workers read.
pub mod bench_env {
    /// Which built-in worker: `hello` or `echo`.
    pub const BENCH_WORKER: &str = "RINGWAY_BENCH_WORKER";
    /// Busy-wait iterations before sleeping.
    pub const SPIN: &str = "RINGWAY_SPIN";
    /// For tests: a file read at start-up saying how to start: `hang`
    /// (never become ready), `fail TEXT` (report TEXT and exit 1), `print N`
    /// (write N bytes to stdout first); anything else, or no file: normally.
    pub const STARTUP_FILE: &str = "RINGWAY_BENCH_STARTUP_FILE";
}

/// Set by the SIGUSR1 handler: reopen the error log.
static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

/// Most messages taken from the inbox per batch: the replies to a batch are
/// sent before the next is taken, and each batch ends with a flush of the held
/// wake-ups, so a long busy stretch still wakes sleeping reactors this often.
const BATCH: usize = 64;

/// The worker's connection to the reactors: its endpoint and their inboxes.
struct Out {
    ep: Endpoint,
    reactors: Vec<Option<ChannelId>>,
    msg: Vec<u8>,
}

impl Out {
    /// Sends `self.msg` to reactor `k`'s inbox for connection `conn`.
    fn reply(&mut self, k: u16, conn: u64) -> Result<(), String> {
        let msg = std::mem::take(&mut self.msg);
        let sent = self.send(k, conn, &msg);
        self.msg = msg;
        sent
    }

    /// Sends `msg` to reactor `k`'s inbox for connection `conn`, waiting
    /// while the inbox is full (a full ring is backpressure).
    fn send(&mut self, k: u16, conn: u64, msg: &[u8]) -> Result<(), String> {
        let k = k as usize;
        if self.reactors.len() <= k {
            self.reactors.resize(k + 1, None);
        }
        let id = match self.reactors[k] {
            Some(id) => id,
            None => {
                let id = self
                    .ep
                    .channel(&format!("reactor.{k}!"))
                    .map_err(|e| e.to_string())?;
                self.reactors[k] = Some(id);
                id
            }
        };
        loop {
            match self.ep.send_id(id, &conn.to_le_bytes(), msg) {
                Ok(()) => return Ok(()),
                Err(SendError::Full) => {
                    // The reactor must be awake to drain its inbox; it rings
                    // our doorbell when it has made room.
                    self.ep.flush_wakeups();
                    let _ = self.ep.wait_space(id, Some(Duration::from_millis(100)));
                }
                Err(SendError::Other(e)) => {
                    self.reactors[k] = None;
                    return Err(e.to_string());
                }
            }
        }
    }
}

/// A response being streamed under the response window.
struct Stream {
    route: Route,
    /// Units sent, and units the reactor reported written.
    sent: u64,
    consumed: u64,
    what: Streaming,
}

enum Streaming {
    /// `/big`: this many bytes still to send.
    Big { left: usize },
    /// Echoing the request body: a chunk waiting for room in the window.
    Echo { held: Option<(Vec<u8>, bool)> },
}

/// A response the echo worker owes later (`/sleep`).
struct Deferred {
    due: Instant,
    route: Route,
}

/// The echo worker's state.
struct Echo {
    window: u64,
    streams: Vec<Stream>,
    deferred: Vec<Deferred>,
    /// Requests started and neither finished nor disconnected.
    outstanding: HashSet<(u16, u64, u32)>,
    /// Body length so far of `/count` requests.
    counting: Vec<(Route, usize)>,
}

fn key(r: Route) -> (u16, u64, u32) {
    (r.reactor, r.conn, r.req)
}

/// Reads the start-up knob for tests (see [`bench_env::STARTUP_FILE`]).
fn startup(status: &mut Option<StatusWriter>) {
    let Ok(path) = std::env::var(bench_env::STARTUP_FILE) else {
        return;
    };
    let knob = std::fs::read_to_string(path).unwrap_or_default();
    let knob = knob.trim();
    if knob == "hang" {
        loop {
            std::thread::park();
        }
    }
    if let Some(why) = knob.strip_prefix("fail ") {
        if let Some(s) = status {
            s.send(&Status::Error(why.to_owned()));
        }
        std::process::exit(1);
    }
    if let Some(n) = knob.strip_prefix("print ").and_then(|n| n.parse().ok()) {
        print_bytes(n);
    }
}

/// Writes `n` bytes to stdout (tests: output must never block a worker).
fn print_bytes(n: usize) {
    let line = [b'.'; 1023];
    let mut out = std::io::stdout().lock();
    let mut left = n;
    while left > 0 {
        let take = left.min(1024);
        let _ = out.write_all(&line[..take - 1]);
        let _ = out.write_all(b"\n");
        left -= take;
    }
    let _ = out.flush();
}

/// Runs worker `id` until the process is killed.
pub fn run(segment: &str, id: u32, kind: BenchWorker) -> Result<(), String> {
    let mut status = StatusWriter::from_env();
    startup(&mut status);
    // SAFETY: installs an async-signal-safe handler (an atomic store);
    // without SA_RESTART, so a futex wait returns and the loop reopens.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
    let seg = Segment::open(segment).map_err(|e| format!("opening {segment}: {e}"))?;
    let mut ep = seg.endpoint().map_err(|e| e.to_string())?;
    // No spin by default: where the reactors, the workers and the load
    // generator share few cores, a spinning worker takes CPU the reactors
    // need (measured with `scripts/bench http`).
    ep.spin = std::env::var(bench_env::SPIN)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let inbox = ep
        .own_channel(&format!("worker.{id}!"))
        .map_err(|e| e.to_string())?;
    let max_requests: u64 = std::env::var(env::MAX_REQUESTS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let window: u64 = std::env::var(env::RESPONSE_WINDOW)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256 * 1024);
    if let Some(s) = &mut status {
        s.send(&Status::Ready);
    }
    let mut out = Out {
        ep,
        reactors: Vec::new(),
        msg: Vec::new(),
    };
    // Every hello response is the same message but for its request number.
    let mut hello = Vec::new();
    wire::encode_start(
        &mut hello,
        0,
        200,
        &[(b"content-type".to_vec(), b"text/plain".to_vec())],
        false,
        Some((HELLO, false)),
    );
    let mut echo = Echo {
        window,
        streams: Vec::new(),
        deferred: Vec::new(),
        outstanding: HashSet::new(),
        counting: Vec::new(),
    };
    // Messages of the current batch: the routes of hello's requests, or
    // echo's messages copied out of the layer (`[len:u32 LE][message]`
    // each), since replying needs the endpoint the receive call holds.
    let mut routes: Vec<Route> = Vec::with_capacity(BATCH);
    let mut batch: Vec<u8> = Vec::new();
    let mut requests = 0u64;
    // Replies wake each reactor once per batch (see `hold_wakeups`).
    out.ep.hold_wakeups(true);
    loop {
        if REOPEN.swap(false, Ordering::Relaxed) {
            if let Ok(p) = std::env::var(env::ERROR_LOG) {
                let _ = crate::log::open_error_log(std::path::Path::new(&p));
            }
        }
        if !echo.deferred.is_empty() {
            echo.answer_due(&mut out);
        }
        routes.clear();
        batch.clear();
        let got = out
            .ep
            .try_receive_many(inbox, BATCH, |_tag, msg| match kind {
                // Hello answers every request alike: it reads the kind and the
                // route and nothing else (a body chunk or a disconnect needs no
                // answer).
                BenchWorker::Hello => match wire::peek_to_worker(msg) {
                    Ok((wire::kind::HTTP_REQUEST, route)) => routes.push(route),
                    Ok(_) => {}
                    Err(e) => crate::elog!("ringway worker {id}: {e}"),
                },
                BenchWorker::Echo => {
                    batch.extend_from_slice(&(msg.len() as u32).to_le_bytes());
                    batch.extend_from_slice(msg);
                }
            });
        match got {
            Ok(0) => {
                out.ep.flush_wakeups();
                let next = echo.deferred.iter().map(|d| d.due).min();
                out.ep.wait(
                    inbox,
                    next.map(|d| d.saturating_duration_since(Instant::now())),
                );
                continue;
            }
            Ok(_) => {}
            // Nobody can reach this worker any more: exit, to be replaced.
            Err(e @ ringway_layer_shm::Error::NoReceiver(_)) => {
                return Err(format!("its inbox is gone: {e}"))
            }
            Err(e) => {
                crate::elog!("ringway worker {id}: inbox: {e}");
                continue;
            }
        }
        let before = requests;
        for route in &routes {
            requests += 1;
            wire::set_reply_req(&mut hello, route.req);
            if let Err(e) = out.send(route.reactor, route.conn, &hello) {
                crate::elog!("ringway worker {id}: replying: {e}");
            }
        }
        let mut at = 0;
        while at < batch.len() {
            let len = u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes")) as usize;
            let msg = &batch[at + 4..at + 4 + len];
            at += 4 + len;
            match wire::decode_to_worker(msg) {
                Ok(m) => {
                    if matches!(m, ToWorker::Request { .. }) {
                        requests += 1;
                    }
                    if let Err(e) = echo.handle(&mut out, m) {
                        crate::elog!("ringway worker {id}: replying: {e}");
                    }
                }
                Err(e) => crate::elog!("ringway worker {id}: {e}"),
            }
        }
        out.ep.flush_wakeups();
        if max_requests > 0 && before < max_requests && requests >= max_requests {
            if let Some(s) = &mut status {
                s.send(&Status::Recycle(format!(
                    "--max-requests: {requests} served"
                )));
            }
        }
    }
}

fn query_param<'a>(query: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(query)
        .ok()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

const TEXT: &[(&[u8], &[u8])] = &[(b"content-type", b"text/plain")];

fn text() -> Vec<(Vec<u8>, Vec<u8>)> {
    TEXT.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

impl Echo {
    /// Answers the `/sleep` requests that are due.
    fn answer_due(&mut self, out: &mut Out) {
        let now = Instant::now();
        while let Some(i) = self.deferred.iter().position(|d| d.due <= now) {
            let d = self.deferred.swap_remove(i);
            self.outstanding.remove(&key(d.route));
            wire::encode_start(
                &mut out.msg,
                d.route.req,
                200,
                &text(),
                false,
                Some((b"slept", false)),
            );
            let _ = out.reply(d.route.reactor, d.route.conn);
        }
    }

    /// Sends a whole response, and forgets the request.
    fn respond(
        &mut self,
        out: &mut Out,
        route: Route,
        status: u16,
        body: &[u8],
    ) -> Result<(), String> {
        self.outstanding.remove(&key(route));
        wire::encode_start(
            &mut out.msg,
            route.req,
            status,
            &text(),
            false,
            Some((body, false)),
        );
        out.reply(route.reactor, route.conn)
    }

    /// Sends what stream `i` may send within its window; drops it when done.
    fn advance(&mut self, out: &mut Out, i: usize) -> Result<(), String> {
        let chunk = [b'x'; 60 * 1024];
        let s = &mut self.streams[i];
        let route = s.route;
        let mut done = false;
        match &mut s.what {
            Streaming::Big { left } => {
                while *left > 0 {
                    let take = (*left).min(chunk.len());
                    if !credit::may_send(s.sent - s.consumed, credit::cost(take), self.window) {
                        break;
                    }
                    *left -= take;
                    wire::encode_response_body(&mut out.msg, route.req, &chunk[..take], *left > 0);
                    out.reply(route.reactor, route.conn)?;
                    s.sent += credit::cost(take);
                }
                done = *left == 0;
            }
            Streaming::Echo { held } => {
                if let Some((body, more)) = held.take() {
                    if credit::may_send(s.sent - s.consumed, credit::cost(body.len()), self.window)
                    {
                        wire::encode_response_body(&mut out.msg, route.req, &body, more);
                        out.reply(route.reactor, route.conn)?;
                        s.sent += credit::cost(body.len());
                        if more {
                            wire::encode_body_taken(&mut out.msg, route.req);
                            out.reply(route.reactor, route.conn)?;
                        } else {
                            done = true;
                        }
                    } else {
                        *held = Some((body, more));
                    }
                }
            }
        }
        if done {
            self.streams.swap_remove(i);
            self.outstanding.remove(&key(route));
        }
        Ok(())
    }

    fn stream(&self, route: Route) -> Option<usize> {
        self.streams.iter().position(|s| s.route == route)
    }

    /// The echo worker: echoes request bodies as they stream in (one chunk
    /// at a time, acknowledging each, within the response window), and has
    /// paths for tests:
    ///
    /// | path | does |
    /// |---|---|
    /// | `/big?n=BYTES` | streams a large body under the response window |
    /// | `/count` | reads the whole body, answers its length |
    /// | `/sleep?ms=N&tag=T` | answers after N ms (logs `sleeping request T`) |
    /// | `/stall` | never answers |
    /// | `/crash` | kills the worker |
    /// | `/error` | reports an application error |
    /// | `/bad-start` | sends `http.response.start` twice, then waits |
    /// | `/trailers` | sends trailers |
    /// | `/pathsend?path=P` | sends a file |
    /// | `/scope` | answers with the scope it received |
    /// | `/outstanding` | how many other requests it holds unfinished |
    /// | `/pid` | the worker's pid |
    /// | `/print?bytes=N` | writes N bytes to stdout first |
    /// | `/grow?mb=N` | leaks N MiB of private memory first |
    /// | `/fake-control` | sends the reactor an untagged "shutdown" |
    /// | `/flush-layer` | deletes every channel of the layer (a bug) |
    /// | `/early-hints` | sends 103 Early Hints, then the response |
    /// | `/many-trailers?n=N` | announces trailers, then sends N messages of them (a bug) |
    /// | `/ignore-window?n=BYTES` | sends a body without waiting for credit (a bug) |
    fn handle(&mut self, out: &mut Out, msg: ToWorker<'_>) -> Result<(), String> {
        match msg {
            ToWorker::Request {
                route,
                scope,
                body,
                more_body,
            } => {
                self.outstanding.insert(key(route));
                let path = scope
                    .path
                    .strip_prefix(scope.root_path)
                    .unwrap_or(scope.path);
                let path = if path.starts_with("/scope") {
                    "/scope"
                } else {
                    path
                };
                let q = scope.query_string;
                let num = |name: &str, default: usize| {
                    query_param(q, name)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(default)
                };
                match path {
                    "/big" => {
                        let n = num("n", 10 << 20);
                        if n == 0 {
                            return self.respond(out, route, 200, b"");
                        }
                        let len = vec![(b"content-length".to_vec(), n.to_string().into_bytes())];
                        wire::encode_start(&mut out.msg, route.req, 200, &len, false, None);
                        out.reply(route.reactor, route.conn)?;
                        self.streams.push(Stream {
                            route,
                            sent: 0,
                            consumed: 0,
                            what: Streaming::Big { left: n },
                        });
                        self.advance(out, self.streams.len() - 1)
                    }
                    "/count" => {
                        if more_body {
                            self.counting.push((route, body.len()));
                            wire::encode_body_taken(&mut out.msg, route.req);
                            out.reply(route.reactor, route.conn)
                        } else {
                            self.respond(out, route, 200, body.len().to_string().as_bytes())
                        }
                    }
                    "/sleep" => {
                        if let Some(tag) = query_param(q, "tag") {
                            // Tests wait for this line to know the request is in flight.
                            crate::elog!("echo worker: sleeping request {tag}");
                        }
                        self.deferred.push(Deferred {
                            due: Instant::now() + Duration::from_millis(num("ms", 100) as u64),
                            route,
                        });
                        Ok(())
                    }
                    "/stall" => Ok(()),
                    "/crash" => std::process::abort(),
                    "/error" => {
                        self.outstanding.remove(&key(route));
                        wire::encode_app_error(
                            &mut out.msg,
                            route.req,
                            "RuntimeError: the app failed on purpose",
                        );
                        out.reply(route.reactor, route.conn)
                    }
                    "/bad-start" => {
                        for _ in 0..2 {
                            wire::encode_start(&mut out.msg, route.req, 200, &text(), false, None);
                            out.reply(route.reactor, route.conn)?;
                        }
                        Ok(())
                    }
                    "/trailers" => {
                        self.outstanding.remove(&key(route));
                        wire::encode_start(
                            &mut out.msg,
                            route.req,
                            200,
                            &text(),
                            true,
                            Some((b"body", false)),
                        );
                        out.reply(route.reactor, route.conn)?;
                        wire::encode_trailers(
                            &mut out.msg,
                            route.req,
                            &[(b"x-checksum".to_vec(), b"abc".to_vec())],
                            false,
                        );
                        out.reply(route.reactor, route.conn)
                    }
                    "/pathsend" => {
                        self.outstanding.remove(&key(route));
                        let file = query_param(q, "path").unwrap_or("/dev/null").to_owned();
                        wire::encode_start(&mut out.msg, route.req, 200, &text(), false, None);
                        out.reply(route.reactor, route.conn)?;
                        wire::encode_pathsend(&mut out.msg, route.req, file.as_bytes());
                        out.reply(route.reactor, route.conn)
                    }
                    "/scope" => {
                        let s = &scope;
                        let headers: Vec<String> = s
                            .headers
                            .iter()
                            .map(|(k, v)| {
                                format!(
                                    "{}={}",
                                    String::from_utf8_lossy(k),
                                    String::from_utf8_lossy(v)
                                )
                            })
                            .collect();
                        let desc = format!(
                            "method={}\npath={}\nraw_path={}\nquery_string={}\nroot_path={}\nscheme={}\nhttp_version={}\nclient={:?}\nserver={:?}\nheaders={}\n",
                            s.method,
                            s.path,
                            String::from_utf8_lossy(s.raw_path),
                            String::from_utf8_lossy(s.query_string),
                            s.root_path,
                            if s.https { "https" } else { "http" },
                            if s.http11 { "1.1" } else { "1.0" },
                            s.client,
                            s.server,
                            headers.join(";"),
                        );
                        self.respond(out, route, 200, desc.as_bytes())
                    }
                    "/outstanding" => {
                        let others = self.outstanding.len() - 1;
                        self.respond(out, route, 200, others.to_string().as_bytes())
                    }
                    "/pid" => {
                        self.respond(out, route, 200, std::process::id().to_string().as_bytes())
                    }
                    "/print" => {
                        print_bytes(num("bytes", 1 << 20));
                        self.respond(out, route, 200, b"printed")
                    }
                    "/grow" => {
                        let mb = num("mb", 10);
                        // Touched, so it is resident; leaked, as a leak is.
                        Box::leak(vec![1u8; mb << 20].into_boxed_slice());
                        self.respond(out, route, 200, b"grown")
                    }
                    "/fake-control" => {
                        // An untagged message of the old "shutdown" kind,
                        // as a buggy worker might send.
                        out.msg.clear();
                        out.msg.push(33);
                        let id = out
                            .ep
                            .channel(&format!("reactor.{}!", route.reactor))
                            .map_err(|e| e.to_string())?;
                        let _ = out.ep.send_id(id, b"", &out.msg);
                        self.respond(out, route, 200, b"sent")
                    }
                    "/early-hints" => {
                        let link = [(b"link".to_vec(), b"</style.css>; rel=preload".to_vec())];
                        wire::encode_start(&mut out.msg, route.req, 103, &link, false, None);
                        out.reply(route.reactor, route.conn)?;
                        self.respond(out, route, 200, b"final")
                    }
                    "/many-trailers" => {
                        wire::encode_start(
                            &mut out.msg,
                            route.req,
                            200,
                            &text(),
                            true,
                            Some((b"body", false)),
                        );
                        out.reply(route.reactor, route.conn)?;
                        let field = [(b"x-filler".to_vec(), vec![b'f'; 1000])];
                        for _ in 0..num("n", 1000) {
                            wire::encode_trailers(&mut out.msg, route.req, &field, true);
                            out.reply(route.reactor, route.conn)?;
                        }
                        Ok(())
                    }
                    "/ignore-window" => {
                        let n = num("n", 100 << 20);
                        let len = vec![(b"content-length".to_vec(), n.to_string().into_bytes())];
                        wire::encode_start(&mut out.msg, route.req, 200, &len, false, None);
                        out.reply(route.reactor, route.conn)?;
                        let chunk = [b'x'; 60 * 1024];
                        let mut left = n;
                        while left > 0 {
                            let take = left.min(chunk.len());
                            left -= take;
                            wire::encode_response_body(
                                &mut out.msg,
                                route.req,
                                &chunk[..take],
                                left > 0,
                            );
                            out.reply(route.reactor, route.conn)?;
                        }
                        Ok(())
                    }
                    "/flush-layer" => {
                        out.ep.flush().map_err(|e| e.to_string())?;
                        out.reactors.clear();
                        Ok(())
                    }
                    _ => {
                        // Echo: the first chunk rides with the start.
                        wire::encode_start(
                            &mut out.msg,
                            route.req,
                            200,
                            &text(),
                            false,
                            Some((body, more_body)),
                        );
                        out.reply(route.reactor, route.conn)?;
                        if more_body {
                            self.streams.push(Stream {
                                route,
                                sent: credit::cost(body.len()),
                                consumed: 0,
                                what: Streaming::Echo { held: None },
                            });
                            wire::encode_body_taken(&mut out.msg, route.req);
                            out.reply(route.reactor, route.conn)?;
                        } else {
                            self.outstanding.remove(&key(route));
                        }
                        Ok(())
                    }
                }
            }
            ToWorker::Body {
                route,
                body,
                more_body,
            } => {
                if let Some(i) = self.counting.iter().position(|(r, _)| *r == route) {
                    self.counting[i].1 += body.len();
                    if more_body {
                        wire::encode_body_taken(&mut out.msg, route.req);
                        return out.reply(route.reactor, route.conn);
                    }
                    let (_, n) = self.counting.swap_remove(i);
                    return self.respond(out, route, 200, n.to_string().as_bytes());
                }
                let Some(i) = self.stream(route) else {
                    return Ok(());
                };
                if let Streaming::Echo { held } = &mut self.streams[i].what {
                    *held = Some((body.to_vec(), more_body));
                }
                self.advance(out, i)
            }
            ToWorker::Credit { route, consumed } => {
                let Some(i) = self.stream(route) else {
                    return Ok(());
                };
                let s = &mut self.streams[i];
                s.consumed = s.consumed.max(consumed).min(s.sent);
                self.advance(out, i)
            }
            ToWorker::Disconnect { route } => {
                self.outstanding.remove(&key(route));
                self.deferred.retain(|d| d.route != route);
                self.streams.retain(|s| s.route != route);
                self.counting.retain(|(r, _)| *r != route);
                Ok(())
            }
            ToWorker::Ping => Ok(()),
        }
    }
}
