//! HTTP/2 (RFC 9113): framing, HPACK header decoding, and each stream as an exchange.
//!
//! The connection tracker switches a connection to [`Http2`] when it sees a connection preface
//! (from its first byte, in plaintext or through TLS); each stream becomes an exchange, and DATA
//! bytes are counted as gRPC messages (`super::grpc`).

mod conn;
pub mod frame;
pub mod hpack;
mod huffman;
mod partial;
mod stream;

pub use partial::UNKNOWN;

pub use conn::{Http2, Limits, Notes, Status};

#[cfg(test)]
mod tests;
