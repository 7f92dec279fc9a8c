//! The built-in Rust worker (`--bench-worker hello`): a worker process that
//! answers every request over the layer, for tests and benchmarks without
//! Python. It speaks the same messages the Python worker will.

use std::io::Write;
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Endpoint, Segment, SendError};

use crate::asgi::wire::{self, Route, ToWorker};
use crate::config::BenchWorker;

const HELLO: &[u8] = b"Hello, world!";

/// Environment variables a worker process is started with.
pub mod env {
    /// Path of the segment.
    pub const SEGMENT: &str = "RINGWAY_SEGMENT";
    /// The worker's number.
    pub const WORKER: &str = "RINGWAY_WORKER";
    /// Which built-in worker.
    pub const BENCH_WORKER: &str = "RINGWAY_BENCH_WORKER";
    /// Busy-wait iterations before sleeping.
    pub const SPIN: &str = "RINGWAY_SPIN";
}

/// Sends `msg` to reactor `k`'s inbox for connection `conn`, retrying while
/// the inbox is full (the reactor drains it; a full ring is backpressure).
fn reply(
    ep: &mut Endpoint,
    reactors: &mut Vec<Option<ChannelId>>,
    k: u16,
    conn: u64,
    msg: &[u8],
) -> Result<(), String> {
    let k = k as usize;
    if reactors.len() <= k {
        reactors.resize(k + 1, None);
    }
    let id = match reactors[k] {
        Some(id) => id,
        None => {
            let id = ep
                .channel(&format!("reactor.{k}!"))
                .map_err(|e| e.to_string())?;
            reactors[k] = Some(id);
            id
        }
    };
    loop {
        match ep.send_id(id, &conn.to_le_bytes(), msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full) => {
                // The reactor must be awake to drain its inbox.
                ep.flush_wakeups();
                std::thread::yield_now();
            }
            Err(SendError::Other(e)) => {
                reactors[k] = None;
                return Err(e.to_string());
            }
        }
    }
}

/// A response the echo worker owes later (`/sleep`).
struct Deferred {
    due: Instant,
    reactor: u16,
    conn: u64,
    req: u32,
}

/// Most messages taken from the inbox per batch: the replies to a batch are
/// sent before the next is taken, and each batch ends with a flush of the held
/// wake-ups, so a long busy stretch still wakes sleeping reactors this often.
const BATCH: usize = 64;

/// Runs worker `w` until the process is killed.
pub fn run(segment: &str, w: usize, kind: BenchWorker) -> Result<(), String> {
    let seg = Segment::open(segment).map_err(|e| format!("opening {segment}: {e}"))?;
    let mut ep = seg.endpoint().map_err(|e| e.to_string())?;
    // No spin by default: where the reactors, the workers and the load
    // generator share few cores, a spinning worker takes CPU the reactors
    // need (measured with `scripts/bench http`).
    ep.spin = std::env::var(env::SPIN)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let inbox = ep
        .own_channel(&format!("worker.{w}!"))
        .map_err(|e| e.to_string())?;
    println!("ready");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut reactors = Vec::new();
    let mut out = Vec::new();
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
    // Messages of the current batch: the routes of hello's requests, or
    // echo's messages copied out of the layer (`[len:u32 LE][message]`
    // each), since replying needs the endpoint the receive call holds.
    let mut routes: Vec<Route> = Vec::with_capacity(BATCH);
    let mut batch: Vec<u8> = Vec::new();
    let mut deferred: Vec<Deferred> = Vec::new();
    // Replies wake each reactor once per batch (see `hold_wakeups`).
    ep.hold_wakeups(true);
    loop {
        if !deferred.is_empty() {
            answer_due(&mut ep, &mut reactors, &mut out, &mut deferred);
        }
        routes.clear();
        batch.clear();
        let got = ep.try_receive_many(inbox, BATCH, |_tag, msg| match kind {
            // Hello answers every request alike: it reads the kind and the
            // route and nothing else (a body chunk or a disconnect needs no
            // answer).
            BenchWorker::Hello => match wire::peek_to_worker(msg) {
                Ok((wire::kind::HTTP_REQUEST, route)) => routes.push(route),
                Ok(_) => {}
                Err(e) => eprintln!("ringway worker {w}: {e}"),
            },
            BenchWorker::Echo => {
                batch.extend_from_slice(&(msg.len() as u32).to_le_bytes());
                batch.extend_from_slice(msg);
            }
        });
        match got {
            Ok(0) => {
                ep.flush_wakeups();
                let next = deferred.iter().map(|d| d.due).min();
                ep.wait(
                    inbox,
                    next.map(|d| d.saturating_duration_since(Instant::now())),
                );
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("ringway worker {w}: inbox: {e}");
                continue;
            }
        }
        for route in &routes {
            wire::set_reply_req(&mut hello, route.req);
            if let Err(e) = reply(&mut ep, &mut reactors, route.reactor, route.conn, &hello) {
                eprintln!("ringway worker {w}: replying: {e}");
            }
        }
        let mut at = 0;
        while at < batch.len() {
            let len = u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes")) as usize;
            let msg = &batch[at + 4..at + 4 + len];
            at += 4 + len;
            match wire::decode_to_worker(msg) {
                Ok(m) => {
                    if let Err(e) = echo(&mut ep, &mut reactors, &mut out, &mut deferred, m) {
                        eprintln!("ringway worker {w}: replying: {e}");
                    }
                }
                Err(e) => eprintln!("ringway worker {w}: {e}"),
            }
        }
        ep.flush_wakeups();
    }
}

