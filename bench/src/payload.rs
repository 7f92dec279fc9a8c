//! Sequence-numbered payloads: every message a stream rig moves says who
//! produced it and its number, so the consumer can prove nothing was lost,
//! duplicated or reordered.
//!
//! ```text
//! 0        8           12                 size
//! | seq    | producer  | filler (0xa5)    |
//! ```
//!
//! All little-endian.

/// Smallest message that holds a stamp.
pub const STAMP_BYTES: usize = 12;

/// A `size`-byte message with filler bytes, ready to be [`stamp`]ed.
pub fn message(size: usize) -> Vec<u8> {
    assert!(size >= STAMP_BYTES, "messages must have room for a stamp");
    vec![0xa5; size]
}

/// Writes `producer` and `seq` into the first [`STAMP_BYTES`] of `msg`.
#[inline]
pub fn stamp(msg: &mut [u8], producer: u32, seq: u64) {
    msg[0..8].copy_from_slice(&seq.to_le_bytes());
    msg[8..12].copy_from_slice(&producer.to_le_bytes());
}

/// Reads a stamp back: `(producer, seq)`.
#[inline]
pub fn read_stamp(msg: &[u8]) -> (u32, u64) {
    let seq = u64::from_le_bytes(msg[0..8].try_into().expect("8 bytes"));
    let producer = u32::from_le_bytes(msg[8..12].try_into().expect("4 bytes"));
    (producer, seq)
}

/// The consumer's record of what each producer has delivered.
pub struct SeqCheck {
    size: usize,
    /// Next sequence number expected from each producer.
    next: Vec<u64>,
}

impl SeqCheck {
    /// Expects messages of `size` bytes from producers `0 .. producers`, each
    /// numbering its messages from 0.
    pub fn new(producers: usize, size: usize) -> Self {
        SeqCheck {
            size,
            next: vec![0; producers],
        }
    }

    /// Accepts the next message.
    ///
    /// # Panics
    /// If the message has the wrong size, an unknown producer, or is not the
    /// producer's next one: the transport lost, duplicated, reordered or
    /// corrupted a message.
    #[inline]
    pub fn accept(&mut self, msg: &[u8]) {
        if msg.len() != self.size {
            panic!(
                "message of {} bytes, expected {}: corrupted",
                msg.len(),
                self.size
            );
        }
        let (producer, seq) = read_stamp(msg);
        let Some(next) = self.next.get_mut(producer as usize) else {
            panic!("message from unknown producer {producer}: corrupted");
        };
        if seq != *next {
            panic!(
                "producer {producer}: got message {seq}, expected {}: messages were lost, duplicated or reordered",
                *next
            );
        }
        *next += 1;
    }

    /// Panics unless each producer has delivered exactly `sent[p]` messages.
    pub fn expect_totals(&self, sent: &[u64]) {
        assert_eq!(
            self.next, sent,
            "messages received per producer != messages sent"
        );
    }
}

/// Splits `n` messages among `producers` as evenly as possible.
pub fn shares(n: u64, producers: usize) -> Vec<u64> {
    let p = producers as u64;
    (0..p).map(|i| n / p + u64::from(i < n % p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut m = message(64);
        stamp(&mut m, 7, 1 << 40);
        assert_eq!(read_stamp(&m), (7, 1 << 40));
        assert_eq!(m[12..], [0xa5; 52]);
    }

    #[test]
    fn in_order_messages_pass() {
        let mut c = SeqCheck::new(2, 16);
        let mut m = message(16);
        for (p, s) in [(0, 0), (1, 0), (0, 1), (0, 2), (1, 1)] {
            stamp(&mut m, p, s);
            c.accept(&m);
        }
        c.expect_totals(&[3, 2]);
    }

    #[test]
    #[should_panic(expected = "lost, duplicated or reordered")]
    fn a_gap_panics() {
        let mut c = SeqCheck::new(1, 16);
        let mut m = message(16);
        stamp(&mut m, 0, 1);
        c.accept(&m);
    }

    #[test]
    fn shares_add_up() {
        assert_eq!(shares(7, 2), [4, 3]);
        assert_eq!(shares(1, 3), [1, 0, 0]);
    }
}
