//! Request heads: the request line and header section of RFC 9112 §2–§6,
//! parsed from a byte buffer into a [`RequestHead`] that says how the body is
//! framed and whether the connection stays open.
//!
//! [`parse_head`] keeps no state between calls: it is called again on the
//! whole buffer when more bytes arrive, and re-scans it (linear in the
//! buffered head, which the [`Limits`] bound). Lines complete so far are
//! validated on every call, so garbage is refused as soon as it arrives
//! instead of when the head ends.

use super::error::ProtoError;
use super::grammar::{
    find_crlf, is_tchar, is_token, list_elements, parse_decimal, parse_field_line, trim_ows,
};

/// Size limits on requests, named after gunicorn's settings.
///
/// gunicorn's "0 means unlimited" is the caller's to translate (to
/// `usize::MAX`); here every limit is taken literally.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request line in bytes, without its CRLF (and counting any
    /// empty lines skipped before it): `--limit-request-line`, default 4094.
    pub request_line: usize,
    /// Most header fields in a request, and most trailer fields in a chunked
    /// body: `--limit-request-fields`, default 100.
    pub request_fields: usize,
    /// Longest header (or trailer) line in bytes, without its CRLF:
    /// `--limit-request-field-size`, default 8190.
    pub request_field_size: usize,
    /// Largest request body in bytes; default `u64::MAX` (no limit).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            request_fields: 100,
            request_field_size: 8190,
            max_body: u64::MAX,
        }
    }
}

/// The HTTP versions we speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

impl Version {
    /// The version as ASGI's `http_version` spells it: `"1.0"` or `"1.1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "1.0",
            Version::Http11 => "1.1",
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length or Transfer-Encoding, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes (never 0: that is `Empty`).
    Length(u64),
    /// Chunked transfer coding, ended by the last chunk and trailer section.
    Chunked,
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// The method as sent (case-sensitive, a token).
    pub method: String,
    /// The raw request-target.
    pub target: Vec<u8>,
    /// The raw path: the target before `?`; for absolute-form the path part
    /// after the authority (`/` if it is empty); `*` for asterisk-form. Not
    /// percent-decoded.
    pub path: Vec<u8>,
    /// The raw query after `?`, without it (empty if none).
    pub query: Vec<u8>,
    /// The request's HTTP version.
    pub version: Version,
    /// Header fields in order, names lowercased, values trimmed of OWS,
    /// duplicates kept.
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// How the body is delimited.
    pub body: BodyFraming,
    /// Whether the connection may stay open after this request (HTTP/1.1:
    /// unless `Connection: close`; HTTP/1.0: only with `Connection:
    /// keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request: send
    /// [`super::encode::CONTINUE`] before reading the body.
    pub expect_continue: bool,
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet (nothing consumed; call again with
/// more bytes). `Ok(Some((head, n)))`: the first `n` bytes of `buf` were the
/// head, any empty lines before it included; the body (framed by `head.body`)
/// starts at `buf[n]`.
///
/// Errors are final: send [`super::status_for`] and close. Limits are checked
/// on incomplete lines too, so a client cannot make us buffer an endless line.
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, ProtoError> {
    // RFC 9112 §2.2: "In the interest of robustness, a server that is
    // expecting to receive and parse a request-line SHOULD ignore at least one
    // empty line (CRLF) received prior to the request-line." Their bytes count
    // against the request-line limit, so a stream of CRLFs is bounded too.
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let Some(line_end) = find_crlf(buf, start)? else {
        check_partial_request_line(buf, start, limits)?;
        return Ok(None);
    };
    if line_end > limits.request_line {
        return Err(ProtoError::RequestLineTooLong);
    }
    let line = parse_request_line(&buf[start..line_end])?;

    // RFC 9112 §2.1:
    //   HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
    let mut pos = line_end + 2;
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    loop {
        let Some(end) = find_crlf(buf, pos)? else {
            let partial = strip_cr(&buf[pos..]);
            if !partial.is_empty() {
                check_field_limits(fields.len(), partial.len(), limits)?;
            }
            return Ok(None);
        };
        if end == pos {
            pos += 2;
            break;
        }
        check_field_limits(fields.len(), end - pos, limits)?;
        fields.push(parse_field_line(&buf[pos..end])?);
        pos = end + 2;
    }

    let head = interpret(line, &fields, limits)?;
    Ok(Some((head, pos)))
}

/// `s` without one trailing CR (the first half of a CRLF still in flight).
fn strip_cr(s: &[u8]) -> &[u8] {
    s.strip_suffix(b"\r").unwrap_or(s)
}

/// Limits and early rejection for a request line whose CRLF has not arrived.
fn check_partial_request_line(buf: &[u8], start: usize, limits: &Limits) -> Result<(), ProtoError> {
    let partial = strip_cr(&buf[start..]);
    if start + partial.len() > limits.request_line {
        return Err(ProtoError::RequestLineTooLong);
    }
    // The method is the first thing on the line; a TLS handshake or other
    // binary sent to this port fails here at once rather than at a timeout.
    let method = partial.split(|&b| b == b' ').next().unwrap_or_default();
    if !method.iter().all(|&b| is_tchar(b)) {
        return Err(ProtoError::InvalidMethod);
    }
    Ok(())
}

/// The count and size limits on a field line (`len` bytes without CRLF) that
/// would be field number `count + 1`.
fn check_field_limits(count: usize, len: usize, limits: &Limits) -> Result<(), ProtoError> {
    if count >= limits.request_fields {
        return Err(ProtoError::TooManyHeaders);
    }
    if len > limits.request_field_size {
        return Err(ProtoError::HeaderTooLarge);
    }
    Ok(())
}

/// The pieces of a valid request line.
struct RequestLine<'a> {
    method: &'a [u8],
    target: &'a [u8],
    path: &'a [u8],
    query: &'a [u8],
    version: Version,
}

/// Parses and validates `request-line` (RFC 9112 §3):
///
/// ```text
/// request-line = method SP request-target SP HTTP-version
/// ```
///
/// "Recipients of an invalid request-line SHOULD respond with either a 400
/// (Bad Request) error or a 301 (Moved Permanently) redirect"; we never guess
/// at word boundaries (which §3 also allows), so exactly two SPs.
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, ProtoError> {
    let Some(sp1) = line.iter().position(|&b| b == b' ') else {
        return Err(ProtoError::MalformedRequestLine);
    };
    // RFC 9110 §9.1: "method = token".
    let method = &line[..sp1];
    if !is_token(method) {
        return Err(ProtoError::InvalidMethod);
    }
    let sp2 = sp1
        + 1
        + line[sp1 + 1..]
            .iter()
            .rposition(|&b| b == b' ')
            .ok_or(ProtoError::MalformedRequestLine)?;
    let (target, version) = (&line[sp1 + 1..sp2], &line[sp2 + 1..]);
    let version = parse_version(version)?;
    check_target_bytes(target)?;
    // RFC 9110 §9.1: "An origin server that receives a request method that is
    // unrecognized or not implemented SHOULD respond with the 501 (Not
    // Implemented) status code." CONNECT asks for a tunnel, which only proxies
    // provide. (405 would need an Allow header listing the application's
    // methods, which we do not know.)
    if method == b"CONNECT" {
        return Err(ProtoError::MethodNotImplemented);
    }
    let (path, query) = split_target(method, target)?;
    Ok(RequestLine {
        method,
        target,
        path,
        query,
        version,
    })
}

/// RFC 9112 §2.3:
///
/// ```text
/// HTTP-version = HTTP-name "/" DIGIT "." DIGIT
/// HTTP-name    = %s"HTTP"
/// ```
///
/// Well-formed versions other than 1.0 and 1.1 are refused with 505.
fn parse_version(v: &[u8]) -> Result<Version, ProtoError> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(ProtoError::UnsupportedVersion)
        }
        _ => Err(ProtoError::MalformedVersion),
    }
}

