//! `ringway._native`: what the Python worker needs from Rust: the channel
//! layer ([`channel::Worker`]), the ASGI scope built from the wire bytes
//! ([`decode`]), and the server itself ([`serve`]).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod channel;
pub mod decode;
pub mod serve;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("WIRE_VERSION", ringway_server::asgi::wire::VERSION)?;
    m.add(
        "CREDIT_PER_MESSAGE",
        ringway_server::asgi::wire::credit::PER_MESSAGE,
    )?;
    m.add("REQUEST", channel::event::REQUEST)?;
    m.add("BODY", channel::event::BODY)?;
    m.add("DISCONNECT", channel::event::DISCONNECT)?;
    m.add("CREDIT", channel::event::CREDIT)?;
    m.add(
        "EXIT_APP_LOAD",
        ringway_server::supervisor::EXIT_WORKER_BOOT,
    )?;
    m.add_class::<channel::Worker>()?;
    m.add_function(wrap_pyfunction!(serve::serve, m)?)?;
    m.add_function(wrap_pyfunction!(serve::usage, m)?)?;
    m.add_function(wrap_pyfunction!(serve::check_config, m)?)?;
    Ok(())
}
