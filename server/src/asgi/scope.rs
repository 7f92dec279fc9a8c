//! The ASGI HTTP scope of a request: worked out from the parsed request head
//! and the connection, and written straight into the `http.request` message
//! (no intermediate scope value: the head's bytes are copied once, into the
//! message).

use std::net::{IpAddr, SocketAddr};

use super::wire::{kind, put, Route, ROUTE_LEN};
use crate::h1::{Limits, RequestHead, Version};

/// Which peers may set `X-Forwarded-For/-Proto/-Port` (`--forwarded-allow-ips`).
#[derive(Clone, Debug, Default)]
pub enum ForwardedAllow {
    /// Nobody (the default is loopback only; see `config.rs`).
    #[default]
    None,
    /// Everybody (`*`).
    All,
    /// These addresses.
    List(Vec<IpAddr>),
}

impl ForwardedAllow {
    /// Parses a comma-separated list of addresses, or `*`.
    pub fn parse(s: &str) -> Result<ForwardedAllow, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(ForwardedAllow::All);
        }
        if s.is_empty() {
            return Ok(ForwardedAllow::None);
        }
        s.split(',')
            .map(|a| {
                a.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IP address"))
            })
            .collect::<Result<_, _>>()
            .map(ForwardedAllow::List)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            ForwardedAllow::None => false,
            ForwardedAllow::All => true,
            ForwardedAllow::List(l) => l.contains(&ip),
        }
    }
}

/// Percent-decodes a path; invalid escapes are kept as they are, and bytes
/// that are not UTF-8 become U+FFFD (ASGI's `path` is a `str`).
pub fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    percent_decode_into(&mut out, raw);
    String::from_utf8(out).expect("percent_decode_into leaves UTF-8")
}

/// Appends the percent-decoded `raw` to `out` as UTF-8 (see [`percent_decode`]).
fn percent_decode_into(out: &mut Vec<u8>, raw: &[u8]) {
    let start = out.len();
    if !raw.contains(&b'%') {
        out.extend_from_slice(raw);
    } else {
        let mut i = 0;
        while i < raw.len() {
            if raw[i] == b'%' && i + 2 < raw.len() {
                let hex = |b: u8| (b as char).to_digit(16);
                if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
            }
            out.push(raw[i]);
            i += 1;
        }
    }
    // The parser lets only visible ASCII through, but escapes can decode to
    // anything: replace what is not UTF-8 (rare, so this copies only then).
    if std::str::from_utf8(&out[start..]).is_err() {
        let fixed = String::from_utf8_lossy(&out[start..]).into_owned();
        out.truncate(start);
        out.extend_from_slice(fixed.as_bytes());
    }
}

/// Connection facts the scope needs, worked out once when the connection is
/// accepted (formatting an address costs more than the rest of the scope).
pub struct ConnInfo {
    /// The peer (None for a Unix socket).
    pub peer: Option<SocketAddr>,
    /// Our address (None for a Unix socket).
    pub local: Option<SocketAddr>,
    /// `peer`'s IP address as text (`-` for a Unix socket).
    pub peer_host: String,
    /// `local`'s IP address as text.
    local_host: String,
    /// Whether `peer` may set `X-Forwarded-*` headers.
    trusted: bool,
}

impl ConnInfo {
    /// The facts of a connection from `peer` to `local`.
    pub fn new(
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        allow: &ForwardedAllow,
    ) -> Self {
        ConnInfo {
            peer,
            local,
            peer_host: peer.map_or_else(|| "-".to_owned(), |p| p.ip().to_string()),
            local_host: local.map(|l| l.ip().to_string()).unwrap_or_default(),
            trusted: peer.is_some_and(|p| allow.trusts(p.ip())),
        }
    }
}

fn header<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    head.headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// Writes the first message of a request (`http.request` with its scope, in
/// the order of the grammar in `wire.rs`) for `head` on a connection:
/// [`encode_request_scope`] then [`finish_request`].
#[allow(clippy::too_many_arguments)] // The scope has this many sources.
pub fn encode_request(
    out: &mut Vec<u8>,
    route: Route,
    head: &RequestHead,
    conn: &ConnInfo,
    root_path: &str,
    allow: &ForwardedAllow,
    body: &[u8],
    more_body: bool,
) {
    encode_request_scope(out, route, head, conn, root_path, allow);
    finish_request(out, body, more_body);
}

