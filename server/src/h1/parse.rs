//! Request heads: the request line and header section of RFC 9112 §2–§6,
//! parsed from a byte buffer into a [`RequestHead`] that says how the body is
//! framed and whether the connection stays open.
//!
//! [`HeadParser`] reads a head incrementally. The connection calls
//! [`HeadParser::parse`] with all unconsumed input after every socket read;
//! the parser remembers how far it got (where the request line starts and
//! ends, where the line being read starts, how far into that line it has
//! looked, how many field lines there were) and examines only what is new,
//! so a head costs time linear in its length however it is split into reads
//! (a head sent one byte at a time too). It works in three steps:
//!
//! 1. As bytes arrive, a strict scan walks the head line by line: it skips
//!    empty lines before the request line, requires every line to end in
//!    CRLF (a bare LF or bare CR is refused at once), and enforces the
//!    [`Limits`] on the whole head, on the request line, on each field line
//!    and on the number of fields, also on a line whose CRLF has not arrived
//!    yet. The method's bytes are checked as they come, so a TLS handshake or
//!    other binary sent to this port is refused at its first byte.
//! 2. When a line completes it is checked once, in full: the request line by
//!    [`httparse`] and the grammar (method, target form and bytes, version,
//!    CONNECT), each field line by the grammar's field-line rule (`tchar`
//!    name, no whitespace before the colon or at the start of the line,
//!    `field-vchar`, SP and HTAB in the value), which refuses exactly the
//!    lines httparse refuses, with a more specific [`ProtoError`].
//! 3. When the empty line ending the head arrives, [`httparse`] tokenizes the
//!    whole head once, and the semantic checks run on its pieces: Host,
//!    Content-Length and Transfer-Encoding framing, Expect and persistence.
//!
//! httparse alone is not enough, for three reasons. It accepts a bare LF as a
//! line ending (RFC 9112 §2.2 lets a recipient do so, but a peer that disagrees
//! about where a line ends is how requests get smuggled past a proxy), so the
//! scan refuses bare LF and bare CR before httparse sees a byte. It cannot
//! report the length of an unfinished line (it only says "partial"), so a
//! client could make us buffer an endless request line or field line; the
//! scan answers those with 414 and 431 as soon as a line passes its limit.
//! And its errors name the rule that failed but not where ("invalid token"
//! covers the method, a doubled space and a bad target byte alike), so when it
//! refuses the request line that line is examined again with the grammar rules
//! to find the specific [`ProtoError`] (a bad method or a doubled space, 505 or
//! 400 for the version, ...).
//!
//! Errors come in the order of the bytes: the error reported is the one whose
//! byte arrives first, a line's syntax counting as arriving with its CRLF. So
//! the result does not depend on how the input was split into reads: a head
//! fed whole and fed one byte at a time gives the same head or the same
//! error. Within the request line, a bad method byte is refused when it
//! arrives, before anything later on the line; the rest of the line is
//! checked when its CRLF arrives, before any field line.
//!
//! [`parse_head`] and [`parse_head_into`] are the same parser used once on a
//! complete buffer, for callers that keep no state between reads (re-parsing
//! a growing head with them costs time quadratic in its length).

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
    /// Longest request head in bytes: the empty lines before the request
    /// line, the request line, the field lines, every CRLF and the empty line
    /// that ends the head. A longer head is refused with 431
    /// ([`ProtoError::HeadTooLarge`]) as soon as its bytes pass the limit.
    ///
    /// Default 32 KiB. The head becomes one `http.request` layer message
    /// (64 KiB by default) together with the first body chunk, and that
    /// message holds the path twice (decoded and raw) and 4 bytes of length
    /// prefixes per field, so it is larger than the head: under the default
    /// limits it is at most 37,268 bytes (`asgi::scope::max_request_scope_len`
    /// computes the bound), which leaves over 27 KiB of the message for the
    /// first body bytes. Without this limit the other limits allow heads of
    /// 800 KiB (100 fields of 8 KiB). Real heads are far smaller: browsers
    /// send 1 to 2 KiB, heavy cookies reach 8 to 16 KiB; nginx's default
    /// header buffers hold 32 KiB too (`large_client_header_buffers 4 8k`).
    pub request_head: usize,
    /// Largest request body in bytes; default `u64::MAX` (no limit).
    pub max_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            request_fields: 100,
            request_field_size: 8190,
            request_head: 32 * 1024,
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
///
/// This looks at all of `buf` on every call; a connection reading a head in
/// pieces uses a [`HeadParser`], which looks at each byte once.
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
    HeadParser::new().parse(buf, limits, head)
}

