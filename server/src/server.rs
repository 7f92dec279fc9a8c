//! The server process: creates the channel layer, starts and supervises the
//! worker processes, starts one reactor thread per core, and handles signals.
//!
//! The main thread does nothing but wait for signals (`sigwait`): SIGCHLD (a
//! worker exited: reclaim its share of the layer, fail its in-flight requests
//! with 502, start a replacement), SIGTERM or the first SIGINT (graceful
//! stop), a second SIGINT or SIGQUIT (fast stop, as gunicorn's QUIT), SIGUSR2
//! (a reactor thread finished).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_layer_shm::{Config as LayerConfig, Reaper, Segment};

use crate::access_log::AccessLog;
use crate::asgi::wire;
use crate::bench_worker::env;
use crate::config::{BenchWorker, Config};
use crate::driver::{listen, reactor};

/// A running worker process.
struct Worker {
    child: Child,
    /// Kept open so the worker never writes to a closed pipe.
    _stdout: ChildStdout,
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGCHLD,
            libc::SIGHUP,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Starts worker `w` and waits for its "ready" line.
fn spawn_worker(cfg: &Config, segment: &str, w: usize) -> Result<Worker, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding our own executable: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env(env::SEGMENT, segment)
        .env(env::WORKER, w.to_string())
        .stdout(Stdio::piped());
    match cfg.bench_worker {
        Some(BenchWorker::Hello) | None => cmd.env(env::BENCH_WORKER, "hello"),
        Some(BenchWorker::Echo) => cmd.env(env::BENCH_WORKER, "echo"),
    };
    // SAFETY: the closure only makes async-signal-safe calls (sigprocmask,
    // prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // The server blocks these signals to sigwait for them; a worker
            // must get them normally.
            let set = signal_set();
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            // A worker never outlives its server.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting worker {w}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(n) if n > 0 && line.trim_end() == "ready" => {}
        _ => {
            let _ = child.kill();
            let st = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(format!("worker {w} exited before it was ready ({st})"));
        }
    }
    Ok(Worker {
        child,
        _stdout: reader.into_inner(),
    })
}

/// Counts a reactor thread as finished when dropped (also when it panics),
/// then tells the main thread, which sigwaits, with SIGUSR2.
struct ReactorDone(Arc<AtomicUsize>);

impl Drop for ReactorDone {
    fn drop(&mut self) {
        // Release: pairs with the main thread's Acquire load of the count.
        self.0.fetch_add(1, Ordering::Release);
        // SAFETY: plain syscall.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
    }
}

