//! Sans-IO HTTP/1.1 (RFC 9112): bytes in, events out; no sockets, no runtime.
//!
//! The connection code drives one request at a time through these pieces:
//!
//! 1. A [`HeadParser`], kept for the connection's life, on all unconsumed
//!    input after every read: `Ok(None)` means read more (and call again
//!    with the grown input); `Ok(Some(n))` means the [`RequestHead`] it
//!    filled in took the first `n` bytes, and the parser has reset itself for
//!    the next head. It remembers how far it got, so each byte of a head is
//!    examined a bounded number of times however the head arrives; it
//!    refuses what breaks the [`Limits`] (the whole head's size included) or
//!    the grammar as soon as the offending bytes arrive. [`parse_head`] is
//!    the same parser used once on a complete buffer. [`parse`] says how.
//! 2. If `head.expect_continue`, write [`CONTINUE`] before reading the body.
//! 3. A [`BodyDecoder`] for `head.body` turns the bytes after the head into
//!    body bytes and stops exactly at the end of the body, so the bytes after
//!    it are the next pipelined request's head.
//! 4. [`encode_informational`] writes any 1xx responses the application sends
//!    first (none to an HTTP/1.0 client); [`encode_head`] writes the
//!    application's final response head and says how the body is framed and
//!    whether the connection stays open; a [`BodyEncoder`] frames the body.
//!
//! Any [`ProtoError`] ends the connection: [`status_for`] says which status
//! to send first (with [`error_response`]) if no response has started.
//! Percent-decoding of the path is left to the caller.

pub mod decode;
pub mod encode;
pub mod error;
mod grammar;
pub mod parse;

pub use decode::BodyDecoder;
pub use encode::{
    encode_head, encode_informational, error_response, http_date, BodyEncoder, Fields,
    ResponseFraming, WithField, CONTINUE,
};
pub use error::{status_for, ProtoError};
pub use parse::{
    parse_head, parse_head_into, BodyFraming, HeadParser, Limits, RequestHead, Version,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every request in `stream` as the connection code would: head,
    /// then body, then the next head. Returns (method, path, body) triples.
    fn read_all(stream: &[u8]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let limits = Limits::default();
        let mut requests = Vec::new();
        let mut pos = 0;
        while pos < stream.len() {
            let (head, n) = parse_head(&stream[pos..], &limits)
                .expect("valid head")
                .expect("complete head");
            pos += n;
            let mut decoder = BodyDecoder::with_limits(head.body, &limits);
            let mut body = Vec::new();
            pos += decoder
                .decode(&stream[pos..], &mut body)
                .expect("valid body");
            assert!(decoder.is_done(), "body of {} incomplete", head.method);
            requests.push((head.method, head.path, body));
        }
        requests
    }

    const PIPELINE: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
PUT /d HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\nGET /e HTTP/1.1";

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let requests = read_all(PIPELINE);
        let expected: Vec<(String, Vec<u8>, Vec<u8>)> = vec![
            ("POST".into(), b"/a".to_vec(), b"hello".to_vec()),
            ("GET".into(), b"/b".to_vec(), b"".to_vec()),
            ("POST".into(), b"/c".to_vec(), b"abc".to_vec()),
            // A body that looks like a request line is still a body.
            ("PUT".into(), b"/d".to_vec(), b"GET /e HTTP/1.1".to_vec()),
        ];
        assert_eq!(requests, expected);
    }

    #[test]
    fn pipelined_requests_survive_any_read_boundary() {
        // Feed the stream in two reads split at every byte, as a socket might.
        let stream = PIPELINE;
        let whole = read_all(stream);
        for split in 0..=stream.len() {
            let limits = Limits::default();
            let mut buf = stream[..split].to_vec();
            let mut rest = &stream[split..];
            let mut got = Vec::new();
            let mut consumed = 0;
            loop {
                let Some((head, n)) = parse_head(&buf[consumed..], &limits).unwrap() else {
                    assert!(!rest.is_empty(), "stalled at split {split}");
                    buf.extend_from_slice(rest);
                    rest = &[];
                    continue;
                };
                consumed += n;
                let mut decoder = BodyDecoder::with_limits(head.body, &limits);
                let mut body = Vec::new();
                consumed += decoder.decode(&buf[consumed..], &mut body).unwrap();
                if !decoder.is_done() {
                    buf.extend_from_slice(rest);
                    rest = &[];
                    consumed += decoder.decode(&buf[consumed..], &mut body).unwrap();
                }
                assert!(decoder.is_done(), "split {split}");
                got.push((head.method, head.path, body));
                if consumed == buf.len() && rest.is_empty() {
                    break;
                }
            }
            assert_eq!(got, whole, "split {split}");
        }
    }

    #[test]
    fn pipelined_requests_dribbled_byte_by_byte_parse_with_one_head_parser() {
        // As the connection reads them: one parser for the connection, the
        // input growing by a byte per read, consumed head by head.
        let limits = Limits::default();
        let mut parser = HeadParser::new();
        let mut head = RequestHead::default();
        let mut input = Vec::new();
        let mut got = Vec::new();
        let mut body: Option<(BodyDecoder, Vec<u8>)> = None;
        for &b in PIPELINE {
            input.push(b);
            if let Some((decoder, bytes)) = &mut body {
                let n = decoder.decode(&input, bytes).unwrap();
                input.drain(..n);
                if decoder.is_done() {
                    let (_, bytes) = body.take().unwrap();
                    got.push((head.method.clone(), head.path.clone(), bytes));
                }
            } else if let Some(n) = parser.parse(&input, &limits, &mut head).unwrap() {
                input.drain(..n);
                let decoder = BodyDecoder::with_limits(head.body, &limits);
                if decoder.is_done() {
                    got.push((head.method.clone(), head.path.clone(), Vec::new()));
                } else {
                    body = Some((decoder, Vec::new()));
                }
            }
        }
        assert_eq!(got, read_all(PIPELINE));
    }

    #[test]
    fn a_smuggled_request_inside_a_body_is_never_parsed_as_a_request() {
        // Content-Length and Transfer-Encoding disagree about where the body
        // ends: refused outright rather than choosing one.
        let attack = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            parse_head(attack, &Limits::default()).unwrap_err(),
            ProtoError::ContentLengthWithTransferEncoding
        );
    }

    #[test]
    fn a_response_round_trips_through_encoder_and_decoder() {
        let mut out = Vec::new();
        let (framing, open) = encode_head(
            &mut out,
            Version::Http11,
            false,
            true,
            200,
            &Vec::<(Vec<u8>, Vec<u8>)>::new(),
            true,
            b"",
            b"",
        )
        .unwrap();
        assert!(open);
        let head_len = out.len();
        let mut encoder = BodyEncoder::new(framing);
        encoder.encode(b"hello ", &mut out).unwrap();
        encoder.encode(b"world", &mut out).unwrap();
        encoder
            .finish(&[(b"x-t".to_vec(), b"1".to_vec())], &mut out)
            .unwrap();
        // Response chunked framing is request chunked framing.
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, u64::MAX);
        let mut body = Vec::new();
        let n = decoder.decode(&out[head_len..], &mut body).unwrap();
        assert_eq!(
            (n, body.as_slice()),
            (out.len() - head_len, &b"hello world"[..])
        );
        assert!(decoder.is_done());
    }
}
