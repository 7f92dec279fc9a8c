//! Why a request or connection ended badly, and the one place that decides
//! which status the client gets for it.

use std::fmt;

use crate::h1::{self, ProtoError};

/// Everything that can end a request other than a complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnError {
    /// The client broke HTTP/1.1 (malformed or smuggling-prone request, a limit).
    Proto(ProtoError),
    /// The request head did not arrive within `--header-timeout` (slowloris).
    HeaderTimeout,
    /// The app did not start its response within `--timeout`.
    ResponseTimeout,
    /// No worker could take the request (all down or all full).
    NoWorker,
    /// The worker handling the request died.
    WorkerDied,
    /// The app raised or broke the ASGI contract; the text says how.
    App(String),
    /// The client stopped reading for longer than `--write-timeout`.
    WriteTimeout,
    /// The client went away.
    ClientGone,
    /// The request's scope does not fit one layer message (the head limits
    /// are sized so that it always does; this is the safety net).
    ScopeTooLarge(usize),
}

impl From<ProtoError> for ConnError {
    fn from(e: ProtoError) -> Self {
        ConnError::Proto(e)
    }
}

/// The status to send before closing, if a response has not started yet;
/// `None` means close without a response.
pub fn status_for(e: &ConnError) -> Option<u16> {
    match e {
        ConnError::Proto(p) => h1::status_for(p),
        ConnError::HeaderTimeout => Some(408),
        ConnError::ResponseTimeout => Some(504),
        ConnError::NoWorker => Some(503),
        ConnError::WorkerDied => Some(502),
        ConnError::App(_) => Some(500),
        ConnError::ScopeTooLarge(_) => Some(431),
        ConnError::WriteTimeout | ConnError::ClientGone => None,
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Proto(p) => write!(f, "bad request: {p}"),
            ConnError::HeaderTimeout => {
                write!(f, "request head not received within --header-timeout")
            }
            ConnError::ResponseTimeout => {
                write!(f, "app did not start a response within --timeout")
            }
            ConnError::NoWorker => write!(f, "no worker available"),
            ConnError::WorkerDied => write!(f, "the worker handling the request died"),
            ConnError::App(why) => write!(f, "application error: {why}"),
            ConnError::WriteTimeout => write!(f, "client stopped reading (--write-timeout)"),
            ConnError::ClientGone => write!(f, "client disconnected"),
            ConnError::ScopeTooLarge(n) => {
                write!(
                    f,
                    "request head makes a {n}-byte scope, more than a layer message holds"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_failures_map_to_their_statuses() {
        assert_eq!(status_for(&ConnError::HeaderTimeout), Some(408));
        assert_eq!(status_for(&ConnError::ResponseTimeout), Some(504));
        assert_eq!(status_for(&ConnError::NoWorker), Some(503));
        assert_eq!(status_for(&ConnError::WorkerDied), Some(502));
        assert_eq!(status_for(&ConnError::App("boom".into())), Some(500));
        assert_eq!(status_for(&ConnError::ClientGone), None);
    }
}
