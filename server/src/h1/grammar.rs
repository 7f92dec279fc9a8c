//! The small grammar rules of RFC 9110 §5.6 and RFC 9112 §2 shared by request
//! heads, chunked framing and response heads: tokens, OWS, lists, quoted
//! strings, CRLF-terminated lines and field lines.

use super::error::ProtoError;

/// `tchar` (RFC 9110 §5.6.2), indexed by byte:
///
/// ```text
/// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
///         "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
/// ```
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Whether `b` is a `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `token = 1*tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Length of the longest prefix of `s` made of `tchar`s.
pub(crate) fn token_len(s: &[u8]) -> usize {
    s.iter().position(|&b| !is_tchar(b)).unwrap_or(s.len())
}

/// `OWS = *( SP / HTAB )` (RFC 9110 §5.6.3); BWS is the same bytes.
pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading OWS.
pub(crate) fn skip_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    &s[start..]
}

/// `s` without leading and trailing OWS.
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let s = skip_ows(s);
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(0, |i| i + 1);
    &s[..end]
}

/// The elements of a `#rule` list (RFC 9110 §5.6.1), trimmed of OWS, with
/// empty elements skipped: "a recipient MUST parse and ignore a reasonable
/// number of empty list elements".
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Whether `b` may appear in a received field value (RFC 9110 §5.5):
///
/// ```text
/// field-value = *field-content
/// field-vchar = VCHAR / obs-text
/// ```
///
/// plus SP and HTAB between them. Every other CTL (NUL, CR, LF, DEL, ...) is
/// refused: "Field values containing CR, LF, or NUL characters are invalid and
/// dangerous [...] Field values containing other CTL characters are also
/// invalid".
pub(crate) fn is_field_value_byte(b: u8) -> bool {
    b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80
}

/// Length of the `quoted-string` (RFC 9110 §5.6.4) at the start of `s`,
/// quotes included, or `None` if `s` does not start with a valid one:
///
/// ```text
/// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
/// qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
/// quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
/// ```
pub(crate) fn quoted_string_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let escaped = *s.get(i + 1)?;
                if !is_field_value_byte(escaped) {
                    return None;
                }
                i += 2;
            }
            b if is_field_value_byte(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// Finds the CRLF ending the line that starts at `from`.
///
/// `Ok(Some(i))`: `buf[i..i + 2]` is that CRLF. `Ok(None)`: the line is not
/// complete yet. RFC 9112 §2.2 allows a recipient to accept a bare LF as a line
/// terminator and requires it to treat a bare CR as invalid or as SP; we refuse
/// both, because a peer that disagrees about where a line ends is how
/// requests get smuggled past a proxy.
pub(crate) fn find_crlf(buf: &[u8], from: usize) -> Result<Option<usize>, ProtoError> {
    let rest = &buf[from..];
    let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return Ok(None);
    };
    if rest[at] == b'\n' {
        return Err(ProtoError::BareLf);
    }
    match rest.get(at + 1) {
        Some(b'\n') => Ok(Some(from + at)),
        Some(_) => Err(ProtoError::BareCr),
        None => Ok(None),
    }
}

/// Splits a received field line (without its CRLF) into name and value,
/// validating both (RFC 9112 §5, RFC 9110 §5.5):
///
/// ```text
/// field-line = field-name ":" OWS field-value OWS
/// ```
///
/// The value is returned without its surrounding OWS. Used for request header
/// fields and for trailer fields of chunked request bodies.
pub(crate) fn parse_field_line(line: &[u8]) -> Result<(&[u8], &[u8]), ProtoError> {
    // RFC 9112 §5.2: "A server that receives an obs-fold in a request message
    // that is not within a "message/http" container MUST either reject the
    // message by sending a 400 (Bad Request) [...] or replace each received
    // obs-fold with one or more SP octets". RFC 9112 §2.2: "A recipient that
    // receives whitespace between the start-line and the first header field
    // MUST either reject the message as invalid or consume each
    // whitespace-preceded line". We reject both.
    if line.first().copied().is_some_and(is_ows) {
        return Err(ProtoError::ObsFold);
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(ProtoError::HeaderWithoutColon);
    };
    let name = &line[..colon];
    // RFC 9112 §5.1: "A server MUST reject, with a response status code of 400
    // (Bad Request), any received request message that contains whitespace
    // between a header field name and colon."
    if name.last().copied().is_some_and(is_ows) {
        return Err(ProtoError::WhitespaceBeforeColon);
    }
    if !is_token(name) {
        return Err(ProtoError::InvalidHeaderName);
    }
    let value = trim_ows(&line[colon + 1..]);
    if !value.iter().all(|&b| is_field_value_byte(b)) {
        return Err(ProtoError::InvalidHeaderValue);
    }
    Ok((name, value))
}

/// Appends the decimal digits of `n` to `out`.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the lowercase hexadecimal digits of `n` to `out`.
pub(crate) fn push_hex(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `1*DIGIT` as a `u64`; `None` if `s` is empty, has a non-digit or overflows.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_tchars_only() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"x-custom_!#$%&'*+.^`|~9"));
        for bad in [
            &b""[..],
            b"a b",
            b"a:b",
            b"a\"b",
            b"a(b",
            b"\xc3\xa9",
            b"a\0",
        ] {
            assert!(!is_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn ows_is_trimmed_on_both_sides() {
        assert_eq!(trim_ows(b" \t a b \t "), b"a b");
        assert_eq!(trim_ows(b" \t "), b"");
    }

    #[test]
    fn list_elements_skip_empty_ones() {
        let v: Vec<&[u8]> = list_elements(b" a ,, b,\tc ,").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"c"]);
    }

    #[test]
    fn quoted_strings_are_measured_with_escapes() {
        assert_eq!(quoted_string_len(b"\"ab\\\"c\" rest"), Some(7));
        assert_eq!(quoted_string_len(b"\"\""), Some(2));
        assert_eq!(quoted_string_len(b"\"open"), None);
        assert_eq!(quoted_string_len(b"\"a\0\""), None);
        assert_eq!(quoted_string_len(b"\"a\\"), None);
    }

    #[test]
    fn crlf_is_found_and_bare_endings_are_refused() {
        assert_eq!(find_crlf(b"ab\r\ncd", 0), Ok(Some(2)));
        assert_eq!(find_crlf(b"ab\r\ncd\r\n", 4), Ok(Some(6)));
        assert_eq!(find_crlf(b"ab", 0), Ok(None));
        assert_eq!(find_crlf(b"ab\r", 0), Ok(None));
        assert_eq!(find_crlf(b"ab\ncd", 0), Err(ProtoError::BareLf));
        assert_eq!(find_crlf(b"ab\rcd", 0), Err(ProtoError::BareCr));
    }

    #[test]
    fn decimal_parsing_refuses_signs_blanks_and_overflow() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"007"), Some(7));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b" 1",
            b"1a",
            b"18446744073709551616",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn numbers_are_written_in_decimal_and_hex() {
        let mut out = Vec::new();
        push_decimal(&mut out, 0);
        out.push(b' ');
        push_decimal(&mut out, u64::MAX);
        out.push(b' ');
        push_hex(&mut out, 0);
        out.push(b' ');
        push_hex(&mut out, 0xbeef);
        out.push(b' ');
        push_hex(&mut out, u64::MAX);
        assert_eq!(out, b"0 18446744073709551615 0 beef ffffffffffffffff");
    }
}