/// Every request-target byte must be a visible ASCII character (RFC 3986
/// allows no others; percent-encoding carries the rest), and `#` is refused
/// because a fragment is never part of a request-target (RFC 9112 §3.2).
fn check_target_bytes(target: &[u8]) -> Result<(), ProtoError> {
    if target.is_empty() {
        return Err(ProtoError::InvalidTarget("empty"));
    }
    for &b in target {
        match b {
            0x21..=0x7e if b != b'#' => {}
            b'#' => return Err(ProtoError::InvalidTarget("contains a fragment (#)")),
            0x80.. => return Err(ProtoError::InvalidTarget("contains a non-ASCII byte")),
            _ => return Err(ProtoError::InvalidTarget("contains a control byte")),
        }
    }
    Ok(())
}

/// Splits a request-target into path and query by its form (RFC 9112 §3.2):
///
/// ```text
/// request-target = origin-form / absolute-form / authority-form / asterisk-form
/// origin-form    = absolute-path [ "?" query ]
/// absolute-form  = absolute-URI
/// asterisk-form  = "*"
/// ```
///
/// authority-form is only for CONNECT, refused before this is called.
fn split_target<'a>(method: &[u8], target: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), ProtoError> {
    if target.starts_with(b"/") {
        return Ok(split_query(target));
    }
    // RFC 9112 §3.2.4: "The "asterisk" form of request-target is only used
    // for a server-wide OPTIONS request".
    if target == b"*" {
        if method == b"OPTIONS" {
            return Ok((target, b""));
        }
        return Err(ProtoError::InvalidTarget("* is only allowed with OPTIONS"));
    }
    // RFC 9112 §3.2.2: "a server MUST accept the absolute-form in requests".
    // Only the http and https schemes name resources we serve.
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(ProtoError::InvalidTarget(
            "neither origin-form (/path), absolute-form (http://host/path) nor *",
        ))?;
    let authority_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    if authority.is_empty() || !is_valid_host(authority) {
        return Err(ProtoError::InvalidTarget(
            "absolute-form without a valid host",
        ));
    }
    let (path, query) = split_query(&rest[authority_end..]);
    // RFC 9112 §3.2.1: "If the target URI's path component is empty, the
    // client MUST send "/" as the path within the origin-form".
    let path: &[u8] = if path.is_empty() { b"/" } else { path };
    Ok((path, query))
}

