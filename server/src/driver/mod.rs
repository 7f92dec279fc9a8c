//! The I/O driver: tokio-uring runtimes, sockets, and the connection tasks
//! that run the sans-IO protocol code over them.

pub mod conn;
pub mod listen;
pub mod reactor;
pub mod stream;
