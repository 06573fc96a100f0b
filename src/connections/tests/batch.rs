//! Events handled a batch at a time, as the agent hands them on, count and pair exactly as
//! one at a time.

use super::*;

#[test]
fn a_batch_is_handled_as_its_events_one_by_one() {
    let garbage = b"NOT HTTP AT ALL\x00\x01\r\n\r\n";
    let events = [
        open(CLIENT, 5, SOCK_C, origin::CONNECT, 40000, 8080),
        open(SERVER, 7, SOCK_S, origin::ACCEPT, 8080, 40000),
        data(C5, direction::EGRESS, 0, REQ, REQ.len() as u64, 1000),
        data(S7, direction::INGRESS, 0, REQ, REQ.len() as u64, 1100),
        data(S7, direction::EGRESS, 0, RESP, RESP.len() as u64, 1200),
        data(C5, direction::INGRESS, 0, RESP, RESP.len() as u64, 1300),
        // A response nobody asked for, then bytes that are not HTTP: both noted.
        data(
            C5,
            direction::INGRESS,
            RESP.len() as u64,
            RESP,
            RESP.len() as u64,
            1400,
        ),
        data(
            S7,
            direction::INGRESS,
            REQ.len() as u64,
            garbage,
            garbage.len() as u64,
            1500,
        ),
        close(CLIENT, 5, SOCK_C),
    ];
    let handled = |batches: &[&[Ev]]| {
        let stats = Arc::new(ConnectionStats::default());
        let mut tracker = Tracker::new(config(), stats.clone());
        let mut out = Vec::new();
        for batch in batches {
            tracker.handle_batch(batch.iter().map(Ev::event), &mut out);
        }
        (out, format!("{stats:?}"), stats)
    };
    let (one_by_one, one_by_one_stats, _) = handled(&events.each_ref().map(std::slice::from_ref));
    let (whole, whole_stats, stats) = handled(&[&events]);
    let (split, split_stats, _) = handled(&[&events[..3], &events[3..]]);
    assert_eq!(whole, one_by_one);
    assert_eq!(split, one_by_one);
    assert_eq!(whole_stats, one_by_one_stats);
    assert_eq!(split_stats, one_by_one_stats);
    assert_eq!(whole.len(), 2);
    let counted = [
        &stats.events,
        &stats.exchanges,
        &stats.orphan_responses,
        &stats.malformed,
        &stats.hidden_messages,
        &stats.active,
    ]
    .map(|c| c.load(Relaxed));
    assert_eq!(counted, [9, 2, 1, 1, 1, 1], "{whole_stats}");
}
