//! Bad input gets the right status and a clean close, over a real socket;
//! the server stays healthy for the next client.

mod common;

use common::{get, Client, Server};

fn expect(s: &Server, request: &[u8], status: u16) {
    let mut c = Client::new(s.connect());
    c.send(request);
    let r = c
        .response(false)
        .unwrap_or_else(|| panic!("no response to {:?}", String::from_utf8_lossy(request)));
    assert_eq!(
        r.status,
        status,
        "for {:?}",
        String::from_utf8_lossy(request)
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed(), "connection left open after {status}");
}

#[test]
fn smuggling_vectors_and_limits_are_refused() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--limit-request-line",
        "200",
        "--limit-request-fields",
        "10",
        "--limit-request-field-size",
        "100",
        "--limit-request-body",
        "1000",
    ]);
    expect(&s, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    expect(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        400,
    );
    expect(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    );
    expect(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    );
    expect(
        &s,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n  folded\r\n\r\n",
        400,
    );
    expect(&s, b"GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400);
    expect(&s, b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400);
    expect(&s, b"G@T / HTTP/1.1\r\nHost: t\r\n\r\n", 400);
    expect(&s, b"GET / HTTP/1.1\r\n\r\n", 400);
    expect(&s, b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505);
    let long = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(300));
    expect(&s, long.as_bytes(), 414);
    let many: String = (0..20).map(|i| format!("X-{i}: v\r\n")).collect();
    expect(
        &s,
        format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n").as_bytes(),
        431,
    );
    expect(
        &s,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "v".repeat(200)
        )
        .as_bytes(),
        431,
    );
    expect(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
        413,
    );
    // The server is still fine.
    assert_eq!(get(&s, "/").status, 200);
}
