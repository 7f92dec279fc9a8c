//! Rigs over the shared-memory channel layer.
//!
//! Every rig creates its own segment, then forks its peers, which open the
//! segment by path and attach endpoints of their own. Messages go through the
//! fast path (`channel` once, then `send_id` / `try_receive_id` / `wait`), as
//! the server's hot loops do. Streams use a normal (named) channel, so
//! receiving goes through the consumer claim, as a worker's does; ping-pong
//! comes in both flavours (see [`Channels`]).

use std::path::Path;
use std::time::{Duration, Instant};

use ringway_layer_shm::{ChannelId, Config, Endpoint, Segment, SendError};

use crate::cpu::{pin, Party, Pinned};
use crate::patience::{Backoff, Stall};
use crate::payload::{message, shares, stamp, SeqCheck};
use crate::peer::Child;
use crate::{Error, PingPong, Result, Stream, PING_BYTES};

/// How a consumer waits for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Busy-polls (`Endpoint::spin` = [`SPIN`]): costs a core, wins latency.
    Spin,
    /// Sleeps on the channel's futex at once (`Endpoint::spin` = 0).
    Sleep,
}

impl Waiting {
    fn spin(self) -> u32 {
        match self {
            Waiting::Spin => SPIN,
            Waiting::Sleep => 0,
        }
    }
}

/// Spin iterations of a spinning consumer before it sleeps (milliseconds).
pub const SPIN: u32 = 1_000_000;

/// Spin iterations of an idle producer waiting for its next command: short,
/// so that a producer that finished its share gives the core back to the
/// others (three processes share two cores in the MPSC rig).
const COMMAND_SPIN: u32 = 10_000;

/// How long one `Endpoint::wait` may sleep before the caller re-checks its
/// deadline.
const WAIT_SLICE: Duration = Duration::from_millis(100);

/// Channel capacity for every rig: high enough that the lane's bytes, not the
/// message count, bound how far a producer may run ahead.
const CAPACITY: u32 = 100_000;

const PING: &str = "bench.ping";
const PONG: &str = "bench.pong";
const DATA: &str = "bench.data";
/// The echo peer stops when it gets a ping with this sequence number.
const STOP: u64 = u64::MAX;

fn ctl_name(producer: usize) -> String {
    format!("bench.ctl.{producer}")
}

fn config() -> Config {
    Config {
        capacity: CAPACITY,
        ..Config::default()
    }
}

/// Receives the next message of `id` into `buf`, waiting as the endpoint's
/// `spin` says; returns the tag length.
#[inline]
fn recv(ep: &mut Endpoint, id: ChannelId, buf: &mut Vec<u8>, stall: &mut Stall) -> Result<usize> {
    let mut empty_polls = 0u32;
    loop {
        if let Some(tag_len) = ep.try_receive_id(id, buf)? {
            return Ok(tag_len);
        }
        // The first empty poll is the normal case (the message is not there
        // yet); a second means `wait` spun out or slept a whole slice.
        empty_polls += 1;
        if empty_polls > 1 {
            stall.check()?;
        }
        ep.wait(id, Some(WAIT_SLICE));
    }
}

/// Sends `msg` with routing tag `tag` to `id`, retrying while the channel is
/// full (a full ring is backpressure, never a reason to drop).
#[inline]
fn send(ep: &mut Endpoint, id: ChannelId, tag: &[u8], msg: &[u8], stall: &mut Stall) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match ep.send_id(id, tag, msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Full) => {
                backoff.snooze();
                stall.idle()?;
            }
            Err(SendError::Other(e)) => return Err(e.into()),
        }
    }
}

/// Opens the segment at `path` in a peer process and attaches an endpoint.
fn attach(path: &Path, spin: u32) -> Result<(Segment, Endpoint)> {
    let seg = Segment::open(path)?;
    let mut ep = seg.endpoint()?;
    ep.spin = spin;
    Ok((seg, ep))
}

// ----- latency ---------------------------------------------------------------

/// Which channels a ping-pong goes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    /// Normal channels `bench.ping` and `bench.pong`; each receive takes the
    /// channel's consumer claim (a worker's request channel works this way).
    Named,
    /// Each side receives on a process-specific channel of its own, from
    /// `new_channel` (a reply channel works this way): no claim.
    ProcessSpecific,
}

/// Which end of a ping-pong.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Pinger,
    Echo,
}

/// Where one side of a ping-pong sends and receives.
struct Wiring {
    out: ChannelId,
    /// Routing tag of the peer's process-specific channel (empty for named).
    out_tag: Vec<u8>,
    inbox: ChannelId,
}

