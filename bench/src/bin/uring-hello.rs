//! The ceiling for `scripts/bench http`: a minimal thread-per-core
//! tokio-uring server that parses requests with httparse and answers
//! "Hello, world!" inside its reactor, with no channel layer and no worker.
//! It sends the same response bytes as `ringway-server --bench-worker hello`.
//!
//! ```text
//! uring-hello [--bind HOST:PORT] [--threads N]
//! ```

use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

fn reuseport(addr: SocketAddr) -> std::net::TcpListener {
    let domain = if addr.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain syscalls on a socket this function owns; the listener
    // takes ownership of the descriptor.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                4,
            );
        }
        let SocketAddr::V4(a) = addr else {
            panic!("IPv4 only")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let r = libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of_val(&sin) as u32,
        );
        assert!(r == 0, "bind {addr}: {}", std::io::Error::last_os_error());
        assert!(libc::listen(fd, 2048) == 0);
        std::net::TcpListener::from_raw_fd(fd)
    }
}

/// An IMF-fixdate for `secs` since the epoch (same format as ringway's).
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

struct DateCache {
    secs: std::cell::Cell<u64>,
    response: std::cell::RefCell<Vec<u8>>,
}

impl DateCache {
    fn response(&self) -> std::cell::Ref<'_, Vec<u8>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if now != self.secs.get() {
            self.secs.set(now);
            *self.response.borrow_mut() = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\ndate: {}\r\nserver: ringway\r\n\r\nHello, world!",
                http_date(now)
            )
            .into_bytes();
        }
        self.response.borrow()
    }
}

async fn serve(stream: tokio_uring::net::TcpStream, dates: Rc<DateCache>) {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut consumed = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[consumed..]) {
                Ok(httparse::Status::Complete(n)) => {
                    consumed += n;
                    out.extend_from_slice(&dates.response());
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..consumed);
        if !out.is_empty() {
            let (res, o) = stream.write_all(out).await;
            out = o;
            out.clear();
            if res.is_err() {
                return;
            }
        }
    }
}

fn main() {
    let mut bind = "127.0.0.1:8001".to_owned();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bind" => bind = it.next().expect("--bind needs a value").clone(),
            "--threads" => {
                threads = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--threads needs a number")
            }
            other => panic!("unknown option {other}"),
        }
    }
    let addr: SocketAddr = bind.parse().expect("--bind HOST:PORT");
    let first = reuseport(addr);
    let addr = first.local_addr().unwrap();
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(reuseport(addr));
    }
    println!("uring-hello: listening at http://{addr} ({threads} threads)");
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                tokio_uring::builder()
                    .entries(1024)
                    .uring_builder(tokio_uring::uring_builder().setup_coop_taskrun())
                    .start(async move {
                        let dates = Rc::new(DateCache {
                            secs: std::cell::Cell::new(0),
                            response: Default::default(),
                        });
                        let l = tokio_uring::net::TcpListener::from_std(l);
                        loop {
                            if let Ok((s, _)) = l.accept().await {
                                let _ = s.set_nodelay(true);
                                tokio_uring::spawn(serve(s, dates.clone()));
                            }
                        }
                    })
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
