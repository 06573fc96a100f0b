//! HTTP/2 (RFC 9113): framing, HPACK header decoding, and each stream as an exchange.
//!
//! Not wired into the connection tracker yet (issue 5 continues): a connection seen from its
//! first byte can be fed to [`Http2`] and yields exchanges; connections joined mid-stream,
//! gRPC and TLS come next.

mod conn;
pub mod frame;
pub mod hpack;

pub use conn::{Http2, Limits, Notes, Status};

#[cfg(test)]
mod tests;
