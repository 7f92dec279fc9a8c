//! The ASGI HTTP scope of a request: worked out from the parsed request head
//! and the connection, and written straight into the `http.request` message
//! (no intermediate scope value: the head's bytes are copied once, into the
//! message).

use std::net::{IpAddr, SocketAddr};

use super::wire::{kind, put, Route};
use crate::h1::{RequestHead, Version};

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
/// the order of the grammar in `wire.rs`) for `head` on a connection.
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
    out.push(u8::from(more_body));
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asgi::wire::{decode_to_worker, Scope, ToWorker};
    use crate::h1::BodyFraming;

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
