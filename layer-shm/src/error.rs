//! The layer's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the layer. Each variant says what the caller
/// should do about it.
#[derive(Debug)]
pub enum Error {
    /// A system call failed (creating, mapping or opening the segment, a doorbell).
    /// Usually fatal for the operation; the message names the step.
    Io {
        /// What the layer was doing.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The file is not a ringway segment (wrong magic number). Check the path.
    NotASegment(PathBuf),
    /// The segment was made by an incompatible version of ringway. Restart the
    /// server and the workers from the same build.
    Version {
        /// Layout version found in the file.
        found: u32,
        /// Layout version this build speaks.
        expected: u32,
    },
    /// The segment was made on another architecture.
    Architecture {
        /// Tag found.
        found: u32,
        /// Tag of this build.
        expected: u32,
    },
    /// The file is shorter than its header says, or its header is inconsistent.
    /// The segment cannot be used; the server must make a new one.
    Corrupt(String),
    /// The segment's creator has not finished initialising it.
    NotReady,
    /// The configuration is invalid; the message says which field.
    Config(String),
    /// A channel or group name breaks the naming rules; the message says how.
    InvalidName(String),
    /// The message is larger than the segment's `max_message`; split it.
    TooLarge {
        /// Payload size offered.
        size: usize,
        /// The segment's maximum.
        max: usize,
    },
    /// A table in the segment is full (endpoints, channels, lanes or group
    /// memberships). Raise the corresponding size in the configuration.
    TableFull(&'static str),
    /// A process-specific channel whose owner is gone (or never existed);
    /// messages to it can never be received.
    NoReceiver(String),
    /// A process-specific channel of that name is owned by another live endpoint.
    ChannelOwned(String),
    /// A record from another endpoint failed validation. It was dropped, with
    /// whatever followed it in that producer's lane; receiving again carries on.
    CorruptRecord(String),
    /// The segment lock was not acquired in time: another process holds it and
    /// does not let go. The operation did nothing; it may be retried.
    LockTimeout,
    /// The segment lock is held by another live endpoint and this endpoint
    /// does not wait for it ([`crate::Endpoint::set_lock_wait`]). Nothing
    /// was done; retry later (a reactor: on a later turn of its loop).
    LockBusy,
    /// The directory's filesystem (a tmpfs: `/dev/shm`) has no room for the
    /// segment. Nothing was created. Make the segment smaller (fewer or
    /// smaller lanes), give the tmpfs more room, or use another directory.
    NoSpace {
        /// Where the segment was to be created.
        dir: PathBuf,
        /// The segment's size ([`crate::Config::segment_size`]).
        needed: u64,
        /// What the filesystem had available.
        available: u64,
    },
}

/// Why a send failed. The caller still owns the message.
#[derive(Debug)]
pub enum SendError {
    /// The channel is at capacity (`ChannelFull` in the Channels spec): back off
    /// and retry, or fail the request. Nothing was queued.
    Full,
    /// Any other failure; nothing was queued.
    Other(Error),
}

impl From<Error> for SendError {
    fn from(e: Error) -> Self {
        SendError::Other(e)
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::NotASegment(p) => {
                write!(f, "{} is not a ringway segment (bad magic number)", p.display())
            }
            Error::Version { found, expected } => write!(
                f,
                "segment layout version {found}, this build speaks version {expected}: run the server and workers from the same ringway build"
            ),
            Error::Architecture { found, expected } => write!(
                f,
                "segment was made for architecture tag {found:#x}, this build is {expected:#x}"
            ),
            Error::Corrupt(why) => write!(f, "corrupt segment: {why}"),
            Error::NotReady => write!(f, "segment is still being initialised by its creator"),
            Error::Config(why) => write!(f, "invalid layer configuration: {why}"),
            Error::InvalidName(why) => write!(f, "invalid name: {why}"),
            Error::TooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds the maximum of {max}; split it")
            }
            Error::TableFull(which) => write!(f, "the segment's {which} table is full"),
            Error::NoReceiver(name) => write!(f, "channel {name} has no receiver any more"),
            Error::ChannelOwned(name) => {
                write!(f, "channel {name} is owned by another live endpoint")
            }
            Error::CorruptRecord(why) => write!(f, "rejected a corrupt record: {why}"),
            Error::LockTimeout => write!(f, "timed out waiting for the segment lock"),
            Error::LockBusy => write!(
                f,
                "the segment lock is held by another process; nothing was done, retry later"
            ),
            Error::NoSpace {
                dir,
                needed,
                available,
            } => write!(
                f,
                "the channel layer's segment needs {needed} bytes ({}) in {} but only {available} bytes ({}) are available there: \
                 use fewer or smaller lanes, give the tmpfs more room (for Docker: docker run --shm-size=...; \
                 for Kubernetes: an emptyDir volume with medium: Memory and a sizeLimit mounted at /dev/shm), \
                 or create the segment in another directory",
                mib(*needed),
                dir.display(),
                mib(*available),
            ),
        }
    }
}

/// A byte count in MiB, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full => write!(f, "channel is full"),
            SendError::Other(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {}

/// Shorthand.
pub type Result<T> = std::result::Result<T, Error>;
