//! The supervisor: the server process's main thread, an arbiter in the
//! manner of gunicorn's.
//!
//! It creates the channel layer, starts the worker processes and the reactor
//! threads, and then runs one event loop (`poll(2)`) over everything that can
//! happen to it: signals (a signalfd), worker processes exiting (their
//! pidfds), workers' status lines (a pipe each: ready, error, recycle),
//! messages from the reactors (an eventfd), and its own deadlines. Nothing in
//! the loop blocks: a worker that hangs at start-up, never reads its inbox
//! or ignores SIGTERM is handled by a deadline, never waited for.
//!
//! Workers fill *slots* (`--workers` of them; SIGTTIN and SIGTTOU add and
//! remove one). Every worker process has an id of its own, never reused,
//! which names its inbox `worker.<id>!`. The loop is level-triggered: after
//! every event, [`Supervisor::reconcile`] compares what runs with what
//! should, and starts what is missing:
//!
//! - a slot without a worker gets one (after a back-off if its last worker
//!   failed to start);
//! - a worker that should be replaced (a reload, `--max-requests`,
//!   `--max-worker-memory`) gets a replacement started beside it, if the
//!   layer has room for one more process; the old worker keeps serving
//!   until the replacement says it is ready, and only then retires.
//!
//! A retiring worker gets no new requests; once every reactor holds none of
//! its requests (or `--graceful-timeout` passed) it gets SIGTERM, and SIGKILL
//! if it is still there 5 s later.

mod process;
mod signals;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_layer_shm::{Config as LayerConfig, Endpoint, Error as LayerError, Reaper, Segment};

pub use process::{Exit, Process, WorkerCommand};

use crate::access_log::AccessLog;
use crate::asgi::wire;
use crate::config::Config;
use crate::control::{self, ToReactor, ToSupervisor};
use crate::driver::{self, listen};
use crate::status::Status;
use signals::Signals;

/// Start-up failures in a row after which a slot gives up and the server
/// stops (gunicorn stops at the first; a few tries ride out a flaky start).
const MAX_BOOT_FAILURES: u32 = 3;
/// How long a worker told to stop (SIGTERM) or aborted (SIGABRT) gets
/// before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(5);
/// Exit code when workers cannot start (gunicorn's, for the same reason);
/// also the code a worker exits with when it cannot load the application,
/// which stops the server at once (no retry can help).
pub const EXIT_WORKER_BOOT: i32 = 3;
/// A worker that dies within this of becoming ready counts as a quick death:
/// its replacement waits a growing back-off.
const QUICK_DEATH: Duration = Duration::from_secs(5);
/// The heartbeat kills a worker that took no message for `--timeout`, but
/// never sooner than this: a short `--timeout` (for the app's response)
/// must not make a worker the scheduler left waiting a moment look stuck.
const HEARTBEAT_FLOOR: Duration = Duration::from_secs(2);

/// Environment variables a worker process is started with.
pub mod env {
    /// Path of the segment.
    pub const SEGMENT: &str = "RINGWAY_SEGMENT";
    /// The worker's id: its inbox is `worker.<id>!`.
    pub const WORKER: &str = "RINGWAY_WORKER";
    /// Ask to be recycled after this many requests (absent: never).
    pub const MAX_REQUESTS: &str = "RINGWAY_MAX_REQUESTS";
    /// Response body bytes the worker may send ahead of the client, per request.
    pub const RESPONSE_WINDOW: &str = "RINGWAY_RESPONSE_WINDOW";
    /// The error log's path, to reopen on SIGUSR1 (absent: stderr as given).
    pub const ERROR_LOG: &str = "RINGWAY_ERROR_LOG";
    /// The wire encoding's version the server speaks (`asgi::wire::VERSION`).
    pub const WIRE_VERSION: &str = "RINGWAY_WIRE_VERSION";
}

/// Where a worker process is in its life.
#[derive(Debug)]
enum State {
    /// Started; must report ready by `deadline` (`--worker-start-timeout`).
    Starting { deadline: Instant },
    /// Serving.
    Ready,
    /// Gets no new requests; stopped once every reactor has drained it, or
    /// at `deadline`.
    Retiring {
        deadline: Instant,
        /// Reactors that still hold some of its requests.
        undrained: Vec<bool>,
    },
    /// Sent SIGTERM (or killed at start-up); SIGKILL at `kill_at`.
    Stopping { kill_at: Instant },
}

/// The supervisor's view of its heartbeat on a worker.
#[derive(Debug)]
struct Heartbeat {
    /// The inbox's taken-count when last seen to move.
    taken: u64,
    /// When it last moved, or the inbox was last seen empty.
    since: Instant,
    /// Reactors were told it is stalled.
    stalled: bool,
}