/// The part of a process-specific name up to `!`, and the tag after it.
fn split_name(name: &str) -> (&str, &str) {
    name.split_at(name.find('!').map_or(name.len(), |i| i + 1))
}

/// Resolves `side`'s channels. For process-specific channels the two sides
/// swap names over the normal channels `bench.setup.*` first.
fn wire(ep: &mut Endpoint, channels: Channels, side: Side) -> Result<Wiring> {
    let (out, inbox, tell, hear) = match side {
        Side::Pinger => (PING, PONG, "bench.setup.down", "bench.setup.up"),
        Side::Echo => (PONG, PING, "bench.setup.up", "bench.setup.down"),
    };
    if channels == Channels::Named {
        return Ok(Wiring {
            out: ep.channel(out)?,
            out_tag: Vec::new(),
            inbox: ep.channel(inbox)?,
        });
    }
    let mine = ep.new_channel(&format!("{inbox}."))?;
    let inbox = ep.channel(split_name(&mine).0)?;
    let (tell, hear) = (ep.channel(tell)?, ep.channel(hear)?);
    send(
        ep,
        tell,
        b"",
        mine.as_bytes(),
        &mut Stall::new("room in bench.setup"),
    )?;
    let mut buf = Vec::new();
    let tag_len = recv(
        ep,
        hear,
        &mut buf,
        &mut Stall::new("the peer's channel name"),
    )?;
    let theirs = std::str::from_utf8(&buf[tag_len..])
        .map_err(|_| Error::msg("channel name is not UTF-8"))?;
    let (ring, tag) = split_name(theirs);
    Ok(Wiring {
        out: ep.channel(ring)?,
        out_tag: tag.as_bytes().to_vec(),
        inbox,
    })
}

/// Ping-pong with a peer process: this process sends to the peer's channel
/// and receives the echo on its own.
pub struct LayerPingPong {
    ep: Endpoint,
    wiring: Wiring,
    msg: Vec<u8>,
    buf: Vec<u8>,
    seq: u64,
    peer: Child,
    /// Keeps the segment file alive (dropped after the peer is gone).
    _seg: Segment,
    _pinned: Pinned,
}

impl LayerPingPong {
    /// Creates a segment and forks the echo peer; both sides use `channels`
    /// and wait as `waiting` says.
    pub fn start(waiting: Waiting, channels: Channels) -> Result<Self> {
        let seg = Segment::create(&config())?;
        let path = seg.path().to_owned();
        let spin = waiting.spin();
        let peer = Child::fork("layer echo peer", 0, move || echo(&path, spin, channels))?;
        let _pinned = pin(Party::Consumer)?;
        let mut ep = seg.endpoint()?;
        ep.spin = spin;
        let wiring = wire(&mut ep, channels, Side::Pinger)?;
        Ok(LayerPingPong {
            ep,
            wiring,
            msg: message(PING_BYTES),
            buf: Vec::new(),
            seq: 0,
            peer,
            _seg: seg,
            _pinned,
        })
    }
}

impl PingPong for LayerPingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        self.seq += 1;
        stamp(&mut self.msg, 0, self.seq);
        let w = &self.wiring;
        send(
            &mut self.ep,
            w.out,
            &w.out_tag,
            &self.msg,
            &mut Stall::new("room for a ping"),
        )?;
        let tag_len = recv(
            &mut self.ep,
            w.inbox,
            &mut self.buf,
            &mut Stall::new("the echo"),
        )?;
        if self.buf[tag_len..] != self.msg[..] {
            return Err(Error::msg(format!(
                "echo of ping {} differs from the ping",
                self.seq
            )));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        stamp(&mut self.msg, 0, STOP);
        let w = &self.wiring;
        let stop = send(
            &mut self.ep,
            w.out,
            &w.out_tag,
            &self.msg,
            &mut Stall::new("room for a ping"),
        );
        let LayerPingPong {
            peer,
            ep,
            _seg,
            _pinned,
            ..
        } = *self;
        // The peer's fate first: it explains a failed stop.
        let status = peer.wait(Duration::from_secs(5));
        drop(ep);
        status.and(stop)
    }
}

/// The echo peer: returns every ping until told to stop.
fn echo(path: &Path, spin: u32, channels: Channels) -> Result<()> {
    let (_seg, mut ep) = attach(path, spin)?;
    let w = wire(&mut ep, channels, Side::Echo)?;
    let mut buf = Vec::with_capacity(PING_BYTES);
    loop {
        let tag_len = recv(&mut ep, w.inbox, &mut buf, &mut Stall::forever("a ping"))?;
        let msg = &buf[tag_len..];
        if crate::payload::read_stamp(msg).1 == STOP {
            return Ok(());
        }
        send(
            &mut ep,
            w.out,
            &w.out_tag,
            msg,
            &mut Stall::forever("room for a pong"),
        )?;
    }
}

