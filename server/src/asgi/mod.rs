//! ASGI over the channel layer: the message encoding and the HTTP scope.

pub mod scope;
pub mod wire;