/// Reads request heads incrementally, looking at each byte of a head a
/// bounded number of times however the head is split into reads.
///
/// A connection keeps one for its life and, after every read, calls
/// [`HeadParser::parse`] with all its unconsumed input. Between calls the
/// input may only grow (bytes appended at the end, none consumed or
/// changed) until `parse` returns `Ok(Some(n))`; the parser then resets
/// itself, and the caller consumes the `n` bytes of the head and goes on
/// with the body. The next call starts the next head at the start of the
/// (new) unconsumed input. An error is final: the caller answers and closes
/// (calling again with the same input returns the same error).
///
/// ```
/// use ringway_server::h1::{HeadParser, Limits, RequestHead};
///
/// let (limits, mut parser, mut head) = (Limits::default(), HeadParser::new(), RequestHead::default());
/// let mut input = b"GET /a HTTP/1.1\r\nHo".to_vec();
/// assert_eq!(parser.parse(&input, &limits, &mut head), Ok(None));
/// input.extend_from_slice(b"st: x\r\n\r\nbody");
/// assert_eq!(parser.parse(&input, &limits, &mut head), Ok(Some(28)));
/// assert_eq!(head.path, b"/a");
/// ```
#[derive(Clone, Debug, Default)]
pub struct HeadParser {
    /// Where the request line starts: after the empty lines skipped before
    /// it. Only advances while `line_end` is `None`.
    line_start: usize,
    /// Where the request line's CRLF starts, once the request line has
    /// arrived and passed its checks; the lines after it are field lines.
    line_end: Option<usize>,
    /// Where the line being read starts; every line before it is complete
    /// and passed its checks. In `line_start ..= scanned`; equal to
    /// `line_start` while the request line is being read.
    pos: usize,
    /// How far the line being read has been looked at: `pos..scanned` holds
    /// no CR or LF. A CR whose LF has not arrived is not counted as looked
    /// at, so it is looked at again with the next byte.
    scanned: usize,
    /// Field lines before `pos`.
    fields: usize,
    /// A SP has ended the method, so the request line's further bytes are
    /// no longer checked as `tchar`s when they arrive.
    method_done: bool,
    /// Bytes examined since the parser was made (see [`HeadParser::work`]).
    work: u64,
}

impl HeadParser {
    /// A parser waiting for the first byte of a head.
    pub fn new() -> Self {
        HeadParser::default()
    }

    /// Forgets the head read so far: the next call starts a head at the
    /// start of its input. [`HeadParser::parse`] does this itself when it
    /// returns a head; call it only when dropping input another way.
    pub fn reset(&mut self) {
        *self = HeadParser {
            work: self.work,
            ..HeadParser::default()
        };
    }

    /// How many bytes this parser has examined since it was made, all heads
    /// together: each byte its scan looked at (a CR waiting for its LF
    /// counts again when the LF arrives), each byte of a line checked when
    /// the line completed, and each byte httparse tokenized at the end of a
    /// head. For tests and fuzzing: it stays a small multiple of the input
    /// however the input is split into reads.
    pub fn work(&self) -> u64 {
        self.work
    }

