//! The in-process references: crossbeam channels between two threads of
//! this process (no process boundary, no validation of a hostile peer), and
//! two floors: one cache line bounced between the two CPUs (for spinning
//! consumers) and one futex wake-up each way (for sleeping ones).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use ringway_layer_shm::CachePadded;

use crate::cpu::{pin, Party, Pinned};
use crate::patience::{Stall, STALL_LIMIT};
use crate::payload::{message, stamp, SeqCheck};
use crate::{Error, PingPong, Result, Stream, PING_BYTES};

/// Bytes of messages a stream's channel holds, as a layer lane does (256 KiB).
const CHANNEL_BYTES: usize = 256 * 1024;

fn join(thread: JoinHandle<()>) -> Result<()> {
    thread
        .join()
        .map_err(|_| Error::msg("the peer thread panicked"))
}

// ----- latency ---------------------------------------------------------------

/// Ping-pong of 64-byte messages with a thread over two `bounded(1)` channels.
pub struct CrossbeamPingPong {
    /// `None` once the peer has been told to stop (by dropping it).
    to: Option<Sender<[u8; PING_BYTES]>>,
    from: Receiver<[u8; PING_BYTES]>,
    msg: [u8; PING_BYTES],
    seq: u64,
    peer: Option<JoinHandle<()>>,
    _pinned: Pinned,
}

