//! The server entry point: `ringway._native.serve` runs the interface server
//! and its supervisor in this process, with the GIL released, and starts
//! Python workers as the command it is given.

use std::ffi::OsString;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use ringway_server::config::{Config, USAGE};
use ringway_server::supervisor::{self, WorkerCommand};

/// The server's own options and their help (`ringway-server --help`).
#[pyfunction]
pub fn usage() -> &'static str {
    USAGE
}

/// Checks the server options `args` as `serve` would read them; raises
/// `ValueError` saying what is wrong.
#[pyfunction]
pub fn check_config(args: Vec<String>) -> PyResult<()> {
    Config::from_args(&args)
        .map(drop)
        .map_err(PyValueError::new_err)
}

/// Parses the server options `args` (as `ringway-server` takes them), then
/// runs the server until it stops, with `program args...` as each worker
/// process (given `env` beside the server's own). Returns the exit code.
/// Invalid options raise `ValueError` before anything starts.
///
/// The calling thread becomes the supervisor: it blocks the signals the
/// server handles (call it from the main thread, before starting threads).
#[pyfunction]
#[pyo3(signature = (args, program, program_args, env))]
pub fn serve(
    py: Python<'_>,
    args: Vec<String>,
    program: String,
    program_args: Vec<String>,
    env: Vec<(String, String)>,
) -> PyResult<i32> {
    let cfg = Config::from_args(&args).map_err(PyValueError::new_err)?;
    let command = WorkerCommand {
        program: program.into(),
        args: program_args.into_iter().map(OsString::from).collect(),
        env: env
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect(),
    };
    let code = py.detach(move || {
        let code = match supervisor::run(cfg, command) {
            Ok(code) => code,
            Err(e) => {
                ringway_server::elog!("ringway: {e}");
                1
            }
        };
        ringway_server::log::drain(std::time::Duration::from_secs(1));
        code
    });
    Ok(code)
}