/// Writes the `http.request` message for `head` up to its first body chunk
/// (its `more_body` flag is written as `false`): `out.len()` is then the
/// message's length without body bytes, at most [`max_request_scope_len`],
/// so the caller can size the chunk to what the layer's message holds
/// beside it, and add it with [`finish_request`].
pub fn encode_request_scope(
    out: &mut Vec<u8>,
    route: Route,
    head: &RequestHead,
    conn: &ConnInfo,
    root_path: &str,
    allow: &ForwardedAllow,
) {
    let mut client = conn.peer.map(|a| (conn.peer_host.as_str(), a.port()));
    let mut https = false;
    let mut server = conn.local.map(|a| (conn.local_host.as_str(), a.port()));
    if conn.trusted {
        // X-Forwarded-For: walk from the nearest proxy outwards, skipping
        // trusted hops; the first untrusted one is the client (if all are
        // trusted, the farthest).
        if let Some(xff) =
            header(head, b"x-forwarded-for").and_then(|v| std::str::from_utf8(v).ok())
        {
            let mut farthest = None;
            let mut chosen = None;
            for hop in xff.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
                farthest = Some(hop);
                if hop.parse::<IpAddr>().map_or(true, |ip| !allow.trusts(ip)) {
                    chosen = Some(hop);
                    break;
                }
            }
            if let Some(h) = chosen.or(farthest) {
                client = Some((h, 0));
            }
        }
        if let Some(proto) = header(head, b"x-forwarded-proto") {
            https = proto.eq_ignore_ascii_case(b"https") || proto.eq_ignore_ascii_case(b"wss");
        }
        if let Some(port) = header(head, b"x-forwarded-port")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        {
            if let Some((_, p)) = server.as_mut() {
                *p = port;
            }
        }
    }
    out.clear();
    out.push(kind::HTTP_REQUEST);
    put::route(out, route);
    out.push(u8::from(head.version == Version::Http11));
    out.push(u8::from(https));
    put::str8(out, head.method.as_bytes());
    put::text16_with(out, |out| {
        out.extend_from_slice(root_path.as_bytes());
        percent_decode_into(out, &head.path);
    });
    put::str16(out, &head.path);
    put::str16(out, &head.query);
    put::text16_with(out, |out| out.extend_from_slice(root_path.as_bytes()));
    put::headers(out, head.headers.iter().map(|(k, v)| (&k[..], &v[..])));
    put::addr(out, client);
    put::addr(out, server);
    out.push(u8::from(false));
}

/// Ends the message [`encode_request_scope`] just wrote to `out` with the
/// first body chunk: sets its `more_body` flag (the last byte written) and
/// appends `body`.
pub fn finish_request(out: &mut Vec<u8>, body: &[u8], more_body: bool) {
    let flag = out
        .last_mut()
        .expect("encode_request_scope wrote the message");
    *flag = u8::from(more_body);
    out.extend_from_slice(body);
}

