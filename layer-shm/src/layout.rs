//! The shared-memory layout: a `#[repr(C)]` header followed by fixed tables.
//!
//! ```text
//! offset 0            Header (magic, version, geometry, region offsets, lock word)
//! endpoints_off       [EndpointSlot; MAX_ENDPOINTS]   who is attached
//! channels_off        [ChannelSlot; channels]         named rings and their wake words
//! lane_ctrl_off       [LaneSlot; lanes]               lane positions and ownership
//! members_off         [MemberSlot; members]           group memberships
//! lane_data_off       [u8; lanes * lane_bytes]        lane data, page-aligned
//! ```
//!
//! Every region starts on a 4096-byte boundary. The layout is a pure function
//! of the geometry ([`Geometry::layout`]), so a process opening a segment
//! recomputes it and rejects a header whose offsets or size disagree.
//!
//! Fields written with atomics are atomics. Fields that are written once before
//! the segment is published (geometry) are plain integers, read only through a
//! validated copy ([`Geometry`]).

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::lock::LockWord;
use crate::mask::WORDS;
use crate::ring::{self, LaneCtrl, RECORD_HEADER};
use crate::sync::CachePadded;

/// First eight bytes of every segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"RINGWAY\0");
/// Bumped on every incompatible change of this file.
pub const VERSION: u32 = 3;
/// The architecture the segment was made on. Every field has the same size
/// on x86_64 and aarch64, but the memory orderings are argued per
/// architecture and nothing is gained by sharing a segment across them.
pub const ARCH_TAG: u32 = if cfg!(target_arch = "x86_64") {
    1 << 16
} else if cfg!(target_arch = "aarch64") {
    2 << 16
} else {
    0xff << 16
};
/// Attached endpoints at most. Endpoint bitmasks are four `u64`s.
pub const MAX_ENDPOINTS: usize = 256;
/// Producer lanes one channel may have at most: a reactor's inbox has one
/// per worker (and per reactor that writes to it). Its lane mask is
/// four `u64`s.
pub const LANES_PER_CHANNEL: usize = 256;
/// Longest channel or group name, in bytes (the Channels spec says names are
/// shorter than 100 characters).
pub const MAX_NAME: usize = 99;
const NAME_WORDS: usize = 13;
/// Capacity rules the header can hold.
pub const MAX_RULES: usize = 16;
const PAGE: u64 = 4096;

/// Endpoint slot states.
pub mod endpoint_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// Attached: `pid` and `start_time` name a live process (or a dead one the
    /// reaper has not seen yet).
    pub const ACTIVE: u32 = 1;
}

/// Channel slot states.
pub mod channel_state {
    /// Unused.
    pub const FREE: u32 = 0;
    /// In use under its name; `generation` identifies this use.
    pub const ACTIVE: u32 = 1;
}

/// Lane states.
pub mod lane_state {
    /// In the pool.
    pub const FREE: u32 = 0;
    /// Owned by a live producer endpoint and listed in its channel.
    pub const ACTIVE: u32 = 1;
    /// Its producer is gone; the consumer drains it, then the lane is freed.
    pub const ORPHANED: u32 = 2;
    /// Its channel is gone; its producer frees it when it next looks.
    pub const DETACHED: u32 = 3;
}

/// Who is attached: one slot per [`crate::Endpoint`]. Claimed and freed
/// without the segment lock (see `liveness.rs`).
#[repr(C, align(128))]
pub struct EndpointSlot {
    /// 0 while the slot is free; the pid of the process that claimed it
    /// (CAS from 0) until the slot is freed. Claiming comes first, then
    /// `pid`, `start_time`, then `state` becomes ACTIVE.
    pub claimer: AtomicU32,
    /// One of [`endpoint_state`]: ACTIVE is stored `Release` after the other
    /// fields, FREE when the endpoint is released (then `claimer` is cleared).
    pub state: AtomicU32,
    /// Bumped each time the slot is freed, so stale references (a lock
    /// owner id, a channel's owner) are detectable.
    pub generation: AtomicU32,
    /// The process the endpoint lives in.
    pub pid: AtomicU32,
    /// Whether the endpoint has a doorbell FIFO (see `wake.rs`).
    pub has_bell: AtomicU32,
    /// The process's start time (`/proc/PID/stat` field 22), so a reused pid is
    /// not mistaken for the endpoint's process.
    pub start_time: AtomicU64,
}

