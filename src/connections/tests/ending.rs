//! How connections end: what the socket's own totals at the close add to what was noted.

use super::*;

/// A retransmit no kernel note reported is counted from the socket's own total at the close;
/// not for a connection older than netsonde (its total began unseen), nor when the total was
/// not read.
#[test]
fn retransmits_no_note_reported_are_counted_from_the_sockets_total_at_close() {
    use netsonde_common::{UNKNOWN_RETRANSMITS, note};
    let cases = [
        ("one of three noted", origin::CONNECT, 3, 2),
        ("all noted", origin::ACCEPT, 1, 0),
        (
            "the total not read",
            origin::CONNECT,
            UNKNOWN_RETRANSMITS,
            0,
        ),
        ("older than netsonde", origin::EXISTING, 3, 0),
    ];
    for (what, how, total, at_close) in cases {
        let stats = Arc::new(ConnectionStats::default());
        let mut tracker = Tracker::new(config(), stats.clone());
        let mut out = Vec::new();
        let mut closed = close(CLIENT, 5, SOCK_C);
        if let Ev::Other(Event::Close(c)) = &mut closed {
            c.total_retransmits = total;
        }
        for e in [
            open(CLIENT, 5, SOCK_C, how, 40000, 8080),
            note(C5, note::RETRANSMIT, 0, 1050),
            closed,
        ] {
            tracker.handle_ev(&e, &mut out);
        }
        let mut activity = Vec::new();
        tracker.take_activity(&mut activity);
        let counted: Vec<u64> = activity
            .iter()
            .filter_map(|a| match a.kind {
                ActivityKind::Retransmits { count } => Some(count),
                _ => None,
            })
            .collect();
        let expected: Vec<u64> = [1]
            .into_iter()
            .chain((at_close > 0).then_some(at_close))
            .collect();
        assert_eq!(counted, expected, "{what}");
        assert_eq!(stats.retransmits_at_close.load(Relaxed), at_close, "{what}");
    }
}