struct Worker {
    id: u32,
    slot: usize,
    process: Process,
    state: State,
    /// The reload generation it was started for.
    gen: u64,
    /// For a replacement: the worker it takes over from once ready.
    replaces: Option<u32>,
    /// Why it should be replaced (`--max-requests`, memory), if it should.
    recycle: Option<String>,
    /// What it said before exiting, if anything.
    last_error: Option<String>,
    /// Reactors know it (it was ready while they ran).
    announced: bool,
    /// Killed for not taking messages (its exit is logged as such).
    aborted: bool,
    /// Its failure to start was counted already (it was killed for it).
    boot_counted: bool,
    heartbeat: Heartbeat,
    /// When it became ready.
    ready_at: Option<Instant>,
    /// Its inbox, once resolved.
    inbox: Option<ringway_layer_shm::ChannelId>,
}

#[derive(Default)]
struct Slot {
    /// Start-up failures in a row.
    failures: u32,
    /// Workers in a row that died soon after becoming ready.
    quick_deaths: u32,
    /// No new worker for this slot before this.
    retry_at: Option<Instant>,
}

/// A reactor thread as the supervisor sees it.
struct ReactorLink {
    tx: control::Sender<ToReactor>,
    started: bool,
    finished: bool,
    thread: Option<JoinHandle<()>>,
}

/// What the server is doing as a whole.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Starting the first workers; reactors start once all are ready.
    Booting,
    /// Reactors started; waiting for each to say it runs.
    StartingReactors,
    /// Serving.
    Serving,
    /// SIGTERM: reactors finish in-flight requests by the deadline.
    Draining { deadline: Instant },
    /// Reactors are done: workers are stopped.
    StoppingWorkers,
}

struct Supervisor {
    cfg: Arc<Config>,
    seg: Segment,
    segment_path: String,
    command: WorkerCommand,
    ep: Endpoint,
    workers: Vec<Worker>,
    slots: Vec<Slot>,
    next_id: u32,
    /// The generation every worker should run (bumped by SIGHUP).
    target_gen: u64,
    /// A reload is replacing workers of older generations.
    reloading: bool,
    reactors: Vec<ReactorLink>,
    /// The bound addresses, for the "listening at" line.
    shown: Vec<String>,
    /// The pid file, once written (removed when the supervisor drops).
    _pid_file: PidFile,
    log: Option<Arc<AccessLog>>,
    sup_tx: control::Sender<ToSupervisor>,
    sup_rx: control::Receiver<ToSupervisor>,
    phase: Phase,
    /// SIGINTs received (the second stops at once).
    interrupts: u32,
    /// Exit code once stopped.
    exit_code: i32,
    next_heartbeat: Instant,
    msg: Vec<u8>,
}

/// The heartbeat's period for `--timeout`: often enough that a stalled
/// worker is noticed well within the timeout.
fn heartbeat_tick(timeout: Duration) -> Duration {
    (timeout / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Back-off before the `n`th start-up retry of a slot: 0.5 s, 1 s, 2 s, ...
/// up to a minute.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500)
        .saturating_mul(1 << n.saturating_sub(1).min(7))
        .min(Duration::from_secs(60))
}

/// A random number below `n` (0 if `n` is 0), for `--max-requests-jitter`.
fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let mut b = [0u8; 8];
    // SAFETY: fills the 8-byte buffer (or fewer; any value is fine).
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    u64::from_le_bytes(b) % (n + 1)
}

/// A process's private resident memory (`RssAnon`), in bytes: what a leak
/// grows. Shared memory (the segment) and mapped files are not counted.
fn private_memory(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The channel layer's shape for these options: lanes for every worker
/// process that may be alive at once to talk with every reactor and the
/// supervisor.
pub fn layer_config(cfg: &Config) -> LayerConfig {
    let r = cfg.reactors as u32;
    let procs = cfg.worker_capacity() as u32;
    LayerConfig {
        dir: cfg.shm_dir.clone(),
        channels: 64 + r + procs,
        // Per worker: a lane from each reactor and the supervisor into its
        // inbox, one from it into each reactor's inbox.
        lanes: procs * (2 * r + 1) + 16,
        lane_bytes: cfg.lane_size as u32,
        max_message: cfg.max_message() as u32,
        channel_capacity: vec![("worker.*".into(), 65536), ("reactor.*".into(), 65536)],
        ..LayerConfig::default()
    }
}

/// Removes the pid file when the server exits by returning.
struct PidFile(Option<std::path::PathBuf>);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            remove_pid_file(p);
        }
    }
}

/// Writes our pid to `path`, unless it names another process that runs
/// (a second server started by mistake must not take the first one's file).
fn write_pid_file(path: &std::path::Path) -> Result<(), String> {
    if let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive && pid != std::process::id() as i32 {
            return Err(format!(
                "--pid {}: it names process {pid}, which is running (another server?)",
                path.display()
            ));
        }
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
        .map_err(|e| format!("writing --pid {}: {e}", path.display()))
}

