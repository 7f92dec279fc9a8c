//! Channel and group names, as the Channels channel-layer spec defines them.
//!
//! Names are ASCII letters, digits, `-`, `_` and `.`, shorter than 100
//! characters. A channel name may contain one `!`: the part up to and including
//! it names a *process-specific* channel (one ring, consumed by the endpoint
//! that created it with `new_channel`), the part after it is a local tag the
//! receiver demultiplexes on.

use crate::error::{Error, Result};
use crate::layout::MAX_NAME;

fn valid_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// A parsed channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    /// The name of the ring that carries it: the whole name, or the part up to
    /// and including `!`.
    pub ring: &'a str,
    /// The local part after `!` (empty for a normal channel).
    pub tag: &'a str,
}

impl ChannelName<'_> {
    /// Whether this is a process-specific name.
    pub fn is_process_specific(&self) -> bool {
        self.ring.ends_with('!')
    }
}

/// Validates a channel name and splits it at `!`.
pub fn parse_channel(name: &str) -> Result<ChannelName<'_>> {
    check_len("channel", name)?;
    let bytes = name.as_bytes();
    let bang = bytes.iter().position(|&b| b == b'!');
    for (i, &b) in bytes.iter().enumerate() {
        if !(valid_char(b) || Some(i) == bang) {
            return Err(Error::InvalidName(format!(
                "channel name {name:?} has {:?} at {i}: only ASCII letters, digits, '-', '_', '.' and one '!' are allowed",
                b as char
            )));
        }
    }
    match bang {
        Some(0) => Err(Error::InvalidName(format!(
            "channel name {name:?} starts with '!'"
        ))),
        Some(i) => Ok(ChannelName {
            ring: &name[..=i],
            tag: &name[i + 1..],
        }),
        None => Ok(ChannelName {
            ring: name,
            tag: "",
        }),
    }
}

/// Validates a group name.
pub fn check_group(name: &str) -> Result<()> {
    check_len("group", name)?;
    if let Some(i) = name.bytes().position(|b| !valid_char(b)) {
        return Err(Error::InvalidName(format!(
            "group name {name:?} has {:?} at {i}: only ASCII letters, digits, '-', '_' and '.' are allowed",
            name.as_bytes()[i] as char
        )));
    }
    Ok(())
}

fn check_len(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName(format!("{what} name is empty")));
    }
    if name.len() > MAX_NAME {
        return Err(Error::InvalidName(format!(
            "{what} name of {} characters (must be shorter than 100)",
            name.len()
        )));
    }
    Ok(())
}

/// Shell-style glob match (`*` any run, `?` one character), for capacity rules.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_specific_names_split_at_the_bang() {
        let n = parse_channel("specific.ab12!xyz").unwrap();
        assert_eq!(n.ring, "specific.ab12!");
        assert_eq!(n.tag, "xyz");
        assert!(n.is_process_specific());
        let n = parse_channel("http.request").unwrap();
        assert_eq!((n.ring, n.tag), ("http.request", ""));
        assert!(!n.is_process_specific());
    }

    #[test]
    fn bad_names_are_rejected_with_the_reason() {
        for bad in ["", "a b", "two!bangs!", "!x", "caf\u{e9}", &"x".repeat(100)] {
            assert!(
                matches!(parse_channel(bad), Err(Error::InvalidName(_))),
                "{bad:?}"
            );
        }
        assert!(check_group("chat.room-1_a").is_ok());
        assert!(check_group("chat!room").is_err());
    }

    #[test]
    fn glob_matches_like_fnmatch() {
        assert!(glob_match(b"http.*", b"http.request"));
        assert!(glob_match(b"*!*", b"reactor.0!conn"));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"abbc"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"http.*", b"websocket.receive"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
    }
}
