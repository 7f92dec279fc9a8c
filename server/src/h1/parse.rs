//! Request heads: the request line and header section of RFC 9112 §2–§6,
//! parsed from a byte buffer into a [`RequestHead`] that says how the body is
//! framed and whether the connection stays open.
//!
//! [`parse_head`] works in three steps:
//!
//! 1. A strict pre-scan (`scan_head`) walks the head line by line with
//!    `grammar::find_crlf`: it skips empty lines before the request line,
//!    requires every line to end in CRLF, enforces the [`Limits`] on the
//!    request line, on each field line and on the number of fields (also on a
//!    line whose CRLF has not arrived yet), and finds where the head ends.
//! 2. [`httparse`] tokenizes the lines the pre-scan passed: method, target,
//!    version and each field's name and value, each checked against its
//!    character class (`tchar` for method and field names, visible bytes for
//!    the target, `field-vchar`, SP and HTAB for values; a line starting with
//!    whitespace or with whitespace before its colon is refused).
//! 3. Semantic checks on those pieces: target form and bytes, CONNECT, Host,
//!    Content-Length and Transfer-Encoding framing, Expect and persistence.
//!
//! httparse alone is not enough, for three reasons. It accepts a bare LF as a
//! line ending (RFC 9112 §2.2 lets a recipient do so, but a peer that disagrees
//! about where a line ends is how requests get smuggled past a proxy), so the
//! pre-scan refuses bare LF and bare CR before httparse sees a byte. It cannot
//! report the length of an unfinished line (it only says "partial"), so a
//! client could make us buffer an endless request line or field line; the
//! pre-scan answers those with 414 and 431 as soon as a line passes its limit.
//! And its errors name the rule that failed but not where ("invalid token"
//! covers the method, a doubled space and a bad target byte alike), so when it
//! refuses a line that line is examined again with the grammar rules to find
//! the specific [`ProtoError`] (a bad method or a doubled space, 505 or 400
//! for the version, obs-fold or whitespace before the colon, ...).
//!
//! Errors come in the order of the bytes: whatever is wrong with an earlier
//! line is reported before what is wrong with a later one, whichever step
//! finds it, and the request line is checked in full (target form included)
//! before any field line.
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

impl Default for RequestHead {
    /// An empty head, to be filled by [`parse_head_into`].
    fn default() -> Self {
        RequestHead {
            method: String::new(),
            target: Vec::new(),
            path: Vec::new(),
            query: Vec::new(),
            version: Version::Http11,
            headers: Vec::new(),
            body: BodyFraming::Empty,
            keep_alive: true,
            expect_continue: false,
        }
    }
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
    let mut head = RequestHead::default();
    Ok(parse_head_into(buf, limits, &mut head)?.map(|n| (head, n)))
}

/// [`parse_head`] into an existing head, reusing its allocations (a
/// connection keeps one head for all its requests). `Ok(Some(n))`: `head`
/// holds the request whose head was the first `n` bytes; otherwise `head`
/// may have been partly overwritten and means nothing.
pub fn parse_head_into(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Option<usize>, ProtoError> {
    let scan = scan_head(buf, limits);
    let Some(line_end) = scan.line_end else {
        // Nothing for httparse yet: the request line is incomplete, or the
        // pre-scan refused it.
        return scan.stop.need_more_or_refuse();
    };

    // One slot per field line the pre-scan passed, so httparse never runs out
    // (its `TooManyHeaders` would lose the 431's place in the byte order).
    // Most requests fit on the stack.
    let mut inline = [httparse::EMPTY_HEADER; INLINE_FIELDS];
    let mut spilled;
    let slots: &mut [httparse::Header<'_>] = if scan.fields <= INLINE_FIELDS {
        &mut inline[..scan.fields]
    } else {
        spilled = vec![httparse::EMPTY_HEADER; scan.fields];
        &mut spilled
    };
    let mut request = httparse::Request::new(slots);
    // Only the lines the pre-scan passed: all complete, all CRLF-terminated.
    let parsed = request.parse(&buf[..scan.clean]);

    let request_line = &buf[scan.line_start..line_end];
    if let Err(e) = parsed {
        if in_request_line(e) {
            return Err(request_line_error(request_line, e));
        }
    }
    // httparse is past the request line, so it has filled in all three.
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(request_line_error(request_line, httparse::Error::Token));
    };
    let line = check_request_line(method.as_bytes(), target.as_bytes(), minor)?;

    match parsed {
        Err(e) => Err(field_error(&buf[line_end + 2..scan.clean], e)),
        Ok(httparse::Status::Partial) => {
            debug_assert!(!matches!(scan.stop, Stop::HeadEnd), "httparse disagrees");
            scan.stop.need_more_or_refuse()
        }
        Ok(httparse::Status::Complete(n)) => {
            debug_assert_eq!(n, scan.clean, "httparse disagrees about the head's end");
            interpret(line, &*request.headers, limits, head)?;
            Ok(Some(n))
        }
    }
}

