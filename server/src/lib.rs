//! ringway's interface server: thread-per-core io_uring reactors that hold
//! HTTP/1.1 connections and turn them into ASGI messages on the shared-memory
//! channel layer. It never runs application code.
//!
//! - [`h1`]: sans-IO HTTP/1.1 (parsing, body framing, response encoding).
//! - [`asgi`]: the ASGI scope and the binary message encoding on the layer.
//! - [`driver`]: tokio-uring sockets, reactors and connection tasks.
//! - [`supervisor`]: the process: layer, workers, reactors, signals.
//! - [`control`]: messages between the supervisor and the reactors.
//! - [`status`]: the status pipe between a worker and the supervisor.
//! - [`errors`]: the one place that maps failures to statuses.
//! - [`log`]: the server's own messages, which never panic.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
pub mod log;
pub mod access_log;
pub mod asgi;
pub mod bench_worker;
pub mod config;
pub mod control;
pub mod date;
pub mod driver;
pub mod errors;
pub mod h1;
pub mod status;
pub mod supervisor;
pub mod uring;
