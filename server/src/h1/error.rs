//! [`ProtoError`]: every way an HTTP/1.1 exchange can be malformed, and
//! [`status_for`], the one place that decides which status a client gets for it.

use std::fmt;

/// A protocol error found while parsing a request or encoding a response.
///
/// What the caller does is the same for every variant: send
/// [`status_for`]`(&e)` if no byte of a response has been written yet (see
/// [`super::encode::error_response`]), then close the connection. Framing is no
/// longer trustworthy after any of these, so the connection is never reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    // --- Line endings (head and chunked framing) ---
    /// A line ended with LF alone; only CRLF is accepted.
    BareLf,
    /// A CR was not followed by LF.
    BareCr,

    // --- Request line ---
    /// The request line is longer than `Limits::request_line`.
    RequestLineTooLong,
    /// The request line is not `method SP request-target SP HTTP-version`.
    MalformedRequestLine,
    /// The method is not a token.
    InvalidMethod,
    /// The method is CONNECT: ringway is an origin server, not a proxy, and
    /// implements no tunnels.
    MethodNotImplemented,
    /// The request-target is unusable; the text says why.
    InvalidTarget(&'static str),
    /// The version is not `HTTP/` DIGIT `.` DIGIT.
    MalformedVersion,
    /// A well-formed version other than HTTP/1.0 and HTTP/1.1.
    UnsupportedVersion,

    // --- Header section ---
    /// The head (empty lines before the request line, request line, field
    /// lines and their CRLFs) is longer than `Limits::request_head`.
    HeadTooLarge,
    /// More header (or trailer) fields than `Limits::request_fields`.
    TooManyHeaders,
    /// A header (or trailer) line longer than `Limits::request_field_size`.
    HeaderTooLarge,
    /// A field line starts with whitespace: obs-fold, or whitespace after the
    /// request line.
    ObsFold,
    /// Whitespace between a field name and its colon.
    WhitespaceBeforeColon,
    /// A field line has no colon.
    HeaderWithoutColon,
    /// A field name is empty or not a token (control bytes, separators,
    /// non-ASCII).
    InvalidHeaderName,
    /// A field value holds a control byte other than HTAB (NUL, DEL, ...).
    InvalidHeaderValue,
    /// An HTTP/1.1 request without a Host header.
    MissingHost,
    /// A request with more than one Host header.
    DuplicateHost,
    /// A Host header whose value is not `uri-host [ ":" port ]`.
    InvalidHost,
    /// An `Expect` member other than `100-continue`.
    ExpectationFailed,

    // --- Message framing (request smuggling vectors) ---
    /// A Content-Length value that is not `1*DIGIT` or does not fit in 64 bits.
    InvalidContentLength,
    /// Several Content-Length values that differ.
    ConflictingContentLength,
    /// Both Content-Length and Transfer-Encoding.
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding on an HTTP/1.0 request.
    TransferEncodingOnHttp10,
    /// A Transfer-Encoding element that is not a transfer-coding.
    InvalidTransferEncoding,
    /// Transfer-Encoding whose final coding is not `chunked`.
    ChunkedNotFinal,
    /// `chunked` applied more than once.
    ChunkedTwice,
    /// A transfer coding other than `chunked` (before the final `chunked`).
    UnsupportedTransferCoding,
    /// The body (Content-Length, or chunked total) is larger than
    /// `Limits::max_body`.
    BodyTooLarge,

    // --- Chunked body ---
    /// A chunk-size that is empty, not hexadecimal, longer than 16 digits or
    /// followed by junk; the text says which.
    InvalidChunkSize(&'static str),
    /// A chunk extension that is not `;name[=token|quoted-string]`.
    InvalidChunkExtension,
    /// A chunk-size line, or all chunk extensions of the body together, longer
    /// than we accept.
    ChunkExtensionsTooLong,
    /// Chunk data not followed by CRLF.
    MissingChunkDataCrlf,

    // --- Responses ---
    /// The application's response cannot be sent as given (bad status, header,
    /// length mismatch, ...); the text says what.
    BadResponse(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ProtoError::*;
        match self {
            BareLf => f.write_str("line ended with a bare LF (CRLF required)"),
            BareCr => f.write_str("bare CR not followed by LF"),
            RequestLineTooLong => f.write_str("request line longer than --limit-request-line"),
            MalformedRequestLine => {
                f.write_str("request line is not `method SP request-target SP HTTP-version`")
            }
            InvalidMethod => f.write_str("method is not a token"),
            MethodNotImplemented => f.write_str("CONNECT is not implemented (not a proxy)"),
            InvalidTarget(why) => write!(f, "invalid request-target: {why}"),
            MalformedVersion => f.write_str("HTTP version is not `HTTP/DIGIT.DIGIT`"),
            UnsupportedVersion => f.write_str("HTTP version other than 1.0 or 1.1"),
            HeadTooLarge => f.write_str("request head longer than the head size limit"),
            TooManyHeaders => f.write_str("more header fields than --limit-request-fields"),
            HeaderTooLarge => f.write_str("header field longer than --limit-request-field-size"),
            ObsFold => f.write_str("field line starts with whitespace (obs-fold)"),
            WhitespaceBeforeColon => f.write_str("whitespace between field name and colon"),
            HeaderWithoutColon => f.write_str("field line without a colon"),
            InvalidHeaderName => f.write_str("field name is not a token"),
            InvalidHeaderValue => f.write_str("field value contains a control byte"),
            MissingHost => f.write_str("HTTP/1.1 request without a Host header"),
            DuplicateHost => f.write_str("more than one Host header"),
            InvalidHost => f.write_str("Host header is not `host[:port]`"),
            ExpectationFailed => f.write_str("Expect header other than 100-continue"),
            InvalidContentLength => f.write_str("Content-Length is not a 64-bit decimal number"),
            ConflictingContentLength => f.write_str("differing Content-Length values"),
            ContentLengthWithTransferEncoding => {
                f.write_str("both Content-Length and Transfer-Encoding")
            }
            TransferEncodingOnHttp10 => f.write_str("Transfer-Encoding on an HTTP/1.0 request"),
            InvalidTransferEncoding => f.write_str("Transfer-Encoding element is not a coding"),
            ChunkedNotFinal => f.write_str("Transfer-Encoding does not end with chunked"),
            ChunkedTwice => f.write_str("chunked transfer coding applied more than once"),
            UnsupportedTransferCoding => {
                f.write_str("transfer coding other than chunked is not implemented")
            }
            BodyTooLarge => f.write_str("request body larger than the body limit"),
            InvalidChunkSize(why) => write!(f, "invalid chunk size: {why}"),
            InvalidChunkExtension => {
                f.write_str("chunk extension is not `;name[=token|quoted-string]`")
            }
            ChunkExtensionsTooLong => f.write_str("chunk extensions too long"),
            MissingChunkDataCrlf => f.write_str("chunk data not followed by CRLF"),
            BadResponse(why) => write!(f, "invalid response from the application: {why}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// The status to send for `e` before closing the connection, or `None` to
/// close without a response.
///
/// This is the one place that maps protocol errors to statuses; the match has
/// no wildcard so that a new variant must be classified here. Once part of a
/// response is on the wire no status can be sent any more, whatever this
/// returns: the caller then just closes.
pub fn status_for(e: &ProtoError) -> Option<u16> {
    use ProtoError::*;
    let status = match e {
        // RFC 9112 §3: "A server that receives a request-target longer than
        // any URI it wishes to parse MUST respond with a 414 (URI Too Long)".
        RequestLineTooLong => 414,
        // RFC 6585 §5: 431 "the server is unwilling to process the request
        // because its header fields are too large" [...] "It can be used
        // both when the set of request header fields in total is too large,
        // and when a single header field is at fault." A trailer section is
        // a header section too.
        HeadTooLarge | TooManyHeaders | HeaderTooLarge => 431,
        // RFC 9110 §15.5.14: 413 "the request content is larger than the
        // server is willing or able to process".
        BodyTooLarge => 413,
        // RFC 9110 §15.6.6: 505 "the server does not support, or refuses to
        // support, the major version of HTTP that was used in the request".
        UnsupportedVersion => 505,
        // RFC 9112 §6.1: "A server that receives a request message with a
        // transfer coding it does not understand SHOULD respond with 501 (Not
        // Implemented)." RFC 9110 §9.1: "An origin server that receives a
        // request method that is unrecognized or not implemented SHOULD
        // respond with the 501 (Not Implemented) status code."
        UnsupportedTransferCoding | MethodNotImplemented => 501,
        // RFC 9110 §10.1.1: "A server that receives an Expect field value
        // containing a member other than 100-continue MAY respond with a 417
        // (Expectation Failed) status code".
        ExpectationFailed => 417,
        // The application's fault, not the client's.
        BadResponse(_) => 500,
        // Everything else is a malformed request; RFC 9112 requires 400 for
        // most of these by name (§3.2 Host, §5.1 whitespace before colon, §5.2
        // obs-fold, §6.3 framing).
        BareLf
        | BareCr
        | MalformedRequestLine
        | InvalidMethod
        | InvalidTarget(_)
        | MalformedVersion
        | ObsFold
        | WhitespaceBeforeColon
        | HeaderWithoutColon
        | InvalidHeaderName
        | InvalidHeaderValue
        | MissingHost
        | DuplicateHost
        | InvalidHost
        | InvalidContentLength
        | ConflictingContentLength
        | ContentLengthWithTransferEncoding
        | TransferEncodingOnHttp10
        | InvalidTransferEncoding
        | ChunkedNotFinal
        | ChunkedTwice
        | InvalidChunkSize(_)
        | InvalidChunkExtension
        | ChunkExtensionsTooLong
        | MissingChunkDataCrlf => 400,
    };
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_their_own_statuses() {
        assert_eq!(status_for(&ProtoError::RequestLineTooLong), Some(414));
        assert_eq!(status_for(&ProtoError::HeadTooLarge), Some(431));
        assert_eq!(status_for(&ProtoError::TooManyHeaders), Some(431));
        assert_eq!(status_for(&ProtoError::HeaderTooLarge), Some(431));
        assert_eq!(status_for(&ProtoError::BodyTooLarge), Some(413));
    }

    #[test]
    fn unsupported_features_map_to_501_505_and_417() {
        assert_eq!(status_for(&ProtoError::UnsupportedVersion), Some(505));
        assert_eq!(
            status_for(&ProtoError::UnsupportedTransferCoding),
            Some(501)
        );
        assert_eq!(status_for(&ProtoError::MethodNotImplemented), Some(501));
        assert_eq!(status_for(&ProtoError::ExpectationFailed), Some(417));
    }

    #[test]
    fn smuggling_vectors_map_to_400() {
        for e in [
            ProtoError::BareLf,
            ProtoError::BareCr,
            ProtoError::ObsFold,
            ProtoError::WhitespaceBeforeColon,
            ProtoError::ContentLengthWithTransferEncoding,
            ProtoError::ConflictingContentLength,
            ProtoError::InvalidContentLength,
            ProtoError::ChunkedNotFinal,
            ProtoError::ChunkedTwice,
            ProtoError::TransferEncodingOnHttp10,
            ProtoError::InvalidChunkSize("x"),
            ProtoError::InvalidChunkExtension,
            ProtoError::MissingChunkDataCrlf,
            ProtoError::MissingHost,
            ProtoError::DuplicateHost,
        ] {
            assert_eq!(status_for(&e), Some(400), "{e}");
        }
    }

    #[test]
    fn application_errors_map_to_500() {
        assert_eq!(status_for(&ProtoError::BadResponse("x".into())), Some(500));
    }

    #[test]
    fn display_says_what_was_wrong() {
        assert_eq!(
            ProtoError::InvalidTarget("contains a space").to_string(),
            "invalid request-target: contains a space"
        );
        assert_eq!(
            ProtoError::BadResponse("status 42 is outside 100..=999".into()).to_string(),
            "invalid response from the application: status 42 is outside 100..=999"
        );
        assert_eq!(
            ProtoError::ContentLengthWithTransferEncoding.to_string(),
            "both Content-Length and Transfer-Encoding"
        );
    }
}
