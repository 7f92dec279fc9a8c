//! Request bodies: [`BodyDecoder`] removes Content-Length or chunked framing
//! (RFC 9112 §6, §7.1) from bytes as they arrive, in pieces of any size.

use super::error::ProtoError;
use super::grammar::{is_ows, parse_field_line, quoted_string_len, skip_ows, token_len};
use super::parse::{BodyFraming, Limits};

/// Most chunk-extension bytes accepted in one body, all chunks together.
///
/// RFC 9112 §7.1.1: "A server ought to limit the total length of chunk
/// extensions received in a request to an amount reasonable for the services
/// provided [...] and generate an appropriate 4xx (Client Error) response if
/// that amount is exceeded." Extensions are ignored, so without a cap a client
/// could stream them forever without a body byte counting against
/// `max_body`. No client we know of sends any; 16 KiB is twice gunicorn's
/// header line limit.
const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// Longest chunk-size in hex digits: 16 digits fill a `u64`, so longer
/// sizes are refused rather than risk overflow.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// Where a [`BodyDecoder`] is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Content-Length body: `remaining` (> 0) bytes still to pass through.
    Length { remaining: u64 },
    /// Reading a `chunk-size [ chunk-ext ] CRLF` line into `line`.
    ChunkSize,
    /// Inside chunk data: `remaining` (> 0) bytes of this chunk still to pass.
    ChunkData { remaining: u64 },
    /// After chunk data: expecting its CR.
    ChunkDataCr,
    /// After chunk data and CR: expecting the LF.
    ChunkDataLf,
    /// After the last chunk: reading a trailer field line (or the final empty
    /// line) into `line`; `fields` trailer fields seen so far.
    Trailer { fields: usize },
    /// The body is complete; nothing more is consumed.
    Done,
}