/// Header slots on the stack; more fields than this (rare: browsers send
/// about a dozen) go to a `Vec`. 32 slots of 32 bytes are 1 KiB of stack.
const INLINE_FIELDS: usize = 32;

/// What the pre-scan found: how much of the buffer is complete lines that
/// may go to httparse, and why it stopped there.
struct Scan {
    /// Where the request line starts, after any empty lines before it.
    line_start: usize,
    /// Where the request line's CRLF starts; `None` until a request line
    /// within the limit has arrived.
    line_end: Option<usize>,
    /// How many field lines lie before `clean`.
    fields: usize,
    /// Length of the prefix of `buf` made of complete, CRLF-terminated lines
    /// within the limits, the request line included once `line_end` is set.
    clean: usize,
    /// Why the scan stopped at `clean`.
    stop: Stop,
}

/// Why the pre-scan stopped.
enum Stop {
    /// The line at `clean` has not ended yet and is within the limits so far.
    NeedMore,
    /// The empty line ending the head was the last line before `clean`.
    HeadEnd,
    /// The line at `clean` breaks a rule of the pre-scan. An error httparse
    /// finds in an earlier line comes first.
    Refused(ProtoError),
}

impl Stop {
    /// `Ok(None)` for [`Stop::NeedMore`], the error for [`Stop::Refused`].
    fn need_more_or_refuse(self) -> Result<Option<usize>, ProtoError> {
        match self {
            Stop::Refused(e) => Err(e),
            Stop::NeedMore | Stop::HeadEnd => Ok(None),
        }
    }
}

/// The strict pre-scan of the head in `buf`: line endings, line lengths and
/// the field count, up to the end of the head or the first line that is
/// incomplete or breaks a rule.
fn scan_head(buf: &[u8], limits: &Limits) -> Scan {
    // RFC 9112 §2.2: "In the interest of robustness, a server that is
    // expecting to receive and parse a request-line SHOULD ignore at least one
    // empty line (CRLF) received prior to the request-line." Their bytes count
    // against the request-line limit, so a stream of CRLFs is bounded too.
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let mut scan = Scan {
        line_start: start,
        line_end: None,
        fields: 0,
        clean: start,
        stop: Stop::NeedMore,
    };
    if let Err(e) = scan.walk(buf, limits) {
        scan.stop = Stop::Refused(e);
    }
    scan
}

