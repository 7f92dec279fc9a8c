//! The few I/O operations the connection code needs, over tokio-uring TCP and
//! Unix sockets. This is the only place that knows the runtime's socket types,
//! so the driver can move to another io_uring binding without touching the
//! protocol code.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::listen::{self, StdListener};

/// A connected client socket.
pub enum Stream {
    /// TCP.
    Tcp(tokio_uring::net::TcpStream),
    /// Unix domain.
    Unix(tokio_uring::net::UnixStream),
}

impl Stream {
    /// Reads into the spare capacity of `buf` (io_uring `recv`).
    pub async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Tcp(s) => s.read(buf).await,
            Stream::Unix(s) => s.read(buf).await,
        }
    }

    /// Writes some of `buf[from..]` (one io_uring `write`); returns how
    /// many bytes the socket took, and the buffer.
    pub async fn write(&self, buf: Vec<u8>, from: usize) -> (io::Result<usize>, Vec<u8>) {
        use tokio_uring::buf::BoundedBuf;
        let slice = buf.slice(from..);
        let (res, slice) = match self {
            Stream::Tcp(s) => s.write(slice).submit().await,
            Stream::Unix(s) => s.write(slice).submit().await,
        };
        (res, slice.into_inner())
    }

    /// Half-closes or closes the socket.
    pub fn shutdown(&self, how: std::net::Shutdown) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        };
    }
}

/// A listening socket inside a reactor.
pub enum Listener {
    /// TCP, accepted through io_uring.
    Tcp(tokio_uring::net::TcpListener),
    /// Unix, accepted through readiness (tokio-uring cannot adopt a listening
    /// Unix socket); the accepted stream then does its I/O through io_uring.
    Unix(AsyncFd<std::os::unix::net::UnixListener>),
}

impl Listener {
    /// Adopts a listener in the current runtime.
    pub fn adopt(l: StdListener) -> io::Result<Listener> {
        Ok(match l {
            StdListener::Tcp(t) => Listener::Tcp(tokio_uring::net::TcpListener::from_std(t)),
            StdListener::Unix(u) => {
                u.set_nonblocking(true)?;
                // SAFETY: the AsyncFd owns the listener, so the descriptor stays
                // open and the same for the AsyncFd's whole life.
                let fd = unsafe { AsyncFd::register_with_interest(u, Interest::READABLE) };
                Listener::Unix(fd.map_err(|e| e.into_parts().1)?)
            }
        })
    }

    /// Accepts a connection: the stream, the peer and our address (TCP only).
    pub async fn accept(&self) -> io::Result<(Stream, Option<SocketAddr>, Option<SocketAddr>)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                let local = listen::local_addr(s.as_raw_fd());
                Ok((Stream::Tcp(s), Some(peer), local))
            }
            Listener::Unix(l) => loop {
                let mut guard = l.readable().await?;
                match guard.try_io(|inner| inner.get_ref().accept()) {
                    Ok(Ok((s, _))) => {
                        s.set_nonblocking(false)?;
                        return Ok((
                            Stream::Unix(tokio_uring::net::UnixStream::from_std(s)),
                            None,
                            None,
                        ));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => continue,
                }
            },
        }
    }
}