    /// Parses the head at the start of `buf`, all the unconsumed input
    /// (see the type's docs for what may change between calls).
    ///
    /// `Ok(None)`: the head is not complete yet; call again when more bytes
    /// have been appended. `Ok(Some(n))`: the first `n` bytes of `buf` were
    /// the head, any empty lines before it included, and `head` holds it
    /// (reusing its allocations); the body, framed by `head.body`, starts at
    /// `buf[n]`, and the parser has reset itself for the next head.
    ///
    /// Errors are final: send [`super::status_for`] and close.
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        head: &mut RequestHead,
    ) -> Result<Option<usize>, ProtoError> {
        debug_assert!(
            buf.len() >= self.scanned,
            "the input shrank between calls: reset the parser when consuming input"
        );
        if buf.len() < self.scanned {
            self.reset();
        }
        // RFC 9110 §5.4: "A server that receives a request header field
        // line, field value, or set of fields larger than it wishes to
        // process MUST respond with an appropriate 4xx (Client Error) status
        // code." No byte past the head limit is looked at: a head that has
        // not ended within it is refused, whatever those bytes hold.
        let within = &buf[..buf.len().min(limits.request_head)];
        let Some(end) = self.scan(within, limits)? else {
            if buf.len() > limits.request_head {
                return Err(ProtoError::HeadTooLarge);
            }
            return Ok(None);
        };
        let result = self.finish(&buf[..end], limits, head);
        self.reset();
        result.map(|()| Some(end))
    }

    /// Looks at the bytes of `buf` not looked at yet, line by line, checking
    /// each line when it completes. Returns the head's length once the empty
    /// line ending it has arrived.
    ///
    /// On error the state still points at the offending line, so the same
    /// input gives the same error again.
    fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtoError> {
        loop {
            let from = self.scanned;
            let found = buf[from..].iter().position(|&b| b == b'\r' || b == b'\n');
            // The new bytes of the line, before its CR or LF (if that came).
            let content_end = found.map_or(buf.len(), |at| from + at);
            self.work += (content_end - from) as u64 + u64::from(found.is_some());
            if self.line_end.is_none() {
                self.request_line_bytes(buf, content_end, limits)?;
            } else {
                self.field_line_bytes(content_end, limits)?;
            }
            self.scanned = content_end;
            let Some(&ending) = buf.get(content_end) else {
                return Ok(None);
            };

            // RFC 9112 §2.2 lets a recipient accept a bare LF as a line
            // terminator and requires it to treat a bare CR as invalid or as
            // SP; we refuse both (see `grammar::find_crlf`).
            if ending == b'\n' {
                return Err(ProtoError::BareLf);
            }
            match buf.get(content_end + 1) {
                None => return Ok(None),
                Some(b'\n') => {}
                Some(_) => return Err(ProtoError::BareCr),
            }
            self.work += 1;
            let next = content_end + 2;
            let line = &buf[self.pos..content_end];
            if self.line_end.is_none() {
                if line.is_empty() {
                    // RFC 9112 §2.2: "In the interest of robustness, a server
                    // that is expecting to receive and parse a request-line
                    // SHOULD ignore at least one empty line (CRLF) received
                    // prior to the request-line." Their bytes count against
                    // the request-line limit (`request_line_bytes` measures
                    // from the start of the input), so a stream of CRLFs is
                    // bounded.
                    self.line_start = next;
                } else {
                    self.work += (next - self.line_start) as u64;
                    check_request_line_alone(&buf[self.line_start..next])?;
                    self.line_end = Some(content_end);
                }
            } else if line.is_empty() {
                // RFC 9112 §2.1:
                //   HTTP-message = start-line CRLF *( field-line CRLF ) CRLF [ message-body ]
                return Ok(Some(next));
            } else {
                self.work += line.len() as u64;
                parse_field_line(line)?;
                self.fields += 1;
            }
            self.pos = next;
            self.scanned = next;
        }
    }

    /// Checks the request line's bytes `self.scanned..content_end` (none a
    /// CR or LF), in order: the length limit, and while the method lasts,
    /// that they are `tchar`s.
    fn request_line_bytes(
        &mut self,
        buf: &[u8],
        content_end: usize,
        limits: &Limits,
    ) -> Result<(), ProtoError> {
        if !self.method_done {
            // The method is the first thing on the line; a TLS handshake or
            // other binary sent to this port fails here at once rather than
            // at a timeout.
            for (i, &b) in buf.iter().enumerate().take(content_end).skip(self.scanned) {
                self.work += 1;
                if i >= limits.request_line {
                    return Err(ProtoError::RequestLineTooLong);
                }
                if b == b' ' {
                    self.method_done = true;
                    break;
                }
                if !is_tchar(b) {
                    return Err(ProtoError::InvalidMethod);
                }
            }
        }
        // The line so far, and the empty lines before it, end at
        // `content_end`.
        if content_end > limits.request_line {
            return Err(ProtoError::RequestLineTooLong);
        }
        Ok(())
    }

    /// Checks the limits on the field line being read, whose bytes so far
    /// end at `content_end`: it would be field number `fields + 1`.
    fn field_line_bytes(&self, content_end: usize, limits: &Limits) -> Result<(), ProtoError> {
        let len = content_end - self.pos;
        if len == 0 {
            // Nothing yet, or the empty line ending the head.
            return Ok(());
        }
        if self.fields >= limits.request_fields {
            return Err(ProtoError::TooManyHeaders);
        }
        if len > limits.request_field_size {
            return Err(ProtoError::HeaderTooLarge);
        }
        Ok(())
    }

    /// Tokenizes the complete head `buf` (every line of which passed its
    /// checks) with httparse, once, and interprets it into `head`.
    fn finish(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        head: &mut RequestHead,
    ) -> Result<(), ProtoError> {
        self.work += buf.len() as u64;
        let line_end = self.line_end.expect("a head ends after its request line");
        // One slot per field line, so httparse never runs out. Most requests
        // fit on the stack.
        let mut inline = [httparse::EMPTY_HEADER; INLINE_FIELDS];
        let mut spilled;
        let slots: &mut [httparse::Header<'_>] = if self.fields <= INLINE_FIELDS {
            &mut inline[..self.fields]
        } else {
            spilled = vec![httparse::EMPTY_HEADER; self.fields];
            &mut spilled
        };
        let mut request = httparse::Request::new(slots);
        let parsed = request.parse(buf);
        // Not reached: each line passed checks that refuse what httparse
        // refuses. Should httparse still disagree, its verdict stands, named
        // as specifically as the grammar can.
        let disagreement = match parsed {
            Ok(httparse::Status::Complete(n)) if n == buf.len() => None,
            Err(e) if in_request_line(e) => {
                Some(request_line_error(&buf[self.line_start..line_end], e))
            }
            Err(e) => Some(field_error(&buf[line_end + 2..], e)),
            Ok(_) => Some(field_error(&buf[line_end + 2..], httparse::Error::NewLine)),
        };
        if let Some(e) = disagreement {
            debug_assert!(false, "httparse disagrees with the line checks: {parsed:?}");
            return Err(e);
        }
        let (Some(method), Some(target), Some(minor)) =
            (request.method, request.path, request.version)
        else {
            unreachable!("httparse completed the head, so it read the request line");
        };
        let line = check_request_line(method.as_bytes(), target.as_bytes(), minor)?;
        interpret(line, &*request.headers, limits, head)
    }
}