/// Decodes one request body.
///
/// After an error the framing is lost and the connection must be closed; the
/// decoder is not to be used again.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
    /// Whether the framing is chunked (for [`BodyDecoder::remaining`]).
    chunked: bool,
    /// Body bytes announced so far: the Content-Length, or the sum of the
    /// chunk sizes read. Never above `max_body` once checked.
    announced: u64,
    /// The largest body accepted.
    max_body: u64,
    /// Most trailer fields accepted (`Limits::request_fields`).
    max_fields: usize,
    /// Longest trailer line accepted (`Limits::request_field_size`); also
    /// bounds a chunk-size line.
    max_line: usize,
    /// The line being read in `ChunkSize` and `Trailer` states, CR included
    /// while its LF has not arrived. Empty in every other state.
    line: Vec<u8>,
    /// Chunk-extension bytes seen so far in this body, at most
    /// [`MAX_CHUNK_EXTENSIONS`].
    extension_bytes: usize,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, refusing bodies larger than
    /// `max_body`; trailer fields get the default header [`Limits`].
    pub fn new(framing: BodyFraming, max_body: u64) -> Self {
        Self::with_limits(
            framing,
            &Limits {
                max_body,
                ..Limits::default()
            },
        )
    }

    /// A decoder for a body framed as `framing` under `limits`: `max_body`
    /// for the body, the header limits for the trailer section.
    pub fn with_limits(framing: BodyFraming, limits: &Limits) -> Self {
        let (state, announced) = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => (State::Done, 0),
            BodyFraming::Length(n) => (State::Length { remaining: n }, n),
            BodyFraming::Chunked => (State::ChunkSize, 0),
        };
        BodyDecoder {
            state,
            chunked: framing == BodyFraming::Chunked,
            announced,
            max_body: limits.max_body,
            max_fields: limits.request_fields,
            max_line: limits.request_field_size,
            line: Vec::new(),
            extension_bytes: 0,
        }
    }

    /// Decodes as much of `input` as it can, appending body bytes to `out`;
    /// returns how many bytes of `input` were consumed.
    ///
    /// Stops at the end of the body: bytes after it (the next pipelined
    /// request) are never consumed. Fewer than `input.len()` consumed before
    /// the end means nothing: it only happens at the end.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ProtoError> {
        if self.announced > self.max_body {
            return Err(ProtoError::BodyTooLarge);
        }
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            let rest = &input[pos..];
            match self.state {
                State::Length { remaining } => {
                    let n = take(remaining, rest.len());
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.state = match remaining - n as u64 {
                        0 => State::Done,
                        remaining => State::Length { remaining },
                    };
                }
                State::ChunkSize => {
                    let (used, complete) =
                        self.read_line(rest, ProtoError::ChunkExtensionsTooLong)?;
                    pos += used;
                    if complete {
                        self.end_chunk_size_line()?;
                    }
                }
                State::ChunkData { remaining } => {
                    let n = take(remaining, rest.len());
                    out.extend_from_slice(&rest[..n]);
                    pos += n;
                    self.state = match remaining - n as u64 {
                        0 => State::ChunkDataCr,
                        remaining => State::ChunkData { remaining },
                    };
                }
                // RFC 9112 §7.1: "chunk = chunk-size [ chunk-ext ] CRLF
                // chunk-data CRLF".
                State::ChunkDataCr => {
                    match rest[0] {
                        b'\r' => self.state = State::ChunkDataLf,
                        b'\n' => return Err(ProtoError::BareLf),
                        _ => return Err(ProtoError::MissingChunkDataCrlf),
                    }
                    pos += 1;
                }
                State::ChunkDataLf => {
                    if rest[0] != b'\n' {
                        return Err(ProtoError::BareCr);
                    }
                    pos += 1;
                    self.state = State::ChunkSize;
                }
                State::Trailer { fields } => {
                    let (used, complete) = self.read_line(rest, ProtoError::HeaderTooLarge)?;
                    pos += used;
                    if complete {
                        self.end_trailer_line(fields)?;
                    }
                }
                State::Done => unreachable!("the loop stops at Done"),
            }
        }
        Ok(pos)
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes still expected for Content-Length framing (`Some(0)` when
    /// done or empty); `None` for chunked, whose length is not known ahead.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            _ if self.chunked => None,
            State::Length { remaining } => Some(remaining),
            _ => Some(0),
        }
    }

    /// Appends bytes of `input` to `self.line` up to and including an LF.
    /// Returns the bytes used and whether the line is complete; a complete
    /// line is left in `self.line` without its CRLF.
    fn read_line(
        &mut self,
        input: &[u8],
        too_long: ProtoError,
    ) -> Result<(usize, bool), ProtoError> {
        for (i, &b) in input.iter().enumerate() {
            let after_cr = self.line.last() == Some(&b'\r');
            // RFC 9112 §2.2: a bare CR "MUST" be treated as invalid (or as
            // SP); a bare LF may be accepted but is not here: see
            // `grammar::find_crlf`.
            match (after_cr, b) {
                (true, b'\n') => {
                    self.line.pop();
                    return Ok((i + 1, true));
                }
                (true, _) => return Err(ProtoError::BareCr),
                (false, b'\n') => return Err(ProtoError::BareLf),
                (false, _) => {}
            }
            self.line.push(b);
            if self.line.len() - usize::from(b == b'\r') > self.max_line {
                return Err(too_long);
            }
        }
        Ok((input.len(), false))
    }

    /// Acts on a complete chunk-size line in `self.line` (RFC 9112 §7.1):
    ///
    /// ```text
    /// chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
    /// chunk-size = 1*HEXDIG
    /// last-chunk = 1*("0") [ chunk-ext ] CRLF
    /// ```
    fn end_chunk_size_line(&mut self) -> Result<(), ProtoError> {
        let line = std::mem::take(&mut self.line);
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(ProtoError::InvalidChunkSize(if line.is_empty() {
                "empty"
            } else {
                "not hexadecimal"
            }));
        }
        // RFC 9112 §7.1: "Recipients MUST anticipate potentially large
        // hexadecimal numerals and prevent parsing errors due to integer
        // conversion overflows or precision loss due to integer
        // representation."
        if digits > MAX_CHUNK_SIZE_DIGITS {
            return Err(ProtoError::InvalidChunkSize("more than 16 hex digits"));
        }
        let size = line[..digits]
            .iter()
            .fold(0u64, |n, &b| (n << 4) | u64::from(hex_value(b)));
        let extensions = &line[digits..];
        check_chunk_extensions(extensions)?;
        self.extension_bytes += extensions.len();
        if self.extension_bytes > MAX_CHUNK_EXTENSIONS {
            return Err(ProtoError::ChunkExtensionsTooLong);
        }
        self.announced = self
            .announced
            .checked_add(size)
            .filter(|&total| total <= self.max_body)
            .ok_or(ProtoError::BodyTooLarge)?;
        self.line = line;
        self.line.clear();
        self.state = if size == 0 {
            State::Trailer { fields: 0 }
        } else {
            State::ChunkData { remaining: size }
        };
        Ok(())
    }

    /// Acts on a complete trailer line in `self.line` (RFC 9112 §7.1.2):
    ///
    /// ```text
    /// trailer-section = *( field-line CRLF )
    /// ```
    ///
    /// then the CRLF ending the chunked body. "A recipient that removes the
    /// chunked coding from a message MAY selectively retain or discard the
    /// received trailer fields": we check them like header fields, under the
    /// same limits, and discard them.
    fn end_trailer_line(&mut self, fields: usize) -> Result<(), ProtoError> {
        if self.line.is_empty() {
            self.state = State::Done;
            return Ok(());
        }
        if fields >= self.max_fields {
            return Err(ProtoError::TooManyHeaders);
        }
        parse_field_line(&self.line)?;
        self.line.clear();
        self.state = State::Trailer { fields: fields + 1 };
        Ok(())
    }
}

