//! A connection's socket I/O: the read kept in flight and the bytes it
//! brought ([`Reader`], [`Input`]), and how buffers give back memory.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::stream::Stream;

/// Size of each socket read.
pub const READ_SIZE: usize = 16 * 1024;
/// A buffer whose capacity grew past this for one large request or response
/// is given back (shrunk to [`KEEP`]) once that exchange is over.
pub const SHRINK_ABOVE: usize = 64 * 1024;
/// What a shrunk buffer keeps: enough for ordinary requests and responses.
pub const KEEP: usize = 16 * 1024;

/// Gives back the memory of a buffer that one large exchange grew: a
/// connection that once relayed a big response keeps no big buffer.
pub fn shrink(buf: &mut Vec<u8>) {
    if buf.capacity() > SHRINK_ABOVE {
        buf.shrink_to(KEEP.max(buf.len()));
    }
}

/// Bytes read from the socket and not yet consumed. Consumed bytes are
/// skipped by an offset and dropped in bulk, so pipelined requests are not
/// moved once per request.
#[derive(Default)]
pub struct Input {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes; in `0 ..= buf.len()`.
    at: usize,
}

impl Input {
    /// The unconsumed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.at..]
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks `n` bytes consumed.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.at += n;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            shrink(&mut self.buf);
        }
    }

    fn append(&mut self, data: &[u8]) {
        // Drop what was consumed once it is most of the buffer: each byte is
        // moved at most once more.
        if self.at > 0 && self.at >= self.buf.len() / 2 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

/// What a socket read gives back: the result and the buffer.
pub type ReadResult = (io::Result<usize>, Vec<u8>);

/// Starts a read of `stream` into `buf`'s spare capacity. tokio-uring's read
/// future has no name, so [`Reader`] is generic over what this returns.
pub async fn read_op(stream: Rc<Stream>, buf: Vec<u8>) -> ReadResult {
    stream.read(buf).await
}

/// The read side of a connection. It keeps one read in flight for the
/// connection's whole life while reading is allowed: dropping an in-flight
/// tokio-uring read loses the bytes it may have read.
pub struct Reader<F> {
    /// The read in flight (`None` between reads). Each read's future is
    /// written into this one box: reading allocates once per connection.
    op: Pin<Box<Option<F>>>,
    /// Makes a read's future ([`read_op`]; something else in tests).
    start: fn(Rc<Stream>, Vec<u8>) -> F,
    /// The read buffer while no read is in flight (one buffer, reused).
    spare: Option<Vec<u8>>,
    /// What was read and not yet consumed.
    pub input: Input,
    /// The socket reached its end (the client half-closed or closed, or the
    /// read failed): nothing more will come.
    pub eof: bool,
    /// The read failed (a reset): the client is gone, not just done sending.
    pub failed: bool,
    /// Reads are started while `input` holds fewer bytes than this.
    pub limit: usize,
}

impl<F: Future<Output = ReadResult>> Reader<F> {
    /// A reader that starts reads with `start`.
    pub fn new(start: fn(Rc<Stream>, Vec<u8>) -> F) -> Self {
        Reader {
            op: Box::pin(None),
            start,
            spare: None,
            input: Input::default(),
            eof: false,
            failed: false,
            limit: usize::MAX,
        }
    }

    /// Whether a new read should start.
    fn may_read(&self) -> bool {
        self.op.is_none() && !self.eof && self.input.len() < self.limit
    }

    /// Takes a finished read's result: bytes, or the end.
    fn complete(&mut self, res: io::Result<usize>, mut buf: Vec<u8>) {
        match res {
            Ok(n) if n > 0 => {
                self.input.append(&buf[..n]);
                buf.clear();
                self.spare = Some(buf);
            }
            Ok(_) => self.eof = true,
            Err(_) => {
                self.eof = true;
                self.failed = true;
            }
        }
    }

    /// Drives the read: finishes the one in flight, starts the next while
    /// allowed. Returns whether anything arrived (or the end).
    pub fn poll(&mut self, stream: &Rc<Stream>, cx: &mut Context<'_>) -> bool {
        let mut arrived = false;
        loop {
            let done = match self.op.as_mut().as_pin_mut() {
                Some(op) => match op.poll(cx) {
                    Poll::Pending => return arrived,
                    Poll::Ready(r) => Some(r),
                },
                None => None,
            };
            if let Some((res, buf)) = done {
                self.op.set(None);
                self.complete(res, buf);
                arrived = true;
            }
            if !self.may_read() {
                return arrived;
            }
            let buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(READ_SIZE));
            self.op.set(Some((self.start)(stream.clone(), buf)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_stops_at_the_limit_and_at_the_end() {
        let mut rd = Reader::new(|_, buf| std::future::ready((Ok(0), buf)));
        assert!(rd.may_read());
        rd.limit = 10;
        rd.complete(Ok(10), vec![0; 10]);
        assert!(!rd.may_read(), "the limit is reached");
        rd.input.consume(1);
        assert!(rd.may_read());
        assert_eq!(rd.spare.as_ref().map(Vec::len), Some(0), "buffer kept");
        rd.complete(Ok(0), Vec::new());
        assert!(rd.eof && !rd.failed && !rd.may_read());
        let mut rd = Reader::new(|_, buf| std::future::ready((Ok(0), buf)));
        rd.complete(Err(std::io::ErrorKind::ConnectionReset.into()), Vec::new());
        assert!(rd.eof && rd.failed, "a reset is the client gone");
    }

    #[test]
    fn input_is_consumed_by_offset_and_compacted_in_bulk() {
        let mut input = Input::default();
        input.append(b"GET /a\r\n\r\nGET /b\r\n\r\nGET");
        input.consume(10);
        assert_eq!(input.bytes(), b"GET /b\r\n\r\nGET");
        assert_eq!(input.at, 10);
        input.consume(10);
        // Most of the buffer is consumed: the next append moves the rest.
        input.append(b" /c\r\n\r\n");
        assert_eq!((input.at, input.bytes()), (0, &b"GET /c\r\n\r\n"[..]));
        input.consume(input.len());
        assert_eq!((input.at, input.buf.len()), (0, 0));
    }

    #[test]
    fn a_buffer_grown_for_one_large_exchange_gives_its_memory_back() {
        let mut input = Input::default();
        input.append(&vec![b'x'; 1 << 20]);
        input.consume(input.len());
        assert!(input.buf.capacity() <= KEEP, "{}", input.buf.capacity());
        let mut small = Vec::with_capacity(4096);
        shrink(&mut small);
        assert_eq!(small.capacity(), 4096, "small buffers are kept");
    }
}