/// Answers the `/sleep` requests that are due.
fn answer_due(
    ep: &mut Endpoint,
    reactors: &mut Vec<Option<ChannelId>>,
    out: &mut Vec<u8>,
    deferred: &mut Vec<Deferred>,
) {
    let now = Instant::now();
    let text = [(b"content-type".to_vec(), b"text/plain".to_vec())];
    while let Some(i) = deferred.iter().position(|d| d.due <= now) {
        let d = deferred.swap_remove(i);
        wire::encode_start(out, d.req, 200, &text, false, Some((b"slept", false)));
        let _ = reply(ep, reactors, d.reactor, d.conn, out);
    }
}

fn query_param<'a>(query: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(query)
        .ok()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// The echo worker: echoes request bodies as they stream in (one chunk at a
/// time, acknowledging each), and has a few paths for tests:
/// `/big?n=BYTES` streams a large body, `/sleep?ms=N` answers after N ms,
/// `/stall` never answers, `/crash` kills the worker, `/error` reports an
/// application error, `/trailers` sends trailers, `/pathsend?path=P` sends a
/// file, `/scope` answers with the scope it received.
fn echo(
    ep: &mut Endpoint,
    reactors: &mut Vec<Option<ChannelId>>,
    out: &mut Vec<u8>,
    deferred: &mut Vec<Deferred>,
    msg: ToWorker<'_>,
) -> Result<(), String> {
    let text = vec![(b"content-type".to_vec(), b"text/plain".to_vec())];
    match msg {
        ToWorker::Request {
            route,
            scope,
            body,
            more_body,
        } => {
            let (k, c, req) = (route.reactor, route.conn, route.req);
            let path = scope
                .path
                .strip_prefix(scope.root_path)
                .unwrap_or(scope.path);
            let path = if path.starts_with("/scope") {
                "/scope"
            } else {
                path
            };
            match path {
                "/big" => {
                    let n: usize = query_param(scope.query_string, "n")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(10 << 20);
                    let len = vec![(b"content-length".to_vec(), n.to_string().into_bytes())];
                    wire::encode_start(out, req, 200, &len, false, None);
                    reply(ep, reactors, k, c, out)?;
                    let chunk = vec![b'x'; 60 * 1024];
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(chunk.len());
                        left -= take;
                        wire::encode_response_body(out, req, &chunk[..take], left > 0);
                        reply(ep, reactors, k, c, out)?;
                    }
                    Ok(())
                }
                "/sleep" => {
                    let ms: u64 = query_param(scope.query_string, "ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(100);
                    if let Some(tag) = query_param(scope.query_string, "tag") {
                        // Tests wait for this line to know the request is in flight.
                        eprintln!("echo worker: sleeping request {tag}");
                    }
                    deferred.push(Deferred {
                        due: Instant::now() + Duration::from_millis(ms),
                        reactor: k,
                        conn: c,
                        req,
                    });
                    Ok(())
                }
                "/stall" => Ok(()),
                "/crash" => std::process::abort(),
                "/error" => {
                    wire::encode_app_error(out, req, "RuntimeError: the app failed on purpose");
                    reply(ep, reactors, k, c, out)
                }
                "/trailers" => {
                    wire::encode_start(out, req, 200, &text, true, Some((b"body", false)));
                    reply(ep, reactors, k, c, out)?;
                    wire::encode_trailers(
                        out,
                        req,
                        &[(b"x-checksum".to_vec(), b"abc".to_vec())],
                        false,
                    );
                    reply(ep, reactors, k, c, out)
                }
                "/pathsend" => {
                    let path = query_param(scope.query_string, "path")
                        .unwrap_or("/dev/null")
                        .to_owned();
                    wire::encode_start(out, req, 200, &text, false, None);
                    reply(ep, reactors, k, c, out)?;
                    wire::encode_pathsend(out, req, path.as_bytes());
                    reply(ep, reactors, k, c, out)
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
                    wire::encode_start(out, req, 200, &text, false, Some((desc.as_bytes(), false)));
                    reply(ep, reactors, k, c, out)
                }
                _ => {
                    // Echo: the first chunk rides with the start.
                    wire::encode_start(out, req, 200, &text, false, Some((body, more_body)));
                    reply(ep, reactors, k, c, out)?;
                    if more_body {
                        wire::encode_body_taken(out, req);
                        reply(ep, reactors, k, c, out)?;
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
            wire::encode_response_body(out, route.req, body, more_body);
            reply(ep, reactors, route.reactor, route.conn, out)?;
            if more_body {
                wire::encode_body_taken(out, route.req);
                reply(ep, reactors, route.reactor, route.conn, out)?;
            }
            Ok(())
        }
        ToWorker::Disconnect { route } => {
            deferred.retain(|d| {
                !(d.conn == route.conn && d.reactor == route.reactor && d.req == route.req)
            });
            Ok(())
        }
    }
}
