//! Protobuf wire encoding for the two messages netsonde builds per exchange: the span and the
//! access log.
//!
//! Why by hand: building them as `opentelemetry-proto` structs cost about 7 µs per exchange
//! (benchmarks/RESULTS.md), most of it allocating and freeing ~50 small strings per message,
//! cloning the span's attributes into the log, and prost walking the nested structs twice
//! (length, then bytes). Writing the wire format straight into reused buffers needs no
//! allocation per attribute, and the log reuses the span's attribute bytes. Every other message
//! (resources, metrics, the agent's own) still goes through prost; tests decode what this
//! module writes with prost and with the official Python protobuf package (through a real
//! collector), so the two cannot drift apart.

use std::{
    fmt::{self, Write as _},
    net::IpAddr,
};

/// Wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

pub fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, u64::from(field << 3 | u32::from(wire)));
}

/// A length-delimited field (bytes, string, or an encoded message).
pub fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// The tag and length of a length-delimited field whose `len` bytes the caller writes next.
pub fn put_len_header(buf: &mut Vec<u8>, field: u32, len: usize) {
    put_tag(buf, field, LEN);
    put_varint(buf, len as u64);
}

/// A string field, omitted when empty (proto3 default).
pub fn put_str(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(buf, field, s.as_bytes());
    }
}

/// A varint field (uint, int64 as two's complement, enum, bool), omitted when zero.
pub fn put_uint(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(buf, field, VARINT);
        put_varint(buf, v);
    }
}

