//! HTTP/2: framing, header decoding, and (to come) streams as exchanges.

pub mod frame;
pub mod hpack;