// ----- throughput ------------------------------------------------------------

/// Producer processes streaming sequence-numbered messages of one size to
/// this process over one channel (each producer has its own lane in it).
pub struct LayerStream {
    ep: Endpoint,
    /// Messages per `send_many` / `try_receive_many` call (1: the
    /// one-message calls).
    batch: usize,
    data: ChannelId,
    /// One command channel per producer.
    ctl: Vec<ChannelId>,
    check: SeqCheck,
    /// Messages ordered from each producer so far.
    sent: Vec<u64>,
    buf: Vec<u8>,
    peers: Vec<Child>,
    _seg: Segment,
    _pinned: Pinned,
}

impl LayerStream {
    /// Creates a segment and forks `producers` producer processes of
    /// `size`-byte messages. This process consumes, waiting as `waiting` says.
    pub fn start(producers: usize, size: usize, waiting: Waiting) -> Result<Self> {
        Self::start_batched(producers, size, waiting, 1)
    }

    /// As [`LayerStream::start`], but producers send with `send_many` and
    /// this process drains with `try_receive_many`, `batch` at a time.
    pub fn start_batched(
        producers: usize,
        size: usize,
        waiting: Waiting,
        batch: usize,
    ) -> Result<Self> {
        let seg = Segment::create(&config())?;
        let mut peers = Vec::with_capacity(producers);
        for p in 0..producers {
            let path = seg.path().to_owned();
            peers.push(Child::fork("layer producer", p, move || {
                produce(&path, p, size, batch)
            })?);
        }
        let _pinned = pin(Party::Consumer)?;
        let mut ep = seg.endpoint()?;
        ep.spin = waiting.spin();
        let data = ep.channel(DATA)?;
        let ctl = (0..producers)
            .map(|p| ep.channel(&ctl_name(p)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(LayerStream {
            ep,
            batch,
            data,
            ctl,
            check: SeqCheck::new(producers, size),
            sent: vec![0; producers],
            buf: Vec::with_capacity(size),
            peers,
            _seg: seg,
            _pinned,
        })
    }
}

impl Stream for LayerStream {
    fn transfer(&mut self, n: u64) -> Result<Duration> {
        let shares = shares(n, self.ctl.len());
        let start = Instant::now();
        for (&ctl, &k) in self.ctl.iter().zip(&shares) {
            if k > 0 {
                send(
                    &mut self.ep,
                    ctl,
                    b"",
                    &k.to_le_bytes(),
                    &mut Stall::new("room for a command"),
                )?;
            }
        }
        if self.batch == 1 {
            for _ in 0..n {
                let tag_len = recv(
                    &mut self.ep,
                    self.data,
                    &mut self.buf,
                    &mut Stall::new("a message on bench.data"),
                )?;
                self.check.accept(&self.buf[tag_len..]);
            }
        } else {
            let mut got = 0u64;
            let mut stall = Stall::new("a message on bench.data");
            while got < n {
                let want = (n - got).min(self.batch as u64) as usize;
                let check = &mut self.check;
                let k = self
                    .ep
                    .try_receive_many(self.data, want, |_, payload| check.accept(payload))?;
                if k == 0 {
                    stall.check()?;
                    self.ep.wait(self.data, Some(WAIT_SLICE));
                }
                got += k as u64;
            }
        }
        let elapsed = start.elapsed();
        for (s, k) in self.sent.iter_mut().zip(shares) {
            *s += k;
        }
        self.check.expect_totals(&self.sent);
        Ok(elapsed)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let mut stop = Ok(());
        for &ctl in &self.ctl {
            stop = stop.and(send(
                &mut self.ep,
                ctl,
                b"",
                &0u64.to_le_bytes(),
                &mut Stall::new("room for a command"),
            ));
        }
        // The peers' fate first: it explains a failed stop.
        let mut status = Ok(());
        for peer in std::mem::take(&mut self.peers) {
            status = status.and(peer.wait(Duration::from_secs(5)));
        }
        status.and(stop)?;
        if self.ep.try_receive_id(self.data, &mut self.buf)?.is_some() {
            return Err(Error::msg(
                "a producer sent more messages than it was asked for",
            ));
        }
        Ok(())
    }
}

/// A producer peer: on each command `n` (a little-endian u64 on its command
/// channel) sends its next `n` messages; stops on 0.
fn produce(path: &Path, producer: usize, size: usize, batch: usize) -> Result<()> {
    let (_seg, mut ep) = attach(path, COMMAND_SPIN)?;
    let data = ep.channel(DATA)?;
    let ctl = ep.channel(&ctl_name(producer))?;
    let mut msg = message(size);
    let mut msgs: Vec<Vec<u8>> = (0..batch).map(|_| message(size)).collect();
    let mut buf = Vec::new();
    let mut seq = 0u64;
    loop {
        let tag_len = recv(&mut ep, ctl, &mut buf, &mut Stall::forever("a command"))?;
        let n =
            <[u8; 8]>::try_from(&buf[tag_len..]).map_err(|_| Error::msg("a command is 8 bytes"))?;
        let n = u64::from_le_bytes(n);
        if n == 0 {
            return Ok(());
        }
        if batch == 1 {
            for _ in 0..n {
                stamp(&mut msg, producer as u32, seq);
                send(
                    &mut ep,
                    data,
                    b"",
                    &msg,
                    &mut Stall::forever("room in bench.data"),
                )?;
                seq += 1;
            }
            continue;
        }
        let mut left = n;
        while left > 0 {
            let k = left.min(batch as u64) as usize;
            for (i, m) in msgs[..k].iter_mut().enumerate() {
                stamp(m, producer as u32, seq + i as u64);
            }
            let refs: Vec<&[u8]> = msgs[..k].iter().map(Vec::as_slice).collect();
            let mut done = 0;
            let mut backoff = Backoff::default();
            while done < k {
                match ep.send_many(data, b"", &refs[done..]) {
                    Ok(0) | Err(SendError::Full) => backoff.snooze(),
                    Ok(j) => done += j,
                    Err(SendError::Other(e)) => return Err(e.into()),
                }
            }
            seq += k as u64;
            left -= k as u64;
        }
    }
}

// ----- groups ----------------------------------------------------------------

/// A group of process-specific channels of one endpoint (so one ring with a
/// tag per member), sent to with `group_send` or with one `send_id` per
/// member, in this process. Drained after every send.
pub struct GroupFanout {
    ep: Endpoint,
    /// The ring every member's channel lives in.
    ring: ChannelId,
    /// Each member's tag (the part of its name after `!`).
    tags: Vec<Vec<u8>>,
    msg: Vec<u8>,
    buf: Vec<u8>,
    _seg: Segment,
}

const GROUP: &str = "bench.fanout";

impl GroupFanout {
    /// Creates a segment and a group of `members` channels from `new_channel`.
    pub fn start(members: usize) -> Result<Self> {
        let seg = Segment::create(&config())?;
        let mut ep = seg.endpoint()?;
        let mut ring = String::new();
        let mut tags = Vec::with_capacity(members);
        for _ in 0..members {
            let name = ep.new_channel("fanout.")?;
            ep.group_add(GROUP, &name)?;
            let (r, tag) = split_name(&name);
            ring = r.to_owned();
            tags.push(tag.as_bytes().to_vec());
        }
        let ring = ep.channel(&ring)?;
        Ok(GroupFanout {
            ep,
            ring,
            tags,
            msg: message(PING_BYTES),
            buf: Vec::new(),
            _seg: seg,
        })
    }

    /// Times one `group_send` to every member, then drains and checks.
    pub fn group_send(&mut self) -> Result<Duration> {
        let start = Instant::now();
        let r = self.ep.group_send(GROUP, &self.msg)?;
        let elapsed = start.elapsed();
        if r.sent != self.tags.len() || r.full != 0 || r.gone != 0 {
            return Err(Error::msg(format!(
                "group_send to {} members: {r:?}",
                self.tags.len()
            )));
        }
        self.drain()?;
        Ok(elapsed)
    }

    /// Times one `send_id` per member (the baseline), then drains and checks.
    pub fn send_each(&mut self) -> Result<Duration> {
        let start = Instant::now();
        for tag in &self.tags {
            self.ep.send_id(self.ring, tag, &self.msg)?;
        }
        let elapsed = start.elapsed();
        self.drain()?;
        Ok(elapsed)
    }

    /// Receives exactly one message per member, and nothing more.
    fn drain(&mut self) -> Result<()> {
        for i in 0..self.tags.len() {
            match self.ep.try_receive_id(self.ring, &mut self.buf)? {
                Some(tag_len) if self.buf[tag_len..] == self.msg[..] => {}
                Some(_) => return Err(Error::msg("a member received a different message")),
                None => {
                    return Err(Error::msg(format!(
                        "only {i} of {} members got the message",
                        self.tags.len()
                    )))
                }
            }
        }
        if self.ep.try_receive_id(self.ring, &mut self.buf)?.is_some() {
            return Err(Error::msg("a member got the message twice"));
        }
        Ok(())
    }
}