impl Scan {
    /// Advances `clean` over the complete lines of `buf` that keep the rules;
    /// the error is for the line at `clean`.
    fn walk(&mut self, buf: &[u8], limits: &Limits) -> Result<(), ProtoError> {
        let Some(line_end) = find_crlf(buf, self.line_start)? else {
            return check_partial_request_line(buf, self.line_start, limits);
        };
        if line_end > limits.request_line {
            return Err(ProtoError::RequestLineTooLong);
        }
        self.line_end = Some(line_end);
        self.clean = line_end + 2;

        // RFC 9112 §2.1:
        //   HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
        loop {
            let pos = self.clean;
            let Some(end) = find_crlf(buf, pos)? else {
                let partial = strip_cr(&buf[pos..]);
                if partial.is_empty() {
                    return Ok(());
                }
                return check_field_limits(self.fields, partial.len(), limits);
            };
            if end == pos {
                self.clean = pos + 2;
                self.stop = Stop::HeadEnd;
                return Ok(());
            }
            check_field_limits(self.fields, end - pos, limits)?;
            self.fields += 1;
            self.clean = end + 2;
        }
    }
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
    /// The authority of an absolute-form target (`host[:port]`).
    authority: Option<&'a [u8]>,
    version: Version,
}

/// The checks on a request line httparse accepted (`method SP request-target
/// SP HTTP-version` with a token method, visible or non-ASCII target bytes and
/// `HTTP/1.<minor>`) that httparse does not make: target bytes and form, and
/// CONNECT.
fn check_request_line<'a>(
    method: &'a [u8],
    target: &'a [u8],
    minor: u8,
) -> Result<RequestLine<'a>, ProtoError> {
    // httparse accepts exactly `HTTP/1.0` and `HTTP/1.1`.
    let version = if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    // httparse lets `#` and UTF-8 through.
    check_target_bytes(target)?;
    // RFC 9110 §9.1: "An origin server that receives a request method that is
    // unrecognized or not implemented SHOULD respond with the 501 (Not
    // Implemented) status code." CONNECT asks for a tunnel, which only proxies
    // provide. (405 would need an Allow header listing the application's
    // methods, which we do not know.)
    if method == b"CONNECT" {
        return Err(ProtoError::MethodNotImplemented);
    }
    let (path, query, authority) = split_target(method, target)?;
    Ok(RequestLine {
        method,
        target,
        path,
        query,
        authority,
        version,
    })
}

/// Whether httparse reports `e` for the request line (else for a field
/// line). Of its `NewLine` errors only the one after the version can reach
/// us: the pre-scan has refused a CR without LF everywhere else.
fn in_request_line(e: httparse::Error) -> bool {
    use httparse::Error as E;
    match e {
        E::Token | E::Version | E::NewLine | E::Status => true,
        E::HeaderName | E::HeaderValue | E::TooManyHeaders => false,
    }
}

/// Why httparse refused `line` (the request line, without CRLF), as the most
/// specific [`ProtoError`]. httparse's error names the rule but not the place,
/// and a bad line can mislead it (a space inside the target makes it read the
/// rest as the version), so the line is split the way RFC 9112 §3 reads it:
///
/// ```text
/// request-line = method SP request-target SP HTTP-version
/// ```
///
/// "Recipients of an invalid request-line SHOULD respond with either a 400
/// (Bad Request) error or a 301 (Moved Permanently) redirect"; we never guess
/// at word boundaries (which §3 also allows), so exactly two SPs: the method
/// ends at the first, the version starts after the last.
fn request_line_error(line: &[u8], e: httparse::Error) -> ProtoError {
    use httparse::Error as E;
    let Some(sp1) = line.iter().position(|&b| b == b' ') else {
        return ProtoError::MalformedRequestLine;
    };
    // RFC 9110 §9.1: "method = token".
    if !is_token(&line[..sp1]) {
        return ProtoError::InvalidMethod;
    }
    let Some(sp2) = line[sp1 + 1..].iter().rposition(|&b| b == b' ') else {
        return ProtoError::MalformedRequestLine;
    };
    let sp2 = sp1 + 1 + sp2;
    if let Err(version_error) = parse_version(&line[sp2 + 1..]) {
        return version_error;
    }
    if let Err(target_error) = check_target_bytes(&line[sp1 + 1..sp2]) {
        return target_error;
    }
    // Not reached: a line that passes all of the above is one httparse
    // accepts. Fall back on what httparse said.
    match e {
        E::Version | E::NewLine => ProtoError::MalformedVersion,
        E::Token | E::Status | E::HeaderName | E::HeaderValue | E::TooManyHeaders => {
            ProtoError::MalformedRequestLine
        }
    }
}

