//! Bitmasks of endpoints and of a channel's lanes: [`WORDS`] `u64`s, 256
//! bits, bit `i` being bit `i % 64` of word `i / 64`.
//!
//! A mask in shared memory is an array of atomic words; [`Mask`] is a copy
//! taken word by word. Taking a copy is not one atomic snapshot, and need not
//! be: each bit has its own meaning (a lane listed, an endpoint waiting), set
//! and cleared by single-word atomic operations, so a copy is a set of bits
//! each of which was true at the moment its word was read.

use crate::sync::{AtomicU64, Ordering};

/// Words per mask.
pub const WORDS: usize = 4;
/// Bits per mask.
pub const BITS: u32 = WORDS as u32 * 64;

/// A copy of a mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mask(pub [u64; WORDS]);

impl Mask {
    /// Reads every word of `words` with `order`.
    #[inline]
    pub fn load(words: &[AtomicU64; WORDS], order: Ordering) -> Mask {
        Mask(std::array::from_fn(|w| words[w].load(order)))
    }

    /// Whether no bit is set.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// The lowest clear bit, if any.
    pub fn first_clear(&self) -> Option<u32> {
        self.0
            .iter()
            .enumerate()
            .find(|(_, &w)| w != u64::MAX)
            .map(|(i, &w)| i as u32 * 64 + (!w).trailing_zeros())
    }

    /// The set bits, lowest first.
    #[inline]
    pub fn iter(self) -> impl Iterator<Item = u32> {
        self.iter_from(0)
    }

    /// The set bits from `start` up, then those below `start` (round robin).
    #[inline]
    pub fn iter_from(self, start: u32) -> impl Iterator<Item = u32> {
        debug_assert!(start < BITS);
        let (sw, sb) = ((start / 64) as usize, start % 64);
        // Word `sw` is visited twice: its bits from `sb` first, its bits
        // below `sb` last.
        let high = if sb == 0 { u64::MAX } else { u64::MAX << sb };
        (0..=WORDS).flat_map(move |k| {
            let w = (sw + k) % WORDS;
            let bits = match k {
                0 => self.0[w] & high,
                WORDS => self.0[w] & !high,
                _ => self.0[w],
            };
            bits_of(bits).map(move |b| w as u32 * 64 + b)
        })
    }
}

/// Bits set in `word`, lowest first.
#[inline]
fn bits_of(mut word: u64) -> impl Iterator<Item = u32> {
    std::iter::from_fn(move || {
        if word == 0 {
            return None;
        }
        let b = word.trailing_zeros();
        word &= word - 1;
        Some(b)
    })
}

/// The word and the bit within it of bit `i`.
#[inline]
pub fn word_bit(i: u32) -> (usize, u64) {
    debug_assert!(i < BITS);
    ((i / 64) as usize, 1 << (i % 64))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn mask(bits: &[u32]) -> Mask {
        let mut m = Mask::default();
        for &b in bits {
            m.0[(b / 64) as usize] |= 1 << (b % 64);
        }
        m
    }

    #[test]
    fn round_robin_visits_every_bit_once_starting_anywhere() {
        let bits = [0, 5, 63, 64, 130, 191, 200, 255];
        let m = mask(&bits);
        for start in 0..BITS {
            let got: Vec<u32> = m.iter_from(start).collect();
            let mut want: Vec<u32> = bits.iter().copied().filter(|&b| b >= start).collect();
            want.extend(bits.iter().copied().filter(|&b| b < start));
            assert_eq!(got, want, "start {start}");
        }
    }

    #[test]
    fn first_clear_spans_words() {
        assert_eq!(
            Mask([u64::MAX, u64::MAX, 0b1011, 0]).first_clear(),
            Some(130)
        );
        assert_eq!(Mask([u64::MAX, 0, 0, 0]).first_clear(), Some(64));
        assert_eq!(Mask([u64::MAX; WORDS]).first_clear(), None);
        assert!(Mask::default().is_empty());
        assert!(!mask(&[255]).is_empty());
    }
}