impl CrossbeamPingPong {
    /// Spawns the echo thread.
    pub fn start() -> Result<Self> {
        let (to, their_from) = bounded::<[u8; PING_BYTES]>(1);
        let (their_to, from) = bounded(1);
        let peer = std::thread::Builder::new()
            .name("crossbeam echo".into())
            .spawn(move || {
                let _pinned = pin(Party::Peer(0));
                // Ends when the other side hangs up.
                for m in their_from {
                    if their_to.send(m).is_err() {
                        return;
                    }
                }
            })?;
        let mut msg = [0u8; PING_BYTES];
        msg.copy_from_slice(&message(PING_BYTES));
        Ok(CrossbeamPingPong {
            to: Some(to),
            from,
            msg,
            seq: 0,
            peer: Some(peer),
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl PingPong for CrossbeamPingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        self.seq += 1;
        stamp(&mut self.msg, 0, self.seq);
        self.to.as_ref().expect("running").send(self.msg)?;
        let back = self.from.recv_timeout(STALL_LIMIT)?;
        if back != self.msg {
            return Err(Error::msg(format!(
                "echo of ping {} differs from the ping",
                self.seq
            )));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.to = None;
        join(self.peer.take().expect("finished once"))
    }
}

impl Drop for CrossbeamPingPong {
    fn drop(&mut self) {
        // Hang up first, so the thread ends and the join returns.
        self.to = None;
        if let Some(t) = self.peer.take() {
            let _ = t.join();
        }
    }
}

/// The hardware floor: two threads bouncing one cache line (a counter each
/// side bumps in turn, busy-polling). No message moves; a one-way time below
/// this is impossible for any transport between the same two CPUs.
pub struct CacheLinePingPong {
    line: Arc<CachePadded<AtomicU64>>,
    /// Round trips done; the line holds `2 * seq` between round trips.
    seq: u64,
    peer: Option<JoinHandle<()>>,
    _pinned: Pinned,
}

/// Value of the line that tells the peer thread to stop.
const LINE_STOP: u64 = u64::MAX;

impl CacheLinePingPong {
    /// Spawns the peer thread.
    pub fn start() -> Result<Self> {
        let line = Arc::new(CachePadded(AtomicU64::new(0)));
        let theirs = Arc::clone(&line);
        let peer = std::thread::Builder::new()
            .name("cache-line echo".into())
            .spawn(move || {
                let _pinned = pin(Party::Peer(0));
                // Spins until told to stop (dropping the rig tells it, too).
                loop {
                    match theirs.load(Ordering::Acquire) {
                        LINE_STOP => return,
                        v if v % 2 == 1 => theirs.store(v + 1, Ordering::Release),
                        _ => std::hint::spin_loop(),
                    }
                }
            })?;
        Ok(CacheLinePingPong {
            line,
            seq: 0,
            peer: Some(peer),
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl PingPong for CacheLinePingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        let odd = 2 * self.seq + 1;
        self.line.store(odd, Ordering::Release);
        let mut stall = Stall::new("the cache-line echo");
        while self.line.load(Ordering::Acquire) != odd + 1 {
            std::hint::spin_loop();
            stall.idle()?;
        }
        self.seq += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.line.store(LINE_STOP, Ordering::Release);
        join(self.peer.take().expect("finished once"))
    }
}

impl Drop for CacheLinePingPong {
    fn drop(&mut self) {
        self.line.store(LINE_STOP, Ordering::Release);
        if let Some(t) = self.peer.take() {
            let _ = t.join();
        }
    }
}

/// A 64-byte message with an 8-byte commit word: `seq` then the payload in
/// the eight words after it, so the message spans two cache lines, as any
/// 64-byte message with a header must.
#[repr(C)]
#[derive(Default)]
struct MessageBlock {
    seq: AtomicU64,
    payload: [AtomicU64; 8],
}

/// The floor for a 64-byte message between spinning threads: each direction
/// has one [`MessageBlock`]; the sender writes the payload, then publishes it
/// with a Release store of the sequence number; the receiver spins on the
/// sequence number, then reads the payload and answers in the other block.
/// No ring, no validation: what moving the two lines costs on this machine,
/// against which the layer's spinning hop (also two lines per 64-byte
/// message) is judged.
pub struct MessageLinePingPong {
    ping: Arc<CachePadded<MessageBlock>>,
    pong: Arc<CachePadded<MessageBlock>>,
    seq: u64,
    peer: Option<JoinHandle<()>>,
    _pinned: Pinned,
}

impl MessageLinePingPong {
    /// Spawns the peer thread.
    pub fn start() -> Result<Self> {
        let ping = Arc::new(CachePadded(MessageBlock::default()));
        let pong = Arc::new(CachePadded(MessageBlock::default()));
        let (their_ping, their_pong) = (Arc::clone(&ping), Arc::clone(&pong));
        let peer = std::thread::Builder::new()
            .name("message echo".into())
            .spawn(move || {
                let _pinned = pin(Party::Peer(0));
                let mut last = 0;
                loop {
                    // Acquire: pairs with the sender's Release store of
                    // `seq`, so the payload words it wrote before are seen.
                    match their_ping.seq.load(Ordering::Acquire) {
                        LINE_STOP => return,
                        v if v != last => {
                            last = v;
                            for (to, from) in their_pong.payload.iter().zip(&their_ping.payload) {
                                to.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
                            }
                            their_pong.seq.store(v, Ordering::Release);
                        }
                        _ => std::hint::spin_loop(),
                    }
                }
            })?;
        Ok(MessageLinePingPong {
            ping,
            pong,
            seq: 0,
            peer: Some(peer),
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl PingPong for MessageLinePingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        self.seq += 1;
        for (i, w) in self.ping.payload.iter().enumerate() {
            w.store(self.seq ^ i as u64, Ordering::Relaxed);
        }
        self.ping.seq.store(self.seq, Ordering::Release);
        let mut stall = Stall::new("the message echo");
        while self.pong.seq.load(Ordering::Acquire) != self.seq {
            std::hint::spin_loop();
            stall.idle()?;
        }
        for (i, w) in self.pong.payload.iter().enumerate() {
            if w.load(Ordering::Relaxed) != self.seq ^ i as u64 {
                return Err(Error::msg(format!(
                    "echo of ping {} differs from the ping",
                    self.seq
                )));
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.ping.seq.store(LINE_STOP, Ordering::Release);
        join(self.peer.take().expect("finished once"))
    }
}

impl Drop for MessageLinePingPong {
    fn drop(&mut self) {
        self.ping.seq.store(LINE_STOP, Ordering::Release);
        if let Some(t) = self.peer.take() {
            let _ = t.join();
        }
    }
}

/// The floor for sleeping consumers: two threads that take turns through a
/// futex word, each sleeping in `FUTEX_WAIT` until the other wakes it. No
/// message moves; it is the price of one cross-CPU wake-up.
pub struct FutexPingPong {
    word: Arc<AtomicU32>,
    /// Round trips done; the word holds `2 * seq` between round trips.
    seq: u32,
    peer: Option<JoinHandle<()>>,
    _pinned: Pinned,
}

/// Value of the word that tells the peer thread to stop (even, so it is
/// never mistaken for a ping).
const WORD_STOP: u32 = u32::MAX - 1;

/// Sleeps while `word` holds `value` (or until a wake-up or 100 ms pass).
fn futex_wait(word: &AtomicU32, value: u32) {
    let timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call and
    // `timeout` a valid timespec; the kernel only reads them.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            value,
            &timeout as *const libc::timespec,
        )
    };
}

/// Wakes the thread sleeping on `word`, if any.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not write memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        )
    };
}

impl FutexPingPong {
    /// Spawns the peer thread.
    pub fn start() -> Result<Self> {
        let word = Arc::new(AtomicU32::new(0));
        let theirs = Arc::clone(&word);
        let peer = std::thread::Builder::new()
            .name("futex echo".into())
            .spawn(move || {
                let _pinned = pin(Party::Peer(0));
                loop {
                    match theirs.load(Ordering::Acquire) {
                        WORD_STOP => return,
                        v if v % 2 == 1 => {
                            theirs.store(v + 1, Ordering::Release);
                            futex_wake(&theirs);
                        }
                        v => futex_wait(&theirs, v),
                    }
                }
            })?;
        Ok(FutexPingPong {
            word,
            seq: 0,
            peer: Some(peer),
            _pinned: pin(Party::Consumer)?,
        })
    }

    fn stop(&mut self) -> Option<JoinHandle<()>> {
        self.word.store(WORD_STOP, Ordering::Release);
        futex_wake(&self.word);
        self.peer.take()
    }
}

impl PingPong for FutexPingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        let odd = 2 * self.seq + 1;
        self.word.store(odd, Ordering::Release);
        futex_wake(&self.word);
        let mut stall = Stall::new("the futex echo");
        loop {
            match self.word.load(Ordering::Acquire) {
                v if v == odd + 1 => break,
                v => futex_wait(&self.word, v),
            }
            stall.idle()?;
        }
        // Wraps long before `2 * seq + 2` could reach WORD_STOP.
        self.seq = (self.seq + 1) % (1 << 30);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        join(self.stop().expect("finished once"))
    }
}

impl Drop for FutexPingPong {
    fn drop(&mut self) {
        if let Some(t) = self.stop() {
            let _ = t.join();
        }
    }
}

// ----- throughput ------------------------------------------------------------

/// A producer thread streaming `[u8; N]` messages through a bounded channel.
pub struct CrossbeamStream<const N: usize> {
    /// Counts to send; `None` once the producer has been told to stop.
    cmd: Option<Sender<u64>>,
    data: Receiver<[u8; N]>,
    check: SeqCheck,
    sent: u64,
    peer: Option<JoinHandle<()>>,
    _pinned: Pinned,
}

impl<const N: usize> CrossbeamStream<N> {
    /// Spawns the producer thread.
    pub fn start() -> Result<Self> {
        let (cmd, their_cmd) = unbounded::<u64>();
        let (their_data, data) = bounded::<[u8; N]>((CHANNEL_BYTES / N).max(1));
        let peer = std::thread::Builder::new()
            .name("crossbeam producer".into())
            .spawn(move || {
                let _pinned = pin(Party::Peer(0));
                let mut msg = [0u8; N];
                msg.copy_from_slice(&message(N));
                let mut seq = 0u64;
                for n in their_cmd {
                    for _ in 0..n {
                        stamp(&mut msg, 0, seq);
                        if their_data.send(msg).is_err() {
                            return;
                        }
                        seq += 1;
                    }
                }
            })?;
        Ok(CrossbeamStream {
            cmd: Some(cmd),
            data,
            check: SeqCheck::new(1, N),
            sent: 0,
            peer: Some(peer),
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl<const N: usize> Stream for CrossbeamStream<N> {
    fn transfer(&mut self, n: u64) -> Result<Duration> {
        let start = Instant::now();
        self.cmd.as_ref().expect("running").send(n)?;
        for _ in 0..n {
            let m = self.data.recv_timeout(STALL_LIMIT)?;
            self.check.accept(&m);
        }
        let elapsed = start.elapsed();
        self.sent += n;
        self.check.expect_totals(&[self.sent]);
        Ok(elapsed)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.cmd = None;
        join(self.peer.take().expect("finished once"))?;
        if self.data.try_recv().is_ok() {
            return Err(Error::msg(
                "the producer thread sent more than it was asked for",
            ));
        }
        Ok(())
    }
}

impl<const N: usize> Drop for CrossbeamStream<N> {
    fn drop(&mut self) {
        self.cmd = None;
        if let Some(t) = self.peer.take() {
            // Hang up the data channel too, so a producer blocked on a full
            // channel gets an error and ends.
            self.data = crossbeam_channel::never();
            let _ = t.join();
        }
    }
}
