//! The network layer's tracepoints as this kernel publishes them: which of their later
//! arguments it passes (a tracepoint's arguments grew over the releases; its tracefs record
//! has a field of the same name where the argument exists), and the names of the kernel's
//! packet drop reasons.

use std::{collections::BTreeMap, collections::HashMap, path::Path};

use netsonde_common::{NetLayout, UNKNOWN_DROP_REASON};

use super::tracefs::{self, FormatField};

/// The network layer's tracepoints, by program, with their category and name.
const TRACEPOINTS: [(&str, &str, &str); 9] = [
    ("net_dev_queue", "net", "net_dev_queue"),
    ("net_dev_start_xmit", "net", "net_dev_start_xmit"),
    ("qdisc_enqueue", "qdisc", "qdisc_enqueue"),
    ("net_dev_xmit", "net", "net_dev_xmit"),
    ("netif_receive_skb", "net", "netif_receive_skb"),
    ("skb_copy_datagram_iovec", "skb", "skb_copy_datagram_iovec"),
    ("kfree_skb", "skb", "kfree_skb"),
    ("tcp_retransmit_skb", "tcp", "tcp_retransmit_skb"),
    ("inet_sock_set_state", "sock", "inet_sock_set_state"),
];

/// Which later arguments this kernel passes, and for each program whose tracepoint this kernel
/// lacks, why it cannot run (keyed by program name).
pub fn read_layout(tracefs: &Path) -> (NetLayout, HashMap<&'static str, String>) {
    let mut layout = NetLayout::default();
    let mut unusable = HashMap::new();
    for (program, category, name) in TRACEPOINTS {
        let fields = match tracefs::read_format(tracefs, category, name) {
            Ok(text) => tracefs::parse_format(&text),
            Err(e) => {
                unusable.insert(program, e.to_string());
                continue;
            }
        };
        match program {
            "kfree_skb" => {
                layout.free_reason = passes(&fields, "reason");
                layout.free_rx_sk = passes(&fields, "rx_sk");
            }
            "tcp_retransmit_skb" => layout.retransmit_err = passes(&fields, "err"),
            _ => {}
        }
    }
    (layout, unusable)
}

/// 1 when the record has `field`: the tracepoint passes the argument it is taken from.
fn passes(fields: &[FormatField], field: &str) -> u32 {
    u32::from(fields.iter().any(|f| f.name == field))
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
    fn later_arguments_are_read_from_the_record_fields() {
        let field = |name: &str| FormatField {
            name: name.into(),
            offset: 8,
            size: 8,
        };
        let fields = vec![field("skbaddr"), field("location"), field("reason")];
        assert_eq!(passes(&fields, "reason"), 1);
        assert_eq!(passes(&fields, "rx_sk"), 0);
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
        // Linux 6.18 passes kfree_skb's reason and rx_sk.
        assert_eq!((layout.free_reason, layout.free_rx_sk), (1, 1));
        let names = drop_reason_names(&tracefs);
        assert_eq!(names.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
    }
}