/// Why httparse refused one of the field lines in `lines` (complete lines, each
/// ending in CRLF), as the most specific [`ProtoError`]: the first line that
/// the grammar's field-line rules refuse says what is wrong (obs-fold,
/// whitespace before the colon, no colon, bad name, bad value byte).
fn field_error(lines: &[u8], e: httparse::Error) -> ProtoError {
    use httparse::Error as E;
    let mut pos = 0;
    while let Ok(Some(end)) = find_crlf(lines, pos) {
        if let Err(line_error) = parse_field_line(&lines[pos..end]) {
            return line_error;
        }
        pos = end + 2;
    }
    // Not reached: the grammar refuses every field line httparse refuses.
    match e {
        E::TooManyHeaders => ProtoError::TooManyHeaders,
        E::HeaderValue => ProtoError::InvalidHeaderValue,
        E::HeaderName | E::NewLine | E::Token | E::Version | E::Status => {
            ProtoError::InvalidHeaderName
        }
    }
}

/// RFC 9112 §2.3:
///
/// ```text
/// HTTP-version = HTTP-name "/" DIGIT "." DIGIT
/// HTTP-name    = %s"HTTP"
/// ```
///
/// Well-formed versions other than 1.0 and 1.1 are refused with 505, others
/// with 400. httparse only says "invalid HTTP version" for both.
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
            b' ' => return Err(ProtoError::InvalidTarget("contains a space")),
            _ => return Err(ProtoError::InvalidTarget("contains a control byte")),
        }
    }
    Ok(())
}

/// A request-target's path, query and (absolute-form only) authority.
type TargetParts<'a> = (&'a [u8], &'a [u8], Option<&'a [u8]>);