/// Runs the server until it is stopped. Returns the process exit code.
pub fn run(cfg: Config) -> Result<i32, String> {
    // Block the signals we sigwait for before any thread starts (the reaper,
    // the reactors): threads inherit the mask, so only sigwait sees them.
    let set = signal_set();
    // SAFETY: `set` is initialised; the old mask is not needed. Resetting the
    // dispositions first matters: a shell starts background jobs with SIGINT
    // and SIGQUIT ignored, and an ignored signal never reaches sigwait.
    unsafe {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGHUP,
            libc::SIGUSR2,
        ] {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    crate::uring::check()?;
    let threads = cfg.threads;
    let layer = LayerConfig {
        channels: 64 + threads as u32,
        lanes: (2 * threads * cfg.workers + threads + 16).next_power_of_two() as u32,
        lane_bytes: 1 << 20,
        max_message: 64 * 1024,
        channel_capacity: vec![("worker.*".into(), 65536), ("reactor.*".into(), 65536)],
        ..LayerConfig::default()
    };
    let seg = Segment::create(&layer).map_err(|e| format!("creating the channel layer: {e}"))?;
    let segment_path = seg
        .path()
        .to_str()
        .ok_or("segment path is not UTF-8")?
        .to_owned();
    let _reaper = Reaper::spawn(seg.clone(), |r| match r {
        Ok(r) => eprintln!("ringway: reclaimed from dead processes: {r:?}"),
        Err(e) => eprintln!("ringway: reaper: {e}"),
    })
    .map_err(|e| format!("starting the reaper: {e}"))?;
    let (mut listeners, shown) =
        listen::open(&cfg.binds, threads, cfg.backlog).map_err(|e| format!("listening: {e}"))?;
    let log = match &cfg.access_log {
        Some(dest) => Some(Arc::new(
            AccessLog::open(dest, &cfg.access_log_format)
                .map_err(|e| format!("opening access log {dest}: {e}"))?,
        )),
        None => None,
    };

    let mut workers = Vec::with_capacity(cfg.workers);
    for w in 0..cfg.workers {
        workers.push(spawn_worker(&cfg, &segment_path, w)?);
    }
    let cfg = Arc::new(cfg);
    let shared = Arc::new(reactor::Shared {
        cfg: cfg.clone(),
        seg: seg.clone(),
        log,
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    // Reactors that have returned (or panicked). A thread's
    // `JoinHandle::is_finished` turns true only after its closure is done,
    // later than the signal it sends, and two SIGUSR2s sent close together
    // arrive as one, so the main thread counts instead: the signal that
    // follows the last increment sees the total.
    let finished = Arc::new(AtomicUsize::new(0));
    for (k, l) in listeners.drain(..).enumerate() {
        let (shared, ready) = (shared.clone(), ready_tx.clone());
        let done = ReactorDone(finished.clone());
        let h = std::thread::Builder::new()
            .name(format!("ringway-reactor-{k}"))
            .spawn(move || {
                let _done = done;
                reactor::run(k as u16, l, shared, ready);
            })
            .map_err(|e| format!("starting reactor thread {k}: {e}"))?;
        handles.push(h);
    }
    for _ in 0..threads {
        ready_rx
            .recv()
            .map_err(|_| "a reactor thread died while starting".to_owned())??;
    }
    println!(
        "ringway: listening at {} ({threads} reactor threads, {} workers, pid {})",
        shown.join(", "),
        cfg.workers,
        std::process::id()
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let mut control = seg
        .endpoint()
        .map_err(|e| format!("attaching the supervisor: {e}"))?;
    let mut msg = Vec::new();
    let mut broadcast = |msg: &[u8]| {
        for k in 0..threads {
            if let Err(e) = control.send(&format!("reactor.{k}!"), msg) {
                eprintln!("ringway: telling reactor {k}: {e}");
            }
        }
    };
    let mut stopping = false;
    let mut exit_code = 0;
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and `sig` is writable.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            libc::SIGCHLD => {
                loop {
                    let mut status = 0;
                    // SAFETY: plain syscall; `status` is writable.
                    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
                    if pid <= 0 {
                        break;
                    }
                    let Some(w) = workers.iter().position(|wk| wk.child.id() as i32 == pid) else {
                        continue;
                    };
                    if stopping {
                        continue;
                    }
                    eprintln!("ringway: worker {w} (pid {pid}) exited with status {status:#x}; replacing it");
                    // Reclaim its share of the layer first, so no reactor sends
                    // into the dead worker's inbox after hearing of the death.
                    if let Err(e) = seg.reap() {
                        eprintln!("ringway: reclaiming worker {w}: {e}");
                    }
                    wire::encode_worker_died(&mut msg, w as u32);
                    broadcast(&msg);
                    match spawn_worker(&cfg, &segment_path, w) {
                        Ok(new) => {
                            let old = std::mem::replace(&mut workers[w], new);
                            drop(old);
                        }
                        Err(e) => eprintln!("ringway: {e}"),
                    }
                }
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP if !stopping => {
                stopping = true;
                eprintln!(
                    "ringway: stopping gracefully (up to {:?}); SIGINT again to stop now",
                    cfg.graceful_timeout
                );
                wire::encode_shutdown(&mut msg);
                broadcast(&msg);
            }
            libc::SIGINT | libc::SIGQUIT => {
                eprintln!("ringway: stopping now");
                exit_code = 1;
                break;
            }
            libc::SIGUSR2 if finished.load(Ordering::Acquire) == handles.len() => break,
            _ => {}
        }
    }
    if exit_code != 0 {
        // Fast stop: the reactors are still running, so leave without
        // tearing anything down under them.
        seg.remove_file();
        for w in workers.iter_mut() {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        // SAFETY: ends the process at once; nothing needs to run after this.
        unsafe { libc::_exit(exit_code) };
    }
    for h in handles {
        let _ = h.join();
    }
    stop_workers(&mut workers);
    Ok(exit_code)
}

/// SIGTERM to every worker, SIGKILL to those still there after 5 s.
fn stop_workers(workers: &mut [Worker]) {
    for w in workers.iter() {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(w.child.id() as i32, libc::SIGTERM) };
    }
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let chld = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Exited (or already reaped by the SIGCHLD handling above).
        if workers
            .iter_mut()
            .all(|w| !matches!(w.child.try_wait(), Ok(None)))
        {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `chld` is initialised (SIGCHLD is blocked in this thread);
        // `ts` is a valid timeout.
        unsafe { libc::sigtimedwait(&chld, std::ptr::null_mut(), &ts) };
    }
    for w in workers.iter_mut() {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
}
