//! Listening sockets: one `SO_REUSEPORT` TCP socket per reactor thread (the
//! kernel spreads connections across them), or a shared Unix / inherited
//! socket that every reactor accepts from.

use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixListener;

use crate::config::Bind;

/// A listening socket, not yet handed to a runtime.
#[derive(Debug)]
pub enum StdListener {
    /// TCP.
    Tcp(TcpListener),
    /// Unix domain.
    Unix(UnixListener),
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A TCP listener with `SO_REUSEADDR` and `SO_REUSEPORT`.
pub fn reuseport_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    tcp(addr, backlog, true)
}

/// Fails with "address in use" if anyone listens on `addr` already.
///
/// `SO_REUSEPORT` lets any socket of the same user join a port, so a second
/// server started by mistake on a port a live one holds would silently
/// share its connections. A socket bound *without* `SO_REUSEPORT` cannot
/// join a listening group: binding one first (and closing it) tells whether
/// the port is taken.
fn check_free(addr: SocketAddr) -> io::Result<()> {
    match tcp(addr, 1, false) {
        Ok(_probe) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr}: address in use (another server listens there)"),
        )),
        Err(e) => Err(e),
    }
}

fn tcp(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain syscall; the descriptor is owned by the TcpListener below.
    let fd = cvt(unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a new socket nothing else owns; the listener closes it.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let opts: &[libc::c_int] = if reuseport {
        &[libc::SO_REUSEADDR, libc::SO_REUSEPORT]
    } else {
        &[libc::SO_REUSEADDR]
    };
    for &opt in opts {
        // SAFETY: `one` is a valid c_int for the duration of the call.
        cvt(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    // SAFETY: plain syscall on our socket.
    cvt(unsafe { libc::listen(fd, backlog) })?;
    Ok(listener)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Duplicates a descriptor (close-on-exec).
fn dup(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: plain syscall; the new descriptor is returned to the caller to own.
    cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })
}

fn is_unix_socket(fd: RawFd) -> io::Result<bool> {
    // SAFETY: sockaddr_storage is plain data; all-zero is valid.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `st` has room for `len` bytes.
    cvt(unsafe {
        libc::getsockname(
            fd,
            (&mut st as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    })?;
    Ok(i32::from(st.ss_family) == libc::AF_UNIX)
}

/// Opens every `--bind` for `threads` reactors: `result[t]` is thread `t`'s
/// listeners. Also returns a printable address for each bind.
pub fn open(
    binds: &[Bind],
    threads: usize,
    backlog: i32,
) -> io::Result<(Vec<Vec<StdListener>>, Vec<String>)> {
    let mut per_thread: Vec<Vec<StdListener>> = (0..threads).map(|_| Vec::new()).collect();
    let mut shown = Vec::new();
    for b in binds {
        match b {
            Bind::Tcp(spec) => {
                let addr = spec
                    .to_socket_addrs()
                    .map_err(|e| io::Error::new(e.kind(), format!("resolving {spec}: {e}")))?
                    .next()
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("{spec} resolves to nothing"),
                        )
                    })?;
                if addr.port() != 0 {
                    check_free(addr)?;
                }
                let first = reuseport_tcp(addr, backlog)
                    .map_err(|e| io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
                // Port 0 means "any": the other threads join the port the
                // kernel picked.
                let actual = first.local_addr()?;
                shown.push(format!("http://{actual}"));
                per_thread[0].push(StdListener::Tcp(first));
                for t in per_thread.iter_mut().skip(1) {
                    t.push(StdListener::Tcp(reuseport_tcp(actual, backlog)?));
                }
            }
            Bind::Unix(path) => {
                if path.exists() {
                    // A stale socket from a previous run; refuse anything else.
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{} is in use by a running server", path.display()),
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                let l = UnixListener::bind(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("binding unix:{}: {e}", path.display()))
                })?;
                let fd = l.into_raw_fd();
                // SAFETY: `fd` came from into_raw_fd just above.
                cvt(unsafe { libc::listen(fd, backlog) })?;
                shown.push(format!("unix:{}", path.display()));
                for t in per_thread.iter_mut() {
                    // SAFETY: a fresh duplicate we own.
                    t.push(StdListener::Unix(unsafe {
                        UnixListener::from_raw_fd(dup(fd)?)
                    }));
                }
                // SAFETY: we own `fd` and are done with it (threads hold dups).
                unsafe { libc::close(fd) };
            }
            Bind::Fd(fd) => {
                let unix = is_unix_socket(*fd).map_err(|e| {
                    io::Error::new(e.kind(), format!("fd://{fd} is not a socket: {e}"))
                })?;
                shown.push(format!("fd://{fd}"));
                for t in per_thread.iter_mut() {
                    let d = dup(*fd)?;
                    // SAFETY: `d` is a fresh duplicate we own.
                    t.push(unsafe {
                        if unix {
                            StdListener::Unix(UnixListener::from_raw_fd(d))
                        } else {
                            StdListener::Tcp(TcpListener::from_raw_fd(d))
                        }
                    });
                }
            }
        }
    }
    Ok((per_thread, shown))
}

/// The local address of a connected TCP socket.
pub fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: borrows `fd` without taking ownership (ManuallyDrop: never closed here).
    let s = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    s.local_addr().ok()
}