/// Checks a complete request line (`line` ends with its CRLF) on its own, as
/// httparse and the grammar read it: method, target bytes and form, version,
/// CONNECT.
fn check_request_line_alone(line: &[u8]) -> Result<(), ProtoError> {
    let mut no_fields = [];
    let mut request = httparse::Request::new(&mut no_fields);
    // With nothing after the CRLF, httparse stops after the request line
    // (`Partial`: the header section has not started) or refuses it.
    let parsed = request.parse(line);
    let text = &line[..line.len() - 2];
    if let Err(e) = parsed {
        return Err(request_line_error(text, e));
    }
    let (Some(method), Some(target), Some(minor)) = (request.method, request.path, request.version)
    else {
        return Err(request_line_error(text, httparse::Error::Token));
    };
    check_request_line(method.as_bytes(), target.as_bytes(), minor).map(drop)
}

/// Header slots on the stack; more fields than this (rare: browsers send
/// about a dozen) go to a `Vec`. 32 slots of 32 bytes are 1 KiB of stack.
const INLINE_FIELDS: usize = 32;

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
/// us: the scan has refused a CR without LF everywhere else.
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
    use proptest::prelude::*;

    fn parse(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, ProtoError> {
        parse_with(buf, &Limits::default())
    }

    /// Parses `buf` fed whole (with [`parse_head`]) and fed to a
    /// [`HeadParser`] one byte at a time, as a client dribbling its head
    /// would; asserts that both give the same head or the same error, and
    /// returns it.
    fn parse_with(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, ProtoError> {
        let whole = parse_head(buf, limits);
        let dribbled = dribble(buf, limits).map(|r| r.map(|(head, n, _)| (head, n)));
        assert_eq!(
            format!("{whole:?}"),
            format!("{dribbled:?}"),
            "fed whole and fed byte by byte: {:?}",
            String::from_utf8_lossy(buf)
        );
        whole
    }

    /// Feeds `buf` to a new [`HeadParser`] one byte more per call until it
    /// returns a head or an error; the head comes with the parser's work.
    fn dribble(
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(RequestHead, usize, u64)>, ProtoError> {
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        for end in 0..=buf.len() {
            if let Some(n) = parser.parse(&buf[..end], limits, &mut head)? {
                return Ok(Some((head, n, parser.work())));
            }
        }
        Ok(None)
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
            parse_with(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::WhitespaceBeforeColon
        );
        let req = b"GET / HTTP/1.1\r\nHost a\r\nX: 1\r\nX: 2\r\n\r\n";
        assert_eq!(
            parse_with(req, &limits(100, 2, 100)).unwrap_err(),
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
            request_head: usize::MAX,
            max_body: 1000,
        }
    }

    #[test]
    fn request_line_at_the_limit_is_accepted() {
        // "GET /aaaa HTTP/1.1" is 18 bytes.
        let req = b"GET /aaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(parse_with(req, &limits(18, 100, 8190)).unwrap().is_some());
        // With a CR in flight, the line may still be exactly at the limit.
        assert!(parse_with(&req[..19], &limits(18, 100, 8190))
            .unwrap()
            .is_none());
    }

    #[test]
    fn request_line_over_the_limit_is_414() {
        let req = b"GET /aaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse_with(req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
    }

    #[test]
    fn request_line_over_the_limit_is_414_before_its_crlf_arrives() {
        let req = b"GET /aaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_with(req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
        assert!(parse_with(&req[..18], &limits(18, 100, 8190))
            .unwrap()
            .is_none());
    }

    #[test]
    fn endless_empty_lines_count_against_the_request_line_limit() {
        let req = b"\r\n".repeat(10);
        assert_eq!(
            parse_with(&req, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
    }

    #[test]
    fn header_count_at_the_limit_is_accepted() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        assert!(parse_with(req, &limits(100, 2, 100)).unwrap().is_some());
    }

    #[test]
    fn too_many_headers_is_431() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\n\r\n";
        assert_eq!(
            parse_with(req, &limits(100, 2, 100)).unwrap_err(),
            ProtoError::TooManyHeaders
        );
    }

    #[test]
    fn too_many_headers_is_431_before_the_head_ends() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nX";
        assert_eq!(
            parse_with(req, &limits(100, 2, 100)).unwrap_err(),
            ProtoError::TooManyHeaders
        );
    }

    #[test]
    fn header_line_at_the_limit_is_accepted() {
        // "X-A: 12345" is 10 bytes.
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 12345\r\n\r\n";
        assert!(parse_with(req, &limits(100, 100, 10)).unwrap().is_some());
    }

    #[test]
    fn header_line_over_the_limit_is_431() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 123456\r\n\r\n";
        assert_eq!(
            parse_with(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::HeaderTooLarge
        );
    }

    #[test]
    fn header_line_over_the_limit_is_431_before_its_crlf_arrives() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 123456";
        assert_eq!(
            parse_with(req, &limits(100, 100, 10)).unwrap_err(),
            ProtoError::HeaderTooLarge
        );
        assert!(parse_with(&req[..req.len() - 1], &limits(100, 100, 10))
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
            parse_with(&req, &limits(100, 100, 100)).unwrap_err(),
            ProtoError::BodyTooLarge
        );
        let req = get_with("Content-Length: 1000\r\n");
        assert!(parse_with(&req, &limits(100, 100, 100)).unwrap().is_some());
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

    // --- Reading a head incrementally ---

    /// A browser's head (8 KiB, 60 fields) as a proxy might pass it on:
    /// the usual fields, a large cookie and `x-pad-N` fields that bring it
    /// to size.
    fn realistic_head() -> Vec<u8> {
        const LEN: usize = 8 * 1024;
        let mut req = b"GET /api/v1/search?q=sans-io&page=2&sort=relevance HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/search?q=http+parsers\r\n\
Connection: keep-alive\r\n\
Upgrade-Insecure-Requests: 1\r\n\
Sec-Fetch-Dest: document\r\n"
            .to_vec();
        req.extend_from_slice(b"Cookie: session=");
        req.extend(std::iter::repeat_n(b'c', 2000));
        req.extend_from_slice(b"\r\n");
        // 50 more fields share the rest, less the final CRLF.
        let pads = 50;
        let room = LEN - req.len() - 2 - pads * b"x-pad-00: \r\n".len();
        for i in 0..pads {
            let value = room / pads + usize::from(i < room % pads);
            req.extend_from_slice(format!("x-pad-{i:02}: ").as_bytes());
            req.extend(std::iter::repeat_n(b'v', value));
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(req.len(), LEN);
        req
    }

    #[test]
    fn a_head_dribbled_one_byte_at_a_time_costs_linear_work() {
        let req = realistic_head();
        let limits = Limits::default();
        let (head, n, work) = dribble(&req, &limits).unwrap().unwrap();
        assert_eq!((head.headers.len(), n), (60, req.len()));
        // Each byte is looked at by the scan, by its line's check and by
        // httparse; a CR once more when its LF arrives: 24,520 for this head
        // (3.0 times its length).
        assert!(
            work <= 4 * req.len() as u64,
            "{work} bytes examined for a {}-byte head",
            req.len()
        );
        // Parsing the whole buffer afresh after every byte (what calling
        // `parse_head` after every read does) examines each byte once per
        // later call: 64,352,920 bytes here (7,855 times its length), quadratic.
        let mut scratch = RequestHead::default();
        let afresh: u64 = (1..=req.len())
            .map(|end| {
                let mut parser = HeadParser::new();
                let _ = parser.parse(&req[..end], &limits, &mut scratch);
                parser.work()
            })
            .sum();
        assert!(afresh > 1000 * req.len() as u64, "{afresh}");
    }

    #[test]
    fn a_parser_reads_pipelined_heads_one_after_another() {
        let limits = Limits::default();
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        let mut input = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.0\r\n\r\nGET /c".to_vec();
        let n = parser.parse(&input, &limits, &mut head).unwrap().unwrap();
        assert_eq!((n, head.path.as_slice()), (28, &b"/a"[..]));
        // The parser reset itself: the next head starts at the new start.
        input.drain(..n);
        let n = parser.parse(&input, &limits, &mut head).unwrap().unwrap();
        assert_eq!((n, head.path.as_slice()), (19, &b"/b"[..]));
        input.drain(..n);
        assert_eq!(parser.parse(&input, &limits, &mut head), Ok(None));
        input.extend_from_slice(b" HTTP/1.1\r\nHost: y\r\n\r\n");
        let n = parser.parse(&input, &limits, &mut head).unwrap().unwrap();
        assert_eq!((n, head.path.as_slice()), (input.len(), &b"/c"[..]));
    }

    #[test]
    fn a_parser_reset_by_hand_starts_a_new_head() {
        let limits = Limits::default();
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        assert_eq!(
            parser.parse(b"GET /a HTTP/1.1\r\nHo", &limits, &mut head),
            Ok(None)
        );
        parser.reset();
        let req = b"PUT /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(parser.parse(req, &limits, &mut head), Ok(Some(req.len())));
        assert_eq!(head.method, "PUT");
    }

    #[test]
    fn an_error_is_returned_again_on_the_next_call() {
        let limits = Limits::default();
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        let mut req = b"GET / HTTP/1.1\r\nX A: b\r\n".to_vec();
        let first = parser.parse(&req, &limits, &mut head);
        assert_eq!(first, Err(ProtoError::InvalidHeaderName));
        req.extend_from_slice(b"Host: a\r\n\r\n");
        assert_eq!(parser.parse(&req, &limits, &mut head), first);
    }

    #[test]
    fn binary_garbage_is_rejected_at_its_first_byte() {
        let mut parser = HeadParser::new();
        assert_eq!(
            parser.parse(b"\x16", &Limits::default(), &mut RequestHead::default()),
            Err(ProtoError::InvalidMethod)
        );
    }

    #[test]
    fn a_bad_method_byte_is_refused_before_the_rest_of_its_line() {
        // Whatever comes later on the line: the method's byte came first.
        assert_eq!(err(b"G(T\r\n\r\n"), ProtoError::InvalidMethod);
        assert_eq!(
            err(b"G(T / HTTP/1.1\nHost: a\r\n"),
            ProtoError::InvalidMethod
        );
        let long = b"G(T /aaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            parse_with(long, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::InvalidMethod
        );
        // And a line over its limit before a later bare LF.
        let long = b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaa\n";
        assert_eq!(
            parse_with(long, &limits(18, 100, 8190)).unwrap_err(),
            ProtoError::RequestLineTooLong
        );
    }

    // --- Total head size ---

    fn head_limit(request_head: usize) -> Limits {
        Limits {
            request_head,
            ..Limits::default()
        }
    }

    #[test]
    fn head_at_the_total_limit_is_accepted() {
        let req = get_with("X-A: 1\r\nX-B: 2\r\n");
        assert!(parse_with(&req, &head_limit(req.len())).unwrap().is_some());
        // With the final LF in flight, the head may still be at the limit.
        assert!(parse_with(&req[..req.len() - 1], &head_limit(req.len()))
            .unwrap()
            .is_none());
    }

    #[test]
    fn head_over_the_total_limit_is_431() {
        let req = get_with("X-A: 1\r\nX-B: 2\r\n");
        let e = parse_with(&req, &head_limit(req.len() - 1)).unwrap_err();
        assert_eq!(e, ProtoError::HeadTooLarge);
        assert_eq!(crate::h1::status_for(&e), Some(431));
    }

    #[test]
    fn head_over_the_total_limit_is_431_before_it_ends() {
        // Every field within its own limits, the head past the total.
        let req = get_with("X-A: 1\r\nX-B: 2\r\n");
        let limits = head_limit(30);
        assert_eq!(
            parse_with(&req[..31], &limits).unwrap_err(),
            ProtoError::HeadTooLarge
        );
        assert!(parse_with(&req[..30], &limits).unwrap().is_none());
    }

    #[test]
    fn bytes_after_a_head_within_the_limit_do_not_count_against_it() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n";
        let (_, n) = parse_with(req, &head_limit(27)).unwrap().unwrap();
        assert_eq!(n, 27);
    }

    #[test]
    fn empty_lines_before_the_request_line_count_against_the_head_limit() {
        let mut req = b"\r\n".repeat(3);
        req.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(parse_with(&req, &head_limit(req.len())).unwrap().is_some());
        assert_eq!(
            parse_with(&req, &head_limit(req.len() - 1)).unwrap_err(),
            ProtoError::HeadTooLarge
        );
    }

    #[test]
    fn default_head_limit_is_32_kib() {
        assert_eq!(Limits::default().request_head, 32 * 1024);
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

    // --- Properties ---

    /// Pieces that heads are made of, good and bad.
    fn head_piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::sample::select(vec![
                &b"GET"[..], b"POST", b"OPTIONS", b"CONNECT", b" ", b"/", b"/a?b", b"*",
                b"http://h:1/p", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"Host: a", b"Host:",
                b"X-A: b", b":", b"\t", b"#", b"\x00", b"\x16\x03", b"Content-Length: 5",
                b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Connection: close",
            ])
            .prop_map(<[u8]>::to_vec),
            4 => prop::sample::select(vec![&b"\r\n"[..], b"\r", b"\n"]).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 1..4),
            1 => prop::collection::vec(b'a'..=b'z', 1..20),
        ]
    }

    /// Limits from tiny to the defaults.
    fn some_limits() -> impl Strategy<Value = Limits> {
        (
            prop_oneof![Just(4094usize), 0usize..40],
            prop_oneof![Just(100usize), 0usize..4],
            prop_oneof![Just(8190usize), 0usize..30],
            prop_oneof![Just(32 * 1024usize), 0usize..120],
        )
            .prop_map(|(line, fields, field, head)| Limits {
                request_line: line,
                request_fields: fields,
                request_field_size: field,
                request_head: head,
                max_body: 1000,
            })
    }

    proptest! {
        #[test]
        fn a_head_parses_the_same_however_it_is_split(
            pieces in prop::collection::vec(head_piece(), 0..16),
            limits in some_limits(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        ) {
            let input = pieces.concat();
            let whole = format!("{:?}", parse_head(&input, &limits));
            let dribbled = format!("{:?}", dribble(&input, &limits).map(|r| r.map(|(h, n, _)| (h, n))));
            prop_assert_eq!(&whole, &dribbled);
            // Reads of any sizes.
            let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            ends.push(input.len());
            ends.sort_unstable();
            let mut parser = HeadParser::new();
            let mut head = RequestHead::default();
            let mut split = Ok(None);
            for end in ends {
                split = parser.parse(&input[..end], &limits, &mut head);
                if !matches!(split, Ok(None)) {
                    break;
                }
            }
            let split = format!("{:?}", split.map(|r| r.map(|n| (head, n))));
            prop_assert_eq!(&whole, &split);
        }

        #[test]
        fn the_field_line_check_refuses_exactly_what_httparse_refuses(
            line in prop::collection::vec(
                prop_oneof![
                    4 => b'a'..=b'c',
                    2 => prop::sample::select(vec![b':', b' ', b'\t', b'-']),
                    1 => any::<u8>().prop_filter("no line endings", |b| *b != b'\r' && *b != b'\n'),
                ],
                1..12,
            ),
        ) {
            // The line checks run the grammar, the end of the head httparse:
            // if they disagreed, a head would be refused by one and not the
            // other, depending on where its bytes were split.
            let mut block = line.clone();
            block.extend_from_slice(b"\r\n\r\n");
            let mut slots = [httparse::EMPTY_HEADER; 1];
            let by_httparse = httparse::parse_headers(&block, &mut slots);
            match parse_field_line(&line) {
                Ok((name, value)) => {
                    prop_assert!(by_httparse.is_ok(), "{:?}", by_httparse);
                    prop_assert_eq!((slots[0].name.as_bytes(), slots[0].value), (name, value));
                }
                Err(_) => prop_assert!(by_httparse.is_err(), "{:?}", by_httparse),
            }
        }
    }
}
