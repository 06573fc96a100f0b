//! The network layer's tracepoints as this kernel publishes them: where each record keeps the
//! fields the programs read (records change between kernel versions, so the offsets come from
//! tracefs at start), and the names of the kernel's packet drop reasons.

use std::{collections::BTreeMap, collections::HashMap, path::Path};

use netsonde_common::{NetLayout, UNKNOWN_DROP_REASON};

use super::tracefs::{self, FormatField};

/// A field a program reads: name, size in bytes, and whether the program works without it.
struct Wanted {
    name: &'static str,
    size: usize,
    optional: bool,
}

const fn need(name: &'static str, size: usize) -> Wanted {
    Wanted {
        name,
        size,
        optional: false,
    }
}

const fn maybe(name: &'static str, size: usize) -> Wanted {
    Wanted {
        name,
        size,
        optional: true,
    }
}

/// The record layouts, and for each program whose record lacks a field it needs, why it
/// cannot run (keyed by program name).
pub fn read_layout(tracefs: &Path) -> (NetLayout, HashMap<&'static str, String>) {
    let mut layout = NetLayout::default();
    let mut unusable = HashMap::new();
    let mut find = |program: &'static str,
                    category: &str,
                    name: &str,
                    wanted: &[Wanted]|
     -> Option<Vec<u32>> {
        match tracefs::read_format(tracefs, category, name)
            .map_err(|e| e.to_string())
            .and_then(|text| offsets(&tracefs::parse_format(&text), wanted))
        {
            Ok(found) => Some(found),
            Err(why) => {
                unusable.insert(program, format!("{category}/{name}: {why}"));
                None
            }
        }
    };
    if let Some(o) = find(
        "net_dev_queue",
        "net",
        "net_dev_queue",
        &[need("skbaddr", 8), need("len", 4)],
    ) {
        (layout.queue_skb, layout.queue_len) = (o[0], o[1]);
    }
    if let Some(o) = find(
        "net_dev_start_xmit",
        "net",
        "net_dev_start_xmit",
        &[need("skbaddr", 8)],
    ) {
        layout.start_xmit_skb = o[0];
    }
    if let Some(o) = find(
        "net_dev_xmit",
        "net",
        "net_dev_xmit",
        &[need("skbaddr", 8), need("rc", 4)],
    ) {
        (layout.xmit_skb, layout.xmit_rc) = (o[0], o[1]);
    }
    if let Some(o) = find(
        "netif_receive_skb",
        "net",
        "netif_receive_skb",
        &[need("skbaddr", 8), need("len", 4)],
    ) {
        (layout.receive_skb, layout.receive_len) = (o[0], o[1]);
    }
    if let Some(o) = find(
        "skb_copy_datagram_iovec",
        "skb",
        "skb_copy_datagram_iovec",
        &[need("skbaddr", 8)],
    ) {
        layout.copy_skb = o[0];
    }
    if let Some(o) = find(
        "kfree_skb",
        "skb",
        "kfree_skb",
        &[need("skbaddr", 8), maybe("reason", 4), maybe("rx_sk", 8)],
    ) {
        (layout.free_skb, layout.free_reason, layout.free_rx_sk) = (o[0], o[1], o[2]);
    }
    if let Some(o) = find(
        "tcp_retransmit_skb",
        "tcp",
        "tcp_retransmit_skb",
        &[need("skaddr", 8), maybe("err", 4)],
    ) {
        (layout.retransmit_sk, layout.retransmit_err) = (o[0], o[1]);
    }
    if let Some(o) = find(
        "inet_sock_set_state",
        "sock",
        "inet_sock_set_state",
        &[
            need("skaddr", 8),
            need("oldstate", 4),
            need("newstate", 4),
            need("protocol", 2),
        ],
    ) {
        (
            layout.state_sk,
            layout.state_old,
            layout.state_new,
            layout.state_protocol,
        ) = (o[0], o[1], o[2], o[3]);
    }
    (layout, unusable)
}

/// Offsets of `wanted` in a parsed format (0 for an optional field that is absent).
fn offsets(fields: &[FormatField], wanted: &[Wanted]) -> Result<Vec<u32>, String> {
    wanted
        .iter()
        .map(|w| match fields.iter().find(|f| f.name == w.name) {
            Some(f) if f.size == w.size && f.offset > 0 => Ok(f.offset as u32),
            Some(f) => Err(format!(
                "field `{}` is {} bytes at offset {}; the program reads {} bytes",
                w.name, f.size, f.offset, w.size
            )),
            None if w.optional => Ok(0),
            None => Err(format!("no field `{}` in the record", w.name)),
        })
        .collect()
}