/// Splits a request-target into path, query and (for absolute-form) authority
/// by its form (RFC 9112 §3.2):
///
/// ```text
/// request-target = origin-form / absolute-form / authority-form / asterisk-form
/// origin-form    = absolute-path [ "?" query ]
/// absolute-form  = absolute-URI
/// asterisk-form  = "*"
/// ```
///
/// authority-form is only for CONNECT, refused before this is called.
fn split_target<'a>(method: &[u8], target: &'a [u8]) -> Result<TargetParts<'a>, ProtoError> {
    if target.starts_with(b"/") {
        let (path, query) = split_query(target);
        return Ok((path, query, None));
    }
    // RFC 9112 §3.2.4: "The "asterisk" form of request-target is only used
    // for a server-wide OPTIONS request".
    if target == b"*" {
        if method == b"OPTIONS" {
            return Ok((target, b"", None));
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
    Ok((path, query, Some(authority)))
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
    fields: &[httparse::Header<'_>],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<(), ProtoError> {
    let version = line.version;
    let mut hosts = 0usize;
    let mut host_ok = true;
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut codings: Vec<&[u8]> = Vec::new();
    let (mut close, mut keep_alive_token) = (false, false);
    let mut expect_continue = false;

    for field in fields {
        let (name, value) = (field.name.as_bytes(), field.value);
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

    // Copied into the head's existing buffers: after the first request of a
    // connection, parsing allocates only for a longer field than before.
    fn set(to: &mut Vec<u8>, from: &[u8]) {
        to.clear();
        to.extend_from_slice(from);
    }
    head.method.clear();
    // A method is a token, so ASCII (httparse checked); mapping each byte
    // to a char is only a fallback that cannot fail.
    match std::str::from_utf8(line.method) {
        Ok(m) => head.method.push_str(m),
        Err(_) => head
            .method
            .extend(line.method.iter().map(|&b| char::from(b))),
    }
    set(&mut head.target, line.target);
    set(&mut head.path, line.path);
    set(&mut head.query, line.query);
    head.version = version;
    // RFC 9112 §3.2.2: "When an origin server receives a request with an
    // absolute-form of request-target, the origin server MUST ignore the
    // received Host header field (if any) and instead use the host
    // information of the request-target." The Host field was still checked
    // above: §3.2 requires it on HTTP/1.1 and refuses an invalid one, "even
    // if the request-target is in the absolute-form". The host the
    // application sees is the target's: it replaces the Host field's value,
    // or is added as the last field when there was none (HTTP/1.0).
    let added_host = line.authority.filter(|_| hosts == 0);
    let count = fields.len() + usize::from(added_host.is_some());
    head.headers.truncate(count);
    while head.headers.len() < count {
        head.headers.push((Vec::new(), Vec::new()));
    }
    for (field, (name, value)) in fields.iter().zip(head.headers.iter_mut()) {
        set(name, field.name.as_bytes());
        name.make_ascii_lowercase();
        match line.authority {
            Some(authority) if name == b"host" => set(value, authority),
            _ => set(value, field.value),
        }
    }
    if let Some(authority) = added_host {
        let (name, value) = &mut head.headers[count - 1];
        set(name, b"host");
        set(value, authority);
    }
    head.body = body;
    head.keep_alive = keep_alive;
    head.expect_continue = expect_continue;
    Ok(())
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
    fn a_reused_head_holds_exactly_the_next_request() {
        let limits = Limits::default();
        let mut reused = RequestHead::default();
        let requests: [&[u8]; 3] = [
            b"POST /first/long/path?q=1 HTTP/1.1\r\nHost: a\r\nX-One: 1\r\nX-Two: 2\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
            b"GET /b HTTP/1.0\r\nUser-Agent: t\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nHOST: c\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for req in requests {
            let n = parse_head_into(req, &limits, &mut reused).unwrap().unwrap();
            let fresh = head(req);
            assert_eq!(n, req.len());
            assert_eq!(
                (&reused.method, &reused.target, &reused.path, &reused.query),
                (&fresh.method, &fresh.target, &fresh.path, &fresh.query)
            );
            assert_eq!(reused.headers, fresh.headers);
            assert_eq!(
                (
                    reused.version,
                    reused.body,
                    reused.keep_alive,
                    reused.expect_continue
                ),
                (
                    fresh.version,
                    fresh.body,
                    fresh.keep_alive,
                    fresh.expect_continue
                )
            );
        }
        assert_eq!(reused.headers[0], (b"host".to_vec(), b"c".to_vec()));
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
    fn junk_after_the_version_is_400() {
        for line in [
            &b"GET / HTTP/1.1x"[..],
            b"GET / HTTP/1.1 ",
            b"GET / HTTP/1.1\t",
        ] {
            let mut req = line.to_vec();
            req.extend_from_slice(b"\r\nHost: a\r\n\r\n");
            assert_eq!(err(&req), ProtoError::MalformedVersion, "{line:?}");
        }
    }

    #[test]
    fn a_space_inside_the_target_is_named_as_such() {
        // httparse reads "b HTTP/1.1" as the version here, and sees an empty
        // target after a doubled SP; either way the target is at fault.
        for req in [
            &b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(
                err(req),
                ProtoError::InvalidTarget("contains a space"),
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
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

    #[test]
    fn more_fields_than_fit_on_the_stack_are_all_kept_in_order() {
        let names: Vec<String> = (0..2 * INLINE_FIELDS).map(|i| format!("x-{i}")).collect();
        let fields: String = names.iter().map(|n| format!("{n}: v\r\n")).collect();
        let h = head(&get_with(&fields));
        let got: Vec<&[u8]> = h.headers[1..].iter().map(|(n, _)| n.as_slice()).collect();
        let want: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_bad_line_is_refused_before_the_head_ends() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX A: b\r\n"),
            ProtoError::InvalidHeaderName
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n  b\r\nX-"),
            ProtoError::ObsFold
        );
        assert!(matches!(
            err(b"GET a/b HTTP/1.1\r\nHo"),
            ProtoError::InvalidTarget(_)
        ));
        assert_eq!(err(b"GET / HTTP/1.2\r\n"), ProtoError::UnsupportedVersion);
    }

    #[test]
    fn errors_are_reported_in_the_order_of_the_bytes() {
        // The request line (target form included) before any field line.
        assert!(matches!(
            err(b"GET a/b HTTP/1.1\r\nX A: b\r\n\r\n"),
            ProtoError::InvalidTarget(_)
        ));
        assert_eq!(
            err(b"CONNECT a:1 HTTP/1.1\r\nHost: a\nX: b\r\n\r\n"),
            ProtoError::MethodNotImplemented
        );
        // An earlier bad field line before a later bare LF, bare CR or limit.
        assert_eq!(
            err(&get_with("X A: b\r\nX: y\n")),
            ProtoError::InvalidHeaderName
        );
        assert_eq!(
            err(&get_with("X: \x01\r\nX: y\rz\r\n")),
            ProtoError::InvalidHeaderValue
        );
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\nX-Long: 123456789\r\n\r\n";
        assert_eq!(
            parse_head(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::WhitespaceBeforeColon
        );
        let req = b"GET / HTTP/1.1\r\nHost a\r\nX: 1\r\nX: 2\r\n\r\n";
        assert_eq!(
            parse_head(req, &limits(100, 2, 100)).unwrap_err(),
            ProtoError::HeaderWithoutColon
        );
        // And a bare LF before a later bad field line.
        assert_eq!(err(&get_with("X: y\nX A: b\r\n")), ProtoError::BareLf);
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

    // --- Absolute-form and Host ---

    #[test]
    fn absolute_form_target_replaces_the_host_field() {
        let h = head(
            b"GET http://example.com:8080/a HTTP/1.1\r\nX-A: 1\r\nHost: other\r\nX-B: 2\r\n\r\n",
        );
        let fields: Vec<(&[u8], &[u8])> = h
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            fields,
            [
                (&b"x-a"[..], &b"1"[..]),
                (b"host", b"example.com:8080"),
                (b"x-b", b"2")
            ]
        );
        // Also when the Host field was empty.
        let h = head(b"GET https://[::1]?q HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(h.headers, [(b"host".to_vec(), b"[::1]".to_vec())]);
    }

    #[test]
    fn absolute_form_target_adds_a_host_field_to_an_http_1_0_request() {
        let h = head(b"GET http://example.com/a HTTP/1.0\r\nX-A: 1\r\n\r\n");
        assert_eq!(
            h.headers,
            [
                (b"x-a".to_vec(), b"1".to_vec()),
                (b"host".to_vec(), b"example.com".to_vec())
            ]
        );
    }

    #[test]
    fn absolute_form_target_still_needs_one_valid_host_field() {
        // RFC 9112 §3.2.2: "A client MUST send a Host header field in an
        // HTTP/1.1 request even if the request-target is in the
        // absolute-form".
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\n\r\n"),
            ProtoError::MissingHost
        );
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            ProtoError::DuplicateHost
        );
        assert_eq!(
            err(b"GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n"),
            ProtoError::InvalidHost
        );
    }

    #[test]
    fn a_reused_head_gets_the_added_host_field_only_when_due() {
        let limits = Limits::default();
        let mut reused = RequestHead::default();
        let requests: [&[u8]; 3] = [
            b"GET http://a/ HTTP/1.0\r\nX-A: 1\r\nX-B: 2\r\nX-C: 3\r\n\r\n",
            b"GET http://b/ HTTP/1.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: c\r\n\r\n",
        ];
        for req in requests {
            parse_head_into(req, &limits, &mut reused).unwrap().unwrap();
            assert_eq!(reused.headers, head(req).headers);
        }
        assert_eq!(reused.headers, [(b"host".to_vec(), b"c".to_vec())]);
    }
}
