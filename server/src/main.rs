//! `ringway-server`: see `ringway-server --help`.

use std::process::ExitCode;

use ringway_server::bench_worker::{self, env};
use ringway_server::config::{BenchWorker, Config, USAGE};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A worker process started by the server.
    if let (Ok(segment), Ok(w)) = (std::env::var(env::SEGMENT), std::env::var(env::WORKER)) {
        let Ok(w) = w.parse() else {
            eprintln!("ringway worker: bad {} {w:?}", env::WORKER);
            return ExitCode::from(2);
        };
        let kind = match std::env::var(env::BENCH_WORKER).as_deref() {
            Ok("echo") => BenchWorker::Echo,
            _ => BenchWorker::Hello,
        };
        return match bench_worker::run(&segment, w, kind) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ringway worker {w}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringway-server: {e}");
            return ExitCode::from(2);
        }
    };
    match ringway_server::server::run(cfg) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("ringway-server: {e}");
            ExitCode::FAILURE
        }
    }
}