/// The kernel's names for its drop reasons, from the `skb/kfree_skb` format (empty on kernels
/// whose record has no reason). Reasons not listed are reported by number.
pub fn drop_reason_names(tracefs: &Path) -> BTreeMap<u32, String> {
    tracefs::read_format(tracefs, "skb", "kfree_skb")
        .map(|text| parse_symbols(&text, "REC->reason"))
        .unwrap_or_default()
}

/// The name of a drop reason: the kernel's, or its number when this kernel does not name it.
pub fn drop_reason(names: &BTreeMap<u32, String>, reason: u32) -> String {
    match names.get(&reason) {
        Some(name) => name.clone(),
        None if reason == UNKNOWN_DROP_REASON => "unknown".into(),
        None => reason.to_string(),
    }
}

/// The `{ value, "NAME" }` pairs of `__print_symbolic(<of>, …)` in a format's print line.
fn parse_symbols(format: &str, of: &str) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    let Some(start) = format.find(&format!("__print_symbolic({of},")) else {
        return names;
    };
    let mut rest = &format[start..];
    // Pairs run until the call's closing parenthesis, which follows the last `}`.
    while let Some(open) = rest.find('{') {
        if rest[..open].contains(')') {
            break;
        }
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let pair = &rest[open + 1..open + close];
        if let Some((value, name)) = pair.split_once(',') {
            let value = value.trim();
            let parsed = match value.strip_prefix("0x") {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => value.parse().ok(),
            };
            if let Some(value) = parsed {
                names.insert(value, name.trim().trim_matches('"').to_string());
            }
        }
        rest = &rest[open + close + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The print line of 6.18's skb/kfree_skb, shortened.
    const KFREE_SKB: &str = r#"print fmt: "skbaddr=%p rx_sk=%p protocol=%u location=%pS reason: %s", REC->skbaddr, REC->rx_sk, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x10, "TCP_CSUM" }, { 77, "QDISC_DROP" })"#;

    #[test]
    fn drop_reason_names_come_from_the_print_format() {
        let names = parse_symbols(KFREE_SKB, "REC->reason");
        assert_eq!(names.len(), 4);
        assert_eq!(names[&2], "NOT_SPECIFIED");
        assert_eq!(names[&16], "TCP_CSUM");
        assert_eq!(names[&77], "QDISC_DROP");
        assert!(parse_symbols(KFREE_SKB, "REC->family").is_empty());
    }

    #[test]
    fn drop_reasons_are_named_or_numbered() {
        let names = BTreeMap::from([(2, "NOT_SPECIFIED".to_string())]);
        assert_eq!(drop_reason(&names, 2), "NOT_SPECIFIED");
        assert_eq!(drop_reason(&names, 300), "300");
        assert_eq!(drop_reason(&names, UNKNOWN_DROP_REASON), "unknown");
    }

    #[test]
    fn missing_or_resized_fields_make_a_program_unusable() {
        let fields = vec![
            FormatField {
                name: "skbaddr".into(),
                offset: 8,
                size: 8,
            },
            FormatField {
                name: "len".into(),
                offset: 16,
                size: 2,
            },
        ];
        assert_eq!(offsets(&fields, &[need("skbaddr", 8)]), Ok(vec![8]));
        assert_eq!(
            offsets(&fields, &[need("skbaddr", 8), maybe("reason", 4)]),
            Ok(vec![8, 0])
        );
        assert_eq!(
            offsets(&fields, &[need("len", 4)]),
            Err("field `len` is 2 bytes at offset 16; the program reads 4 bytes".into())
        );
        assert_eq!(
            offsets(&fields, &[need("rc", 4)]),
            Err("no field `rc` in the record".into())
        );
    }

    #[test]
    fn this_kernel_publishes_every_record_the_programs_read() {
        let Ok(tracefs) = tracefs::ensure_mounted() else {
            eprintln!("skipped: tracefs is not mounted and cannot be (not root?)");
            return;
        };
        if !tracefs.join("events/net/net_dev_queue").is_dir() {
            eprintln!("skipped: this kernel has no net tracepoints");
            return;
        }
        let (layout, unusable) = read_layout(&tracefs);
        assert!(unusable.is_empty(), "{unusable:?}");
        assert_ne!(layout.queue_skb, 0);
        assert_ne!(layout.state_protocol, 0);
        let names = drop_reason_names(&tracefs);
        assert_eq!(names.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
    }
}