/// Removes the pid file if it still holds our pid.
fn remove_pid_file(path: &std::path::Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|s| s.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

/// Runs the server until it is stopped. Returns the process exit code.
pub fn run(cfg: Config, command: WorkerCommand) -> Result<i32, String> {
    // First, before any thread exists: every thread inherits the mask.
    let signals = Signals::install().map_err(|e| format!("blocking signals: {e}"))?;
    if let Some(path) = &cfg.error_log {
        crate::log::open_error_log(path)
            .map_err(|e| format!("opening --error-log {}: {e}", path.display()))?;
    }
    crate::log::start().map_err(|e| format!("starting the log writer: {e}"))?;
    crate::uring::check()?;
    let layer = layer_config(&cfg);
    let seg = Segment::create(&layer).map_err(|e| match e {
        LayerError::NoSpace {
            needed, available, ..
        } => format!(
            "the channel layer needs {} MiB of shared memory in {}, and only {} MiB are free there. \
             Give it more (docker run --shm-size={}m, or a larger tmpfs), put it elsewhere \
             with --shm-dir, or make it smaller: --lane-size (now {} KiB), fewer --workers or --reactors",
            needed.div_ceil(1 << 20),
            cfg.shm_dir.display(),
            available >> 20,
            (needed.div_ceil(1 << 20) + 16).next_multiple_of(64),
            cfg.lane_size >> 10
        ),
        e => format!("creating the channel layer in {}: {e}", cfg.shm_dir.display()),
    })?;
    let segment_path = seg
        .path()
        .to_str()
        .ok_or("segment path is not UTF-8")?
        .to_owned();
    let _reaper = Reaper::spawn(seg.clone(), |r| match r {
        // Routine when a worker exits: what it held in the layer is freed.
        Ok(r) => elog!(
            "ringway: freed what exited processes held in the channel layer: \
             {} endpoints, {} channels, {} lanes ({} still draining), {} memberships",
            r.endpoints,
            r.channels,
            r.freed_lanes + r.orphaned_lanes,
            r.orphaned_lanes,
            r.memberships
        ),
        Err(e) => elog!("ringway: reaper: {e}"),
    })
    .map_err(|e| format!("starting the reaper: {e}"))?;
    let log = match &cfg.access_log {
        Some(dest) => Some(Arc::new(
            AccessLog::open(dest, &cfg.access_log_format)
                .map_err(|e| format!("opening access log {dest}: {e}"))?,
        )),
        None => None,
    };
    let mut ep = seg
        .endpoint()
        .map_err(|e| format!("attaching the supervisor: {e}"))?;
    // The supervisor's loop never waits for the segment lock either.
    ep.set_lock_wait(false);
    let (sup_tx, sup_rx) = control::channel().map_err(|e| format!("eventfd: {e}"))?;
    let cfg = Arc::new(cfg);
    let mut s = Supervisor {
        slots: (0..cfg.workers).map(|_| Slot::default()).collect(),
        cfg,
        seg,
        segment_path,
        command,
        ep,
        workers: Vec::new(),
        next_id: 0,
        target_gen: 0,
        reloading: false,
        reactors: Vec::new(),
        shown: Vec::new(),
        _pid_file: PidFile(None),
        log,
        sup_tx,
        sup_rx,
        phase: Phase::Booting,
        interrupts: 0,
        exit_code: 0,
        next_heartbeat: Instant::now(),
        msg: Vec::new(),
    };
    Ok(s.run(&signals))
}

impl Supervisor {
    /// The event loop; a fatal error is logged and ends the server.
    fn run(&mut self, signals: &Signals) -> i32 {
        match self.run_loop(signals) {
            Ok(code) => code,
            Err(e) => {
                elog!("ringway: {e}");
                for w in &self.workers {
                    w.process.signal(libc::SIGKILL);
                }
                self.exit_code.max(1)
            }
        }
    }

    fn run_loop(&mut self, signals: &Signals) -> Result<i32, String> {
        loop {
            let now = Instant::now();
            if let Some(code) = self.reconcile(now)? {
                return Ok(code);
            }
            // What to watch: signals, reactors' messages, every pidfd and
            // every open status pipe.
            let mut fds = vec![signals.as_raw_fd(), self.sup_rx.bell().as_raw_fd()];
            for w in &self.workers {
                fds.push(w.process.pidfd());
                if let Some(fd) = w.process.status_fd() {
                    fds.push(fd);
                }
            }
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(now));
            poll(&fds, timeout);
            for sig in signals.read() {
                self.on_signal(sig)?;
            }
            for m in self.sup_rx.drain() {
                self.on_reactor(m)?;
            }
            self.on_workers()?;
        }
    }

    /// The earliest deadline the loop must wake for.
    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut at = |t: Instant| d = Some(d.map_or(t, |d| d.min(t)));
        for w in &self.workers {
            match &w.state {
                State::Starting { deadline } | State::Retiring { deadline, .. } => at(*deadline),
                State::Stopping { kill_at } => at(*kill_at),
                State::Ready => {}
            }
        }
        for s in &self.slots {
            if let Some(t) = s.retry_at {
                at(t);
            }
        }
        if let Phase::Draining { deadline } = self.phase {
            at(deadline);
        }
        if self.phase == Phase::Serving {
            at(self.next_heartbeat);
        }
        d
    }

    // ----- what should run ------------------------------------------------

    /// Compares what runs with what should, acts on passed deadlines and
    /// starts what is missing. Returns an exit code once the server is done.
    fn reconcile(&mut self, now: Instant) -> Result<Option<i32>, String> {
        self.expire(now)?;
        match self.phase {
            Phase::Draining { deadline } if now >= deadline => {
                elog!("ringway: graceful timeout passed; stopping workers");
                self.stop_workers(now);
            }
            Phase::StoppingWorkers if self.workers.is_empty() => {
                return Ok(Some(self.exit_code));
            }
            Phase::Draining { .. } | Phase::StoppingWorkers => return Ok(None),
            _ => {}
        }
        if self.phase == Phase::Serving && now >= self.next_heartbeat {
            self.heartbeat(now);
            self.next_heartbeat = now + heartbeat_tick(self.cfg.timeout);
        }
        // Slots beyond the wanted number (SIGTTOU) lose their workers.
        let want = self.slots.len();
        for i in 0..self.workers.len() {
            if self.workers[i].slot >= want {
                match self.workers[i].state {
                    State::Ready => self.retire(i, now),
                    State::Starting { .. } => self.kill(i, now),
                    _ => {}
                }
            }
        }
        for slot in 0..want {
            self.fill(slot, now)?;
        }
        if self.reloading
            && !self.workers.iter().any(|w| {
                w.gen < self.target_gen && matches!(w.state, State::Ready | State::Starting { .. })
            })
        {
            self.reloading = false;
            elog!("ringway: reload complete");
        }
        if self.phase == Phase::Booting
            && (0..want).all(|s| self.primary(s).is_some())
            && self.starting_in_any_slot().is_none()
        {
            self.start_reactors()?;
        }
        Ok(None)
    }

    /// The ready worker serving `slot`.
    fn primary(&self, slot: usize) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.slot == slot && matches!(w.state, State::Ready))
    }

    /// A worker starting in `slot`.
    fn pending(&self, slot: usize) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| w.slot == slot && matches!(w.state, State::Starting { .. }))
    }

    fn starting_in_any_slot(&self) -> Option<usize> {
        self.workers
            .iter()
            .position(|w| matches!(w.state, State::Starting { .. }))
    }

    /// Starts a worker for `slot` if it has none, or a replacement for its
    /// worker if that one should be replaced and there is room.
    fn fill(&mut self, slot: usize, now: Instant) -> Result<(), String> {
        if self.pending(slot).is_some() || self.slots[slot].retry_at.is_some_and(|t| now < t) {
            return Ok(());
        }
        // The layer was sized for this many processes: workers still
        // retiring or being killed hold their share until they are gone.
        if self.workers.len() >= self.cfg.worker_capacity() {
            return Ok(());
        }
        self.slots[slot].retry_at = None;
        let replaces = match self.primary(slot) {
            None => None,
            Some(p) => {
                let w = &self.workers[p];
                let reload = self.reloading && w.gen < self.target_gen;
                if !(reload || w.recycle.is_some()) {
                    return Ok(());
                }
                Some(w.id)
            }
        };
        self.spawn(slot, replaces, now)
    }

    fn spawn(&mut self, slot: usize, replaces: Option<u32>, now: Instant) -> Result<(), String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut env = vec![
            (env::SEGMENT.to_owned(), self.segment_path.clone()),
            (env::WORKER.to_owned(), id.to_string()),
            (
                env::RESPONSE_WINDOW.to_owned(),
                self.cfg.response_window.to_string(),
            ),
            (env::WIRE_VERSION.to_owned(), wire::VERSION.to_string()),
        ];
        if self.cfg.max_requests > 0 {
            let n = self.cfg.max_requests + random_below(self.cfg.max_requests_jitter);
            env.push((env::MAX_REQUESTS.to_owned(), n.to_string()));
        }
        if let Some(p) = &self.cfg.error_log {
            env.push((env::ERROR_LOG.to_owned(), p.display().to_string()));
        }
        match Process::spawn(&self.command, &env) {
            Ok(process) => {
                self.workers.push(Worker {
                    id,
                    slot,
                    process,
                    state: State::Starting {
                        deadline: now + self.cfg.worker_start_timeout,
                    },
                    gen: self.target_gen,
                    replaces,
                    recycle: None,
                    last_error: None,
                    announced: false,
                    aborted: false,
                    boot_counted: false,
                    heartbeat: Heartbeat {
                        taken: 0,
                        since: now,
                        stalled: false,
                    },
                    ready_at: None,
                    inbox: None,
                });
                Ok(())
            }
            Err(e) => {
                let why = format!("starting worker {slot}: {e}");
                self.boot_failed(slot, replaces, why, false, now)
            }
        }
    }

    /// A worker of `slot` failed to start (it exited, or timed out).
    fn boot_failed(
        &mut self,
        slot: usize,
        replaces: Option<u32>,
        why: String,
        app_failed: bool,
        now: Instant,
    ) -> Result<(), String> {
        if slot >= self.slots.len() {
            return Ok(());
        }
        let st = &mut self.slots[slot];
        st.failures += 1;
        if replaces.is_some() {
            // The old worker still serves: log, and keep it.
            if self.reloading {
                self.reloading = false;
                elog!("ringway: reload failed: {why}; the old workers keep serving");
                // The reload's other new workers go too.
                for i in 0..self.workers.len() {
                    if self.workers[i].replaces.is_some()
                        && matches!(self.workers[i].state, State::Starting { .. })
                    {
                        self.kill(i, now);
                    }
                }
            } else {
                elog!("ringway: replacing worker {slot}: {why}; it keeps serving");
            }
            self.slots[slot].retry_at = Some(now + backoff(self.slots[slot].failures));
            return Ok(());
        }
        // A worker that says it cannot load the application (exit code 3,
        // as gunicorn's workers say it) will not load it on a retry either.
        if st.failures >= MAX_BOOT_FAILURES || app_failed {
            self.exit_code = EXIT_WORKER_BOOT;
            return Err(if app_failed {
                format!("{why}; stopping")
            } else {
                format!(
                    "worker {slot} failed to start {} times in a row; stopping. Last error: {why}",
                    st.failures
                )
            });
        }
        let wait = backoff(st.failures);
        st.retry_at = Some(now + wait);
        elog!("ringway: {why}; retrying in {wait:?}");
        Ok(())
    }

    /// Acts on passed deadlines: start-up timeouts, retirements that took
    /// too long, kills.
    fn expire(&mut self, now: Instant) -> Result<(), String> {
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            match w.state {
                State::Starting { deadline } if now >= deadline => {
                    let why = format!(
                        "worker {} (pid {}) was not ready within --worker-start-timeout ({:?}); killed it",
                        w.slot,
                        w.process.pid(),
                        self.cfg.worker_start_timeout
                    );
                    w.process.signal(libc::SIGKILL);
                    w.state = State::Stopping {
                        kill_at: now + KILL_AFTER,
                    };
                    // Counted now, so the slot's retry waits for its back-off.
                    w.boot_counted = true;
                    let (slot, replaces) = (w.slot, w.replaces);
                    self.boot_failed(slot, replaces, why, false, now)?;
                }
                State::Retiring { deadline, .. } if now >= deadline => {
                    elog!(
                        "ringway: worker {} (pid {}) still holds requests after --graceful-timeout; stopping it",
                        w.slot,
                        w.process.pid()
                    );
                    self.terminate(i, now);
                }
                State::Stopping { kill_at } if now >= kill_at => {
                    w.process.signal(libc::SIGKILL);
                    w.state = State::Stopping {
                        kill_at: now + KILL_AFTER,
                    };
                }
                _ => {}
            }
        }
        Ok(())
    }

    // ----- worker transitions ---------------------------------------------

    /// Stops sending worker `i` new requests; it is stopped once drained.
    fn retire(&mut self, i: usize, now: Instant) {
        let reactors = self.reactors.len();
        let w = &mut self.workers[i];
        if !matches!(w.state, State::Ready) {
            return;
        }
        if !w.announced {
            self.terminate(i, now);
            return;
        }
        w.state = State::Retiring {
            deadline: now + self.cfg.graceful_timeout,
            undrained: vec![true; reactors],
        };
        let id = w.id;
        for r in &self.reactors {
            r.tx.send(ToReactor::Retire { id });
        }
    }

    /// SIGTERM to worker `i` (it holds no requests, or ran out of time).
    fn terminate(&mut self, i: usize, now: Instant) {
        let w = &mut self.workers[i];
        w.process.signal(libc::SIGTERM);
        w.state = State::Stopping {
            kill_at: now + KILL_AFTER,
        };
    }

    /// SIGKILL to worker `i` (a replacement no longer wanted).
    fn kill(&mut self, i: usize, now: Instant) {
        let w = &mut self.workers[i];
        w.process.signal(libc::SIGKILL);
        w.state = State::Stopping {
            kill_at: now + KILL_AFTER,
        };
    }

    /// Reads status pipes and reaps exited workers.
    fn on_workers(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let mut i = 0;
        while i < self.workers.len() {
            for st in self.workers[i].process.read_status() {
                self.on_status(i, st, now);
            }
            match self.workers[i].process.try_reap() {
                Some(exit) => {
                    let w = self.workers.remove(i);
                    self.on_exit(w, exit, now)?;
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    fn on_status(&mut self, i: usize, st: Status, now: Instant) {
        let w = &mut self.workers[i];
        match st {
            Status::Ready if matches!(w.state, State::Starting { .. }) => {
                w.state = State::Ready;
                w.heartbeat.since = now;
                w.ready_at = Some(now);
                let (id, slot, replaces) = (w.id, w.slot, w.replaces.take());
                elog!(
                    "ringway: worker {slot} (pid {}, inbox worker.{id}!) ready",
                    w.process.pid()
                );
                if slot < self.slots.len() {
                    self.slots[slot].failures = 0;
                }
                if !self.reactors.is_empty() {
                    self.workers[i].announced = true;
                    for r in &self.reactors {
                        r.tx.send(ToReactor::WorkerUp { id });
                    }
                }
                // The worker it replaces stops taking requests only now.
                if let Some(old) =
                    replaces.and_then(|o| self.workers.iter().position(|w| w.id == o))
                {
                    self.retire(old, now);
                }
            }
            Status::Ready => {}
            Status::Error(e) => w.last_error = Some(e),
            Status::Recycle(why) => {
                if w.recycle.is_none() && matches!(w.state, State::Ready) {
                    elog!(
                        "ringway: worker {} (pid {}) asks to be replaced: {why}",
                        w.slot,
                        w.process.pid()
                    );
                    w.recycle = Some(why);
                }
            }
        }
    }

    fn on_exit(&mut self, w: Worker, exit: Exit, now: Instant) -> Result<(), String> {
        if w.announced {
            for r in &self.reactors {
                r.tx.send(ToReactor::WorkerDied { id: w.id });
            }
        }
        if matches!(self.phase, Phase::Draining { .. } | Phase::StoppingWorkers) {
            return Ok(());
        }
        let pid = w.process.pid();
        match w.state {
            State::Starting { .. } if !w.boot_counted => {
                let why = match &w.last_error {
                    Some(e) => format!(
                        "worker {} (pid {pid}) exited before it was ready ({exit}): {e}",
                        w.slot
                    ),
                    None => format!(
                        "worker {} (pid {pid}) exited before it was ready ({exit})",
                        w.slot
                    ),
                };
                self.boot_failed(
                    w.slot,
                    w.replaces,
                    why,
                    exit == Exit::Code(EXIT_WORKER_BOOT),
                    now,
                )
            }
            State::Ready => {
                let how = if w.aborted {
                    " after the heartbeat found it stuck"
                } else {
                    ""
                };
                // A worker that dies soon after it was ready, again and
                // again, is replaced after a growing back-off, not at once
                // in a loop as fast as fork and exec go.
                let mut wait = Duration::ZERO;
                if let Some(slot) = self.slots.get_mut(w.slot) {
                    if w.ready_at.is_some_and(|t| now - t < QUICK_DEATH) {
                        slot.quick_deaths += 1;
                        wait = backoff(slot.quick_deaths);
                        slot.retry_at = Some(now + wait);
                    } else {
                        slot.quick_deaths = 0;
                    }
                }
                elog!(
                    "ringway: worker {} (pid {pid}) exited{how} ({exit}); replacing it{}",
                    w.slot,
                    if wait.is_zero() {
                        String::new()
                    } else {
                        format!(" in {wait:?}")
                    }
                );
                Ok(())
            }
            State::Starting { .. } | State::Retiring { .. } | State::Stopping { .. } => {
                if w.aborted {
                    elog!(
                        "ringway: worker {} (pid {pid}) killed by the heartbeat ({exit}); replacing it",
                        w.slot
                    );
                }
                Ok(())
            }
        }
    }

    // ----- heartbeat ------------------------------------------------------

    /// Once per tick: pings every serving worker through its inbox, checks
    /// that each takes its messages, and checks memory.
    fn heartbeat(&mut self, now: Instant) {
        let notice =
            (self.cfg.timeout / 2).clamp(Duration::from_millis(250), Duration::from_secs(1));
        wire::encode_ping(&mut self.msg);
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            if !matches!(w.state, State::Ready | State::Retiring { .. }) {
                continue;
            }
            if w.inbox.is_none() {
                // Never waits for the segment lock: tries again next tick.
                w.inbox = self.ep.channel(&format!("worker.{}!", w.id)).ok();
            }
            let Some(inbox) = w.inbox else { continue };
            let _ = self.ep.send_id(inbox, b"", &self.msg);
            if let Some(p) = self.ep.progress(inbox) {
                let hb = &mut w.heartbeat;
                if p.queued == 0 || p.taken != hb.taken {
                    hb.taken = p.taken;
                    hb.since = now;
                    if hb.stalled {
                        hb.stalled = false;
                        for r in &self.reactors {
                            r.tx.send(ToReactor::Stalled {
                                id: w.id,
                                stalled: false,
                            });
                        }
                    }
                } else {
                    let idle = now - hb.since;
                    if idle >= notice && !hb.stalled {
                        hb.stalled = true;
                        for r in &self.reactors {
                            r.tx.send(ToReactor::Stalled {
                                id: w.id,
                                stalled: true,
                            });
                        }
                    }
                    if idle >= self.cfg.timeout.max(HEARTBEAT_FLOOR) && !w.aborted {
                        elog!(
                            "ringway: worker {} (pid {}) took no message for {idle:?} with {} waiting (--timeout); aborting it",
                            w.slot,
                            w.process.pid(),
                            p.queued
                        );
                        w.aborted = true;
                        // As gunicorn: SIGABRT (a traceback, for Python), then SIGKILL.
                        w.process.signal(libc::SIGABRT);
                        w.state = State::Stopping {
                            kill_at: now + Duration::from_secs(1),
                        };
                    }
                }
            }
            if self.cfg.max_worker_memory > 0 && w.recycle.is_none() {
                if let Some(m) = private_memory(w.process.pid()) {
                    if m > self.cfg.max_worker_memory {
                        let why = format!(
                            "private memory {} MiB is over --max-worker-memory {} MiB",
                            m >> 20,
                            self.cfg.max_worker_memory >> 20
                        );
                        elog!(
                            "ringway: worker {} (pid {}): {why}; replacing it",
                            w.slot,
                            w.process.pid()
                        );
                        w.recycle = Some(why);
                    }
                }
            }
        }
        self.ep.flush_wakeups();
    }

    // ----- reactors ---------------------------------------------------------

    /// Binds the listeners (only now: an app that cannot be imported fails
    /// before any socket is bound), writes the pid file, and starts the
    /// reactors with the workers that are ready.
    fn start_reactors(&mut self) -> Result<(), String> {
        let (listeners, shown) = listen::open(&self.cfg.binds, self.cfg.reactors, self.cfg.backlog)
            .map_err(|e| format!("listening: {e}"))?;
        self.shown = shown;
        // Written once the addresses are ours: a second server that cannot
        // bind leaves the first one's pid file alone.
        if let Some(p) = &self.cfg.pid_file {
            write_pid_file(p)?;
            self._pid_file = PidFile(Some(p.clone()));
        }
        let ready: Vec<u32> = self
            .workers
            .iter_mut()
            .filter(|w| matches!(w.state, State::Ready))
            .map(|w| {
                w.announced = true;
                w.id
            })
            .collect();
        let shared = Arc::new(driver::Shared {
            cfg: self.cfg.clone(),
            seg: self.seg.clone(),
            log: self.log.clone(),
        });
        for (k, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = control::channel().map_err(|e| format!("eventfd: {e}"))?;
            let start = driver::Start {
                k: k as u16,
                listeners: l,
                shared: shared.clone(),
                control: rx,
                supervisor: self.sup_tx.clone(),
                workers: ready.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("ringway-reactor-{k}"))
                .spawn(move || driver::run(start))
                .map_err(|e| format!("starting reactor thread {k}: {e}"))?;
            self.reactors.push(ReactorLink {
                tx,
                started: false,
                finished: false,
                thread: Some(thread),
            });
        }
        self.phase = Phase::StartingReactors;
        Ok(())
    }

    fn on_reactor(&mut self, m: ToSupervisor) -> Result<(), String> {
        match m {
            ToSupervisor::Started { reactor, result } => {
                result?;
                self.reactors[reactor as usize].started = true;
                if self.phase == Phase::StartingReactors && self.reactors.iter().all(|r| r.started)
                {
                    self.phase = Phase::Serving;
                    crate::log::out(format_args!(
                        "ringway: listening at {} ({} reactor threads, {} workers, pid {})",
                        self.shown.join(", "),
                        self.reactors.len(),
                        self.slots.len(),
                        std::process::id()
                    ));
                }
            }
            ToSupervisor::Drained { reactor, id } => {
                let now = Instant::now();
                if let Some(i) = self.workers.iter().position(|w| w.id == id) {
                    if let State::Retiring { undrained, .. } = &mut self.workers[i].state {
                        if let Some(u) = undrained.get_mut(reactor as usize) {
                            *u = false;
                        }
                        if undrained.iter().all(|u| !u) {
                            self.terminate(i, now);
                        }
                    }
                }
            }
            ToSupervisor::Fatal { reactor, why } => {
                elog!("ringway: reactor {reactor} cannot go on: {why}; stopping now");
                self.stop_now(1);
            }
            ToSupervisor::Finished { reactor } => {
                let r = &mut self.reactors[reactor as usize];
                r.finished = true;
                if let Some(t) = r.thread.take() {
                    let _ = t.join();
                }
                if !matches!(self.phase, Phase::Draining { .. } | Phase::StoppingWorkers) {
                    elog!("ringway: reactor {reactor} stopped unexpectedly; stopping now");
                    self.stop_now(1);
                }
                if matches!(self.phase, Phase::Draining { .. })
                    && self.reactors.iter().all(|r| r.finished)
                {
                    self.stop_workers(Instant::now());
                }
            }
        }
        Ok(())
    }

    // ----- signals --------------------------------------------------------

    fn on_signal(&mut self, sig: i32) -> Result<(), String> {
        let now = Instant::now();
        match sig {
            libc::SIGTERM => self.graceful(now),
            libc::SIGINT => {
                self.interrupts += 1;
                if self.interrupts >= 2 {
                    elog!("ringway: stopping now");
                    self.stop_now(1);
                }
                self.graceful(now);
            }
            libc::SIGQUIT => {
                elog!("ringway: stopping now");
                self.stop_now(1);
            }
            libc::SIGHUP => {
                if matches!(self.phase, Phase::Serving) {
                    self.target_gen += 1;
                    self.reloading = true;
                    elog!("ringway: reloading: starting new workers");
                }
            }
            libc::SIGTTIN => {
                if self.slots.len() + 1 >= self.cfg.worker_capacity() {
                    elog!(
                        "ringway: SIGTTIN: already {} workers, the most this server's layer was sized for",
                        self.slots.len()
                    );
                } else {
                    self.slots.push(Slot::default());
                    elog!("ringway: SIGTTIN: {} workers", self.slots.len());
                }
            }
            libc::SIGTTOU => {
                if self.slots.len() > 1 {
                    self.slots.pop();
                    elog!("ringway: SIGTTOU: {} workers", self.slots.len());
                }
            }
            libc::SIGUSR1 => {
                if let Some(p) = &self.cfg.error_log {
                    if let Err(e) = crate::log::open_error_log(p) {
                        elog!("ringway: reopening {}: {e}", p.display());
                    }
                }
                if let Some(log) = &self.log {
                    log.reopen();
                }
                for w in &self.workers {
                    w.process.signal(libc::SIGUSR1);
                }
                elog!("ringway: SIGUSR1: logs reopened");
            }
            // Routine: a child exited (its pidfd says so), we were continued
            // after a stop, the terminal was resized.
            libc::SIGCHLD | libc::SIGCONT | libc::SIGWINCH => {}
            other => elog!(
                "ringway: ignoring signal {other} ({})",
                process::signal_name(other)
            ),
        }
        Ok(())
    }

    /// SIGTERM: stop accepting, let in-flight requests finish.
    fn graceful(&mut self, now: Instant) {
        match self.phase {
            Phase::Booting | Phase::StartingReactors if self.reactors.is_empty() => {
                elog!("ringway: stopping");
                self.stop_workers(now);
            }
            Phase::Booting | Phase::StartingReactors | Phase::Serving => {
                elog!(
                    "ringway: stopping gracefully (up to {:?}); SIGINT again to stop now",
                    self.cfg.graceful_timeout
                );
                for r in &self.reactors {
                    r.tx.send(ToReactor::Shutdown);
                }
                self.phase = Phase::Draining {
                    deadline: now + self.cfg.graceful_timeout + Duration::from_secs(1),
                };
            }
            Phase::Draining { .. } | Phase::StoppingWorkers => {}
        }
    }

    /// Every worker gets SIGTERM (SIGKILL later if need be); the loop ends
    /// when all are gone.
    fn stop_workers(&mut self, now: Instant) {
        self.phase = Phase::StoppingWorkers;
        for i in 0..self.workers.len() {
            if !matches!(self.workers[i].state, State::Stopping { .. }) {
                self.terminate(i, now);
            }
        }
    }

    /// Stops at once: the segment file goes, workers are killed, the
    /// process exits without tearing anything down under the reactors.
    fn stop_now(&mut self, code: i32) -> ! {
        self.seg.remove_file();
        for w in &self.workers {
            w.process.signal(libc::SIGKILL);
        }
        if let Some(p) = &self.cfg.pid_file {
            remove_pid_file(p);
        }
        crate::log::drain(Duration::from_secs(1));
        // SAFETY: ends the process at once; nothing needs to run after this.
        unsafe { libc::_exit(code) }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
fn poll(fds: &[i32], timeout: Option<Duration>) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32 + 1);
    // SAFETY: `pfds` is a valid array of pollfd; EINTR just returns early.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_retries_back_off_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(random_below(0), 0);
        for _ in 0..100 {
            assert!(random_below(5) <= 5);
        }
    }
}