/// The wake-up words of a channel, on their own cache line: read by every
/// producer after each send and by the consumer once per receive batch,
/// written only by those who go to sleep and those who wake them.
#[repr(C)]
pub struct Wake {
    /// Futex word: bumped by a producer that finds sleepers (see `wake.rs`).
    pub epoch: AtomicU32,
    /// Consumers sleeping (or about to) on `epoch`.
    pub sleepers: AtomicU32,
    /// Endpoints waiting on their doorbell for a message in this channel,
    /// one bit each (bit `i % 64` of word `i / 64`).
    pub fd_waiters: [AtomicU64; WORDS],
    /// Producers waiting on their doorbell for room in this channel (see
    /// `Endpoint::arm_space`), one bit each.
    pub space_waiters: [AtomicU64; WORDS],
}

/// The consumer's own line of a channel: written by whoever receives, never
/// by producers.
#[repr(C)]
pub struct ConsumerLine {
    /// Receive claim of a normal channel: 0, or the endpoint index + 1
    /// currently popping.
    pub claim: AtomicU32,
    /// Alignment filler.
    pub _reserved: u32,
    /// Records taken out of the channel (delivered or expired) since it was
    /// created; stored (not incremented: one consumer at a time) once per
    /// receive batch. A supervisor's heartbeat reads it (`Endpoint::progress`).
    pub taken: AtomicU64,
}

/// A named channel: its identity, its producer lanes, its wake-up words.
#[repr(C, align(128))]
pub struct ChannelSlot {
    /// One of [`channel_state`]. Written under the segment lock, `Release`
    /// after the other fields; read `Acquire` by lock-free senders.
    pub state: AtomicU32,
    /// Bumped when the slot is freed. A handle that cached (slot, generation)
    /// checks it before each use.
    pub generation: AtomicU32,
    /// Endpoint index + 1 that owns (and alone consumes) a process-specific
    /// channel; 0 for a normal channel.
    pub owner: AtomicU32,
    /// The owner's generation.
    pub owner_gen: AtomicU32,
    /// Most messages the channel holds (counted over all its lanes).
    pub capacity: AtomicU32,
    /// Length of `name`.
    pub name_len: AtomicU32,
    /// Hash of the name, to skip most comparisons when searching.
    pub hash: AtomicU64,
    /// Bit `i` set (bit `i % 64` of word `i / 64`): `lanes[i]` holds a lane.
    /// Set `Release` after `lanes[i]`.
    pub lane_mask: [AtomicU64; WORDS],
    /// Lane index + 1 for each producer lane.
    pub lanes: [AtomicU32; LANES_PER_CHANNEL],
    /// The channel name (for a process-specific channel, the part up to and
    /// including `!`).
    pub name: [AtomicU64; NAME_WORDS],
    /// Wake-up words (read by every producer after each send).
    pub wake: CachePadded<Wake>,
    /// The receive claim and the progress counter. On its own line:
    /// receivers write it on every pop, producers never read it.
    pub consumer: CachePadded<ConsumerLine>,
}

/// Who owns a lane and which channel lists it.
#[repr(C)]
pub struct LaneMeta {
    /// One of [`lane_state`].
    pub state: AtomicU32,
    /// Producer endpoint index + 1.
    pub producer: AtomicU32,
    /// The producer's generation.
    pub producer_gen: AtomicU32,
    /// Channel slot index + 1.
    pub channel: AtomicU32,
    /// The channel's generation when the lane joined it.
    pub channel_gen: AtomicU32,
    /// Bumped each time the lane is allocated, so a receiver's cached view
    /// of it (positions) is known stale once the lane is reused.
    pub incarnation: AtomicU32,
}

/// A lane's control block and ownership record.
#[repr(C)]
pub struct LaneSlot {
    /// Positions (see [`crate::ring`]).
    pub ctrl: LaneCtrl,
    /// Ownership, on its own line so the positions' lines stay hot.
    pub meta: CachePadded<LaneMeta>,
}