/// An upper bound on the length of the `http.request` message
/// [`encode_request`] writes, without its body bytes, for any request head
/// that the parser accepts under `limits`, on any connection, with a
/// `root_path` of `root_path_len` bytes.
///
/// The connection sizes the first body chunk as the layer's largest message
/// less the encoded message's length (`out.len()` after
/// [`encode_request_scope`]), and the layer's largest message must be at
/// least this bound, or some valid requests could not be sent. Under
/// the default [`Limits`] and an empty root path it is 37,268 bytes, and a
/// head that fills those limits reaches it.
///
/// What the message holds, and what bounds each part:
///
/// - Fixed fields: kind, route, version, scheme and `more_body` (18 bytes)
///   and the length prefixes of method, path, raw path, query, root path
///   and the header count (11 bytes).
/// - The root path twice (alone, and in front of the path).
/// - The method, the path twice (decoded, never longer than raw: an escape
///   of 3 bytes decodes to 1 byte, or with its neighbours to a U+FFFD of 3
///   bytes) and the query: the path and query come from the request-target,
///   so they are at most twice the target. For an absolute-form target the
///   authority may also become the host field's value, or be added as a
///   host field (8 bytes of name and prefixes more): still within twice the
///   target, since `http://` and the authority are in the target but in
///   neither path nor query. The method and the target share the request
///   line (`method SP target SP HTTP/1.x`: 10 bytes beside them), and a
///   target byte counts twice where a method byte counts once, so the
///   longest message has a one-byte method.
/// - The header fields: a field line of `n` bytes plus CRLF on the wire
///   becomes at most `n + 3` bytes (4 bytes of length prefixes, no colon,
///   no CRLF), so the field bytes plus one byte per field.
/// - The client address: a `str8` host, so at most 259 bytes (a trusted
///   `X-Forwarded-For` may set it to anything). The server address: our
///   IP address as text, at most 39 bytes (IPv6), and a port: 43 bytes.
///
/// The request line and the field lines share `limits.request_head` (which
/// also holds the request line's CRLF and the final CRLF), and a target
/// byte counts twice, so the bound gives the request line all it may take
/// and the field lines the rest. Limits that are unlimited (`usize::MAX`)
/// give a bound that saturates at `usize::MAX`.
pub fn max_request_scope_len(limits: &Limits, root_path_len: usize) -> usize {
    /// kind, route, version, scheme, more_body; and the length prefixes of
    /// method, path, raw_path, query_string, root_path and the header count.
    const FIXED: usize = 1 + ROUTE_LEN + 1 + 1 + 1 + 1 + 5 * 2;
    /// `addr` with a `str8` host: flag, host, port.
    const CLIENT: usize = 1 + 1 + u8::MAX as usize + 2;
    /// `addr` with an IP address as text (`ffff:...:ffff` is the longest).
    const SERVER: usize = 1 + 1 + 39 + 2;
    /// The request line beside method and target: `SP SP HTTP/1.x`.
    const LINE_BESIDE: usize = 1 + 1 + "HTTP/1.1".len();
    // The head also holds the request line's CRLF and the final CRLF.
    let head = limits.request_head;
    let line = limits.request_line.min(head.saturating_sub(4));
    // With a one-byte method.
    let target = line.saturating_sub(LINE_BESIDE + 1);
    // Field lines with their CRLFs: what the head leaves beside the request
    // line without its target (with it, one byte less), and no more than
    // the field limits allow.
    let beside_line = head.saturating_sub(4 + LINE_BESIDE + 1);
    let per_field = limits.request_field_size.saturating_add(2);
    let field_bytes = beside_line.min(limits.request_fields.saturating_mul(per_field));
    // A field line is at least `x:` and CRLF.
    let fields = limits.request_fields.min(field_bytes / 4);
    // Twice the target plus the field bytes: each bounded alone, and
    // together by what the head holds (a byte of the target is one the
    // fields do not get).
    let target_and_fields = target
        .saturating_mul(2)
        .saturating_add(field_bytes)
        .min(target.saturating_add(beside_line));
    FIXED
        .saturating_add(1)
        .saturating_add(root_path_len.saturating_mul(2))
        .saturating_add(target_and_fields)
        .saturating_add(fields)
        .saturating_add(CLIENT + SERVER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asgi::wire::{decode_to_worker, Scope, ToWorker};
    use crate::h1::BodyFraming;
    use proptest::prelude::*;

    fn head(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "GET".into(),
            target: b"/a%20b/%E2%9C%93?x=1".to_vec(),
            path: b"/a%20b/%E2%9C%93".to_vec(),
            query: b"x=1".to_vec(),
            version: Version::Http11,
            headers: headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: BodyFraming::Empty,
            keep_alive: true,
            expect_continue: false,
        }
    }

    fn conn(allow: &ForwardedAllow) -> ConnInfo {
        ConnInfo::new(
            Some("10.0.0.1:4000".parse().unwrap()),
            Some("127.0.0.1:8000".parse().unwrap()),
            allow,
        )
    }

    const ROUTE: Route = Route {
        reactor: 3,
        conn: 1 << 40,
        req: 7,
    };

    /// Encodes `head` and decodes the scope back, as a worker would.
    fn scope_of<'m>(
        out: &'m mut Vec<u8>,
        head: &RequestHead,
        root_path: &str,
        allow: &ForwardedAllow,
    ) -> Scope<'m> {
        encode_request(out, ROUTE, head, &conn(allow), root_path, allow, b"", false);
        match decode_to_worker(out).unwrap() {
            ToWorker::Request { route, scope, .. } => {
                assert_eq!(route, ROUTE);
                scope
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_round_trips_with_scope_and_body() {
        let mut out = Vec::new();
        let mut h = head(&[("host", "example"), ("x-a", "1"), ("x-a", "2")]);
        h.method = "POST".into();
        h.version = Version::Http10;
        let allow = ForwardedAllow::None;
        encode_request(
            &mut out,
            ROUTE,
            &h,
            &conn(&allow),
            "/app",
            &allow,
            b"hello",
            true,
        );
        let ToWorker::Request {
            route,
            scope,
            body,
            more_body,
        } = decode_to_worker(&out).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!((route, body, more_body), (ROUTE, &b"hello"[..], true));
        assert_eq!(
            (scope.http11, scope.https, scope.method, scope.root_path),
            (false, false, "POST", "/app")
        );
        assert_eq!(
            scope.headers.to_vec(),
            vec![
                (b"host".to_vec(), b"example".to_vec()),
                (b"x-a".to_vec(), b"1".to_vec()),
                (b"x-a".to_vec(), b"2".to_vec()),
            ]
        );
    }

    #[test]
    fn a_request_written_in_two_steps_is_the_same_message() {
        let h = head(&[("host", "example"), ("x-a", "1")]);
        let allow = ForwardedAllow::None;
        let c = conn(&allow);
        let mut whole = Vec::new();
        encode_request(&mut whole, ROUTE, &h, &c, "/app", &allow, b"", false);
        let mut steps = Vec::new();
        encode_request_scope(&mut steps, ROUTE, &h, &c, "/app", &allow);
        // The length without body bytes, then the chunk it leaves room for.
        assert_eq!(steps.len(), whole.len());
        finish_request(&mut steps, b"hello", true);
        encode_request(&mut whole, ROUTE, &h, &c, "/app", &allow, b"hello", true);
        assert_eq!(steps, whole);
        let ToWorker::Request {
            body, more_body, ..
        } = decode_to_worker(&steps).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!((body, more_body), (&b"hello"[..], true));
    }

    #[test]
    fn path_is_percent_decoded_and_raw_path_kept() {
        let mut out = Vec::new();
        let s = scope_of(&mut out, &head(&[]), "", &ForwardedAllow::None);
        assert_eq!(s.path, "/a b/\u{2713}");
        assert_eq!(s.raw_path, b"/a%20b/%E2%9C%93");
        assert_eq!(s.query_string, b"x=1");
        assert_eq!(s.client, Some(("10.0.0.1", 4000)));
        assert_eq!(s.server, Some(("127.0.0.1", 8000)));
        assert!(!s.https);
    }

    #[test]
    fn bad_escapes_are_kept_literally_and_bad_utf8_replaced() {
        assert_eq!(percent_decode(b"/%zz/%4"), "/%zz/%4");
        assert_eq!(percent_decode(b"/%41%"), "/A%");
        assert_eq!(percent_decode(b"/%FF%41"), "/\u{fffd}A");
    }

    #[test]
    fn root_path_prefixes_path() {
        let mut out = Vec::new();
        let s = scope_of(&mut out, &head(&[]), "/app", &ForwardedAllow::None);
        assert_eq!((s.root_path, s.path), ("/app", "/app/a b/\u{2713}"));
    }

    #[test]
    fn forwarded_headers_are_ignored_from_untrusted_peers() {
        let h = head(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let allow = ForwardedAllow::List(vec!["127.0.0.1".parse().unwrap()]);
        let mut out = Vec::new();
        let s = scope_of(&mut out, &h, "", &allow);
        assert_eq!(s.client, Some(("10.0.0.1", 4000)));
        assert!(!s.https);
    }

    #[test]
    fn forwarded_headers_from_trusted_peers_set_client_scheme_and_port() {
        let h = head(&[
            ("x-forwarded-for", "1.2.3.4, 10.0.0.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "443"),
        ]);
        let allow = ForwardedAllow::parse("10.0.0.1, 10.0.0.9").unwrap();
        let mut out = Vec::new();
        let s = scope_of(&mut out, &h, "", &allow);
        assert_eq!(s.client, Some(("1.2.3.4", 0)));
        assert!(s.https);
        assert_eq!(s.server, Some(("127.0.0.1", 443)));
        assert!(ForwardedAllow::parse("not-an-ip").is_err());
    }

    #[test]
    fn when_every_forwarded_hop_is_trusted_the_farthest_is_the_client() {
        let h = head(&[("x-forwarded-for", "10.0.0.9, 10.0.0.1")]);
        let allow = ForwardedAllow::parse("10.0.0.1, 10.0.0.9").unwrap();
        let mut out = Vec::new();
        let s = scope_of(&mut out, &h, "", &allow);
        assert_eq!(s.client, Some(("10.0.0.9", 0)));
    }

    #[test]
    fn an_absolute_form_target_is_the_host_the_application_sees() {
        let allow = ForwardedAllow::None;
        for req in [
            &b"GET http://example.com:8080/a?b HTTP/1.1\r\nHost: other\r\n\r\n"[..],
            b"GET http://example.com:8080/a?b HTTP/1.0\r\n\r\n",
        ] {
            let (head, _) = crate::h1::parse_head(req, &Limits::default())
                .unwrap()
                .unwrap();
            let mut out = Vec::new();
            let s = scope_of(&mut out, &head, "", &allow);
            assert_eq!(
                s.headers.to_vec(),
                [(b"host".to_vec(), b"example.com:8080".to_vec())]
            );
            assert_eq!((s.raw_path, s.query_string), (&b"/a"[..], &b"b"[..]));
        }
    }

    // --- The largest scope ---

    /// A connection whose addresses are as long as addresses get.
    fn longest_conn(allow: &ForwardedAllow) -> ConnInfo {
        ConnInfo::new(
            Some(
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535"
                    .parse()
                    .unwrap(),
            ),
            Some(
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                    .parse()
                    .unwrap(),
            ),
            allow,
        )
    }

    /// The encoded length of `req` (a complete head) without body bytes,
    /// from the longest connection with every peer trusted.
    fn encoded_len(req: &[u8], limits: &Limits, root_path: &str) -> usize {
        let (head, n) = crate::h1::parse_head(req, limits)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(req)))
            .expect("a complete head");
        assert_eq!(n, req.len());
        let allow = ForwardedAllow::All;
        let mut out = Vec::new();
        encode_request(
            &mut out,
            ROUTE,
            &head,
            &longest_conn(&allow),
            root_path,
            &allow,
            b"",
            true,
        );
        out.len()
    }

    /// A head that fills `limits` the way that makes the largest message:
    /// a one-byte method, the longest path the request line holds (it is
    /// sent twice), then `Host:h`, a long `X-Forwarded-For` and as many
    /// fields as the limit allows sharing the rest, without optional
    /// whitespace.
    fn largest_head(limits: &Limits) -> Vec<u8> {
        let line = limits.request_line.min(limits.request_head - 4);
        let mut req = b"G /".to_vec();
        req.resize(line - " HTTP/1.1".len(), b'a');
        req.extend_from_slice(b" HTTP/1.1\r\nHost:h\r\nx-forwarded-for:");
        req.resize(req.len() + 300, b'c');
        req.extend_from_slice(b"\r\n");
        // The rest of the fields share what is left, less the final CRLF.
        let fields = limits.request_fields - 2;
        let room = limits.request_head - req.len() - 2;
        for i in 0..fields {
            let len = room / fields + usize::from(i < room % fields);
            assert!((4..=limits.request_field_size + 2).contains(&len));
            req.extend_from_slice(b"x:");
            req.resize(req.len() + len - 4, b'v');
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req
    }

    #[test]
    fn the_bound_under_the_default_limits_is_tight_and_leaves_room_for_body() {
        let limits = Limits::default();
        let bound = max_request_scope_len(&limits, 0);
        assert_eq!(bound, 37_268);
        let req = largest_head(&limits);
        assert_eq!(req.len(), limits.request_head);
        // The bound is reached: it is not loose.
        assert_eq!(encoded_len(&req, &limits, ""), bound);
        // A 64 KiB layer message has over 27 KiB left for body bytes.
        assert!(bound <= (64 - 27) * 1024);
        // The root path is in the message twice.
        assert_eq!(max_request_scope_len(&limits, 10), bound + 20);
    }

    #[test]
    fn unlimited_limits_give_a_saturated_bound() {
        let limits = Limits {
            request_line: usize::MAX,
            request_fields: usize::MAX,
            request_field_size: usize::MAX,
            request_head: usize::MAX,
            max_body: u64::MAX,
        };
        assert_eq!(max_request_scope_len(&limits, 0), usize::MAX);
    }

    /// Limits small enough to fill, in any proportion to each other.
    fn small_limits() -> impl Strategy<Value = Limits> {
        (24usize..400, 1usize..12, 6usize..300, 40usize..3000).prop_map(
            |(request_line, request_fields, request_field_size, request_head)| Limits {
                request_line,
                request_fields,
                request_field_size,
                request_head,
                max_body: u64::MAX,
            },
        )
    }

    /// How a head is made; the lengths are drawn from `tape`.
    #[derive(Clone, Debug)]
    struct Shape {
        /// Empty lines before the request line.
        skip: usize,
        /// An absolute-form target.
        absolute: bool,
        /// HTTP/1.0 (then an absolute-form request goes without Host).
        http10: bool,
        /// Random numbers for lengths and bytes.
        tape: Vec<u16>,
    }

    /// A valid head at or near `limits`, made as `shape` says.
    fn head_near(limits: &Limits, shape: &Shape) -> Vec<u8> {
        let mut tape = shape.tape.iter().copied().cycle();
        let mut draw = |n: usize| match n {
            0 => 0,
            n => usize::from(tape.next().unwrap_or(0)) % n,
        };
        // At or a few bytes short of a limit.
        let near = |max: usize, short: usize| max - short.min(max);
        let with_host = !(shape.absolute && shape.http10);
        let host: &[u8] = b"Host:h\r\n";
        // The request line's CRLF, the final CRLF and the Host field.
        let reserve = 4 + if with_host { host.len() } else { 0 };
        let line_max = limits.request_line.min(limits.request_head - reserve);
        let skip = shape.skip.min(line_max.saturating_sub(16) / 2);
        let mut req = b"\r\n".repeat(skip);
        let method_len = 1 + draw(4);
        req.resize(req.len() + method_len, b'G');
        req.push(b' ');
        let target_len = near(line_max - 2 * skip - method_len - 10, draw(4)).max(1);
        let target_start = req.len();
        if shape.absolute && target_len >= 10 {
            req.extend_from_slice(b"http://");
            let authority = 1 + draw(target_len - 8);
            req.resize(req.len() + authority, b'h');
        } else {
            req.push(b'/');
        }
        const TARGET_BYTES: &[u8] = b"a%FC3/?=9";
        while req.len() < target_start + target_len {
            req.push(TARGET_BYTES[draw(TARGET_BYTES.len())]);
        }
        req.extend_from_slice(if shape.http10 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        // Field lines: the Host field somewhere, an X-Forwarded-For if it
        // fits, then as many and as long as the limits let through.
        let mut fields = Vec::new();
        let wanted = limits.request_fields - usize::from(with_host);
        // Less the final CRLF and the Host field.
        let mut room = limits.request_head - req.len() - (reserve - 2);
        let xff_len = near(limits.request_field_size, draw(8));
        if xff_len >= 17 && xff_len + 2 <= room && wanted > 0 && draw(2) == 0 {
            let mut xff = b"x-forwarded-for:".to_vec();
            xff.resize(xff_len, b'c');
            fields.push(xff);
            room -= xff_len + 2;
        }
        while fields.len() < wanted && room >= 4 {
            let len = near((room - 2).min(limits.request_field_size), draw(6)).max(2);
            let name = 1 + draw(len - 1);
            let mut line = vec![b'x'; name];
            line.push(b':');
            line.resize(len, b'v');
            room -= len + 2;
            fields.push(line);
        }
        fields.truncate(wanted);
        if with_host {
            let at = draw(fields.len() + 1);
            fields.insert(at, host[..host.len() - 2].to_vec());
        }
        for field in fields {
            req.extend_from_slice(&field);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        req
    }

    fn shape() -> impl Strategy<Value = Shape> {
        (
            0usize..3,
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(any::<u16>(), 1..64),
        )
            .prop_map(|(skip, absolute, http10, tape)| Shape {
                skip,
                absolute,
                http10,
                tape,
            })
    }

    proptest! {
        #[test]
        fn no_accepted_head_encodes_longer_than_the_bound(
            limits in small_limits(),
            shape in shape(),
            root in prop::collection::vec(prop::sample::select(vec!['/', 'r', '\u{e9}']), 0..20),
        ) {
            let root_path: String = root.into_iter().collect();
            let req = head_near(&limits, &shape);
            prop_assert!(req.len() <= limits.request_head);
            let len = encoded_len(&req, &limits, &root_path);
            let bound = max_request_scope_len(&limits, root_path.len());
            prop_assert!(len <= bound, "{} > {} for {:?}", len, bound, String::from_utf8_lossy(&req));
        }
    }

    #[test]
    fn text_fields_longer_than_a_str16_are_cut_at_a_character_boundary() {
        let mut h = head(&[]);
        // 33,000 two-byte characters, escaped: 66,000 bytes decoded; the
        // root path and the slash (4 bytes) put the cut inside one of them.
        h.path = "/".bytes().chain("%C3%A9".repeat(33_000).bytes()).collect();
        let mut out = Vec::new();
        let s = scope_of(&mut out, &h, "/rr", &ForwardedAllow::None);
        assert_eq!(s.path.len(), u16::MAX as usize - 1);
        assert!(s.path.ends_with('\u{e9}'));
    }
}
