//! W3C Trace Context (`traceparent`): parsing, and the ids of spans netsonde creates.

use rand::{RngExt as _, SeedableRng as _, rngs::SmallRng};

/// A parsed `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The id of the span that sent the request (the caller's span).
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// Parses `traceparent` per W3C Trace Context level 1: `version-traceid-parentid-flags`, lower
/// case hex; all-zero ids and version `ff` are invalid. Future versions may append fields.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex(version) || !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if flags.len() != 2 {
        return None;
    }
    let trace_id: [u8; 16] = hex_bytes(trace)?;
    let parent_id: [u8; 8] = hex_bytes(parent)?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        flags: u8::from_str_radix(flags, 16).ok()?,
    })
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Ids for the spans netsonde starts. W3C Trace Context asks for random ids, not
/// unpredictable ones (as the OTel SDKs generate them): a small fast generator, seeded once from
/// the system, instead of the thread's cryptographic one, whose two draws per exchange were
/// about 1 % of the agent's time with OTLP (benchmarks/RESULTS.md).
pub struct IdGenerator {
    rng: SmallRng,
}

impl IdGenerator {
    pub fn new() -> Self {
        IdGenerator {
            rng: SmallRng::from_rng(&mut rand::rng()),
        }
    }

    /// A random, valid (non-zero) trace id.
    pub fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let id: [u8; 16] = self.rng.random();
            if id != [0; 16] {
                return id;
            }
        }
    }

    /// A random, valid (non-zero) span id.
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id: [u8; 8] = self.rng.random();
            if id != [0; 8] {
                return id;
            }
        }
    }
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_parse() {
        let tp =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.trace_id[0], 0x4b);
        assert_eq!(
            tp.parent_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags, 1);
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra")
                .is_some()
        );
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn new_ids_are_valid_and_differ() {
        let mut ids = IdGenerator::new();
        let traces: std::collections::HashSet<_> = (0..10_000).map(|_| ids.trace_id()).collect();
        let spans: std::collections::HashSet<_> = (0..10_000).map(|_| ids.span_id()).collect();
        assert_eq!((traces.len(), spans.len()), (10_000, 10_000));
        assert!(!traces.contains(&[0; 16]) && !spans.contains(&[0; 8]));
        // Each generator is seeded on its own: two agents do not repeat each other's ids.
        assert_ne!(IdGenerator::new().trace_id(), IdGenerator::new().trace_id());
    }
}