/// One group membership.
#[repr(C)]
pub struct MemberSlot {
    /// 0 free, 1 used. Written under the segment lock.
    pub state: AtomicU32,
    /// Length of `group`.
    pub group_len: AtomicU32,
    /// Length of `channel`.
    pub channel_len: AtomicU32,
    /// Alignment filler.
    pub _reserved: u32,
    /// `CLOCK_MONOTONIC` ms after which the membership is void.
    pub expires_ms: AtomicU64,
    /// Hash of `group`.
    pub group_hash: AtomicU64,
    /// Group name.
    pub group: [AtomicU64; NAME_WORDS],
    /// Full channel name of the member.
    pub channel: [AtomicU64; NAME_WORDS],
}

/// A per-name capacity rule, matched with shell-style globs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RuleSlot {
    /// Length of `pattern`.
    pub pattern_len: u32,
    /// Capacity for channels whose name matches.
    pub capacity: u32,
    /// Pattern bytes (`*` and `?` wildcards).
    pub pattern: [u8; 104],
}

/// The segment header.
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: u64,
    /// [`VERSION`].
    pub version: u32,
    /// [`ARCH_TAG`].
    pub arch: u32,
    /// `size_of::<Header>()`.
    pub header_size: u32,
    /// 0 while the creator initialises, 1 when ready (`Release` by the creator,
    /// `Acquire` by openers).
    pub ready: AtomicU32,
    /// Size of the whole segment.
    pub total_size: u64,
    /// The creating (owning) process.
    pub owner_pid: u32,
    /// Geometry: channel slots.
    pub channels: u32,
    /// Geometry: lanes.
    pub lanes: u32,
    /// Geometry: membership slots.
    pub members: u32,
    /// Geometry: bytes of each lane's data area.
    pub lane_bytes: u32,
    /// Geometry: largest message payload.
    pub max_message: u32,
    /// Capacity of channels no rule matches.
    pub default_capacity: u32,
    /// Rules in use.
    pub rule_count: u32,
    /// Message expiry.
    pub message_expiry_ms: u64,
    /// Group membership expiry.
    pub group_expiry_ms: u64,
    /// Region offsets.
    pub endpoints_off: u64,
    /// Region offsets.
    pub channels_off: u64,
    /// Region offsets.
    pub lane_ctrl_off: u64,
    /// Region offsets.
    pub members_off: u64,
    /// Region offsets.
    pub lane_data_off: u64,
    /// Capacity rules, first match wins.
    pub rules: [RuleSlot; MAX_RULES],
    /// Bumped whenever an endpoint attaches, so the reaper knows to look.
    pub attach_epoch: AtomicU32,
    /// Alignment filler.
    pub _reserved: u32,
    /// The segment lock, guarding table changes (never the message path):
    /// a word naming its owner endpoint and a waiter count (`lock.rs`).
    pub lock: CachePadded<LockWord>,
}

/// The sizes a segment is made with, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Channel slots.
    pub channels: u32,
    /// Lanes.
    pub lanes: u32,
    /// Membership slots.
    pub members: u32,
    /// Bytes of each lane's data area.
    pub lane_bytes: u32,
    /// Largest message payload.
    pub max_message: u32,
}

/// Where each region starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the endpoint table.
    pub endpoints: u64,
    /// Offset of the channel table.
    pub channels: u64,
    /// Offset of the lane control table.
    pub lane_ctrl: u64,
    /// Offset of the membership table.
    pub members: u64,
    /// Offset of the lane data.
    pub lane_data: u64,
    /// Total size.
    pub total: u64,
}

fn page_up(n: u64) -> u64 {
    n.div_ceil(PAGE) * PAGE
}

impl Geometry {
    /// Checks the sizes against each other and the format's limits.
    pub fn validate(&self) -> Result<(), String> {
        let lb = self.lane_bytes as usize;
        if !lb.is_power_of_two() || !(4096..=ring::MAX_LANE_BYTES / 2).contains(&lb) {
            return Err(format!(
                "lane_bytes {lb} must be a power of two from 4096 to {}",
                ring::MAX_LANE_BYTES / 2
            ));
        }
        let max_record = ring::record_len(ring::MAX_TAG, self.max_message as usize);
        if self.max_message == 0 || max_record > lb / 2 {
            return Err(format!(
                "max_message {} must be at least 1 and, with its record header, fit twice in lane_bytes {lb}",
                self.max_message
            ));
        }
        if !(1..=1 << 20).contains(&self.channels) {
            return Err(format!(
                "channels {} must be from 1 to 1048576",
                self.channels
            ));
        }
        if !(1..=1 << 20).contains(&self.lanes) {
            return Err(format!("lanes {} must be from 1 to 1048576", self.lanes));
        }
        if self.members > 1 << 24 {
            return Err(format!("members {} must be at most 16777216", self.members));
        }
        let total = self.layout().total;
        if total > 1 << 40 {
            return Err(format!("segment of {total} bytes is too large"));
        }
        Ok(())
    }

