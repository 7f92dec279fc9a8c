//! Building the ASGI HTTP scope from a parsed request head and the connection.

use std::net::{IpAddr, SocketAddr};

use super::wire::Scope;
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
    String::from_utf8_lossy(&out).into_owned()
}

/// Connection facts the scope needs.
pub struct ConnInfo {
    /// The peer (None for a Unix socket).
    pub peer: Option<SocketAddr>,
    /// Our address (None for a Unix socket).
    pub local: Option<SocketAddr>,
}

fn header<'a>(head: &'a RequestHead, name: &[u8]) -> Option<&'a [u8]> {
    head.headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
}

/// Builds the scope for `head` on a connection.
pub fn build(
    head: &RequestHead,
    conn: &ConnInfo,
    root_path: &str,
    allow: &ForwardedAllow,
) -> Scope {
    let mut client = conn.peer.map(|a| (a.ip().to_string(), a.port()));
    let mut https = false;
    let mut server = conn.local.map(|a| (a.ip().to_string(), a.port()));
    if conn.peer.is_some_and(|p| allow.trusts(p.ip())) {
        // X-Forwarded-For: walk from the nearest proxy outwards, skipping
        // trusted hops; the first untrusted one is the client.
        if let Some(xff) =
            header(head, b"x-forwarded-for").and_then(|v| std::str::from_utf8(v).ok())
        {
            let hops: Vec<&str> = xff
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            let chosen = hops
                .iter()
                .rev()
                .find(|h| h.parse::<IpAddr>().map_or(true, |ip| !allow.trusts(ip)))
                .or(hops.first());
            if let Some(h) = chosen {
                client = Some(((*h).to_owned(), 0));
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
    Scope {
        http11: head.version == Version::Http11,
        https,
        method: head.method.clone(),
        path: format!("{root_path}{}", percent_decode(&head.path)),
        raw_path: head.path.clone(),
        query_string: head.query.clone(),
        root_path: root_path.to_owned(),
        headers: head.headers.clone(),
        client,
        server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn conn() -> ConnInfo {
        ConnInfo {
            peer: Some("10.0.0.1:4000".parse().unwrap()),
            local: Some("127.0.0.1:8000".parse().unwrap()),
        }
    }

    #[test]
    fn path_is_percent_decoded_and_raw_path_kept() {
        let s = build(&head(&[]), &conn(), "", &ForwardedAllow::None);
        assert_eq!(s.path, "/a b/\u{2713}");
        assert_eq!(s.raw_path, b"/a%20b/%E2%9C%93");
        assert_eq!(s.query_string, b"x=1");
        assert_eq!(s.client, Some(("10.0.0.1".into(), 4000)));
        assert_eq!(s.server, Some(("127.0.0.1".into(), 8000)));
        assert!(!s.https);
    }

    #[test]
    fn bad_escapes_are_kept_literally() {
        assert_eq!(percent_decode(b"/%zz/%4"), "/%zz/%4");
        assert_eq!(percent_decode(b"/%41%"), "/A%");
    }

    #[test]
    fn root_path_prefixes_path() {
        let s = build(&head(&[]), &conn(), "/app", &ForwardedAllow::None);
        assert_eq!(
            (s.root_path.as_str(), s.path.as_str()),
            ("/app", "/app/a b/\u{2713}")
        );
    }

    #[test]
    fn forwarded_headers_are_ignored_from_untrusted_peers() {
        let h = head(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let s = build(
            &h,
            &conn(),
            "",
            &ForwardedAllow::List(vec!["127.0.0.1".parse().unwrap()]),
        );
        assert_eq!(s.client, Some(("10.0.0.1".into(), 4000)));
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
        let s = build(&h, &conn(), "", &allow);
        assert_eq!(s.client, Some(("1.2.3.4".into(), 0)));
        assert!(s.https);
        assert_eq!(s.server, Some(("127.0.0.1".into(), 443)));
        assert!(ForwardedAllow::parse("not-an-ip").is_err());
    }
}