pub fn put_fixed64(buf: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(buf, field, FIXED64);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn put_fixed32(buf: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        put_tag(buf, field, FIXED32);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Somewhere attributes go: the wire (spans, logs) or a list (metric keys, tests).
pub trait AttrSink {
    fn str(&mut self, key: &'static str, value: &str);
    fn int(&mut self, key: &'static str, value: i64);
    /// A value written with `Display` (numbers as text, composed values).
    fn display(&mut self, key: &'static str, value: &dyn fmt::Display);
    /// An IP address, as `Display` writes it.
    fn ip(&mut self, key: &'static str, value: IpAddr) {
        self.display(key, &value);
    }
}

impl AttrSink for crate::telemetry::otlp::Attrs {
    fn str(&mut self, key: &'static str, value: &str) {
        self.push((key, value.into()));
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.push((key, value.into()));
    }

    fn display(&mut self, key: &'static str, value: &dyn fmt::Display) {
        self.push((key, value.to_string().into()));
    }
}

/// Attributes encoded as repeated `KeyValue` fields, ready to be spliced into a span
/// (field 9) or a log record (field 6): the field tag is a single byte, so the same bytes
/// serve both once those bytes are rewritten.
#[derive(Debug, Default)]
pub struct WireAttrs {
    pub bytes: Vec<u8>,
    /// Offsets of the one-byte field tags.
    tags: Vec<usize>,
    scratch: String,
}

/// `KeyValue.key` = 1, `KeyValue.value` = 2; `AnyValue.string_value` = 1, `int_value` = 3.
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_INT: u32 = 3;
/// Any field number below 16 with wire type LEN fits one tag byte.
const PLACEHOLDER_FIELD: u32 = 9;

impl WireAttrs {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.tags.clear();
    }

    fn open(&mut self, key: &str, any_len: usize) {
        let kv_len =
            1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
        self.tags.push(self.bytes.len());
        put_tag(&mut self.bytes, PLACEHOLDER_FIELD, LEN);
        put_varint(&mut self.bytes, kv_len as u64);
        put_bytes(&mut self.bytes, KV_KEY, key.as_bytes());
        put_tag(&mut self.bytes, KV_VALUE, LEN);
        put_varint(&mut self.bytes, any_len as u64);
    }

    fn put_string(&mut self, key: &str, value: &str) {
        let any_len = 1 + varint_len(value.len() as u64) + value.len();
        self.open(key, any_len);
        // An empty string is still a string value: write it even though it is the default.
        put_bytes(&mut self.bytes, ANY_STRING, value.as_bytes());
    }

    /// A string value `write` composes, in the reused scratch string.
    fn put_text(&mut self, key: &str, write: impl FnOnce(&mut String)) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        write(&mut text);
        self.put_string(key, &text);
        self.scratch = text;
    }

    /// Copies into `out` (cleared first) the attributes whose key `keep` accepts, in order.
    pub fn retain_into(&self, out: &mut WireAttrs, keep: impl Fn(&str) -> bool) {
        out.clear();
        for (i, &start) in self.tags.iter().enumerate() {
            let end = self.tags.get(i + 1).copied().unwrap_or(self.bytes.len());
            let entry = &self.bytes[start..end];
            if keep(entry_key(entry)) {
                out.tags.push(out.bytes.len());
                out.bytes.extend_from_slice(entry);
            }
        }
    }

    /// Writes the attributes as fields number `field` (< 16) of the enclosing message.
    pub fn splice_into(&self, buf: &mut Vec<u8>, field: u32) {
        debug_assert!(field < 16);
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        let tag = (field << 3 | u32::from(LEN)) as u8;
        for &at in &self.tags {
            buf[start + at] = tag;
        }
    }
}

/// The key of one entry as `open` wrote it: its tag byte and length, then the key's tag byte,
/// length and bytes (keys are `'static` names, so UTF-8).
fn entry_key(entry: &[u8]) -> &str {
    use prost::encoding::decode_varint;
    let mut rest = &entry[1..];
    let _entry_len = decode_varint(&mut rest);
    rest = &rest[1..];
    let len = decode_varint(&mut rest).map_or(0, |n| n as usize);
    std::str::from_utf8(&rest[..len.min(rest.len())]).unwrap_or_default()
}

impl AttrSink for WireAttrs {
    fn str(&mut self, key: &'static str, value: &str) {
        self.put_string(key, value);
    }

    fn int(&mut self, key: &'static str, value: i64) {
        let any_len = 1 + varint_len(value as u64);
        self.open(key, any_len);
        put_tag(&mut self.bytes, ANY_INT, VARINT);
        put_varint(&mut self.bytes, value as u64);
    }

    fn display(&mut self, key: &'static str, value: &dyn fmt::Display) {
        self.put_text(key, |text| {
            let _ = write!(text, "{value}");
        });
    }

    fn ip(&mut self, key: &'static str, value: IpAddr) {
        self.put_text(key, |text| crate::telemetry::text::push_ip(text, value));
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, KeyValue, any_value::Value},
        trace::v1::Span,
    };
    use prost::Message as _;

    use super::*;

    #[test]
    fn attributes_decode_as_prost_encodes_them() {
        let mut attrs = WireAttrs::default();
        attrs.str("url.path", "/a");
        attrs.int("http.response.status_code", 200);
        attrs.int("negative", -3);
        attrs.str("empty", "");
        attrs.display("network.peer.address", &std::net::Ipv4Addr::LOCALHOST);
        attrs.ip(
            "network.local.address",
            std::net::Ipv4Addr::new(10, 0, 0, 1).into(),
        );
        let mut span = Vec::new();
        put_str(&mut span, 5, "GET /a");
        attrs.splice_into(&mut span, 9);
        let decoded = Span::decode(span.as_slice()).unwrap();
        let kv = |k: &str, v: Value| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        };
        assert_eq!(decoded.name, "GET /a");
        assert_eq!(
            decoded.attributes,
            [
                kv("url.path", Value::StringValue("/a".into())),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("negative", Value::IntValue(-3)),
                kv("empty", Value::StringValue(String::new())),
                kv(
                    "network.peer.address",
                    Value::StringValue("127.0.0.1".into())
                ),
                kv(
                    "network.local.address",
                    Value::StringValue("10.0.0.1".into())
                ),
            ]
        );
    }

    #[test]
    fn kept_attributes_are_copied_whole_and_in_order() {
        let mut attrs = WireAttrs::default();
        attrs.str("url.path", "/a");
        attrs.int("http.response.status_code", 200);
        // A key past 127 bytes and a value past 127 bytes: lengths of two varint bytes.
        let long_key: &'static str = Box::leak("k".repeat(130).into_boxed_str());
        attrs.str(long_key, &"v".repeat(200));
        attrs.ip("network.peer.address", std::net::Ipv4Addr::LOCALHOST.into());
        let mut kept = WireAttrs::default();
        kept.str("left over", "from before");
        attrs.retain_into(&mut kept, |k| {
            k != "url.path" && k != "network.peer.address"
        });
        let mut span = Vec::new();
        kept.splice_into(&mut span, 9);
        let decoded = Span::decode(span.as_slice()).unwrap();
        let keys: Vec<&str> = decoded
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["http.response.status_code", long_key]);
        assert_eq!(
            decoded.attributes[1].value,
            Some(AnyValue {
                value: Some(Value::StringValue("v".repeat(200)))
            })
        );
        // Kept into a log's field too: the tags are where the copy put them.
        let mut log = Vec::new();
        kept.splice_into(&mut log, 6);
        let decoded = opentelemetry_proto::tonic::logs::v1::LogRecord::decode(log.as_slice());
        assert_eq!(decoded.unwrap().attributes.len(), 2);
    }

    #[test]
    fn varints_match_the_spec() {
        for (v, bytes) in [
            (0u64, vec![0u8]),
            (1, vec![1]),
            (127, vec![127]),
            (128, vec![0x80, 1]),
            (300, vec![0xac, 0x02]),
            (
                u64::MAX,
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1],
            ),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            assert_eq!(varint_len(v), bytes.len());
        }
    }
}
