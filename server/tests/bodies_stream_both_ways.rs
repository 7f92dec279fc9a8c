//! Large request and response bodies stream through the layer in chunks.

mod common;

use common::{Client, Server};

#[test]
fn a_large_request_body_is_echoed_back_intact() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = Client::new(s.connect());
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let writer = {
        let mut stream = c.stream.try_clone().unwrap();
        let body = body.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut stream, &body).unwrap())
    };
    let r = c.response(false).unwrap();
    writer.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(
        r.body == body,
        "echoed body differs ({} bytes back)",
        r.body.len()
    );
    // And the connection is reusable afterwards.
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(c.response(false).unwrap().body, b"ok");
}

#[test]
fn a_chunked_request_body_is_decoded() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.body, b"hello, world");
}

#[test]
fn a_large_response_body_streams_with_its_length() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /big?n=20000000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.header("content-length"), Some("20000000"));
    assert_eq!(r.body.len(), 20_000_000);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[test]
fn trailers_and_pathsend_extensions_work() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /trailers HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.body, b"body");
    assert_eq!(
        r.trailers,
        vec![("x-checksum".to_owned(), "abc".to_owned())]
    );

    let file = std::env::temp_dir().join(format!("ringway-pathsend-{}", std::process::id()));
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8 + b'a').collect();
    std::fs::write(&file, &content).unwrap();
    c.send(
        format!(
            "GET /pathsend?path={} HTTP/1.1\r\nHost: t\r\n\r\n",
            file.display()
        )
        .as_bytes(),
    );
    let r = c.response(false).unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(r.body, content);
}
