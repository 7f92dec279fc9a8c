//! The baseline: a Unix-domain stream socket pair between this process and a
//! forked peer, with blocking reads and one `write` per message (as a server
//! relaying messages one by one would do). The consumer reads through a
//! 256 KiB `BufReader`, so it takes many messages per `read`.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::cpu::{pin, Party, Pinned};
use crate::patience::STALL_LIMIT;
use crate::payload::{message, read_stamp, stamp, SeqCheck};
use crate::peer::Child;
use crate::{Error, PingPong, Result, Stream, PING_BYTES};

/// The echo peer stops when it gets a ping with this sequence number.
const STOP: u64 = u64::MAX;

/// A connected pair; reads on our end give up after [`STALL_LIMIT`].
fn pair() -> Result<(UnixStream, UnixStream)> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_read_timeout(Some(STALL_LIMIT))?;
    Ok((ours, theirs))
}

/// Reads exactly `buf.len()` bytes, naming the peer in the error.
fn read_from_peer(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    r.read_exact(buf)
        .map_err(|e| Error::msg(format!("reading {what} from the socket peer: {e}")))
}

// ----- latency ---------------------------------------------------------------

/// Ping-pong of 64-byte messages over a socket pair.
pub struct UdsPingPong {
    sock: UnixStream,
    msg: [u8; PING_BYTES],
    back: [u8; PING_BYTES],
    seq: u64,
    peer: Child,
    _pinned: Pinned,
}

impl UdsPingPong {
    /// Makes the pair and forks the echo peer.
    pub fn start() -> Result<Self> {
        let (sock, theirs) = pair()?;
        let peer = Child::fork("socket echo peer", 0, move || {
            let mut s = theirs;
            let mut buf = [0u8; PING_BYTES];
            loop {
                read_from_peer(&mut s, &mut buf, "a ping")?;
                if read_stamp(&buf).1 == STOP {
                    return Ok(());
                }
                s.write_all(&buf)?;
            }
        })?;
        let mut msg = [0u8; PING_BYTES];
        msg.copy_from_slice(&message(PING_BYTES));
        Ok(UdsPingPong {
            sock,
            msg,
            back: [0; PING_BYTES],
            seq: 0,
            peer,
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl PingPong for UdsPingPong {
    #[inline]
    fn round_trip(&mut self) -> Result<()> {
        self.seq += 1;
        stamp(&mut self.msg, 0, self.seq);
        self.sock.write_all(&self.msg)?;
        read_from_peer(&mut self.sock, &mut self.back, "the echo")?;
        if self.back != self.msg {
            return Err(Error::msg(format!(
                "echo of ping {} differs from the ping",
                self.seq
            )));
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        stamp(&mut self.msg, 0, STOP);
        let stop = self.sock.write_all(&self.msg);
        // The peer's fate first: it explains a failed stop.
        let UdsPingPong { peer, _pinned, .. } = *self;
        peer.wait(Duration::from_secs(5))?;
        Ok(stop?)
    }
}

// ----- throughput ------------------------------------------------------------

/// A producer peer streaming sequence-numbered messages of one size over a
/// socket pair; commands (a little-endian u64 count, 0 to stop) go the other
/// way on the same pair.
pub struct UdsStream {
    reader: BufReader<UnixStream>,
    buf: Vec<u8>,
    check: SeqCheck,
    sent: u64,
    peer: Child,
    _pinned: Pinned,
}

impl UdsStream {
    /// Makes the pair and forks a producer of `size`-byte messages.
    pub fn start(size: usize) -> Result<Self> {
        let (sock, theirs) = pair()?;
        let peer = Child::fork("socket producer", 0, move || {
            let mut s = theirs;
            let mut msg = message(size);
            let mut seq = 0u64;
            loop {
                let mut cmd = [0u8; 8];
                read_from_peer(&mut s, &mut cmd, "a command")?;
                let n = u64::from_le_bytes(cmd);
                if n == 0 {
                    return Ok(());
                }
                for _ in 0..n {
                    stamp(&mut msg, 0, seq);
                    s.write_all(&msg)?;
                    seq += 1;
                }
            }
        })?;
        Ok(UdsStream {
            reader: BufReader::with_capacity(256 * 1024, sock),
            buf: vec![0; size],
            check: SeqCheck::new(1, size),
            sent: 0,
            peer,
            _pinned: pin(Party::Consumer)?,
        })
    }
}

impl Stream for UdsStream {
    fn transfer(&mut self, n: u64) -> Result<Duration> {
        let start = Instant::now();
        if n > 0 {
            self.reader.get_mut().write_all(&n.to_le_bytes())?;
        }
        for _ in 0..n {
            read_from_peer(&mut self.reader, &mut self.buf, "a message")?;
            self.check.accept(&self.buf);
        }
        let elapsed = start.elapsed();
        self.sent += n;
        self.check.expect_totals(&[self.sent]);
        Ok(elapsed)
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        let stop = self.reader.get_mut().write_all(&0u64.to_le_bytes());
        let UdsStream {
            mut reader,
            peer,
            _pinned,
            ..
        } = *self;
        // The peer's fate first: it explains a failed stop.
        peer.wait(Duration::from_secs(5))?;
        stop?;
        // The peer has exited and its end is closed: anything still readable
        // is a message it was not asked for.
        let mut extra = [0u8; 1];
        if !reader.buffer().is_empty() || reader.get_mut().read(&mut extra)? != 0 {
            return Err(Error::msg(
                "the socket producer sent more than it was asked for",
            ));
        }
        Ok(())
    }
}
