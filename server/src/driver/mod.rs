//! The I/O driver: one tokio-uring runtime per reactor thread, its sockets,
//! and the connection tasks that run the sans-IO protocol code over them.
//!
//! - [`reactor`]: a reactor's shared state and background tasks (inbox pump,
//!   sweeper, control);
//! - [`conn`]: a connection's task: reads requests, fails them when they
//!   must fail, writes responses; [`http`] is its exchange with a worker;
//! - [`cell`]: what the rest of the reactor reaches of a connection;
//! - [`io`], [`stream`], [`listen`]: sockets.
//!
//! [`run`] starts a reactor: it is the only place that knows both the
//! reactor and the connections, so neither module depends on the other's
//! caller.

pub mod cell;
pub mod conn;
mod http;
pub mod io;
pub mod listen;
pub mod reactor;
pub mod stream;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringway_layer_shm::Segment;
use tokio::sync::watch;

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::control::{self, ToReactor, ToSupervisor};
use listen::StdListener;
use reactor::Reactor;
use stream::Listener;

/// What every reactor needs from the process.
pub struct Shared {
    /// Options.
    pub cfg: Arc<Config>,
    /// The channel layer.
    pub seg: Segment,
    /// The access log, if enabled.
    pub log: Option<Arc<AccessLog>>,
}

/// What one reactor thread starts with.
pub struct Start {
    /// Its number.
    pub k: u16,
    /// Its listeners.
    pub listeners: Vec<StdListener>,
    /// The process's shared parts.
    pub shared: Arc<Shared>,
    /// The supervisor's messages.
    pub control: control::Receiver<ToReactor>,
    /// To the supervisor.
    pub supervisor: control::Sender<ToSupervisor>,
    /// The workers ready when it starts.
    pub workers: Vec<u32>,
}

/// Tells the supervisor that the reactor thread ended, also when it panics.
struct Finished(control::Sender<ToSupervisor>, u16);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.send(ToSupervisor::Finished { reactor: self.1 });
    }
}

/// Runs a reactor thread until a graceful shutdown completes.
pub fn run(start: Start) {
    let Start {
        k,
        listeners,
        shared,
        control,
        supervisor,
        workers,
    } = start;
    let _finished = Finished(supervisor.clone(), k);
    tokio_uring::builder()
        .entries(1024)
        // COOP_TASKRUN: completions do not interrupt a running reactor with an
        // IPI; it picks them up when it next enters the kernel, which it does
        // constantly. (Same setting as the ceiling in bench/.)
        .uring_builder(tokio_uring::uring_builder().setup_coop_taskrun())
        .start(async move {
            let setup = (|| {
                let mut ep = shared
                    .seg
                    .endpoint()
                    .map_err(|e| format!("attaching to the layer: {e}"))?;
                let inbox = ep
                    .own_channel(&format!("reactor.{k}!"))
                    .map_err(|e| format!("creating the inbox: {e}"))?;
                let adopted = listeners
                    .into_iter()
                    .map(Listener::adopt)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("adopting listeners: {e}"))?;
                Ok::<_, String>((ep, inbox, adopted))
            })();
            let (mut ep, inbox, adopted) = match setup {
                Ok(s) => s,
                Err(e) => {
                    supervisor.send(ToSupervisor::Started {
                        reactor: k,
                        result: Err(format!("reactor {k}: {e}")),
                    });
                    return;
                }
            };
            ep.hold_wakeups(true);
            // From here on a reactor never waits for the segment lock: a
            // worker holding it (or stopped while holding it) must not
            // stall the reactor. What needs the lock is retried later.
            ep.set_lock_wait(false);
            let (shutdown_tx, mut shutdown) = watch::channel(false);
            let r = Rc::new(Reactor::new(
                k,
                shared.cfg.clone(),
                shared.log.clone(),
                ep,
                inbox,
                &workers,
                supervisor.clone(),
                shutdown_tx,
            ));
            let pump = r.clone();
            let sup = supervisor.clone();
            tokio_uring::spawn(async move {
                let why = reactor::pump(pump).await;
                sup.send(ToSupervisor::Fatal { reactor: k, why });
            });
            tokio_uring::spawn(reactor::sweeper(r.clone()));
            tokio_uring::spawn(reactor::control_task(r.clone(), control));
            for l in adopted {
                tokio_uring::spawn(accept_loop(r.clone(), l));
            }
            supervisor.send(ToSupervisor::Started {
                reactor: k,
                result: Ok(()),
            });
            let _ = shutdown.wait_for(|s| *s).await;
            // Graceful: no new connections; in-flight requests get until the deadline.
            let deadline = tokio::time::Instant::now() + shared.cfg.graceful_timeout;
            while r.open_conns() > 0 {
                tokio::select! {
                    _ = r.conn_closed.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        });
}

async fn accept_loop(r: Rc<Reactor>, l: Listener) {
    let mut shutdown = r.shutdown_tx.subscribe();
    loop {
        tokio::select! {
            res = l.accept() => match res {
                Ok((stream, peer, local)) => {
                    tokio_uring::spawn(conn::serve(r.clone(), stream, peer, local));
                }
                Err(e) => {
                    elog!("ringway: reactor {}: accept: {e}", r.k);
                    // Out of descriptors: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
