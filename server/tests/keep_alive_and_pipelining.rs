//! Requests on one connection: keep-alive, pipelining (responses in order),
//! HTTP/1.0, HEAD, `Connection: close`, `Expect: 100-continue`.

mod common;

use common::{get, Client, Server};

#[test]
fn hello_worker_answers_over_the_layer() {
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--workers",
        "2",
        "--reactors",
        "2",
    ]);
    let r = get(&s, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"Hello, world!");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("server"), Some("ringway"));
    assert!(r.header("date").is_some_and(|d| d.ends_with("GMT")));
}

#[test]
fn keep_alive_connection_serves_many_requests() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let mut c = Client::new(s.connect());
    for _ in 0..100 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = c.response(false).unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"Hello, world!"[..]));
        assert_eq!(r.header("connection"), None);
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "2"]);
    let mut c = Client::new(s.connect());
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(
            format!(
                "POST /e{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\nbody-{i}",
                format!("body-{i}").len()
            )
            .as_bytes(),
        );
        batch.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n");
    }
    c.send(&batch);
    for i in 0..20 {
        let r = c.response(false).unwrap();
        assert_eq!(r.body, format!("body-{i}").as_bytes());
        let r = c.response(true).unwrap();
        assert_eq!(r.status, 200);
    }
}

#[test]
fn http10_closes_unless_keep_alive_is_asked() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.body, b"Hello, world!");
    assert!(c.closed());

    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.response(false).unwrap().status, 200);
}

#[test]
fn connection_close_is_honoured() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed());
}

#[test]
fn head_gets_headers_without_a_body() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let mut c = Client::new(s.connect());
    c.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(true).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("13")));
    // The next response starts right after the head: no body bytes in between.
    let r = c.response(false).unwrap();
    assert_eq!(r.body, b"Hello, world!");
}

#[test]
fn expect_100_continue_gets_an_interim_response() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.response(false).unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
}

#[test]
fn scope_carries_the_asgi_fields() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--root-path",
        "/app",
        "--forwarded-allow-ips",
        "127.0.0.1",
    ]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /scope/caf%C3%A9/x%20y?q=1&r=%20 HTTP/1.1\r\nHost: example\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\nX-Dup: a\r\nX-Dup: b\r\n\r\n");
    let r = c.response(false).unwrap();
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("method=GET\n"), "{text}");
    assert!(text.contains("path=/app/scope/caf\u{e9}/x y\n"), "{text}");
    assert!(text.contains("raw_path=/scope/caf%C3%A9/x%20y\n"), "{text}");
    assert!(text.contains("query_string=q=1&r=%20\n"), "{text}");
    assert!(text.contains("root_path=/app\n"), "{text}");
    assert!(text.contains("scheme=https\n"), "{text}");
    assert!(text.contains("http_version=1.1\n"), "{text}");
    assert!(text.contains("client=Some((\"203.0.113.9\", 0))"), "{text}");
    assert!(text.contains("headers=host=example;x-forwarded-for=203.0.113.9;x-forwarded-proto=https;x-dup=a;x-dup=b"), "{text}");
}

#[test]
fn a_client_that_half_closes_after_its_requests_still_gets_the_responses() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    // Two pipelined requests, the first still with the worker when the
    // client shuts down its sending side.
    c.send(b"GET /sleep?ms=300 HTTP/1.1\r\nHost: t\r\n\r\nPOST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.response(false).expect("the first response");
    assert_eq!((r.status, &r.body[..]), (200, &b"slept"[..]));
    let r = c.response(false).expect("the second response");
    assert_eq!((r.status, &r.body[..]), (200, &b"hi"[..]));
    assert!(c.closed());
}

#[test]
fn an_early_hints_response_comes_before_the_final_one() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET /early-hints HTTP/1.1\r\nHost: t\r\n\r\n");
    let hints = c.response(false).unwrap();
    assert_eq!(hints.status, 103);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    let r = c.response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"final"[..]));
    // An HTTP/1.0 client never sees a 1xx.
    let mut c = Client::new(s.connect());
    c.send(b"GET /early-hints HTTP/1.0\r\n\r\n");
    let r = c.response(false).unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"final"[..]));
}

#[test]
fn an_absolute_form_target_sets_the_host_the_app_sees() {
    let s = Server::start(&["--bench-worker", "echo"]);
    let mut c = Client::new(s.connect());
    c.send(b"GET http://example.org:8080/scope?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
    let r = c.response(false).unwrap();
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("path=/scope\n"), "{text}");
    assert!(text.contains("host=example.org:8080"), "{text}");
    assert!(!text.contains("host=other"), "{text}");
}

#[test]
fn a_head_over_the_total_limit_gets_431_and_a_large_valid_one_is_served() {
    let s = Server::start(&["--bench-worker", "echo", "--limit-request-head", "20000"]);
    // 30 fields of 1000 bytes: each within --limit-request-field-size, all
    // together over --limit-request-head.
    let mut head = String::from("GET /scope HTTP/1.1\r\nHost: t\r\n");
    for i in 0..30 {
        head.push_str(&format!("x-f{i:02}: {}\r\n", "v".repeat(990)));
    }
    head.push_str("\r\n");
    let mut c = Client::new(s.connect());
    c.send(head.as_bytes());
    assert_eq!(c.response(false).unwrap().status, 431);
    assert!(c.closed());
    // Just under the limit: served, its scope in one message.
    let mut head = String::from("GET /scope HTTP/1.1\r\nHost: t\r\n");
    for i in 0..19 {
        head.push_str(&format!("x-f{i:02}: {}\r\n", "v".repeat(990)));
    }
    head.push_str("\r\n");
    let mut c = Client::new(s.connect());
    c.send(head.as_bytes());
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("x-f18="));
    // The same head with a body: the first chunk is cut to fit beside the
    // scope in one layer message (a full chunk beside it made a 503).
    let body: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut head = format!(
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n",
        body.len()
    );
    for i in 0..19 {
        head.push_str(&format!("x-f{i:02}: {}\r\n", "v".repeat(990)));
    }
    head.push_str("\r\n");
    let mut c = Client::new(s.connect());
    c.send(head.as_bytes());
    c.send(&body);
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed {} bytes", r.body.len());
}
