//! Responses: [`encode_head`] writes the status line and header section and
//! decides the body framing (RFC 9112 §4, §6, RFC 9110 §8.6);
//! [`encode_informational`] writes the application's 1xx responses;
//! [`BodyEncoder`] frames the body; [`error_response`] and [`CONTINUE`] are
//! canned responses; [`http_date`] formats the Date header.

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::ProtoError;
use super::grammar::{is_token, list_elements, parse_decimal, push_decimal, push_hex, trim_ows};
use super::parse::Version;

/// Header fields as the encoder reads them: `(name, value)` pairs in order,
/// readable more than once (they are validated, then written). Owned lists
/// implement it, and so does a view over a worker's message, so a response
/// head is written straight from the bytes that carried it.
pub trait Fields {
    /// The fields, in order.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
}

impl Fields for [(Vec<u8>, Vec<u8>)] {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

impl Fields for Vec<(Vec<u8>, Vec<u8>)> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.as_slice().fields()
    }
}

impl Fields for [(&[u8], &[u8])] {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().copied()
    }
}

/// `F` followed by one more field (the `content-length` the server adds
/// when it has the whole body).
pub struct WithField<'a, F: ?Sized> {
    /// The fields.
    pub fields: &'a F,
    /// The extra field, if any.
    pub extra: Option<(&'a [u8], &'a [u8])>,
}

impl<F: Fields + ?Sized> Fields for WithField<'_, F> {
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.fields().chain(self.extra)
    }
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `content-length: n`; exactly `n` bytes follow.
    Length(u64),
    /// `transfer-encoding: chunked`, possibly with trailer fields.
    Chunked,
    /// Neither (HTTP/1.0 without a length): the body ends when we close.
    CloseDelimited,
    /// No body may be sent (HEAD, 1xx, 204, 304); body bytes are dropped.
    NoBody,
}

