//! `ringway-server`: see `ringway-server --help`.

use std::process::ExitCode;

use ringway_server::bench_worker::{self, bench_env};
use ringway_server::config::{BenchWorker, Config, USAGE};
use ringway_server::elog;
use ringway_server::supervisor::{self, env, WorkerCommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A worker process started by the server.
    if let (Ok(segment), Ok(w)) = (std::env::var(env::SEGMENT), std::env::var(env::WORKER)) {
        let Ok(w) = w.parse() else {
            elog!("ringway worker: bad {} {w:?}", env::WORKER);
            return ExitCode::from(2);
        };
        let kind = match std::env::var(bench_env::BENCH_WORKER).as_deref() {
            Ok("echo") => BenchWorker::Echo,
            _ => BenchWorker::Hello,
        };
        return match bench_worker::run(&segment, w, kind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                elog!("ringway worker {w}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        ringway_server::log::out(format_args!("{USAGE}"));
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            elog!("ringway-server: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.bench_worker.is_none() {
        elog!(
            "ringway-server: pass --bench-worker hello (or echo): this binary runs the built-in \
             Rust workers; Python apps are served by the `ringway` command (pip install ./worker)"
        );
        return ExitCode::from(2);
    }
    let program = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            elog!("ringway-server: finding our own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let kind = match cfg.bench_worker {
        Some(BenchWorker::Echo) => "echo",
        _ => "hello",
    };
    let command = WorkerCommand {
        program,
        args: Vec::new(),
        env: vec![(bench_env::BENCH_WORKER.into(), kind.into())],
    };
    let code = match supervisor::run(cfg, command) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            elog!("ringway-server: {e}");
            ExitCode::FAILURE
        }
    };
    // The last lines say why the server stopped.
    ringway_server::log::drain(std::time::Duration::from_secs(1));
    code
}