/// `min(remaining, available)` as a `usize`.
fn take(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// The value of hex digit `b` (already checked to be one).
fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Validates what follows the chunk-size on its line (RFC 9112 §7.1.1):
///
/// ```text
/// chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// chunk-ext-name = token
/// chunk-ext-val  = token / quoted-string
/// ```
///
/// "A recipient MUST ignore unrecognized chunk extensions": we recognize none,
/// but still require the grammar, since a peer that reads `5 x` or `0x5`
/// differently is a smuggling vector. Trailing whitespace is not in the grammar
/// and is refused.
fn check_chunk_extensions(mut rest: &[u8]) -> Result<(), ProtoError> {
    let mut first = true;
    while !rest.is_empty() {
        let after_bws = skip_ows(rest);
        if after_bws.first() != Some(&b';') {
            return Err(if first {
                ProtoError::InvalidChunkSize("junk after the size")
            } else {
                ProtoError::InvalidChunkExtension
            });
        }
        first = false;
        rest = skip_ows(&after_bws[1..]);
        let name = token_len(rest);
        if name == 0 {
            return Err(ProtoError::InvalidChunkExtension);
        }
        rest = &rest[name..];
        let after_bws = skip_ows(rest);
        if after_bws.first() == Some(&b'=') {
            rest = skip_ows(&after_bws[1..]);
            let value = match rest.first() {
                Some(b'"') => quoted_string_len(rest).ok_or(ProtoError::InvalidChunkExtension)?,
                _ => token_len(rest),
            };
            if value == 0 {
                return Err(ProtoError::InvalidChunkExtension);
            }
            rest = &rest[value..];
        }
        if !rest.is_empty() && rest.iter().all(|&b| is_ows(b)) {
            return Err(ProtoError::InvalidChunkExtension);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call; returns the body and the bytes consumed.
    fn decode_all(framing: BodyFraming, input: &[u8]) -> Result<(Vec<u8>, usize), ProtoError> {
        let mut d = BodyDecoder::new(framing, u64::MAX);
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        assert!(d.is_done(), "body not finished by {input:?}");
        Ok((out, n))
    }

    fn chunked_err(input: &[u8]) -> ProtoError {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        match d.decode(input, &mut Vec::new()) {
            Err(e) => e,
            Ok(n) => panic!("{:?} decoded ({n} bytes)", String::from_utf8_lossy(input)),
        }
    }

    // --- Content-Length ---

    #[test]
    fn length_body_stops_at_its_end() {
        let (body, n) = decode_all(BodyFraming::Length(5), b"helloGET / HTTP/1.1").unwrap();
        assert_eq!((body.as_slice(), n), (&b"hello"[..], 5));
    }

    #[test]
    fn length_body_arrives_in_pieces() {
        let mut d = BodyDecoder::new(BodyFraming::Length(5), u64::MAX);
        let mut out = Vec::new();
        assert_eq!(d.remaining(), Some(5));
        assert_eq!(d.decode(b"he", &mut out), Ok(2));
        assert_eq!(d.remaining(), Some(3));
        assert!(!d.is_done());
        assert_eq!(d.decode(b"", &mut out), Ok(0));
        assert_eq!(d.decode(b"llo!", &mut out), Ok(3));
        assert!(d.is_done());
        assert_eq!(d.remaining(), Some(0));
        assert_eq!(d.decode(b"more", &mut out), Ok(0));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn empty_body_is_done_at_once() {
        let mut d = BodyDecoder::new(BodyFraming::Empty, u64::MAX);
        assert!(d.is_done());
        assert_eq!(d.remaining(), Some(0));
        assert_eq!(d.decode(b"GET", &mut Vec::new()), Ok(0));
    }

    #[test]
    fn length_body_over_the_limit_is_413() {
        let mut d = BodyDecoder::new(BodyFraming::Length(6), 5);
        assert_eq!(
            d.decode(b"abcdef", &mut Vec::new()),
            Err(ProtoError::BodyTooLarge)
        );
    }

    // --- Chunked ---

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n1;name=value\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
    const CHUNKED_BODY: &[u8] = b"hello 0123456789";

    #[test]
    fn chunked_body_is_decoded() {
        let (body, n) = decode_all(BodyFraming::Chunked, CHUNKED).unwrap();
        assert_eq!((body.as_slice(), n), (CHUNKED_BODY, CHUNKED.len()));
    }

    #[test]
    fn chunked_body_stops_before_the_next_request() {
        let input = [CHUNKED, b"GET / HTTP/1.1\r\n"].concat();
        let (body, n) = decode_all(BodyFraming::Chunked, &input).unwrap();
        assert_eq!((body.as_slice(), n), (CHUNKED_BODY, CHUNKED.len()));
    }

    #[test]
    fn chunked_body_split_at_every_boundary_decodes_the_same() {
        for split in 0..=CHUNKED.len() {
            let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
            let mut out = Vec::new();
            assert_eq!(
                d.decode(&CHUNKED[..split], &mut out),
                Ok(split),
                "split {split}"
            );
            assert_eq!(
                d.decode(&CHUNKED[split..], &mut out),
                Ok(CHUNKED.len() - split)
            );
            assert!(d.is_done(), "split {split}");
            assert_eq!(out, CHUNKED_BODY, "split {split}");
        }
    }

    #[test]
    fn chunked_body_fed_one_byte_at_a_time_decodes_the_same() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        let mut out = Vec::new();
        for (i, b) in CHUNKED.iter().enumerate() {
            assert!(!d.is_done(), "done early at byte {i}");
            assert_eq!(
                d.decode(std::slice::from_ref(b), &mut out),
                Ok(1),
                "byte {i}"
            );
        }
        assert!(d.is_done());
        assert_eq!(out, CHUNKED_BODY);
        assert_eq!(d.remaining(), None);
    }

    #[test]
    fn last_chunk_may_have_several_zeros_and_uppercase_sizes_work() {
        let (body, _) =
            decode_all(BodyFraming::Chunked, b"A\r\n0123456789\r\n000\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
        let (body, _) = decode_all(BodyFraming::Chunked, b"a\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn well_formed_chunk_extensions_are_ignored() {
        for ext in [
            &b";a"[..],
            b";a=b",
            b";a=\"quoted; \\\"value\\\"\"",
            b" ;a",
            b"; a",
            b";a =b",
            b";a= b",
            b"\t;\ta\t=\tb",
            b";a;b=c;d=\"\"",
        ] {
            let input = [&b"3"[..], ext, b"\r\nabc\r\n0", ext, b"\r\n\r\n"].concat();
            let (body, _) = decode_all(BodyFraming::Chunked, &input)
                .unwrap_or_else(|e| panic!("{e} for {:?}", String::from_utf8_lossy(ext)));
            assert_eq!(body, b"abc");
        }
    }

    #[test]
    fn malformed_chunk_extensions_are_rejected() {
        for ext in [
            &b";"[..],
            b";=b",
            b";a=",
            b";a=\"open",
            b";a b",
            b";a=b c",
            b";a=\"x\"y",
            b";a ",
            b";a\x01",
            b";a=\"\x01\"",
            b";a=b;",
            b";a,b",
        ] {
            let input = [&b"3"[..], ext, b"\r\nabc\r\n0\r\n\r\n"].concat();
            assert_eq!(
                chunked_err(&input),
                ProtoError::InvalidChunkExtension,
                "{:?}",
                String::from_utf8_lossy(ext)
            );
        }
    }

    #[test]
    fn malformed_chunk_sizes_are_rejected() {
        for line in [
            &b""[..],
            b"g",
            b"-1",
            b"+1",
            b" 1",
            b"\t1",
            b"1 ",
            b"1\t",
            b"1x",
            b"0x1",
            b"1 2",
            b"1,",
        ] {
            let input = [line, b"\r\na\r\n0\r\n\r\n"].concat();
            assert!(
                matches!(chunked_err(&input), ProtoError::InvalidChunkSize(_)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn chunk_size_longer_than_16_digits_is_rejected() {
        assert_eq!(
            chunked_err(b"10000000000000000\r\n"),
            ProtoError::InvalidChunkSize("more than 16 hex digits")
        );
        assert_eq!(
            chunked_err(b"00000000000000001\r\n"),
            ProtoError::InvalidChunkSize("more than 16 hex digits")
        );
        // 16 digits is accepted as a size (and then waits for its data).
        let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        assert_eq!(d.decode(b"ffffffffffffffff\r\nab", &mut Vec::new()), Ok(20));
    }

    #[test]
    fn chunk_data_not_followed_by_crlf_is_rejected() {
        assert_eq!(
            chunked_err(b"3\r\nabcd\r\n0\r\n\r\n"),
            ProtoError::MissingChunkDataCrlf
        );
        assert_eq!(
            chunked_err(b"3\r\nabc0\r\n\r\n"),
            ProtoError::MissingChunkDataCrlf
        );
    }

    #[test]
    fn bare_lf_in_chunked_framing_is_rejected() {
        assert_eq!(chunked_err(b"3\nabc\r\n0\r\n\r\n"), ProtoError::BareLf);
        assert_eq!(chunked_err(b"3\r\nabc\n0\r\n\r\n"), ProtoError::BareLf);
        assert_eq!(chunked_err(b"3\r\nabc\r\n0\n\r\n"), ProtoError::BareLf);
        assert_eq!(
            chunked_err(b"3\r\nabc\r\n0\r\nX: y\n\r\n"),
            ProtoError::BareLf
        );
        assert_eq!(chunked_err(b"3\r\nabc\r\n0\r\n\n"), ProtoError::BareLf);
    }

    #[test]
    fn bare_cr_in_chunked_framing_is_rejected() {
        assert_eq!(chunked_err(b"3\rabc\r\n0\r\n\r\n"), ProtoError::BareCr);
        assert_eq!(chunked_err(b"3\r\nabc\r0\r\n\r\n"), ProtoError::BareCr);
        assert_eq!(
            chunked_err(b"3\r\nabc\r\n0\r\nX: a\rb\r\n\r\n"),
            ProtoError::BareCr
        );
        assert_eq!(chunked_err(b"3\r\nabc\r\n0\r\n\rX"), ProtoError::BareCr);
    }

    #[test]
    fn trailers_are_checked_like_headers_and_discarded() {
        let input = b"0\r\nA: 1\r\nB:\t2 \r\nA: 3\r\n\r\nNEXT";
        let (body, n) = decode_all(BodyFraming::Chunked, input).unwrap();
        assert_eq!((body.as_slice(), n), (&b""[..], input.len() - 4));
        assert_eq!(chunked_err(b"0\r\nA: 1\r\n b\r\n\r\n"), ProtoError::ObsFold);
        assert_eq!(
            chunked_err(b"0\r\nA : 1\r\n\r\n"),
            ProtoError::WhitespaceBeforeColon
        );
        assert_eq!(
            chunked_err(b"0\r\nA\x00: 1\r\n\r\n"),
            ProtoError::InvalidHeaderName
        );
        assert_eq!(
            chunked_err(b"0\r\nA: \x001\r\n\r\n"),
            ProtoError::InvalidHeaderValue
        );
        assert_eq!(
            chunked_err(b"0\r\nA 1\r\n\r\n"),
            ProtoError::HeaderWithoutColon
        );
    }

    fn limits(request_fields: usize, request_field_size: usize, max_body: u64) -> Limits {
        Limits {
            request_fields,
            request_field_size,
            max_body,
            ..Limits::default()
        }
    }

    #[test]
    fn too_many_trailers_is_431() {
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(2, 100, 100));
        assert_eq!(
            d.decode(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &mut Vec::new()),
            Err(ProtoError::TooManyHeaders)
        );
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(2, 100, 100));
        assert_eq!(
            d.decode(b"0\r\nA: 1\r\nB: 2\r\n\r\n", &mut Vec::new()),
            Ok(17)
        );
    }

    #[test]
    fn trailer_line_over_the_limit_is_431_before_its_crlf_arrives() {
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 6, 100));
        assert_eq!(d.decode(b"0\r\nA: 123\r", &mut Vec::new()), Ok(10));
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 6, 100));
        assert_eq!(
            d.decode(b"0\r\nA: 1234", &mut Vec::new()),
            Err(ProtoError::HeaderTooLarge)
        );
    }

    #[test]
    fn chunked_body_over_the_limit_is_413() {
        // One chunk too big: refused at its size line, before any data.
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 100, 5));
        assert_eq!(
            d.decode(b"6\r\n", &mut Vec::new()),
            Err(ProtoError::BodyTooLarge)
        );
        // Chunks adding up to too much.
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 100, 5));
        let mut out = Vec::new();
        assert_eq!(
            d.decode(b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", &mut out),
            Err(ProtoError::BodyTooLarge)
        );
        // Exactly at the limit.
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 100, 5));
        assert_eq!(
            d.decode(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &mut Vec::new()),
            Ok(20)
        );
        // Sizes whose sum overflows u64.
        let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        d.announced = u64::MAX;
        assert_eq!(
            d.decode(b"1\r\n", &mut Vec::new()),
            Err(ProtoError::BodyTooLarge)
        );
    }

    #[test]
    fn chunk_size_line_over_the_line_limit_is_rejected() {
        let mut d = BodyDecoder::with_limits(BodyFraming::Chunked, &limits(100, 8, 100));
        assert_eq!(
            d.decode(b"1;abcdefgh", &mut Vec::new()),
            Err(ProtoError::ChunkExtensionsTooLong)
        );
    }

    #[test]
    fn chunk_extensions_over_the_body_cap_are_rejected() {
        let mut d = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        let chunk = [&b"1;"[..], &[b'e'; 998], b"\r\nx\r\n"].concat();
        let mut out = Vec::new();
        let mut result = Ok(0);
        for _ in 0..=(MAX_CHUNK_EXTENSIONS / 1000) {
            result = d.decode(&chunk, &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtoError::ChunkExtensionsTooLong));
    }
}