/// The interim response for `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes the status line and header fields of a response to `out`.
///
/// - `status` must be in `100..=999`; the reason phrase comes from a table
///   (empty for unknown codes).
/// - `headers` come from the application, names in any case. A name that is
///   not a token, or a value containing CR, LF or NUL, is refused
///   ([`ProtoError::BadResponse`]): those would let the application's data
///   split or smuggle responses.
/// - Framing: 1xx, 204, 304 and responses to HEAD (`is_head`) carry no body
///   ([`ResponseFraming::NoBody`]); for HEAD and 304 a content-length from the
///   application is kept, for 1xx and 204 it is dropped. Otherwise, on
///   HTTP/1.1 with `trailers` set, chunked (trailers need it; an application
///   content-length is dropped); else the application's valid content-length
///   (several differing ones, or an invalid one, are refused); else on
///   HTTP/1.1 chunked; else (HTTP/1.0) close-delimited, which ends the
///   connection. The application's own `transfer-encoding` is always dropped.
/// - Adds `date: <date>` and `server: <server>` unless the application set
///   them; an empty `date` or `server` is omitted.
/// - Adds `connection: close` when the connection will close after this
///   response, and `connection: keep-alive` when an HTTP/1.0 connection stays
///   open. An application `connection` header with other options (`upgrade`)
///   is kept; one that only says `close` or `keep-alive` is replaced by ours;
///   `close` from the application closes the connection.
///
/// Returns the framing for [`BodyEncoder::new`] and whether the connection
/// stays open after this response. On error nothing has been written.
#[allow(clippy::too_many_arguments)] // The signature is shared with the connection code.
pub fn encode_head(
    out: &mut Vec<u8>,
    version: Version,
    is_head: bool,
    keep_alive: bool,
    status: u16,
    headers: &(impl Fields + ?Sized),
    trailers: bool,
    date: &[u8],
    server: &[u8],
) -> Result<(ResponseFraming, bool), ProtoError> {
    if !(100..=999).contains(&status) {
        return Err(ProtoError::BadResponse(format!(
            "status {status} is outside 100..=999"
        )));
    }
    let facts = inspect_headers(headers)?;

    // RFC 9112 §6.3 step 1: "Any response to a HEAD request and any response
    // with a 1xx (Informational), 204 (No Content), or 304 (Not Modified)
    // status code is always terminated by the first empty line after the
    // header section, regardless of the header fields present in the
    // message, and thus cannot contain a message body or trailer section."
    let no_body = is_head || status < 200 || status == 204 || status == 304;
    let framing = if no_body {
        ResponseFraming::NoBody
    } else if trailers && version == Version::Http11 {
        ResponseFraming::Chunked
    } else if let Some(n) = facts.content_length {
        ResponseFraming::Length(n)
    } else if version == Version::Http11 {
        ResponseFraming::Chunked
    } else {
        // RFC 9112 §6.1: a server "MUST NOT send a response containing
        // Transfer-Encoding unless the corresponding request indicates
        // HTTP/1.1 (or later minor revisions)." Without a length, only the
        // close delimits the body (§6.3 step 8).
        ResponseFraming::CloseDelimited
    };
    let stays_open = keep_alive && !facts.close && framing != ResponseFraming::CloseDelimited;

    // RFC 9110 §2.5: "A server SHOULD send a response version equal to the
    // highest version to which the server is conformant that has a major
    // version less than or equal to the one received in the request."
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !facts.date && !date.is_empty() {
        push_field(out, b"date", date);
    }
    if !facts.server && !server.is_empty() {
        push_field(out, b"server", server);
    }
    for (name, value) in headers.fields() {
        let framing_field = name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding");
        let our_connection_field = name.eq_ignore_ascii_case(b"connection")
            && list_elements(value)
                .all(|o| o.eq_ignore_ascii_case(b"close") || o.eq_ignore_ascii_case(b"keep-alive"));
        if !framing_field && !our_connection_field {
            push_field(out, name, value);
        }
    }
    match (framing, facts.content_length) {
        (ResponseFraming::Length(n), _) => push_length(out, n),
        // RFC 9110 §8.6: "A server MAY send a Content-Length header field in
        // a response to a HEAD request [...] A server MAY send a
        // Content-Length header field in a 304 (Not Modified) response [...]
        // A server MUST NOT send a Content-Length header field in any
        // response with a status code of 1xx (Informational) or 204 (No
        // Content)."
        (ResponseFraming::NoBody, Some(n)) if is_head || status == 304 => push_length(out, n),
        (ResponseFraming::Chunked, _) => push_field(out, b"transfer-encoding", b"chunked"),
        _ => {}
    }
    // RFC 9112 §9.6: "A server that sends a "close" connection option MUST
    // initiate closure of the connection [...] after it sends the response
    // containing "close"." The close option tells the client not to reuse it.
    if !stays_open && !facts.close_kept {
        push_field(out, b"connection", b"close");
    } else if stays_open && version == Version::Http10 {
        push_field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    Ok((framing, stays_open))
}

/// Writes an interim (1xx) response the application sent before its final
/// one, such as 103 (Early Hints): the status line, the application's header
/// fields and the empty line. Returns whether it wrote anything.
///
/// RFC 9110 §15.2: "Since HTTP/1.0 did not define any 1xx status codes, a
/// server MUST NOT send a 1xx response to an HTTP/1.0 client." For an
/// HTTP/1.0 request (`version`) nothing is written and `Ok(false)` returned:
/// the caller drops the interim response and waits for the final one.
///
/// - `status` must be in `100..=199` and not 101 (RFC 9110 §15.2.2: 101
///   switches "the application protocol being used on this connection",
///   which the server does itself, for a WebSocket upgrade). Any other
///   status is an error ([`ProtoError::BadResponse`]) naming it; a final
///   status goes to [`encode_head`].
/// - `headers` are validated as [`encode_head`] validates them (whatever the
///   version, so an application's mistake does not depend on its client).
///   RFC 9110 §15.2: "A 1xx response is terminated by the end of the header
///   section; it cannot contain content or trailers", so the framing fields
///   are dropped: RFC 9110 §8.6: "A server MUST NOT send a Content-Length
///   header field in any response with a status code of 1xx
///   (Informational)"; RFC 9112 §6.1: "A server MUST NOT send a
///   Transfer-Encoding header field in any response with a status code of
///   1xx (Informational)". Nothing is added: `date`, `server` and
///   `connection` belong to the final response.
///
/// On error nothing has been written.
pub fn encode_informational(
    out: &mut Vec<u8>,
    version: Version,
    status: u16,
    headers: &(impl Fields + ?Sized),
) -> Result<bool, ProtoError> {
    match status {
        101 => {
            return Err(ProtoError::BadResponse(
                "101 Switching Protocols is only sent by the server for a WebSocket upgrade".into(),
            ))
        }
        100..=199 => {}
        _ => {
            return Err(ProtoError::BadResponse(format!(
                "status {status} is not an informational (1xx) status"
            )))
        }
    }
    inspect_headers(headers)?;
    if version == Version::Http10 {
        return Ok(false);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.fields() {
        if !name.eq_ignore_ascii_case(b"content-length")
            && !name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            push_field(out, name, value);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(true)
}

/// What [`encode_head`] needs to know about the application's headers.
struct HeaderFacts {
    /// The (agreed) content-length, if any was given.
    content_length: Option<u64>,
    /// A `date` header was given.
    date: bool,
    /// A `server` header was given.
    server: bool,
    /// A `connection` header has the `close` option.
    close: bool,
    /// The `close` option is in a `connection` header that is written as
    /// given (one that also has other options).
    close_kept: bool,
}

/// Validates the application's headers and collects [`HeaderFacts`].
fn inspect_headers(headers: &(impl Fields + ?Sized)) -> Result<HeaderFacts, ProtoError> {
    let mut facts = HeaderFacts {
        content_length: None,
        date: false,
        server: false,
        close: false,
        close_kept: false,
    };
    for (name, value) in headers.fields() {
        if !is_token(name) {
            return Err(ProtoError::BadResponse(format!(
                "header name {:?} is not a token",
                String::from_utf8_lossy(name)
            )));
        }
        // RFC 9110 §5.5: "Field values containing CR, LF, or NUL characters
        // are invalid and dangerous".
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | b'\0')) {
            return Err(ProtoError::BadResponse(format!(
                "value of header {:?} contains CR, LF or NUL",
                String::from_utf8_lossy(name)
            )));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for element in value.split(|&b| b == b',') {
                let n = parse_decimal(trim_ows(element)).ok_or_else(|| {
                    ProtoError::BadResponse(format!(
                        "content-length {:?} is not a decimal number",
                        String::from_utf8_lossy(value)
                    ))
                })?;
                match facts.content_length {
                    Some(m) if m != n => {
                        return Err(ProtoError::BadResponse(format!(
                            "content-length given as both {m} and {n}"
                        )))
                    }
                    _ => facts.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            facts.date = true;
        } else if name.eq_ignore_ascii_case(b"server") {
            facts.server = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            let close = list_elements(value).any(|o| o.eq_ignore_ascii_case(b"close"));
            let others = list_elements(value).any(|o| {
                !o.eq_ignore_ascii_case(b"close") && !o.eq_ignore_ascii_case(b"keep-alive")
            });
            facts.close |= close;
            facts.close_kept |= close && others;
        }
    }
    Ok(facts)
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn push_length(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for `status` (RFC 9110 §15 and the other registered
/// codes), or `""`: "A client SHOULD ignore the reason-phrase content".
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

/// Where a [`BodyEncoder`] is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Content-Length body: at most `remaining` more bytes may be sent.
    Length { remaining: u64 },
    /// Chunked body: each non-empty piece becomes one chunk.
    Chunked,
    /// Body bytes are written as they are; closing the connection ends them.
    CloseDelimited,
    /// No body may be sent; bytes are dropped.
    NoBody,
    /// [`BodyEncoder::finish`] was called; nothing more may be sent.
    Finished,
}

/// Frames one response body.
#[derive(Debug)]
pub struct BodyEncoder {
    state: State,
}

impl BodyEncoder {
    /// An encoder for a body framed as `framing` (from [`encode_head`]).
    pub fn new(framing: ResponseFraming) -> Self {
        let state = match framing {
            ResponseFraming::Length(remaining) => State::Length { remaining },
            ResponseFraming::Chunked => State::Chunked,
            ResponseFraming::CloseDelimited => State::CloseDelimited,
            ResponseFraming::NoBody => State::NoBody,
        };
        BodyEncoder { state }
    }

    /// Frames `chunk` into `out`. For Length framing, more bytes than
    /// announced is an error (nothing is written); for NoBody the bytes are
    /// dropped. An empty `chunk` writes nothing (in chunked framing an empty
    /// chunk would end the body).
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match &mut self.state {
            State::Length { remaining } => {
                if chunk.len() as u64 > *remaining {
                    return Err(ProtoError::BadResponse(format!(
                        "{} more body bytes than the content-length",
                        chunk.len() as u64 - *remaining
                    )));
                }
                *remaining -= chunk.len() as u64;
                out.extend_from_slice(chunk);
            }
            // RFC 9112 §7.1: "chunk = chunk-size [ chunk-ext ] CRLF
            // chunk-data CRLF".
            State::Chunked if !chunk.is_empty() => {
                push_hex(out, chunk.len() as u64);
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            State::Chunked | State::NoBody => {}
            State::CloseDelimited => out.extend_from_slice(chunk),
            State::Finished => {
                return Err(ProtoError::BadResponse(
                    "body sent after the response ended".into(),
                ))
            }
        }
        Ok(())
    }

    /// Ends the body. For chunked framing writes the last chunk, the trailer
    /// fields and the final CRLF:
    ///
    /// ```text
    /// last-chunk      = 1*("0") [ chunk-ext ] CRLF
    /// trailer-section = *( field-line CRLF )
    /// ```
    ///
    /// Trailers are ignored for other framings. A trailer whose name is not a
    /// token or whose value has CR, LF or NUL is an error (nothing written);
    /// `content-length` and `transfer-encoding` trailers are dropped (RFC 9110
    /// §6.5.1 forbids framing fields there). For Length framing with fewer
    /// bytes than announced, returns an error: the caller closes the
    /// connection so the client sees the response is incomplete.
    pub fn finish(
        &mut self,
        trailers: &[(Vec<u8>, Vec<u8>)],
        out: &mut Vec<u8>,
    ) -> Result<(), ProtoError> {
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Length { remaining: 0 } | State::CloseDelimited | State::NoBody => Ok(()),
            State::Length { remaining } => Err(ProtoError::BadResponse(format!(
                "response ended {remaining} bytes short of its content-length"
            ))),
            State::Chunked => {
                for (name, value) in trailers {
                    if !is_token(name) || value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
                        self.state = State::Chunked;
                        return Err(ProtoError::BadResponse(format!(
                            "trailer {:?} has an invalid name or value",
                            String::from_utf8_lossy(name)
                        )));
                    }
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    if !name.eq_ignore_ascii_case(b"content-length")
                        && !name.eq_ignore_ascii_case(b"transfer-encoding")
                    {
                        push_field(out, name, value);
                    }
                }
                out.extend_from_slice(b"\r\n");
                Ok(())
            }
            State::Finished => Err(ProtoError::BadResponse("response ended twice".into())),
        }
    }
}

/// Formats `t` as an IMF-fixdate (RFC 9110 §5.6.7), e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times before 1970 are formatted as 1970.
pub fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let in_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        // 1970-01-01 was a Thursday.
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60,
    )
}

/// The proleptic Gregorian (year, month 1..=12, day 1..=31) of the day `days`
/// after 1970-01-01.
///
/// Counts in 400-year eras (146 097 days each, the Gregorian cycle) of years
/// that start on March 1, so that the leap day is the last day of its year:
/// then the day of the year gives the month by a linear formula, with March
/// as month 0 (its months have 31, 30, 31, 30, 31 days, repeating every five
/// months, i.e. 153 days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // 0..=146_096
                                  // Years in the era: every 4th year is leap, except every 100th, except
                                  // the 400th (the era's last day, 146 096, belongs to year 399).
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// A complete error response for `status`: status line, `content-type:
/// text/plain; charset=utf-8`, content-length, `connection: close`, `date` and
/// `server` (each omitted if empty), and the reason phrase (or the code, if it
/// has none) plus `\n` as the body.
pub fn error_response(status: u16, date: &[u8], server: &[u8]) -> Vec<u8> {
    let reason = reason_phrase(status);
    let mut body = if reason.is_empty() {
        status.to_string().into_bytes()
    } else {
        reason.as_bytes().to_vec()
    };
    body.push(b'\n');
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(&mut out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    push_field(&mut out, b"content-type", b"text/plain; charset=utf-8");
    push_length(&mut out, body.len() as u64);
    push_field(&mut out, b"connection", b"close");
    if !date.is_empty() {
        push_field(&mut out, b"date", date);
    }
    if !server.is_empty() {
        push_field(&mut out, b"server", server);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    fn h(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Encodes a head with `date` and no `server`; returns it as a string.
    fn head(
        version: Version,
        is_head: bool,
        keep_alive: bool,
        status: u16,
        headers: &[(&str, &str)],
        trailers: bool,
    ) -> (String, ResponseFraming, bool) {
        let mut out = Vec::new();
        let (framing, open) = encode_head(
            &mut out,
            version,
            is_head,
            keep_alive,
            status,
            &h(headers),
            trailers,
            DATE,
            b"",
        )
        .unwrap();
        (String::from_utf8(out).unwrap(), framing, open)
    }

    fn bad(status: u16, headers: &[(&str, &str)]) -> ProtoError {
        let mut out = Vec::new();
        let e = encode_head(
            &mut out,
            Version::Http11,
            false,
            true,
            status,
            &h(headers),
            false,
            DATE,
            b"ringway",
        )
        .unwrap_err();
        assert!(out.is_empty(), "nothing is written on error");
        e
    }

    // --- Informational responses ---

    /// Encodes an interim response; returns what was written and the result.
    fn interim(
        version: Version,
        status: u16,
        headers: &[(&str, &str)],
    ) -> (Vec<u8>, Result<bool, ProtoError>) {
        let mut out = Vec::new();
        let r = encode_informational(&mut out, version, status, &h(headers));
        (out, r)
    }

    #[test]
    fn early_hints_are_written_with_the_applications_fields() {
        let (out, r) = interim(
            Version::Http11,
            103,
            &[
                ("Link", "</style.css>; rel=preload; as=style"),
                ("link", "</app.js>; rel=preload; as=script"),
            ],
        );
        assert_eq!(r, Ok(true));
        assert_eq!(
            out,
            b"HTTP/1.1 103 Early Hints\r\n\
Link: </style.css>; rel=preload; as=style\r\n\
link: </app.js>; rel=preload; as=script\r\n\r\n"
        );
    }

    #[test]
    fn an_applications_100_continue_is_the_canned_one() {
        assert_eq!(
            interim(Version::Http11, 100, &[]),
            (CONTINUE.to_vec(), Ok(true))
        );
        // An unregistered 1xx has an empty reason phrase.
        assert_eq!(
            interim(Version::Http11, 199, &[("x-a", "1")]),
            (b"HTTP/1.1 199 \r\nx-a: 1\r\n\r\n".to_vec(), Ok(true))
        );
    }

    #[test]
    fn interim_responses_carry_no_framing_fields() {
        let (out, r) = interim(
            Version::Http11,
            103,
            &[
                ("Content-Length", "5"),
                ("link", "</a>"),
                ("Transfer-Encoding", "chunked"),
            ],
        );
        assert_eq!(r, Ok(true));
        assert_eq!(out, b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n");
    }

    #[test]
    fn no_interim_response_is_sent_to_an_http_1_0_client() {
        assert_eq!(
            interim(Version::Http10, 103, &[("link", "</a>")]),
            (Vec::new(), Ok(false))
        );
        assert_eq!(interim(Version::Http10, 100, &[]), (Vec::new(), Ok(false)));
    }

    #[test]
    fn switching_protocols_is_not_the_applications_to_send() {
        let (out, r) = interim(Version::Http11, 101, &[("upgrade", "websocket")]);
        assert!(out.is_empty());
        assert_eq!(
            r,
            Err(ProtoError::BadResponse(
                "101 Switching Protocols is only sent by the server for a WebSocket upgrade".into()
            ))
        );
    }

    #[test]
    fn a_final_status_is_not_an_interim_response() {
        for status in [0, 99, 200, 204, 404, 1000] {
            let (out, r) = interim(Version::Http11, status, &[]);
            assert!(out.is_empty());
            assert_eq!(
                r,
                Err(ProtoError::BadResponse(format!(
                    "status {status} is not an informational (1xx) status"
                )))
            );
        }
    }

    #[test]
    fn interim_response_fields_are_validated_like_final_ones() {
        for version in [Version::Http11, Version::Http10] {
            for fields in [
                &[("bad name", "v")][..],
                &[("x-a", "v\r\nx-b: smuggled")],
                &[("x-a", "v\0")],
                &[("content-length", "five")],
            ] {
                let (out, r) = interim(version, 103, fields);
                assert!(out.is_empty(), "{fields:?}");
                assert!(
                    matches!(r, Err(ProtoError::BadResponse(_))),
                    "{fields:?}: {r:?}"
                );
            }
        }
    }

    // --- Framing ---

    #[test]
    fn http_1_1_response_with_content_length_keeps_alive() {
        let (s, framing, open) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("Content-Type", "text/plain"), ("Content-Length", "5")],
            false,
        );
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!((framing, open), (ResponseFraming::Length(5), true));
    }

    #[test]
    fn http_1_1_response_without_length_is_chunked() {
        let (s, framing, open) = head(Version::Http11, false, true, 200, &[], false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!((framing, open), (ResponseFraming::Chunked, true));
    }

    #[test]
    fn application_transfer_encoding_is_replaced_by_ours() {
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("Transfer-Encoding", "gzip, chunked")],
            false,
        );
        assert!(!s.contains("gzip"), "{s}");
        assert!(s.contains("transfer-encoding: chunked\r\n"), "{s}");
        assert_eq!(framing, ResponseFraming::Chunked);
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
            false,
        );
        assert!(!s.contains("transfer-encoding"), "{s}");
        assert_eq!(framing, ResponseFraming::Length(3));
    }

    #[test]
    fn http_1_0_response_without_length_is_close_delimited() {
        let (s, framing, open) = head(Version::Http10, false, true, 200, &[], false);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nconnection: close\r\n\r\n"
        );
        assert_eq!((framing, open), (ResponseFraming::CloseDelimited, false));
    }

    #[test]
    fn http_1_0_keep_alive_response_with_length_says_keep_alive() {
        let (s, framing, open) = head(
            Version::Http10,
            false,
            true,
            200,
            &[("content-length", "2")],
            false,
        );
        assert!(
            s.ends_with("content-length: 2\r\nconnection: keep-alive\r\n\r\n"),
            "{s}"
        );
        assert_eq!((framing, open), (ResponseFraming::Length(2), true));
    }

    #[test]
    fn http_1_0_request_without_keep_alive_gets_connection_close() {
        let (s, framing, open) = head(
            Version::Http10,
            false,
            false,
            200,
            &[("content-length", "2")],
            false,
        );
        assert!(
            s.ends_with("content-length: 2\r\nconnection: close\r\n\r\n"),
            "{s}"
        );
        assert_eq!((framing, open), (ResponseFraming::Length(2), false));
    }

    #[test]
    fn head_response_keeps_content_length_and_has_no_body() {
        let (s, framing, open) = head(
            Version::Http11,
            true,
            true,
            200,
            &[("content-length", "1234")],
            false,
        );
        assert!(s.contains("content-length: 1234\r\n"), "{s}");
        assert_eq!((framing, open), (ResponseFraming::NoBody, true));
        let (s, framing, _) = head(Version::Http11, true, true, 200, &[], false);
        assert!(
            !s.contains("transfer-encoding") && !s.contains("content-length"),
            "{s}"
        );
        assert_eq!(framing, ResponseFraming::NoBody);
    }

    #[test]
    fn head_response_to_http_1_0_can_keep_alive_without_length() {
        let (s, framing, open) = head(Version::Http10, true, true, 200, &[], false);
        assert!(s.ends_with("connection: keep-alive\r\n\r\n"), "{s}");
        assert_eq!((framing, open), (ResponseFraming::NoBody, true));
    }

    #[test]
    fn no_content_response_drops_content_length() {
        let (s, framing, open) = head(
            Version::Http11,
            false,
            true,
            204,
            &[("content-length", "0")],
            false,
        );
        assert_eq!(
            s,
            "HTTP/1.1 204 No Content\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
        );
        assert_eq!((framing, open), (ResponseFraming::NoBody, true));
    }

    #[test]
    fn not_modified_response_keeps_content_length_and_has_no_body() {
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            304,
            &[("content-length", "99")],
            false,
        );
        assert!(
            s.contains("content-length: 99\r\n") && !s.contains("transfer-encoding"),
            "{s}"
        );
        assert_eq!(framing, ResponseFraming::NoBody);
    }

    #[test]
    fn informational_response_has_no_body() {
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            103,
            &[("link", "</a>"), ("content-length", "1")],
            false,
        );
        assert!(
            s.starts_with("HTTP/1.1 103 Early Hints\r\n") && !s.contains("content-length"),
            "{s}"
        );
        assert_eq!(framing, ResponseFraming::NoBody);
    }

    #[test]
    fn trailers_force_chunked_on_http_1_1() {
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("content-length", "3")],
            true,
        );
        assert!(
            s.contains("transfer-encoding: chunked\r\n") && !s.contains("content-length"),
            "{s}"
        );
        assert_eq!(framing, ResponseFraming::Chunked);
        // HTTP/1.0 cannot carry them: ignored.
        let (_, framing, _) = head(
            Version::Http10,
            false,
            true,
            200,
            &[("content-length", "3")],
            true,
        );
        assert_eq!(framing, ResponseFraming::Length(3));
    }

    #[test]
    fn identical_content_lengths_are_written_once() {
        let (s, framing, _) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("content-length", "3"), ("Content-Length", "3, 3")],
            false,
        );
        assert_eq!(
            s.matches("content-length").count() + s.matches("Content-Length").count(),
            1,
            "{s}"
        );
        assert_eq!(framing, ResponseFraming::Length(3));
    }

    #[test]
    fn differing_or_invalid_content_lengths_are_bad_responses() {
        assert!(matches!(
            bad(200, &[("content-length", "3"), ("content-length", "4")]),
            ProtoError::BadResponse(_)
        ));
        assert!(matches!(
            bad(200, &[("content-length", "3, 4")]),
            ProtoError::BadResponse(_)
        ));
        assert!(matches!(
            bad(200, &[("content-length", "-1")]),
            ProtoError::BadResponse(_)
        ));
        assert!(matches!(
            bad(200, &[("content-length", "")]),
            ProtoError::BadResponse(_)
        ));
    }

    // --- Validation ---

    #[test]
    fn status_outside_100_to_999_is_a_bad_response() {
        for status in [0, 99, 1000, u16::MAX] {
            assert_eq!(
                bad(status, &[]),
                ProtoError::BadResponse(format!("status {status} is outside 100..=999"))
            );
        }
    }

    #[test]
    fn unknown_status_has_an_empty_reason() {
        let (s, _, _) = head(
            Version::Http11,
            false,
            true,
            299,
            &[("content-length", "0")],
            false,
        );
        assert!(s.starts_with("HTTP/1.1 299 \r\n"), "{s}");
    }

    #[test]
    fn header_name_that_is_not_a_token_is_a_bad_response() {
        for name in ["", "a b", "a:b", "a\r\nb", "a\0"] {
            assert!(
                matches!(bad(200, &[(name, "v")]), ProtoError::BadResponse(_)),
                "{name:?}"
            );
        }
    }

    #[test]
    fn header_value_with_cr_lf_or_nul_is_a_bad_response() {
        for value in ["a\r\nx-injected: 1", "a\rb", "a\nb", "a\0b"] {
            assert!(
                matches!(bad(200, &[("x-a", value)]), ProtoError::BadResponse(_)),
                "{value:?}"
            );
        }
    }

    // --- Date, server, connection ---

    #[test]
    fn date_and_server_are_added_unless_the_application_set_them() {
        let mut out = Vec::new();
        encode_head(
            &mut out,
            Version::Http11,
            false,
            true,
            200,
            &h(&[("content-length", "0")]),
            false,
            DATE,
            b"ringway",
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            s.contains("\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: ringway\r\n"),
            "{s}"
        );
        let mut out = Vec::new();
        let headers = h(&[
            ("Date", "yesterday"),
            ("Server", "mine"),
            ("content-length", "0"),
        ]);
        encode_head(
            &mut out,
            Version::Http11,
            false,
            true,
            200,
            &headers,
            false,
            DATE,
            b"ringway",
        )
        .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(
            !s.contains("date: ") && !s.contains("server: ") && s.contains("Date: yesterday"),
            "{s}"
        );
    }

    #[test]
    fn empty_server_is_omitted() {
        let (s, _, _) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("content-length", "0")],
            false,
        );
        assert!(!s.contains("server"), "{s}");
    }

    #[test]
    fn closing_connection_says_connection_close() {
        let (s, _, open) = head(
            Version::Http11,
            false,
            false,
            200,
            &[("content-length", "0")],
            false,
        );
        assert!(s.ends_with("connection: close\r\n\r\n"), "{s}");
        assert!(!open);
    }

    #[test]
    fn application_connection_close_closes() {
        let (s, _, open) = head(
            Version::Http11,
            false,
            true,
            200,
            &[("Connection", "Close"), ("content-length", "0")],
            false,
        );
        assert_eq!(s.matches("onnection").count(), 1, "{s}");
        assert!(s.contains("connection: close\r\n"), "{s}");
        assert!(!open);
    }

    #[test]
    fn application_connection_upgrade_is_kept() {
        let (s, _, open) = head(
            Version::Http11,
            false,
            true,
            101,
            &[("connection", "Upgrade"), ("upgrade", "websocket")],
            false,
        );
        assert_eq!(
            s,
            "HTTP/1.1 101 Switching Protocols\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        assert!(open);
    }

    #[test]
    fn application_keep_alive_cannot_keep_a_closing_connection_open() {
        let (s, _, open) = head(
            Version::Http11,
            false,
            false,
            200,
            &[("Connection", "keep-alive"), ("content-length", "0")],
            false,
        );
        assert!(
            !s.contains("keep-alive") && s.contains("connection: close\r\n"),
            "{s}"
        );
        assert!(!open);
    }

    // --- Body ---

    #[test]
    fn length_body_is_written_as_is_and_must_match() {
        let mut e = BodyEncoder::new(ResponseFraming::Length(5));
        let mut out = Vec::new();
        e.encode(b"hel", &mut out).unwrap();
        assert!(matches!(
            e.encode(b"lo!", &mut out),
            Err(ProtoError::BadResponse(_))
        ));
        e.encode(b"lo", &mut out).unwrap();
        e.finish(&[], &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn length_body_ending_short_is_a_bad_response() {
        let mut e = BodyEncoder::new(ResponseFraming::Length(5));
        let mut out = Vec::new();
        e.encode(b"hel", &mut out).unwrap();
        assert_eq!(
            e.finish(&[], &mut out),
            Err(ProtoError::BadResponse(
                "response ended 2 bytes short of its content-length".into()
            ))
        );
    }

    #[test]
    fn chunked_body_is_framed_and_ends_with_trailers() {
        let mut e = BodyEncoder::new(ResponseFraming::Chunked);
        let mut out = Vec::new();
        e.encode(b"hello", &mut out).unwrap();
        e.encode(b"", &mut out).unwrap();
        e.encode(&[b'x'; 26], &mut out).unwrap();
        e.finish(
            &h(&[("grpc-status", "0"), ("content-length", "5"), ("x-b", "b")]),
            &mut out,
        )
        .unwrap();
        let expected = [
            &b"5\r\nhello\r\n1a\r\n"[..],
            &[b'x'; 26],
            b"\r\n0\r\ngrpc-status: 0\r\nx-b: b\r\n\r\n",
        ]
        .concat();
        assert_eq!(out, expected);
    }

    #[test]
    fn chunked_body_without_trailers_ends_with_last_chunk() {
        let mut e = BodyEncoder::new(ResponseFraming::Chunked);
        let mut out = Vec::new();
        e.finish(&[], &mut out).unwrap();
        assert_eq!(out, b"0\r\n\r\n");
        assert!(e.encode(b"late", &mut out).is_err());
        assert!(e.finish(&[], &mut out).is_err());
    }

    #[test]
    fn invalid_trailer_is_a_bad_response_and_writes_nothing() {
        let mut e = BodyEncoder::new(ResponseFraming::Chunked);
        let mut out = Vec::new();
        assert!(e.finish(&h(&[("x-a", "a\r\nb")]), &mut out).is_err());
        assert!(e.finish(&h(&[("x a", "b")]), &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn no_body_drops_bytes_and_trailers() {
        let mut e = BodyEncoder::new(ResponseFraming::NoBody);
        let mut out = Vec::new();
        e.encode(b"hello", &mut out).unwrap();
        e.finish(&h(&[("x-a", "b")]), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn close_delimited_body_is_written_as_is() {
        let mut e = BodyEncoder::new(ResponseFraming::CloseDelimited);
        let mut out = Vec::new();
        e.encode(b"hello", &mut out).unwrap();
        e.encode(b"", &mut out).unwrap();
        e.finish(&[], &mut out).unwrap();
        assert_eq!(out, b"hello");
    }

    // --- Canned responses and dates ---

    #[test]
    fn continue_is_a_bare_interim_response() {
        assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn error_response_is_complete_and_closes() {
        assert_eq!(
            error_response(431, DATE, b"ringway"),
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\nserver: ringway\r\n\r\nRequest Header Fields Too Large\n"
        );
        assert_eq!(
            error_response(599, b"", b""),
            b"HTTP/1.1 599 \r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 4\r\nconnection: close\r\n\r\n599\n"
        );
    }

    fn date_at(secs: u64) -> String {
        http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn http_date_is_an_imf_fixdate() {
        assert_eq!(date_at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // The example of RFC 9110 §5.6.7.
        assert_eq!(date_at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date_at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date_at(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(date_at(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 GMT");
        assert_eq!(date_at(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(date_at(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn http_date_before_1970_is_1970() {
        assert_eq!(
            http_date(UNIX_EPOCH - Duration::from_secs(1)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn http_date_agrees_with_a_day_by_day_count() {
        // Walk day by day from 1970 with a plain month-length table.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..(800 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[(m - 1) as usize] {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }
}
