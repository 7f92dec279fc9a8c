//! Starting workers: a worker that hangs or fails at start-up is killed and
//! retried with back-off, and one that keeps failing stops the server with
//! its error (as gunicorn's arbiter does) instead of looping or serving with
//! fewer workers. Workers never block on their output.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{get, spawn, temp_path, Server};

/// Waits up to `secs` for the child to exit; returns its code.
fn exit_code(child: &mut std::process::Child, secs: u64) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_worker_that_hangs_at_start_up_is_retried_then_stops_the_server() {
    let knob = temp_path("startup");
    std::fs::write(&knob, "hang").unwrap();
    let (mut child, err) = spawn(
        &["--bench-worker", "hello", "--worker-start-timeout", "0.3"],
        &[("RINGWAY_BENCH_STARTUP_FILE", knob.to_str().unwrap())],
    );
    let t = Instant::now();
    // Three tries of 0.3 s with back-off of 0.5 s and 1 s between them.
    assert_eq!(exit_code(&mut child, 20), 3);
    let elapsed = t.elapsed();
    let log = std::fs::read_to_string(&err).unwrap();
    assert_eq!(log.matches("was not ready within").count(), 3, "{log}");
    assert!(log.contains("failed to start 3 times"), "{log}");
    assert!(
        elapsed >= Duration::from_millis(2000),
        "no back-off: {elapsed:?}"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(!out.contains("listening at"), "{out}");
}

#[test]
fn a_worker_that_keeps_failing_at_start_up_stops_the_server_with_its_error() {
    let knob = temp_path("startup");
    std::fs::write(&knob, "fail ModuleNotFoundError: No module named 'mysite'").unwrap();
    let (mut child, err) = spawn(
        &["--bench-worker", "hello"],
        &[("RINGWAY_BENCH_STARTUP_FILE", knob.to_str().unwrap())],
    );
    assert_eq!(exit_code(&mut child, 20), 3);
    let log = std::fs::read_to_string(&err).unwrap();
    assert!(
        log.contains("Last error: worker 0")
            && log.contains("ModuleNotFoundError: No module named 'mysite'"),
        "{log}"
    );
}

#[test]
fn a_worker_that_prints_a_megabyte_does_not_hang() {
    // At start-up, before it is ready, and while serving.
    let knob = temp_path("startup");
    std::fs::write(&knob, "print 1048576").unwrap();
    let s = Server::start_with_env(
        &["--bench-worker", "echo"],
        &[("RINGWAY_BENCH_STARTUP_FILE", knob.to_str().unwrap())],
    );
    let r = get(&s, "/print?bytes=1048576");
    assert_eq!((r.status, &r.body[..]), (200, &b"printed"[..]));
    assert_eq!(get(&s, "/").status, 200);
}

#[test]
fn a_pid_file_is_written_and_removed_at_exit() {
    let pid_file = temp_path("pid");
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--pid",
        pid_file.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), s.pid().to_string());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait(), 0);
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn a_second_server_on_a_port_in_use_fails_with_address_in_use() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let (mut child, err) = spawn(&["--bench-worker", "hello", "--bind", &s.addr], &[]);
    assert_ne!(exit_code(&mut child, 20), 0);
    let log = std::fs::read_to_string(&err).unwrap();
    assert!(
        log.to_lowercase().contains("address in use") || log.contains("Address already in use"),
        "{log}"
    );
    // The first one is untouched.
    assert_eq!(get(&s, "/").status, 200);
}

#[test]
fn sigterm_while_workers_start_stops_the_server() {
    let knob = temp_path("startup");
    std::fs::write(&knob, "hang").unwrap();
    let (mut child, err) = spawn(
        &["--bench-worker", "hello", "--workers", "2"],
        &[("RINGWAY_BENCH_STARTUP_FILE", knob.to_str().unwrap())],
    );
    // Both workers are hanging in their start-up (the default start timeout
    // is a minute): TERM must not wait for them.
    common::wait_until(
        10,
        || "workers never started".into(),
        || common::children(child.id() as i32).len() >= 2,
    );
    // SAFETY: plain syscall.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(
        exit_code(&mut child, 15),
        0,
        "{}",
        std::fs::read_to_string(&err).unwrap()
    );
}

#[test]
fn a_second_server_leaves_the_first_ones_pid_file_alone() {
    let pid_file = temp_path("pid");
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--pid",
        pid_file.to_str().unwrap(),
    ]);
    // On the same port (it cannot bind), and on another (the pid file
    // names a running server).
    for bind in [s.addr.as_str(), "127.0.0.1:0"] {
        let (mut child, err) = spawn(
            &[
                "--bench-worker",
                "hello",
                "--bind",
                bind,
                "--pid",
                pid_file.to_str().unwrap(),
            ],
            &[],
        );
        assert_ne!(exit_code(&mut child, 20), 0);
        let log = std::fs::read_to_string(&err).unwrap();
        assert_eq!(
            std::fs::read_to_string(&pid_file).unwrap().trim(),
            s.pid().to_string(),
            "{log}"
        );
    }
    let log = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(log.trim(), s.pid().to_string());
}
