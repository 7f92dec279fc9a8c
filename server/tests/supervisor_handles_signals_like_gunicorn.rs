//! Signals as gunicorn has them: HUP reloads gated on readiness, TTIN and
//! TTOU change the number of workers, USR1 reopens logs; no signal whose
//! default action is to stop or kill a process does so to the server.
//! Workers are recycled after --max-requests or past --max-worker-memory,
//! and a worker that stops taking messages is killed and replaced, all
//! without failing a request that a live worker could serve.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{get, pid_of_worker, temp_path, Load, Server};

#[test]
fn sighup_under_load_replaces_every_worker_without_a_failed_request() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "2"]);
    s.wait_for_log(" ready", 2, 10);
    let old: HashSet<i32> = s.worker_pids().into_iter().collect();
    assert_eq!(old.len(), 2);
    let load = Load::start(&s.addr, 6);
    load.wait_progress(500);
    s.signal(libc::SIGHUP);
    s.wait_for_log("reload complete", 1, 20);
    load.wait_progress(500);
    // The old workers finish what they hold and exit.
    common::wait_until(
        10,
        || "old workers still running".into(),
        || !old.iter().any(|&p| common::alive(p)),
    );
    load.finish();
    let new: HashSet<i32> = s.worker_pids().into_iter().collect();
    assert_eq!(new.len(), 2);
    assert!(new.is_disjoint(&old), "{old:?} -> {new:?}");
    s.wait_for_log(" ready", 4, 1);
}

#[test]
fn a_reload_whose_new_worker_fails_to_start_leaves_the_old_ones_serving() {
    let knob = temp_path("startup");
    std::fs::write(&knob, "ok").unwrap();
    let s = Server::start_with_env(
        &["--bench-worker", "echo", "--workers", "2"],
        &[("RINGWAY_BENCH_STARTUP_FILE", knob.to_str().unwrap())],
    );
    let old: HashSet<i32> = s.worker_pids().into_iter().collect();
    std::fs::write(&knob, "fail SyntaxError: invalid syntax (views.py, line 3)").unwrap();
    let load = Load::start(&s.addr, 4);
    load.wait_progress(200);
    s.signal(libc::SIGHUP);
    s.wait_for_log("reload failed", 1, 20);
    load.wait_progress(200);
    load.finish();
    assert!(
        s.stderr().contains("SyntaxError: invalid syntax"),
        "{}",
        s.stderr()
    );
    let now: HashSet<i32> = s.worker_pids().into_iter().collect();
    assert_eq!(now, old, "the old workers must keep serving");
    // The server did not stop, and a later reload with good code works.
    std::fs::write(&knob, "ok").unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for_log("reload complete", 1, 20);
    assert_eq!(get(&s, "/").status, 200);
}

#[test]
fn ttin_adds_a_worker_and_ttou_removes_one() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "1"]);
    s.signal(libc::SIGTTIN);
    s.wait_for_log(" ready", 2, 10);
    assert_eq!(s.worker_pids().len(), 2);
    // Requests reach both.
    let load = Load::start(&s.addr, 4);
    load.wait_progress(200);
    s.signal(libc::SIGTTOU);
    s.wait_for_log("SIGTTOU: 1 workers", 1, 10);
    common::wait_until(
        10,
        || format!("{:?}", s.worker_pids()),
        || s.worker_pids().len() == 1,
    );
    load.wait_progress(200);
    load.finish();
}

#[test]
fn signals_whose_default_would_stop_the_server_do_not() {
    let s = Server::start(&["--bench-worker", "hello"]);
    let rt = libc::SIGRTMIN() + 3;
    for sig in [
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGWINCH,
        libc::SIGPWR,
        libc::SIGTSTP,
        libc::SIGXCPU,
        libc::SIGIO,
        libc::SIGSTKFLT,
        rt,
        libc::SIGHUP,
        libc::SIGUSR1,
    ] {
        s.signal(sig);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(get(&s, "/").status, 200, "after signal {sig}");
    }
    s.wait_for_log("ignoring signal", 1, 10);
}

#[test]
fn sigusr1_reopens_the_access_log_after_a_rotation() {
    let log = temp_path("access.log");
    let s = Server::start(&[
        "--bench-worker",
        "hello",
        "--access-log",
        log.to_str().unwrap(),
        "--access-logformat",
        "%(U)s",
    ]);
    let wait_line = |path: &std::path::Path, line: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(line)
        {
            assert!(
                Instant::now() < deadline,
                "{line} not in {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert_eq!(get(&s, "/before").status, 200);
    wait_line(&log, "/before");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    s.wait_for_log("logs reopened", 1, 10);
    assert_eq!(get(&s, "/after").status, 200);
    wait_line(&log, "/after");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(!old.contains("/after"), "{old}");
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn max_requests_recycles_workers_under_load_without_a_failed_request() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--workers",
        "2",
        "--max-requests",
        "300",
        "--max-requests-jitter",
        "50",
    ]);
    let load = Load::start(&s.addr, 6);
    load.wait_progress(2500);
    load.finish();
    // 2,500 requests over 2 workers of at most 350 each: several recycles.
    s.wait_for_log("asks to be replaced", 4, 10);
    s.wait_for_log(" ready", 2 + 4, 10);
}

#[test]
fn a_worker_past_max_worker_memory_is_replaced_without_a_failed_request() {
    let s = Server::start(&[
        "--bench-worker",
        "echo",
        "--workers",
        "1",
        "--max-worker-memory",
        "48",
    ]);
    let before = pid_of_worker(&s);
    let load = Load::start(&s.addr, 4);
    load.wait_progress(100);
    assert_eq!(get(&s, "/grow?mb=64").status, 200);
    s.wait_for_log("over --max-worker-memory", 1, 20);
    common::wait_until(
        20,
        || "the grown worker was not retired".into(),
        || !(common::alive(before)),
    );
    load.wait_progress(100);
    load.finish();
    assert_ne!(pid_of_worker(&s), before);
}

#[test]
fn a_stopped_worker_is_killed_by_the_heartbeat_and_replaced() {
    let s = Server::start(&["--bench-worker", "echo", "--workers", "2", "--timeout", "2"]);
    let load = Load::start(&s.addr, 4);
    load.wait_progress(300);
    let victim = s.worker_pids()[0];
    // SAFETY: plain syscall on the server's worker.
    unsafe { libc::kill(victim, libc::SIGSTOP) };
    s.wait_for_log("took no message", 1, 20);
    s.wait_for_log(" ready", 3, 20);
    // SIGABRT waits for a stopped process; SIGKILL a second later does not.
    common::wait_until(
        10,
        || "the stopped worker is still there".into(),
        || !(common::alive(victim)),
    );
    // Once replaced, nothing fails.
    let (ok, failures) = load.stop();
    let load = Load::start(&s.addr, 4);
    load.wait_progress(500);
    let (_, after) = load.stop();
    assert!(
        after.is_empty(),
        "failures after the replacement: {after:?}"
    );
    // Before: only the requests the stopped worker held (at most one per
    // client, as each waits for its answer), not a steady trickle.
    assert!(
        failures.len() <= 4,
        "{} of {ok} failed: {failures:?}",
        failures.len()
    );
}