    /// The largest record a lane accepts (header and padding included).
    pub fn max_record(&self) -> usize {
        ring::record_len(ring::MAX_TAG, self.max_message as usize).max(RECORD_HEADER)
    }

    /// The region offsets this geometry implies.
    pub fn layout(&self) -> Layout {
        use std::mem::size_of;
        let endpoints = page_up(size_of::<Header>() as u64);
        let channels = page_up(endpoints + (MAX_ENDPOINTS * size_of::<EndpointSlot>()) as u64);
        let lane_ctrl =
            page_up(channels + u64::from(self.channels) * size_of::<ChannelSlot>() as u64);
        let members = page_up(lane_ctrl + u64::from(self.lanes) * size_of::<LaneSlot>() as u64);
        let lane_data = page_up(members + u64::from(self.members) * size_of::<MemberSlot>() as u64);
        let total = lane_data + u64::from(self.lanes) * u64::from(self.lane_bytes);
        Layout {
            endpoints,
            channels,
            lane_ctrl,
            members,
            lane_data,
            total,
        }
    }
}

/// Writes `name` into a name field (under the segment lock).
pub fn store_name(field: &[AtomicU64; NAME_WORDS], name: &[u8]) {
    debug_assert!(name.len() <= MAX_NAME);
    crate::sync::write_bytes(field, 0, name);
}

/// Reads a name field of length `len` (clamped: the length is untrusted).
pub fn load_name(field: &[AtomicU64; NAME_WORDS], len: u32) -> Vec<u8> {
    let mut out = vec![0u8; (len as usize).min(MAX_NAME)];
    crate::sync::read_bytes(field, 0, &mut out);
    out
}

/// Whether a name field of length `len` holds `name` (no allocation).
pub fn name_eq(field: &[AtomicU64; NAME_WORDS], len: u32, name: &[u8]) -> bool {
    if len as usize != name.len() || name.len() > MAX_NAME {
        return false;
    }
    let mut buf = [0u8; NAME_WORDS * 8];
    crate::sync::read_bytes(field, 0, &mut buf[..name.len()]);
    &buf[..name.len()] == name
}

/// FNV-1a, for name hashes (not security-relevant: names are compared in full).
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_line_fields_are_padded_for_both_architectures() {
        assert_eq!(std::mem::align_of::<ChannelSlot>(), 128);
        assert_eq!(std::mem::size_of::<ChannelSlot>() % 128, 0);
        assert_eq!(std::mem::size_of::<LaneCtrl>(), 256);
        assert_eq!(std::mem::offset_of!(LaneCtrl, head), 128);
        assert_eq!(std::mem::offset_of!(ChannelSlot, wake) % 128, 0);
        // Every word a producer reads after a send, and the consumer once
        // per batch, on one line; the consumer's own words on another.
        assert!(std::mem::size_of::<Wake>() <= 128);
        assert_eq!(std::mem::offset_of!(ChannelSlot, consumer) % 128, 0);
        assert_eq!(std::mem::size_of::<EndpointSlot>(), 128);
    }

    #[test]
    fn layout_regions_are_page_aligned_and_disjoint() {
        let g = Geometry {
            channels: 7,
            lanes: 3,
            members: 5,
            lane_bytes: 4096,
            max_message: 1000,
        };
        g.validate().unwrap();
        let l = g.layout();
        let offs = [l.endpoints, l.channels, l.lane_ctrl, l.members, l.lane_data];
        assert!(offs.iter().all(|o| o % PAGE == 0));
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(l.total, l.lane_data + 3 * 4096);
    }

    #[test]
    fn geometry_rejects_message_larger_than_half_a_lane() {
        let g = Geometry {
            channels: 1,
            lanes: 1,
            members: 0,
            lane_bytes: 4096,
            max_message: 4000,
        };
        assert!(g.validate().unwrap_err().contains("max_message"));
        let g = Geometry {
            lane_bytes: 5000,
            max_message: 10,
            ..g
        };
        assert!(g.validate().unwrap_err().contains("power of two"));
    }
}