/// `(path, query)` of `path [ "?" query ]`.
fn split_query(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b'?') {
        Some(q) => (&s[..q], &s[q + 1..]),
        None => (s, b""),
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2) with
///
/// ```text
/// uri-host   = IP-literal / IPv4address / reg-name
/// IP-literal = "[" ( IPv6address / IPvFuture ) "]"
/// reg-name   = *( unreserved / pct-encoded / sub-delims )
/// port       = *DIGIT
/// ```
///
/// Checked by character class, which is what keeps a Host value from smuggling
/// paths, userinfo or whitespace into URL reconstruction. Empty is valid.
fn is_valid_host(h: &[u8]) -> bool {
    let port = if let Some(literal) = h.strip_prefix(b"[") {
        let Some(close) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        // IPv6address and IPvFuture use hex digits, ":", "." and, for
        // IPvFuture, unreserved and sub-delims: all reg-name bytes or ":".
        let (address, rest) = (&literal[..close], &literal[close + 1..]);
        if address.is_empty() || !address.iter().all(|&b| b == b':' || is_reg_name_byte(b)) {
            return false;
        }
        match rest {
            [] => &rest[..0],
            [b':', port @ ..] => port,
            _ => return false,
        }
    } else {
        let (host, port) = match h.iter().position(|&b| b == b':') {
            Some(colon) => (&h[..colon], &h[colon + 1..]),
            None => (h, &h[..0]),
        };
        if !host.iter().all(|&b| is_reg_name_byte(b)) {
            return false;
        }
        port
    };
    port.iter().all(u8::is_ascii_digit)
}

/// `unreserved / sub-delims` and the `%` of `pct-encoded` (RFC 3986 §2).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Turns a syntactically valid head into a [`RequestHead`]: Host, framing,
/// persistence and expectations.
fn interpret(
    line: RequestLine<'_>,
    fields: &[(&[u8], &[u8])],
    limits: &Limits,
) -> Result<RequestHead, ProtoError> {
    let version = line.version;
    let mut hosts = 0usize;
    let mut host_ok = true;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut codings: Vec<&[u8]> = Vec::new();
    let (mut close, mut keep_alive_token) = (false, false);
    let mut expect_continue = false;

    for &(name, value) in fields {
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            host_ok &= is_valid_host(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9110 §8.6: "Content-Length = 1*DIGIT" [...] "a recipient of
            // a Content-Length header field value consisting of the same
            // decimal value repeated as a comma-separated list (e.g,
            // "Content-Length: 42, 42") MAY either reject the message as
            // invalid or replace that invalid field value with a single
            // instance of the decimal value". Empty elements are not
            // tolerated here: every element must be a number.
            for element in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(element)).ok_or(ProtoError::InvalidContentLength)?;
                match content_length {
                    Some(m) if m != n => return Err(ProtoError::ConflictingContentLength),
                    _ => content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Several Transfer-Encoding fields form one list, in order.
            transfer_encoding = true;
            codings.extend(list_elements(value));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for option in list_elements(value) {
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            // RFC 9110 §10.1.1: "The Expect field value is case-insensitive."
            // "A server that receives an Expect field value containing a
            // member other than 100-continue MAY respond with a 417
            // (Expectation Failed) status code".
            for member in list_elements(value) {
                if !member.eq_ignore_ascii_case(b"100-continue") {
                    return Err(ProtoError::ExpectationFailed);
                }
                expect_continue = true;
            }
        }
    }

    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status
    // code to any HTTP/1.1 request message that lacks a Host header field and
    // to any request message that contains more than one Host header field
    // line or a Host header field with an invalid field value."
    if hosts > 1 {
        return Err(ProtoError::DuplicateHost);
    }
    if hosts == 0 && version == Version::Http11 {
        return Err(ProtoError::MissingHost);
    }
    if !host_ok {
        return Err(ProtoError::InvalidHost);
    }

    let body = body_framing(version, content_length, transfer_encoding, &codings, limits)?;

    // RFC 9112 §9.3: "If the "close" connection option is present, the
    // connection will not persist after the current response; else, If the
    // received protocol is HTTP/1.1 (or later), the connection will persist
    // after the current response; else, If the received protocol is HTTP/1.0,
    // the "keep-alive" connection option is present, [...] the connection will
    // persist after the current response; otherwise, The connection will close
    // after the current response."
    let keep_alive = !close && (version == Version::Http11 || keep_alive_token);

    // RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in
    // an HTTP/1.0 request MUST ignore that expectation."
    let expect_continue = expect_continue && version == Version::Http11;

    Ok(RequestHead {
        method: line.method.iter().map(|&b| char::from(b)).collect(),
        target: line.target.to_vec(),
        path: line.path.to_vec(),
        query: line.query.to_vec(),
        version,
        headers: fields
            .iter()
            .map(|&(name, value)| (name.to_ascii_lowercase(), value.to_vec()))
            .collect(),
        body,
        keep_alive,
        expect_continue,
    })
}

/// The message body length of a request, RFC 9112 §6.3 steps 3–7 (steps 1–2
/// are about responses).
fn body_framing(
    version: Version,
    content_length: Option<u64>,
    transfer_encoding: bool,
    codings: &[&[u8]],
    limits: &Limits,
) -> Result<BodyFraming, ProtoError> {
    if transfer_encoding {
        // RFC 9112 §6.1: "A server or client that receives an HTTP/1.0
        // message containing a Transfer-Encoding header field MUST treat the
        // message as if the framing is faulty, even if a Content-Length is
        // present, and close the connection after processing the message."
        if version == Version::Http10 {
            return Err(ProtoError::TransferEncodingOnHttp10);
        }
        // Step 3: "If a message is received with both a Transfer-Encoding and
        // a Content-Length header field, the Transfer-Encoding overrides the
        // Content-Length. Such a message might indicate an attempt to perform
        // request smuggling [...] and ought to be handled as an error."
        if content_length.is_some() {
            return Err(ProtoError::ContentLengthWithTransferEncoding);
        }
        // RFC 9112 §4: "transfer-coding = token *( OWS ";" OWS
        // transfer-parameter )". `chunked` defines no parameters.
        let mut chunked = 0;
        for coding in codings {
            let name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or_default());
            if !is_token(name) {
                return Err(ProtoError::InvalidTransferEncoding);
            }
            if name.eq_ignore_ascii_case(b"chunked") {
                if name.len() != coding.len() {
                    return Err(ProtoError::InvalidTransferEncoding);
                }
                chunked += 1;
            }
        }
        // RFC 9112 §6.1: "A sender MUST NOT apply the chunked transfer coding
        // more than once to a message body".
        if chunked > 1 {
            return Err(ProtoError::ChunkedTwice);
        }
        // Step 4: "If a Transfer-Encoding header field is present in a request
        // and the chunked transfer coding is not the final encoding, the
        // message body length cannot be determined reliably; the server MUST
        // respond with the 400 (Bad Request) status code and then close the
        // connection."
        if !codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            return Err(ProtoError::ChunkedNotFinal);
        }
        // RFC 9112 §6.1: "A server that receives a request message with a
        // transfer coding it does not understand SHOULD respond with 501 (Not
        // Implemented)." We decode none but chunked.
        if codings.len() > 1 {
            return Err(ProtoError::UnsupportedTransferCoding);
        }
        // Step 4: "If a Transfer-Encoding header field is present and the
        // chunked transfer coding is the final encoding, the message body
        // length is determined by reading and decoding the chunked data until
        // the transfer coding indicates the data is complete."
        return Ok(BodyFraming::Chunked);
    }
    // Steps 5 and 6 (an invalid Content-Length was refused while collecting):
    // "If a valid Content-Length header field is present without
    // Transfer-Encoding, its decimal value defines the expected message body
    // length in octets."
    if let Some(n) = content_length {
        if n > limits.max_body {
            return Err(ProtoError::BodyTooLarge);
        }
        return Ok(if n == 0 {
            BodyFraming::Empty
        } else {
            BodyFraming::Length(n)
        });
    }
    // Step 7: "If this is a request message and none of the above are true,
    // then the message body length is zero (no message body is present)."
    Ok(BodyFraming::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ProtoError> {
        parse_head(buf, &Limits::default())
    }

    /// Parses a complete head, asserting that all of `buf` was the head.
    fn head(buf: &[u8]) -> RequestHead {
        let (head, n) = parse(buf)
            .unwrap_or_else(|e| panic!("{e} in {:?}", String::from_utf8_lossy(buf)))
            .expect("complete head");
        assert_eq!(n, buf.len());
        head
    }

    fn err(buf: &[u8]) -> ProtoError {
        match parse(buf) {
            Err(e) => e,
            Ok(r) => panic!("{:?} parsed as {r:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// A GET with the given header lines (each ending in CRLF) after Host.
    fn get_with(fields: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
    }

    // --- Request line ---

    #[test]
    fn simple_get_is_parsed_into_its_parts() {
        let h = head(b"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, b"/a/b?x=1&y=%20");
        assert_eq!(h.path, b"/a/b");
        assert_eq!(h.query, b"x=1&y=%20");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers, [(b"host".to_vec(), b"example.com".to_vec())]);
        assert_eq!(h.body, BodyFraming::Empty);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let (_, n) = parse(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
            .unwrap()
            .unwrap();
        assert_eq!(n, 27);
    }

    #[test]
    fn empty_query_after_question_mark_is_empty() {
        let h = head(b"GET /p? HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice()),
            (&b"/p"[..], &b""[..])
        );
    }

    #[test]
    fn method_is_kept_case_sensitive() {
        assert_eq!(head(b"get / HTTP/1.1\r\nHost: a\r\n\r\n").method, "get");
        assert_eq!(head(b"PURGE / HTTP/1.1\r\nHost: a\r\n\r\n").method, "PURGE");
    }

    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        let h = head(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, b"/");
    }

    #[test]
    fn method_that_is_not_a_token_is_rejected() {
        assert_eq!(err(b"G(T / HTTP/1.1\r\n\r\n"), ProtoError::InvalidMethod);
        assert_eq!(err(b"G\x01T / HTTP/1.1\r\n\r\n"), ProtoError::InvalidMethod);
        assert_eq!(err(b" / HTTP/1.1\r\n\r\n"), ProtoError::InvalidMethod);
    }

    #[test]
    fn binary_garbage_is_rejected_before_a_line_ends() {
        // The start of a TLS ClientHello.
        assert_eq!(err(b"\x16\x03\x01\x02\x00\x01"), ProtoError::InvalidMethod);
    }

    #[test]
    fn request_line_without_two_single_spaces_is_rejected() {
        // HTTP/0.9 simple request: no version.
        assert_eq!(err(b"GET /\r\n\r\n"), ProtoError::MalformedRequestLine);
        assert_eq!(err(b"GET\r\n\r\n"), ProtoError::MalformedRequestLine);
        // Doubled SP leaves a space in the target.
        assert!(matches!(
            err(b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
        // HTAB is not a separator.
        assert_eq!(
            err(b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidMethod
        );
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_are_505() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
            let req = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert_eq!(err(req.as_bytes()), ProtoError::UnsupportedVersion, "{v}");
        }
        // The HTTP/2 connection preface.
        assert_eq!(
            err(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            ProtoError::UnsupportedVersion
        );
    }

    #[test]
    fn malformed_versions_are_400() {
        for v in [
            "http/1.1",
            "HTTP/1",
            "HTTP/11.1",
            "HTTP/1.1x",
            "HTTP 1.1",
            "HTTP/a.b",
            "",
        ] {
            let req = format!("GET / {v}\r\nHost: a\r\n\r\n");
            assert!(
                matches!(
                    err(req.as_bytes()),
                    ProtoError::MalformedVersion | ProtoError::InvalidTarget(_)
                ),
                "{v}"
            );
        }
        assert_eq!(
            err(b"GET / http/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::MalformedVersion
        );
    }

    #[test]
    fn http_1_0_request_is_parsed_without_host() {
        let h = head(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.version, Version::Http10);
        assert!(!h.keep_alive);
    }

    // --- Request target ---

    #[test]
    fn target_in_no_known_form_is_rejected() {
        assert!(matches!(
            err(b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
        assert!(matches!(
            err(b"GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
    }

    #[test]
    fn target_with_control_bytes_spaces_or_non_ascii_is_rejected() {
        for t in [
            &b"/a\x00b"[..],
            b"/a\x7fb",
            b"/a\tb",
            b"/a b",
            b"/caf\xc3\xa9",
            b"/a#frag",
        ] {
            let mut req = b"GET ".to_vec();
            req.extend_from_slice(t);
            req.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(matches!(err(&req), ProtoError::InvalidTarget(_)), "{t:?}");
        }
    }

    #[test]
    fn absolute_form_target_gives_path_and_query() {
        let h = head(b"GET http://example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.target, b"http://example.com:8080/a/b?q=1");
        assert_eq!(h.path, b"/a/b");
        assert_eq!(h.query, b"q=1");
        let h = head(b"GET HTTPS://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice()),
            (&b"/"[..], &b""[..])
        );
        let h = head(b"GET http://example.com?q HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice()),
            (&b"/"[..], &b"q"[..])
        );
    }

    #[test]
    fn absolute_form_without_a_valid_host_is_rejected() {
        for t in [
            "http:///a",
            "http://user@host/a",
            "http://ho%st:x/",
            "http://[::1/",
        ] {
            let req = format!("GET {t} HTTP/1.1\r\nHost: a\r\n\r\n");
            assert!(
                matches!(err(req.as_bytes()), ProtoError::InvalidTarget(_)),
                "{t}"
            );
        }
        let h = head(b"GET http://[::1]:80/x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(h.path, b"/x");
    }

    #[test]
    fn asterisk_target_is_accepted_with_options() {
        let h = head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            (h.path.as_slice(), h.query.as_slice()),
            (&b"*"[..], &b""[..])
        );
    }

    #[test]
    fn asterisk_target_with_another_method_is_rejected() {
        assert!(matches!(
            err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
    }

    #[test]
    fn connect_is_not_implemented() {
        assert_eq!(
            err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            ProtoError::MethodNotImplemented
        );
        assert_eq!(
            err(b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::MethodNotImplemented
        );
    }

    #[test]
    fn authority_form_with_another_method_is_rejected() {
        assert!(matches!(
            err(b"GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
    }

    // --- Line endings ---

    #[test]
    fn bare_lf_ending_the_request_line_is_rejected() {
        assert_eq!(err(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), ProtoError::BareLf);
    }

    #[test]
    fn bare_lf_ending_a_header_line_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"),
            ProtoError::BareLf
        );
    }

    #[test]
    fn bare_lf_ending_the_head_is_rejected() {
        assert_eq!(err(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), ProtoError::BareLf);
        assert_eq!(
            err(b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            ProtoError::BareLf
        );
    }

    #[test]
    fn bare_cr_in_the_head_is_rejected() {
        assert_eq!(err(b"GET / HTTP/1.1\rHost: a\r\n\r\n"), ProtoError::BareCr);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
            ProtoError::BareCr
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n"),
            ProtoError::BareCr
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"),
            ProtoError::BareCr
        );
    }

    // --- Header fields ---

    #[test]
    fn header_names_are_lowercased_and_values_trimmed_in_order() {
        let h = head(&get_with(
            "X-One:  first \t\r\nx-one:second\r\nX-Two:\r\nX-One: a  b\r\n",
        ));
        let expected: Vec<(Vec<u8>, Vec<u8>)> = [
            ("host", "a"),
            ("x-one", "first"),
            ("x-one", "second"),
            ("x-two", ""),
            ("x-one", "a  b"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
        assert_eq!(h.headers, expected);
    }

    #[test]
    fn htab_and_obs_text_are_allowed_in_values() {
        let h = head(&get_with("X-A: a\tb\r\n"));
        assert_eq!(h.headers[1].1, b"a\tb");
        let h = head(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: caf\xc3\xa9\r\n\r\n");
        assert_eq!(h.headers[1].1, b"caf\xc3\xa9");
    }

    #[test]
    fn obs_fold_is_rejected() {
        assert_eq!(err(&get_with("X-A: a\r\n b\r\n")), ProtoError::ObsFold);
        assert_eq!(err(&get_with("X-A: a\r\n\tb\r\n")), ProtoError::ObsFold);
    }

    #[test]
    fn whitespace_after_the_request_line_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
            ProtoError::ObsFold
        );
    }

    #[test]
    fn whitespace_before_colon_is_rejected() {
        assert_eq!(
            err(&get_with("X-A : b\r\n")),
            ProtoError::WhitespaceBeforeColon
        );
        assert_eq!(
            err(&get_with("X-A\t: b\r\n")),
            ProtoError::WhitespaceBeforeColon
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
            ProtoError::WhitespaceBeforeColon
        );
    }

    #[test]
    fn header_line_without_colon_is_rejected() {
        assert_eq!(err(&get_with("X-A b\r\n")), ProtoError::HeaderWithoutColon);
    }

    #[test]
    fn control_bytes_and_separators_in_header_names_are_rejected() {
        for name in [
            &b"X\x00A"[..],
            b"X\x01A",
            b"X\x7fA",
            b"X A",
            b"X(A)",
            b"",
            b"X\xc3\xa9",
        ] {
            let mut req = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            req.extend_from_slice(name);
            req.extend_from_slice(b": v\r\n\r\n");
            assert_eq!(err(&req), ProtoError::InvalidHeaderName, "{name:?}");
        }
    }

    #[test]
    fn control_bytes_in_header_values_are_rejected() {
        for value in [&b"a\x00b"[..], b"a\x01b", b"a\x1fb", b"a\x7fb", b"a\x0bb"] {
            let mut req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: ".to_vec();
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n\r\n");
            assert_eq!(err(&req), ProtoError::InvalidHeaderValue, "{value:?}");
        }
    }

    // --- Host ---

    #[test]
    fn http_1_1_request_without_host_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n"),
            ProtoError::MissingHost
        );
    }

    #[test]
    fn request_with_two_hosts_is_rejected() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            ProtoError::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"),
            ProtoError::DuplicateHost
        );
    }

    #[test]
    fn invalid_host_value_is_rejected() {
        for v in ["a b", "a/b", "user@a", "a:80x", "[::1", "[::1]x", "a:b:c"] {
            let req = format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
            assert_eq!(err(req.as_bytes()), ProtoError::InvalidHost, "{v}");
        }
    }

    #[test]
    fn valid_host_forms_are_accepted() {
        for v in [
            "",
            "example.com",
            "example.com:8080",
            "127.0.0.1:1",
            "[::1]:443",
            "[fe80::1]",
            "a-b_c.d:",
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: {v}\r\n\r\n");
            head(req.as_bytes());
        }
    }

    // --- Limits ---

    fn limits(request_line: usize, request_fields: usize, request_field_size: usize) -> Limits {
        Limits {
            request_line,
            request_fields,
            request_field_size,
            max_body: 1000,
        }
    }

    #[test]
    fn request_line_at_the_limit_is_accepted() {
        // "GET /aaaa HTTP/1.1" is 18 bytes.
        let req = b"GET /aaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(parse_head(req, &limits(18, 100, 8190)).unwrap().is_some());
        // With a CR in flight, the line may still be exactly at the limit.
        assert!(parse_head(&req[..19], &limits(18, 100, 8190))
            .unwrap()
            .is_none());
    }

    #[test]
    fn request_line_over_the_limit_is_414() {
        let req = b"GET /aaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_head(req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
    }

    #[test]
    fn request_line_over_the_limit_is_414_before_its_crlf_arrives() {
        let req = b"GET /aaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_head(req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
        assert!(parse_head(&req[..18], &limits(18, 100, 8190))
            .unwrap()
            .is_none());
    }

    #[test]
    fn endless_empty_lines_count_against_the_request_line_limit() {
        let req = b"\r\n".repeat(10);
        assert_eq!(
            parse_head(&req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
    }

    #[test]
    fn header_count_at_the_limit_is_accepted() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        assert!(parse_head(req, &limits(100, 2, 100)).unwrap().is_some());
    }

    #[test]
    fn too_many_headers_is_431() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\n\r\n";
        assert_eq!(
            parse_head(req, &limits(100, 2, 100)).unwrap_err(),
            ProtoError::TooManyHeaders
        );
    }

    #[test]
    fn too_many_headers_is_431_before_the_head_ends() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nX";
        assert_eq!(
            parse_head(req, &limits(100, 2, 100)).unwrap_err(),
            ProtoError::TooManyHeaders
        );
    }

    #[test]
    fn header_line_at_the_limit_is_accepted() {
        // "X-A: 12345" is 10 bytes.
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 12345\r\n\r\n";
        assert!(parse_head(req, &limits(100, 100, 10)).unwrap().is_some());
    }

    #[test]
    fn header_line_over_the_limit_is_431() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 123456\r\n\r\n";
        assert_eq!(
            parse_head(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::HeaderTooLarge
        );
    }

    #[test]
    fn header_line_over_the_limit_is_431_before_its_crlf_arrives() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 123456";
        assert_eq!(
            parse_head(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::HeaderTooLarge
        );
        assert!(parse_head(&req[..req.len() - 1], &limits(100, 100, 10))
            .unwrap()
            .is_none());
    }

    #[test]
    fn default_limits_are_gunicorns() {
        let l = Limits::default();
        assert_eq!(
            (l.request_line, l.request_fields, l.request_field_size),
            (4094, 100, 8190)
        );
        assert_eq!(l.max_body, u64::MAX);
    }

    #[test]
    fn every_prefix_of_a_valid_request_needs_more_bytes() {
        let req = b"\r\nPOST /upload?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-A:\tb \r\n\r\n";
        for end in 0..req.len() {
            assert!(
                parse(&req[..end]).unwrap().is_none(),
                "prefix of {end} bytes"
            );
        }
        assert_eq!(parse(req).unwrap().unwrap().1, req.len());
    }

    // --- Content-Length ---

    #[test]
    fn content_length_frames_the_body() {
        assert_eq!(
            head(&get_with("Content-Length: 42\r\n")).body,
            BodyFraming::Length(42)
        );
        assert_eq!(
            head(&get_with("Content-Length: 0042\r\n")).body,
            BodyFraming::Length(42)
        );
    }

    #[test]
    fn zero_content_length_means_no_body() {
        assert_eq!(
            head(&get_with("Content-Length: 0\r\n")).body,
            BodyFraming::Empty
        );
    }

    #[test]
    fn identical_repeated_content_lengths_are_accepted() {
        assert_eq!(
            head(&get_with("Content-Length: 5\r\ncontent-length: 5\r\n")).body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            head(&get_with("Content-Length: 5, 5\r\n")).body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            head(&get_with("Content-Length: 5,5,5\r\n")).body,
            BodyFraming::Length(5)
        );
    }

    #[test]
    fn differing_content_lengths_are_rejected() {
        assert_eq!(
            err(&get_with("Content-Length: 5\r\nContent-Length: 6\r\n")),
            ProtoError::ConflictingContentLength
        );
        assert_eq!(
            err(&get_with("Content-Length: 5, 6\r\n")),
            ProtoError::ConflictingContentLength
        );
    }

    #[test]
    fn content_length_that_is_not_digits_is_rejected() {
        for v in [
            "", "+5", "-1", "0x5", "5a", "5 5", "5.0", "five", "5,", ",5", "5,,5", "\"5\"",
        ] {
            let req = get_with(&format!("Content-Length: {v}\r\n"));
            assert_eq!(err(&req), ProtoError::InvalidContentLength, "{v:?}");
        }
    }

    #[test]
    fn content_length_that_overflows_is_rejected() {
        assert_eq!(
            err(&get_with("Content-Length: 18446744073709551616\r\n")),
            ProtoError::InvalidContentLength
        );
        assert_eq!(
            err(&get_with("Content-Length: 99999999999999999999999999\r\n")),
            ProtoError::InvalidContentLength
        );
    }

    #[test]
    fn content_length_over_the_body_limit_is_413() {
        let req = get_with("Content-Length: 1001\r\n");
        assert_eq!(
            parse_head(&req, &limits(100, 100, 100)).unwrap_err(),
            ProtoError::BodyTooLarge
        );
        let req = get_with("Content-Length: 1000\r\n");
        assert!(parse_head(&req, &limits(100, 100, 100)).unwrap().is_some());
    }

    // --- Transfer-Encoding ---

    #[test]
    fn final_chunked_frames_the_body() {
        assert_eq!(
            head(&get_with("Transfer-Encoding: chunked\r\n")).body,
            BodyFraming::Chunked
        );
        assert_eq!(
            head(&get_with("Transfer-Encoding: Chunked\r\n")).body,
            BodyFraming::Chunked
        );
        assert_eq!(
            head(&get_with("Transfer-Encoding: chunked , \r\n")).body,
            BodyFraming::Chunked
        );
    }

    #[test]
    fn content_length_with_transfer_encoding_is_rejected() {
        assert_eq!(
            err(&get_with(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"
            )),
            ProtoError::ContentLengthWithTransferEncoding
        );
        assert_eq!(
            err(&get_with(
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"
            )),
            ProtoError::ContentLengthWithTransferEncoding
        );
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_is_rejected() {
        for v in ["chunked, gzip", "identity", "gzip", "", "chunked, identity"] {
            let req = get_with(&format!("Transfer-Encoding: {v}\r\n"));
            assert_eq!(err(&req), ProtoError::ChunkedNotFinal, "{v:?}");
        }
        assert_eq!(
            err(&get_with(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n"
            )),
            ProtoError::ChunkedNotFinal
        );
    }

    #[test]
    fn chunked_applied_twice_is_rejected() {
        assert_eq!(
            err(&get_with("Transfer-Encoding: chunked, chunked\r\n")),
            ProtoError::ChunkedTwice
        );
        assert_eq!(
            err(&get_with(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
            )),
            ProtoError::ChunkedTwice
        );
    }

    #[test]
    fn unsupported_coding_before_chunked_is_501() {
        assert_eq!(
            err(&get_with("Transfer-Encoding: gzip, chunked\r\n")),
            ProtoError::UnsupportedTransferCoding
        );
        assert_eq!(
            err(&get_with(
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"
            )),
            ProtoError::UnsupportedTransferCoding
        );
        assert_eq!(
            err(&get_with("Transfer-Encoding: gzip;level=1, chunked\r\n")),
            ProtoError::UnsupportedTransferCoding
        );
    }

    #[test]
    fn transfer_encoding_element_that_is_not_a_coding_is_rejected() {
        for v in ["\"chunked\"", "chunked;x=1", "ch unked", "gz(ip), chunked"] {
            let req = get_with(&format!("Transfer-Encoding: {v}\r\n"));
            assert_eq!(err(&req), ProtoError::InvalidTransferEncoding, "{v:?}");
        }
    }

    #[test]
    fn transfer_encoding_on_http_1_0_is_rejected() {
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ProtoError::TransferEncodingOnHttp10
        );
        assert_eq!(
            err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            ProtoError::TransferEncodingOnHttp10
        );
    }

    // --- Expect ---

    #[test]
    fn expect_100_continue_is_flagged_on_http_1_1() {
        assert!(head(&get_with("Expect: 100-continue\r\n")).expect_continue);
        assert!(head(&get_with("Expect: 100-Continue\r\n")).expect_continue);
    }

    #[test]
    fn expect_100_continue_is_ignored_on_http_1_0() {
        let h = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue);
    }

    #[test]
    fn other_expectations_are_417() {
        assert_eq!(
            err(&get_with("Expect: 200-ok\r\n")),
            ProtoError::ExpectationFailed
        );
        assert_eq!(
            err(&get_with("Expect: 100-continue, foo=bar\r\n")),
            ProtoError::ExpectationFailed
        );
    }

    // --- Persistence ---

    #[test]
    fn http_1_1_keeps_alive_unless_connection_close() {
        assert!(head(&get_with("")).keep_alive);
        assert!(!head(&get_with("Connection: close\r\n")).keep_alive);
        assert!(!head(&get_with("Connection: CLOSE\r\n")).keep_alive);
        assert!(!head(&get_with("Connection: Upgrade, close\r\n")).keep_alive);
        assert!(!head(&get_with("Connection: keep-alive\r\nConnection: close\r\n")).keep_alive);
        assert!(head(&get_with("Connection: keep-alive, Upgrade\r\n")).keep_alive);
    }

    #[test]
    fn http_1_0_keeps_alive_only_with_connection_keep_alive() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive, Upgrade\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn version_is_spelled_as_asgi_wants() {
        assert_eq!(Version::Http10.as_str(), "1.0");
        assert_eq!(Version::Http11.as_str(), "1.1");
    }
}
